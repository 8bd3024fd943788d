package broker

import (
	"context"
	"slices"
	"strings"

	"github.com/edgeport/edgeport/internal/mqtt/topic"
	"github.com/edgeport/edgeport/internal/store"
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
	// Forward sends m, published by a client of this node, to the other
	// nodes, and returns the identifier it gave the message there (unique
	// in the cluster): m.RoutedID when set (a message routed in two
	// phases, whose identifier was stored first). It is called on the publisher's goroutine with no
	// broker lock held, before m is routed here; m must not be changed,
	// nor kept past the call unless copied. It must not block on the
	// network.
	Forward(m *Message) MessageID
	// Subscribed and Unsubscribed report each subscription a session
	// adds or removes (group "" unless shared; filter without $share).
	// They are called under the session's lock: they must not block.
	Subscribed(group, filter string)
	Unsubscribed(group, filter string)
}

// MessageID identifies a publication across a cluster: the publishing
// node's routing incarnation and its sequence number there (Forwarder).
type MessageID [16]byte

// IsZero reports whether id identifies nothing (a single node's message).
func (id MessageID) IsZero() bool { return id == MessageID{} }

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
// forwarded again. A message m.DurablyRouted does not go to persistent
// sessions at QoS 1/2 that its publisher's index covered (they take it
// from the store, DeliverRouted). It returns how many sessions it reached.
func (b *Broker) RouteFromPeer(m *Message) int {
	tx := b.newTxn()
	n := b.routeFrom(m, tx, false, nil)
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
	n := r.deliver(tx, false, nil)
	b.commit(tx, nil)
	return n > 0
}

// RemoteSessions makes, in cluster mode, a QoS 1/2 publication durable for
// the persistent sessions of the whole cluster before its publisher is
// acknowledged, not only for this node's: internal/cluster/jsstate keeps an
// index of every persistent session's subscriptions and writes a routed
// delivery for each session it matches, which the session's owner turns
// into one of its deliveries (DeliverRouted). A single node has none.
type RemoteSessions interface {
	// Route adds to t, for every persistent session of the cluster that
	// m matches at QoS 1 or 2 and whose delivery this node did not store
	// itself (local reports those; nil: every session, this node's
	// included), the routed delivery id of m. Each is written once:
	// written again with the same id, by any node, a routed delivery is
	// dropped, and so is one of a message published in two phases whose
	// session has its entry already (OnceTxn). It is called with t's lock
	// held: it must not block.
	//
	// It also writes one for every session in also, whether the index
	// matches it or not (sessions held here whose delivery is deferred,
	// see Deferred), and one for each of shared, the member a shared
	// subscription group chose (sharedcluster.go), which carries the
	// group (RoutedDelivery.Shared).
	Route(t Txn, m *Message, id MessageID, local func(clientID string) bool, also []string, shared []SharedPick)
	// Shared calls fn for every shared subscription group m matches that
	// has persistent members subscribed at QoS 1 or 2 in the session
	// index, with them (this node's included); members is valid during
	// the call only.
	Shared(m *Message, fn func(group, filter string, members []SharedMember))
	// Received adds to t the inbound QoS 2 identifier packetID of
	// clientID's session stored with m and the id m is to be routed
	// under: the first of the two phases of an inbound QoS 2 PUBLISH
	// (phased.go), which AdoptSession gives back as an Inbound.
	Received(t Txn, clientID string, packetID uint16, id MessageID, m *Message)
	// Fence returns nil when this node still holds clientID's session in
	// the cluster, checked by a write that fails once another node has
	// claimed or adopted it (and then read its records): called between
	// the two phases, so that a node that lost a publisher's session does
	// not route a message the new owner may route too.
	Fence(ctx context.Context, clientID string) error
	// Deferred reports whether a QoS 1/2 message that client origin
	// published on this node for clientID's persistent session, held
	// here, must reach it as a routed delivery (Route's also) rather than
	// straight, because routed deliveries written earlier may not have
	// reached the session yet: this node's for the session (it has just
	// come to this node), or origin's through the node it was connected
	// to before. The session's stream is then its one order.
	Deferred(clientID, origin string) bool
	// Position is how far this node's index of the sessions has read,
	// for Message.RoutedIndex; the index Route uses afterwards is at
	// least there.
	Position() []uint64
	// Covers reports whether m's publishing node, with its index at
	// m.RoutedIndex, had read the current subscriptions of clientID's
	// session (held here): if not, it may not have stored m for it, and
	// the session takes m from live routing.
	Covers(m *Message, clientID string) bool
}

