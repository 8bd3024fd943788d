package broker

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/edgeport/edgeport/internal/mqtt/topic"
)

// target collects, for one session, every subscription a message matched:
// a session gets one delivery carrying the highest QoS and all subscription
// identifiers, as MQTT 5 allows and 3.1.1 requires.
type target struct {
	s      *session
	qos    byte
	retain bool
	ids    []uint32
	shared *sharedRef
}

// router is per-publish scratch space, pooled so routing allocates nothing
// in the steady state.
type router struct {
	b       *Broker
	m       *Message
	targets []target
	index   map[*session]int // used once targets outgrow a linear scan
	refs    []sharedRef
}

var routerPool = sync.Pool{New: func() any { return &router{} }}

const linearCollate = 16

func (r *router) add(s *session, sub *subscription) {
	m := r.m
	if sub.noLocal && m.Origin == s.id {
		return
	}
	qos := min(m.QoS, sub.qos)
	retain := sub.retainAsPublished && m.Retain
	i := -1
	if r.index != nil {
		if j, ok := r.index[s]; ok {
			i = j
		}
	} else {
		for j := range r.targets {
			if r.targets[j].s == s {
				i = j
				break
			}
		}
	}
	if i < 0 {
		r.targets = append(r.targets, target{s: s, qos: qos, retain: retain, ids: r.idsFor(len(r.targets))})
		i = len(r.targets) - 1
		if r.index != nil {
			r.index[s] = i
		} else if len(r.targets) > linearCollate {
			r.index = make(map[*session]int, 2*len(r.targets))
			for j := range r.targets {
				r.index[r.targets[j].s] = j
			}
		}
	} else {
		t := &r.targets[i]
		t.qos = max(t.qos, qos)
		t.retain = t.retain || retain
	}
	if sub.id != 0 {
		r.targets[i].ids = append(r.targets[i].ids, sub.id)
	}
}

// addDirect makes the session of clientID a target when no subscription
// made it one already, so that it gets the message exactly once.
func (r *router) addDirect(clientID string) {
	r.b.sessMu.Lock()
	s := r.b.sessions[clientID]
	r.b.sessMu.Unlock()
	if s == nil {
		return // no session: nobody to tell
	}
	for j := range r.targets {
		if r.targets[j].s == s {
			return
		}
	}
	r.targets = append(r.targets, target{s: s, qos: r.m.QoS, ids: r.idsFor(len(r.targets))})
	if r.index != nil {
		r.index[s] = len(r.targets) - 1
	}
}

// idsFor reuses the identifier slice a pooled target slot had before.
func (r *router) idsFor(slot int) []uint32 {
	if slot < cap(r.targets) {
		return r.targets[:slot+1][slot].ids[:0]
	}
	return nil
}

func (r *router) addShared(group, filter string, members []topic.Member[*session, *subscription]) {
	if len(members) == 0 {
		return
	}
	rr := r.b.sharedCounter(sharedRef{group, filter})
	start := int(rr.Add(1))
	pick := members[start%len(members)]
	for i := range members {
		mb := members[(start+i)%len(members)]
		if mb.Key.online.Load() {
			pick = mb
			break
		}
	}
	r.addMember(group, filter, pick.Key, pick.Value)
}

// addMember makes s, the member a shared subscription group chose, a
// target through sub; a session that is a target already (another of its
// subscriptions matched) gets the one delivery it has.
func (r *router) addMember(group, filter string, s *session, sub *subscription) {
	before := len(r.targets)
	r.add(s, sub)
	if len(r.targets) > before {
		r.refs = append(r.refs, sharedRef{group, filter})
		r.targets[len(r.targets)-1].shared = &r.refs[len(r.refs)-1]
	}
}

func (b *Broker) sharedCounter(ref sharedRef) *atomic.Uint32 {
	b.sharedMu.RLock()
	c := b.sharedRR[ref]
	b.sharedMu.RUnlock()
	if c != nil {
		return c
	}
	b.sharedMu.Lock()
	defer b.sharedMu.Unlock()
	if c = b.sharedRR[ref]; c == nil {
		c = new(atomic.Uint32)
		b.sharedRR[ref] = c
	}
	return c
}

// route delivers m to every matching session and reports how many it
// reached. Writes for persistent sessions go into tx (nil without a store).
// In a cluster, shared subscriptions are left to the cluster, which picks
// one member per group across the nodes (RouteSharedFromPeer).
func (b *Broker) route(m *Message, tx *txnCtx) int {
	return b.routeFrom(m, tx, true, nil)
}

