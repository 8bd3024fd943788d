package broker

import (
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Message is one application message as the broker routes it. It is
// immutable once routed: every subscriber shares the same Message, its payload
// and its cached encodings, so fan-out copies nothing per subscriber.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// Props holds the properties forwarded to subscribers (never topic alias
	// or subscription identifiers, which are per delivery); nil when none.
	Props *packet.Properties
	// Expiry is the UnixNano deadline after which the message is not
	// delivered; 0 means it never expires.
	Expiry int64
	// Origin is the publishing client's ID, for No Local.
	Origin string
	// DeliverTo, when set, is a client whose session receives the message
	// whether or not it subscribed (see DeliverToProperty).
	DeliverTo string
	// DurablyRouted marks, in cluster mode, a QoS 1/2 message whose
	// publishing node stored it for every persistent session it matches
	// on other nodes (RemoteSessions): those sessions take it from the
	// store (DeliverRouted), not from live routing (RouteFromPeer).
	DurablyRouted bool
	// RoutedIndex is, with DurablyRouted, how far the publishing node's
	// index of the cluster's sessions had read (RemoteSessions.Position):
	// a session whose subscriptions it had not read yet is not covered and
	// takes the live copy (RemoteSessions.Covers).
	RoutedIndex []uint64
	// RoutedID is, on a message received from another node, its
	// identifier (Forwarder.Forward); on a message published here in two
	// phases (phased.go), the identifier stored with it, which Forward
	// keeps; zero otherwise.
	RoutedID MessageID
	// SharedDurable names, on a message published in cluster mode, the
	// shared subscription groups whose one delivery its publishing node
	// made (a persistent member's durably, see sharedcluster.go): their
	// live queue groups drop it.
	SharedDurable []SharedGroup

	// willExpiry is a will's Message Expiry Interval, which starts when the
	// will is published.
	willExpiry time.Duration
	// owner is a will's connection authentication, to check the will
	// against its principal when it is published.
	owner *clientAuth

	// enc caches the encoded PUBLISH per [protocol 3.1.1/5][QoS 0/QoS>0]
	// for deliveries that need no per-subscriber properties; the packet ID
	// and flags are patched per subscriber.
	enc [2][2]atomic.Pointer[[]byte]
}

// expired reports whether the message must no longer be delivered at now (UnixNano).
func (m *Message) expired(now int64) bool { return m.Expiry != 0 && now >= m.Expiry }

// remainingExpiry is the Message Expiry Interval to forward: the original
// minus the time spent in the broker, at least 1 second while still valid.
func (m *Message) remainingExpiry(now int64) uint32 {
	left := (m.Expiry - now + int64(time.Second) - 1) / int64(time.Second)
	if left < 1 {
		left = 1
	}
	return uint32(left)
}

// ExpiryLeft is the Message Expiry Interval a receiver of m gets at now:
// the seconds left until its deadline, at least 1 while it is still valid;
// 0 when m does not expire.
func (m *Message) ExpiryLeft(now time.Time) uint32 {
	if m.Expiry == 0 {
		return 0
	}
	return m.remainingExpiry(now.UnixNano())
}

// cached reports whether the encoding for protocol v and QoS class is
// cached already.
func (m *Message) cached(v packet.Version, qos byte) bool {
	vi, qi := 0, 0
	if v == packet.V5 {
		vi = 1
	}
	if qos > 0 {
		qi = 1
	}
	return m.enc[vi][qi].Load() != nil
}

// cachedEncoding returns the PUBLISH encoding with packet ID 0 for protocol v
// and QoS class (0 or >0), building it on first use.
func (m *Message) cachedEncoding(v packet.Version, qos byte) []byte {
	vi, qi := 0, 0
	if v == packet.V5 {
		vi = 1
	}
	if qos > 0 {
		qi = 1
	}
	if p := m.enc[vi][qi].Load(); p != nil {
		return *p
	}
	pub := packet.Publish{QoS: qos, Topic: m.Topic, Payload: m.Payload}
	if qos > 0 {
		pub.PacketID = 1 // placeholder, patched per delivery
	}
	if m.Props != nil {
		pub.Properties = *m.Props
	}
	b := pub.Append(make([]byte, 0, pub.Size(v)), v)
	m.enc[vi][qi].Store(&b)
	return b
}
