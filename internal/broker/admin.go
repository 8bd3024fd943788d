package broker

import (
	"strings"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// DisconnectClient ends the connection of clientID with a DISCONNECT
// carrying code and reason; it reports whether the client was connected.
// Components use it to treat a protocol violation as Azure IoT Operations
// does (the state store, for a response topic equal to its invoke topic).
func (b *Broker) DisconnectClient(clientID string, code packet.ReasonCode, reason string) bool {
	b.sessMu.Lock()
	s := b.sessions[clientID]
	b.sessMu.Unlock()
	if s == nil {
		return false
	}
	s.mu.Lock()
	c := s.client
	s.mu.Unlock()
	if c == nil {
		return false
	}
	c.disconnect(code, reason)
	return true
}

// DisconnectListener ends every connection that came through the named
// listener (MQTT 5 clients are told 0x8B, server shutting down, with
// reason), after flushing what is queued for them, and returns how many it
// ended. Sessions are kept or ended as on any disconnect. It does not wait
// for the connections to close.
func (b *Broker) DisconnectListener(name, reason string) int {
	b.connMu.Lock()
	defer b.connMu.Unlock()
	n := 0
	for c := range b.conns {
		if c.ls.name == name {
			c.disconnect(packet.ServerShuttingDown, reason)
			n++
		}
	}
	return n
}

// OutageBufferPrefix starts the client IDs of dataflow sources. Their
// sessions are outage buffers: a flow acknowledges a message only when its
// destination accepted it, so while a destination is away everything waits
// in the session. Such a session's queue is therefore not bounded by
// MaxQueuedMessages and MaxQueuedBytes but only by the store's quota, where
// a publish that does not fit is refused with 0x97 Quota exceeded and
// nothing is dropped. Without a store (in memory) the usual limits apply.
// Network clients cannot use the prefix: $edgeport/ IDs are internal.
const OutageBufferPrefix = "$edgeport/dataflow/"

// outageBuffer reports whether s is a dataflow's outage buffer.
func (b *Broker) outageBuffer(s *session) bool {
	return b.st != nil && strings.HasPrefix(s.id, OutageBufferPrefix)
}

// SessionBacklog returns what waits for the session of clientID: queued
// messages and their payload bytes, plus unacknowledged deliveries. ok is
// false when there is no such session.
func (b *Broker) SessionBacklog(clientID string) (messages int, bytes int64, ok bool) {
	b.sessMu.Lock()
	s := b.sessions[clientID]
	b.sessMu.Unlock()
	if s == nil {
		return 0, 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queue.len() + len(s.inflight), s.queue.bytes, true
}