// routeFrom is route; local is false for a message another node published,
// which this node's services (Serve) do not take: each node's state store
// answers its own clients, the publisher's node answers its request. With
// tg non-nil (a message routed durably, RemoteSessions), it collects the
// clients whose sessions stored a delivery of m in tx, and those deferred
// to a routed delivery.
func (b *Broker) routeFrom(m *Message, tx *txnCtx, local bool, tg *routedTargets) int {
	r := routerPool.Get().(*router)
	r.b, r.m = b, m
	shared := r.addShared
	if b.fwd != nil {
		shared = nil
	}
	b.subs.Match(m.Topic, r.add, shared)
	if m.DeliverTo != "" {
		r.addDirect(m.DeliverTo)
	}
	return r.deliver(tx, local, tg)
}

// deliver hands the message to every collected target, puts r back in
// its pool and returns how many targets there were. With tg non-nil, it
// collects the clients whose sessions stored a delivery in tx, and those
// deferred to a routed delivery.
func (r *router) deliver(tx *txnCtx, local bool, tg *routedTargets) int {
	b, m := r.b, r.m
	n := len(r.targets)
	var now int64
	if n > 0 {
		now = b.clk.Now().UnixNano()
		for i := range r.targets {
			t := &r.targets[i]
			d := delivery{msg: m, qos: t.qos, retain: t.retain, subIDs: t.ids, single: n == 1}
			if t.shared != nil {
				ref := *t.shared
				d.shared = &ref
			}
			if local && !m.RoutedID.IsZero() && d.qos > 0 {
				// Published here in two phases (phased.go): the delivery
				// is written once cluster-wide, whichever node routes it.
				d.routed = m.RoutedID
			}
			if !local && m.DurablyRouted && d.shared == nil && d.qos > 0 && t.s.skipsLive(b) {
				if b.remote == nil || b.remote.Covers(m, t.s.id) {
					continue // its owner takes it from the store (DeliverRouted)
				}
				// The publisher's index had not read this session's
				// subscriptions (a SUBSCRIBE just now): the live copy
				// counts, and a routed twin is dropped.
				d.routed = m.RoutedID
			} else if local {
				if tg != nil && d.qos > 0 && b.remote.Deferred(t.s.id, m.Origin) && t.s.skipsLive(b) {
					// Earlier routed deliveries of this node have not all
					// reached the session: this one follows them through
					// the stream.
					if d.shared != nil {
						tg.shared = append(tg.shared, SharedPick{ClientID: t.s.id, SharedGroup: SharedGroup{d.shared.group, d.shared.filter}, QoS: d.qos})
					} else {
						tg.deferred = append(tg.deferred, t.s.id)
					}
					continue
				}
			}
			t.s.deliver(b, &d, now, tx)
			if tg != nil && d.seq != 0 {
				tg.stored = append(tg.stored, t.s.id)
			}
		}
	}
	for i := range r.targets {
		r.targets[i].s, r.targets[i].shared = nil, nil
	}
	r.targets = r.targets[:0]
	r.refs = r.refs[:0]
	r.index = nil
	r.b, r.m = nil, nil
	routerPool.Put(r)
	// Another node's message (not local) was given to that node's
	// services there.
	if h := b.svcs.lookup(m.Topic); h != nil && local {
		// After the subscribers: the service may block its publisher.
		n++
		if m.Expiry != 0 && now == 0 {
			now = b.clk.Now().UnixNano()
		}
		if m.expired(now) {
			b.stats.drop(dropExpired, m.QoS)
		} else {
			h(m)
		}
	}
	if n == 0 {
		b.stats.noSubscribers.Add(1)
	}
	return n
}

