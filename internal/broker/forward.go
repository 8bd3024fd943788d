package broker

import (
	"strings"

	"github.com/edgeport/edgeport/internal/mqtt/topic"
)

// Forwarder carries live traffic between the nodes of a cluster
// (internal/cluster routes over core NATS). With one attached, a message
// published on this node is routed here and handed to Forward for the
// other nodes, and this node's subscriptions are reported, so that it
// receives from the others what they match (RouteFromPeer). Shared
// subscriptions are then delivered by the cluster alone (one delivery per
// group cluster-wide, RouteSharedFromPeer), never by local routing. A
// single node has no Forwarder and pays nothing.
//
// Internal clients' ($edgeport/...) non-shared subscriptions are not
// reported: each node runs its own state store, connectors and dataflows
// for its own clients, and they must not answer another node's.
type Forwarder interface {
	// Forward sends m, published by a client of this node and routed
	// here, to the other nodes. It is called on the publisher's goroutine
	// with no broker lock held; m is immutable and must not be kept past
	// the call unless copied. It must not block on the network.
	Forward(m *Message)
	// Subscribed and Unsubscribed report each subscription a session
	// adds or removes (group "" unless shared; filter without $share).
	// They are called under the session's lock: they must not block.
	Subscribed(group, filter string)
	Unsubscribed(group, filter string)
}

// AttachForwarder connects the broker to a cluster. Call it after New and
// before Start (restored sessions' subscriptions are reported by Start).
func (b *Broker) AttachForwarder(f Forwarder) { b.fwd = f }

// forwards reports whether m goes to the other nodes: not $SYS (each node
// has its own), not a message for one local client.
func forwards(m *Message) bool {
	return m.DeliverTo == "" && !strings.HasPrefix(m.Topic, "$SYS/") && m.Topic != "$SYS"
}

// subscribe adds sub of s to the trie and tells the cluster. s.mu is held.
func (b *Broker) subscribe(s *session, sub *subscription) {
	if !b.subs.Subscribe(sub.inner, sub.group, s, sub) && b.fwd != nil && (sub.group != "" || !s.internal) {
		b.fwd.Subscribed(sub.group, sub.inner)
	}
}

// unsubscribe removes sub of s from the trie and tells the cluster. s.mu
// is held.
func (b *Broker) unsubscribe(s *session, sub *subscription) {
	if b.subs.Unsubscribe(sub.inner, sub.group, s) && b.fwd != nil && (sub.group != "" || !s.internal) {
		b.fwd.Unsubscribed(sub.group, sub.inner)
	}
}

// RouteFromPeer delivers a message another node published to this node's
// matching subscribers, except shared subscriptions (their groups get it
// through RouteSharedFromPeer). It is not stored as retained and not
// forwarded again. It returns how many sessions it reached.
func (b *Broker) RouteFromPeer(m *Message) int {
	tx := b.newTxn()
	n := b.routeFrom(m, tx, false)
	b.commit(tx, nil)
	return n
}

// RouteSharedFromPeer delivers m to one member of this node's shared
// subscription group on filter, which the cluster chose for the message
// (a NATS queue group has one member per node). It reports whether a
// member took it.
func (b *Broker) RouteSharedFromPeer(m *Message, group, filter string) bool {
	r := routerPool.Get().(*router)
	r.b, r.m = b, m
	b.subs.Match(m.Topic, nil, func(g, f string, members []topic.Member[*session, *subscription]) {
		if g == group && f == filter && len(r.targets) == 0 {
			r.addShared(g, f, members)
		}
	})
	tx := b.newTxn()
	n := r.deliver(tx, false)
	b.commit(tx, nil)
	return n > 0
}
