package broker

import (
	"errors"
	"slices"
	"strings"
	"time"
)

// SessionInfo describes one session for operators (the portal's clients
// page): who it is, whether it is connected and what waits for it.
type SessionInfo struct {
	ClientID string `json:"clientId"`
	Online   bool   `json:"online"`
	// Internal marks an in-process Edgeport client ($edgeport/...).
	Internal bool `json:"internal"`
	// Listener and RemoteAddr are those of the current connection, or
	// of the one that created the session when offline (RemoteAddr then empty).
	Listener   string `json:"listener,omitempty"`
	RemoteAddr string `json:"remoteAddr,omitempty"`
	Username   string `json:"username,omitempty"`
	Protocol   int    `json:"protocolVersion"`
	// ExpirySeconds is the session expiry interval; -1 never expires.
	ExpirySeconds int64 `json:"expirySeconds"`
	// OfflineSince is when the session was last disconnected (zero when
	// online or never disconnected).
	OfflineSince  time.Time          `json:"offlineSince,omitzero"`
	Subscriptions []SubscriptionInfo `json:"subscriptions"`
	// Queued messages (and their payload bytes) wait for delivery;
	// Inflight ones were sent and await acknowledgement.
	Queued      int   `json:"queued"`
	QueuedBytes int64 `json:"queuedBytes"`
	Inflight    int   `json:"inflight"`
	HasWill     bool  `json:"hasWill"`
}

// SubscriptionInfo is one subscription of a session.
type SubscriptionInfo struct {
	Filter string `json:"filter"`
	QoS    byte   `json:"qos"`
}

// Sessions lists every session (connected or not), sorted by client ID.
// It takes each session's lock briefly, one at a time.
func (b *Broker) Sessions() []SessionInfo {
	b.sessMu.Lock()
	ss := make([]*session, 0, len(b.sessions))
	for _, s := range b.sessions {
		ss = append(ss, s)
	}
	b.sessMu.Unlock()
	out := make([]SessionInfo, 0, len(ss))
	for _, s := range ss {
		if info, ok := s.info(); ok {
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return strings.Compare(a.ClientID, b.ClientID) })
	return out
}

// Session describes the session of clientID.
func (b *Broker) Session(clientID string) (SessionInfo, bool) {
	b.sessMu.Lock()
	s := b.sessions[clientID]
	b.sessMu.Unlock()
	if s == nil {
		return SessionInfo{}, false
	}
	return s.info()
}

func (s *session) info() (SessionInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return SessionInfo{}, false
	}
	info := SessionInfo{
		ClientID: s.id, Online: s.client != nil, Internal: s.internal, Protocol: int(s.version),
		ExpirySeconds: int64(s.expiry / time.Second), Listener: s.ownerListener,
		Queued: s.queue.len(), QueuedBytes: s.queue.bytes, Inflight: len(s.inflight), HasWill: s.will != nil,
		Subscriptions: make([]SubscriptionInfo, 0, len(s.subs)),
	}
	if s.expiry == expiryNever {
		info.ExpirySeconds = -1
	}
	if s.owner != nil {
		info.Username = s.owner.Username
	}
	if c := s.client; c != nil {
		info.Listener = c.ls.name
		if a := c.conn.RemoteAddr(); a != nil {
			info.RemoteAddr = a.String()
		}
	} else if s.offlineSince != 0 {
		info.OfflineSince = time.Unix(0, s.offlineSince).UTC()
	}
	for _, sub := range s.subs {
		info.Subscriptions = append(info.Subscriptions, SubscriptionInfo{Filter: sub.filter, QoS: sub.qos})
	}
	slices.SortFunc(info.Subscriptions, func(a, b SubscriptionInfo) int { return strings.Compare(a.Filter, b.Filter) })
	return info, true
}

// Errors of DeleteSession.
var (
	ErrNoSession     = errors.New("no such session")
	ErrSessionOnline = errors.New("the session's client is connected: disconnect it first")
)

// DeleteSession ends the offline session of clientID as if its expiry
// interval had passed: its subscriptions and queued messages are
// discarded (counted as dropped, reason session_ended) and a pending will
// is published. A connected client's session is not deleted.
func (b *Broker) DeleteSession(clientID string) error {
	b.sessMu.Lock()
	s := b.sessions[clientID]
	if s == nil {
		b.sessMu.Unlock()
		return ErrNoSession
	}
	s.mu.Lock()
	online := s.client != nil
	s.mu.Unlock()
	if online {
		b.sessMu.Unlock()
		return ErrSessionOnline
	}
	b.endSessionLocked(s)
	b.sessMu.Unlock()
	if !s.internal {
		b.sessionEnded(s.id)
	}
	return nil
}