// reroute gives a delivery that a leaving shared-subscription member never
// acknowledged to another online member of the same group: of this node,
// else (cluster mode) of another node, as a routed delivery
// (moveToRemote). It reports whether the caller is to drop from's entry
// now; a routed one drops it itself once the move is durable.
func (b *Broker) reroute(from *session, d delivery) bool {
	var to *session
	var sub *subscription
	b.subs.Match(d.msg.Topic, nil, func(group, filter string, members []topic.Member[*session, *subscription]) {
		if to != nil || group != d.shared.group || filter != d.shared.filter {
			return
		}
		for _, mb := range members {
			if mb.Key != from && mb.Key.online.Load() {
				to, sub = mb.Key, mb.Value
				return
			}
		}
	})
	if to == nil {
		if b.moveToRemote(from, d) {
			return false
		}
		b.stats.dropped[dropSessionEnded].Add(1)
		return true
	}
	d.qos = min(d.msg.QoS, sub.qos)
	d.subIDs = nil
	if sub.id != 0 {
		d.subIDs = []uint32{sub.id}
	}
	d.seq = 0
	tx := b.newTxn()
	to.deliver(b, &d, b.clk.Now().UnixNano(), tx)
	b.commit(tx, nil)
	return true
}

// deliver hands d to the session: straight to the connection when the
// inflight window allows, otherwise into the session queue. A QoS 1/2
// delivery to a persistent session is written to tx.
func (s *session) deliver(b *Broker, d *delivery, now int64, tx *txnCtx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deliverLocked(b, d, now, tx)
}

// skipsLive reports whether s, a persistent session, takes the QoS 1/2
// messages other nodes store for it durably from the store rather than
// from live routing (RouteFromPeer).
func (s *session) skipsLive(b *Broker) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.persistent(b) && !s.internal
}

// deliverLocked is deliver with s.mu held.
func (s *session) deliverLocked(b *Broker, d *delivery, now int64, tx *txnCtx) {
	if !d.routed.IsZero() {
		// Made from a routed delivery or a live copy of one, or published
		// here in two phases: once, here (the ring) and cluster-wide (its
		// entry's first write, OnceTxn: a node that lost the session, or
		// one routing it again, writes the same delivery once).
		if s.hadRouted(d.routed) {
			b.log.Debug("a delivery the session had lately dropped", "client", s.id, "routed", fmt.Sprintf("%x", d.routed[:]))
			return
		}
		s.noteRouted(d.routed)
		d.once = true
	}
	if d.msg.expired(now) {
		b.stats.drop(dropExpired, d.qos)
		return
	}
	if s.ended {
		b.stats.drop(dropSessionEnded, d.qos)
		return
	}
	c := s.client
	if d.qos == 0 {
		if c == nil {
			b.stats.drop(dropOfflineQoS0, 0)
			return
		}
		c.writePublish(d, 0, false, now)
		return
	}
	d.tx = nil
	if tx != nil && s.persistent(b) {
		if len(s.parked) > 0 && !d.parked {
			// Written after the parked ones, as it was made after them.
			b.unparkLocked(s)
		}
		s.seq++
		d.seq, d.tx = s.seq, tx
	}
	if c != nil && s.queue.len() == 0 && len(s.inflight) < c.sendQuota {
		s.sendFlight(b, c, d, now, tx)
		return
	}
	s.enqueue(b, d, tx)
}

// sendFlight opens an inflight entry for d and writes it. A persisted QoS 2
// delivery is written only once its packet identifier is durable, so that a
// redelivery after a crash reuses it. s.mu is held.
func (s *session) sendFlight(b *Broker, c *client, d *delivery, now int64, tx *txnCtx) {
	f := &flight{delivery: *d}
	if len(d.subIDs) > 0 {
		f.subIDs = append([]uint32(nil), d.subIDs...)
	}
	s.addFlight(f)
	switch {
	case f.seq == 0:
	case f.qos == 1:
		// Stored with its packet identifier, which costs nothing here, so
		// that a restart resends it with DUP under that identifier. From
		// the queue (tx nil) the entry stays as it was queued: resent after
		// a crash it becomes a new delivery, which QoS 1 allows.
		tx.putEntry(s, &f.delivery, f.id, false)
	default:
		// The PUBLISH leaves once the identifier is durable. From the
		// queue (tx nil), the txnCtx that queued the entry may still be
		// pending: the identifier then goes into it, after the put;
		// otherwise into a transaction of its own.
		put := func(t Txn) { s.putEntry(t, &f.delivery, f.id, false) }
		send := func() { c.writeFlight(f, now) }
		if tx != nil {
			tx.write(put, send)
			return
		}
		if f.tx.write(put, send) {
			return
		}
		if own := b.newTxn(); own != nil {
			own.write(put, send)
			b.submit(own, nil) // flushed by whoever took s.mu
			return
		}
		// The broker has stopped: nothing more is stored.
	}
	if !c.writePublish(&f.delivery, f.id, false, now) {
		s.removeFlight(f) // too large for the client: dropped as if delivered
		b.dropEntry(s, &f.delivery)
	}
}