// OnceTxn is a Txn that writes the entry of a delivery of a message with
// an id (e.Routed: a routed delivery, a live copy of one, or a message
// published here in two phases) once cluster-wide (jsstate: keyed by the
// id and the session, within JetStream's duplicate window). PutEntryOnce
// is PutEntry for the entry's first write; answered is called, before the
// commit's done, once the backend knows what became of that write:
// copied false when it stored it (the delivery is then durable whatever
// becomes of the rest of the transaction: a commit refused after its
// writes were stored, jsstate.ErrOutOfOrder, keeps it, and a later
// routing of the message under its id finds it there), copied true when
// it dropped it as a copy of one made already (by a node that held the
// session before, or that routed the message before this one routed it
// again): the delivery is then not sent. It is not called when the
// backend never learnt the write's fate (its commit failed unanswered).
type OnceTxn interface {
	PutEntryOnce(clientID string, e *store.Entry, answered func(copied bool))
}

// AttachRemoteSessions makes QoS 1/2 publications durable for the
// persistent sessions of other nodes (see RemoteSessions). Call it after
// New and before Start, with a Forwarder attached.
func (b *Broker) AttachRemoteSessions(r RemoteSessions) { b.remote = r }

// publishRoute routes m, published on this node, here and to the other
// nodes, with its durable writes in tx; it returns how many local
// sessions it reached and whether it went to other nodes.
func (b *Broker) publishRoute(m *Message, tx *txnCtx) (n int, forwarded bool) {
	forwarded = b.fwd != nil && forwards(m)
	if !forwarded {
		return b.route(m, tx), false
	}
	durable := b.remote != nil && tx != nil && m.QoS > 0
	m.DurablyRouted = durable
	if durable {
		m.RoutedIndex = b.remote.Position()
	}
	if !durable {
		b.fwd.Forward(m)
		return b.route(m, tx), true
	}
	// The shared subscription groups with a persistent member get their
	// one delivery from here (sharedcluster.go); the others are left to
	// live routing's queue groups, as are non-shared subscriptions of
	// other nodes.
	r := routerPool.Get().(*router)
	r.b, r.m = b, m
	var local []sharedHit
	b.subs.Match(m.Topic, r.add, func(group, filter string, members []topic.Member[*session, *subscription]) {
		local = append(local, sharedHit{SharedGroup: SharedGroup{group, filter}, local: slices.Clone(members)})
	})
	if m.DeliverTo != "" {
		r.addDirect(m.DeliverTo)
	}
	hits := b.collectShared(m, local)
	for _, h := range hits {
		m.SharedDurable = append(m.SharedDurable, h.SharedGroup)
	}
	id := b.fwd.Forward(m)
	var tg routedTargets
	tg.shared = r.pickShared(hits, id)
	n = r.deliver(tx, true, &tg)
	tx.write(func(t Txn) {
		b.remote.Route(t, m, id, func(clientID string) bool { return slices.Contains(tg.stored, clientID) }, tg.deferred, tg.shared)
	}, nil)
	return n, true
}

// routedTargets collects, while a message published here is routed, the
// persistent sessions held here whose delivery it stored, and those it
// left to a routed delivery (RemoteSessions.Deferred); shared holds the
// shared subscription groups' deliveries to be routed (to members of
// other nodes, or deferred ones of this node).
type routedTargets struct {
	stored, deferred []string
	shared           []SharedPick
}

