package broker

import (
	"sync/atomic"
)

// InternalListener is the listener name for Edgeport's own in-process
// clients, such as the self-test probe, which reach ServeConn over a pipe
// rather than through a network listener.
//
// Connections served under this name are trusted: they may publish to
// topics beginning with $ (the probe uses $edgeport/selftest/..., which no
// user # subscription sees and no network client may publish to). Their
// sessions are left out of the connected/total session and subscription
// gauges, so an idle broker reports zero sessions; their traffic is still
// counted, under listener="internal".
const InternalListener = "internal"

// InternalClientIDPrefix begins the client identifier of every internal
// client ($edgeport/statestore, $edgeport/selftest, ...). The prefix is
// reserved: a client connecting through any other listener with such an
// identifier is refused with 0x85 (3.1.1: identifier rejected), before
// authentication and whatever the policy says, so that nobody can take an
// internal client's session over.
const InternalClientIDPrefix = "$edgeport/"

// OriginProperty is the user property the broker adds to every message it
// delivers to an internal client: the publishing client's ID, verified by
// the broker. Components serving requests (the state store) identify the
// requester by it rather than by what the request claims. The broker strips
// the property from what network clients publish, so it cannot be forged.
const OriginProperty = "$edgeport.origin"

// DeliverToProperty, on a message an internal client publishes, names the
// client whose session receives it even without a matching subscription
// (once when it has one too). The state store sends KEYNOTIFY
// notifications so, as Azure IoT Operations' broker does: its SDKs register
// a handler for them without subscribing. The broker removes the property
// before delivery, and ignores it from network clients.
const DeliverToProperty = "$edgeport.deliver-to"

// Accepting reports whether the broker takes new connections; it turns
// false when Shutdown begins.
func (b *Broker) Accepting() bool { return !b.closing.Load() }

// count adds d to a session gauge unless s belongs to an internal client.
func (s *session) count(g *atomic.Int64, d int64) {
	if !s.internal {
		g.Add(d)
	}
}