func (s *session) enqueue(b *Broker, d *delivery, tx *txnCtx) {
	o := b.o()
	size := int64(len(d.msg.Payload))
	for ((o.MaxQueuedMessages > 0 && s.queue.len() >= o.MaxQueuedMessages) ||
		(o.MaxQueuedBytes > 0 && s.queue.bytes+size > o.MaxQueuedBytes)) && !b.outageBuffer(s) {
		if o.QueuePolicy == DropNew || s.queue.len() == 0 {
			b.stats.dropped[dropQueueFull].Add(1)
			return
		}
		old, _ := s.queue.pop()
		b.stats.dropped[dropQueueFull].Add(1)
		b.dropEntry(s, &old)
	}
	q := *d
	if len(d.subIDs) > 0 {
		q.subIDs = append([]uint32(nil), d.subIDs...)
	}
	if q.seq != 0 {
		tx.putEntry(s, &q, 0, false)
	}
	s.queue.push(q)
}

// drainLocked moves queued deliveries into the inflight window while it has
// room. s.mu is held.
func (s *session) drainLocked(b *Broker, now int64) {
	c := s.client
	if c == nil {
		return
	}
	if s.held > 0 && !s.sendHeldLocked(c, now) {
		return
	}
	for s.queue.len() > 0 {
		if len(s.inflight) >= c.sendQuota {
			return
		}
		d, _ := s.queue.pop()
		if d.refused() {
			b.stats.dropped[dropQuota].Add(1)
			continue
		}
		if d.msg.expired(now) {
			b.stats.drop(dropExpired, d.qos)
			b.dropEntry(s, &d)
			continue
		}
		if d.qos == 0 {
			c.writePublish(&d, 0, false, now)
			continue
		}
		s.sendFlight(b, c, &d, now, nil)
	}
}

// sendHeldLocked resends held deliveries, oldest first, while the window
// has room, and reports whether none is left held. s.mu is held.
func (s *session) sendHeldLocked(c *client, now int64) bool {
	for f, next := s.oldest, (*flight)(nil); f != nil && s.held > 0; f = next {
		next = f.next
		if !f.held {
			continue
		}
		if len(s.inflight)-s.held >= c.sendQuota {
			return false
		}
		f.held = false
		s.held--
		c.resendLocked(f, now)
	}
	return s.held == 0
}

// takeShared removes the deliveries that reached s through a shared
// subscription and are not yet acknowledged, for another member to take,
// when canMove says one can; with sentQoS2 false, QoS 2 deliveries that
// went out (their PUBLISH may have reached the client) stay. What no
// other member can take stays: the session outlives its connection (or
// ends, and drops it), and a resumed session sends it again, at least
// once. s.mu is held.
func (s *session) takeShared(canMove func(*delivery) bool, sentQoS2 bool) []delivery {
	var moved []delivery
	for f := s.oldest; f != nil; {
		next := f.next
		if f.shared != nil && !f.released && (sentQoS2 || f.qos < 2) && canMove(&f.delivery) {
			moved = append(moved, f.delivery)
			s.removeFlight(f)
		}
		f = next
	}
	s.queue.filter(func(d *delivery) bool {
		if d.shared != nil && canMove(d) {
			moved = append(moved, *d)
			return false
		}
		return true
	})
	return moved
}

// otherMemberOnline reports whether a member of the shared subscription
// that chose d, other than from, is online to take it: of this node, or
// (cluster mode) of another. Called under from.mu (trie read locks nest
// under session.mu).
func (b *Broker) otherMemberOnline(from *session, d *delivery) bool {
	if b.localMemberOnline(from, d) {
		return true
	}
	if d.qos > 1 {
		return false // see moveToRemote
	}
	_, ok := b.remoteMember(from, d, MessageID{})
	return ok
}

// localMemberOnline is otherMemberOnline for this node's members.
func (b *Broker) localMemberOnline(from *session, d *delivery) bool {
	found := false
	b.subs.Match(d.msg.Topic, nil, func(group, filter string, members []topic.Member[*session, *subscription]) {
		if found || group != d.shared.group || filter != d.shared.filter {
			return
		}
		for _, mb := range members {
			if mb.Key != from && mb.Key.online.Load() {
				found = true
				return
			}
		}
	})
	return found
}