// DeliverRouted gives d.Msg, which another node stored for clientID's
// session as routed delivery d.ID (RemoteSessions), to that session when
// this node holds it: matched against the session's own subscriptions as
// a message published here would be (QoS, retain as published, no local,
// subscription identifiers; of the shared ones, those of the groups that
// chose it, d.Shared), and stored as one of its deliveries in a
// transaction that then runs d.Remove (which deletes the routed record). A
// delivery the session has already had (the same id) only runs remove;
// one d.Taken reports taken is dropped (whoever took it deleted its
// record). It reports false when the session is not held here: the
// record is left for the node that holds it.
func (b *Broker) DeliverRouted(clientID string, d RoutedDelivery) bool {
	id, m, remove := d.ID, d.Msg, d.Remove
	if b.pauses != nil {
		// Not into a session another node took while this one was paused
		// (pause.go): held until the node knows (the stream keeps it).
		for e := b.pauses.look(); e > b.resynced.Load(); {
			if err := b.afterPause(e); err == nil || b.halt.Err() != nil {
				break
			}
		}
	}
	b.sessMu.Lock()
	s := b.sessions[clientID]
	b.sessMu.Unlock()
	if s == nil {
		return false
	}
	tx := b.newTxn()
	if tx == nil {
		return false // stopped
	}
	// The message is durable as the routed record: should the delivery's
	// writes fail, the session has it all the same (the record stays, for
	// whoever holds the session next).
	tx.durable = true
	now := b.clk.Now().UnixNano()
	// A QoS 1 delivery waits for its PUBACK before it is written
	// (parked.go); not while the broker stops, nor one a shared
	// subscription's group chose this session for.
	park := m.QoS == 1 && len(d.Shared) == 0 && !b.closing.Load()
	s.mu.Lock()
	if s.ended || d.Taken != nil && d.Taken() {
		s.mu.Unlock()
		tx.discard()
		return false
	}
	b.deliverRoutedLocked(s, id, m, d.Shared, now, tx, park)
	tx.write(remove, nil)
	if park {
		b.parkLocked(s, tx)
		s.mu.Unlock()
		return true
	}
	s.mu.Unlock()
	b.commit(tx, nil)
	return true
}

// HoldsSession reports whether clientID's session is on this node: the
// cluster state decodes a routed delivery only for a session it holds.
func (b *Broker) HoldsSession(clientID string) bool {
	b.sessMu.Lock()
	defer b.sessMu.Unlock()
	return b.sessions[clientID] != nil
}

// RoutedDelivery is a routed delivery an adopted session takes with its
// stored state (AdoptSession): the message, its id, and remove, which
// deletes its record in the transaction that stores the delivery.
type RoutedDelivery struct {
	ID     MessageID
	Msg    *Message
	Remove func(Txn)
	// Shared names the shared subscription groups that chose the
	// session for the message (sharedcluster.go), with the QoS of its
	// subscription then.
	Shared []SharedPick
	// Taken, when set, reports whether the session has had the delivery
	// meanwhile by another way (an adoption of it read the record):
	// DeliverRouted asks it under the session's lock, after any wait,
	// and drops the delivery then.
	Taken func() bool
}

// deliverRoutedLocked gives s routed delivery id of m, as DeliverRouted
// describes, into tx. s.mu is held.
func (b *Broker) deliverRoutedLocked(s *session, id MessageID, m *Message, shared []SharedPick, now int64, tx *txnCtx, park bool) {
	d := delivery{msg: m, routed: id, single: true, parked: park}
	matched, plain := false, false
	for _, sub := range s.subs {
		if sub.group != "" {
			if _, ok := hasShared(shared, SharedGroup{sub.group, sub.inner}); !ok || !topic.Match(sub.inner, m.Topic) {
				continue
			}
			if d.shared == nil {
				d.shared = &sharedRef{sub.group, sub.inner}
			}
		} else if sub.noLocal && m.Origin == s.id || !topic.Match(sub.inner, m.Topic) {
			continue
		} else {
			plain = true
		}
		matched = true
		d.qos = max(d.qos, min(m.QoS, sub.qos))
		d.retain = d.retain || sub.retainAsPublished && m.Retain
		if sub.id != 0 {
			d.subIDs = append(d.subIDs, sub.id)
		}
	}
	if !matched && len(shared) > 0 {
		// Chosen by a group it has left since the publisher's index read
		// its record: it gets the message all the same, as one node's
		// member keeps what was queued for it before its UNSUBSCRIBE (the
		// group's one delivery, acknowledged to the publisher).
		matched = true
		d.shared = &sharedRef{shared[0].Group, shared[0].Filter}
		d.qos = min(m.QoS, shared[0].QoS)
	}
	if plain {
		d.shared = nil // reached through its own subscription too
	}
	if matched {
		s.deliverLocked(b, &d, now, tx) // once: not when it had id already
	}
}

// routedMemory bounds how many routed deliveries a session remembers
// having had. The cluster state never gives a session one twice (an
// adoption filters what it reads); this is the second line, for a twin
// that arrives close to the first.
const routedMemory = 32

// hadRouted reports whether s had routed delivery id lately. s.mu is held.
func (s *session) hadRouted(id MessageID) bool {
	return slices.Contains(s.routed, id)
}

// noteRouted remembers that s had routed delivery id. s.mu is held.
func (s *session) noteRouted(id MessageID) {
	if len(s.routed) < routedMemory {
		s.routed = append(s.routed, id)
		return
	}
	s.routed[s.routedNext] = id
	s.routedNext = (s.routedNext + 1) % routedMemory
}
