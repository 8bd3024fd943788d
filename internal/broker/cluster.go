package broker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
)

// Ownership is asked, in cluster mode, which node owns a client's session:
// a client may connect to any node, and the one it connected to last
// holds its session while every other node lets go of it.
// internal/cluster/jsstate implements it with a compare-and-set in a
// JetStream key-value bucket; a single node has none and pays nothing.
//
// Internal clients ($edgeport/...) are never claimed: each node runs its
// own, under the same identifiers.
type Ownership interface {
	// Claim makes this node the owner of clientID's session before the
	// broker accepts the client's CONNECT, and returns the claim's token:
	// claims of one client get increasing tokens across the cluster. The
	// node that owned it before learns of it and calls TakenOver with the
	// token. An error (the cluster cannot be reached, or no quorum)
	// refuses the CONNECT with 0x88, Server unavailable.
	Claim(ctx context.Context, clientID string) (token uint64, err error)
	// Release gives clientID's ownership up when its session ended on
	// this node, unless a claim newer than token took it meanwhile. It
	// must not block: the broker calls it with its locks held.
	Release(clientID string, token uint64)
}

// ClaimTimeout bounds how long a CONNECT waits for the cluster to grant
// the client's session to this node.
const ClaimTimeout = 5 * time.Second

// AttachOwnership makes the broker claim every network client's session
// from o before accepting its CONNECT (cluster mode). Call it after New and
// before the broker serves connections.
func (b *Broker) AttachOwnership(o Ownership) { b.owner = o }

// claim asks the cluster for the session of c; it reports false when the
// cluster refused or could not be reached, with the reason.
func (c *client) claim() (ok bool, reason string) {
	o := c.b.owner
	if o == nil || c.trusted {
		return true, ""
	}
	if c.b.pauses != nil {
		// A pause from now on, during the claim too, is checked for
		// before this connection's first PUBLISH after it.
		c.pauseEpoch = c.b.pauses.look()
	}
	if peerGone(c.conn) {
		// Its client gave up waiting for the CONNACK and closed the
		// connection: nobody to serve. A node that thaws reads such
		// CONNECTs from its sockets (the client's attempts during the
		// freeze), and their claims took the session from the
		// connection the client had made meanwhile on another node
		// (0x8E, its PUBACKs still pending lost: refusals it never saw,
		// of messages it then resent elsewhere) or had another node
		// refuse its live CONNECT as overtaken.
		c.log.Info("not claiming the session of a client that closed its connection before its CONNACK", "client", c.id)
		return false, "client gone"
	}
	c.b.beginClaim(c.id)
	ctx, cancel := context.WithTimeout(c.b.halt, ClaimTimeout)
	defer cancel()
	token, err := o.Claim(ctx, c.id)
	if err != nil {
		c.b.endClaim(c.id)
		c.log.Warn("cluster refused the session claim", "client", c.id, "err", err)
		return false, "cluster unavailable"
	}
	c.claimToken = token
	return true, ""
}

// HeldUnder returns the claim under which this node holds clientID's
// session: the claim of its connection (or of its last one), of the
// adoption of a lost node's session, or of a claim under way here that
// adopted it (NoteClaim); false when the session is not here.
func (b *Broker) HeldUnder(clientID string) (uint64, bool) {
	b.sessMu.Lock()
	s := b.sessions[clientID]
	b.sessMu.Unlock()
	if s == nil {
		return 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return 0, false
	}
	return max(s.claim, s.adopted), true
}

// claimWatch is a client's claims under way on this node: the newest
// claim of another node the cluster told this one of meanwhile
// (TakenOver), and the newest token this node's own claims got
// (NoteClaim).
type claimWatch struct {
	n      int
	newest uint64
	mine   uint64
}

// NoteClaim tells the broker that a claim of clientID under way here got
// token (called by the Ownership as soon as its compare-and-set
// succeeded, before it adopts the session). The session the claim adopts
// (AdoptSession) is held under it from then on: news of an older claim of
// another node that reaches this node afterwards (TakenOver: a watch
// behind, a handoff request that took long) is stale for it and leaves it
// alone. Until the client's connection attaches, such a session carried
// no claim of its own (AdoptSession is given none), and that news handed
// it over again after this node had taken it back: `frozen-sub-n3:
// session not present after reconnecting to n3`, n3's watch, behind after
// a freeze, applying n2's claim 18 after n3's claim 19 had adopted the
// session from n2. A session this node held before, under an older
// claim, is still handed over by such news.
func (b *Broker) NoteClaim(clientID string, token uint64) {
	b.sessMu.Lock()
	defer b.sessMu.Unlock()
	if cw := b.claiming[clientID]; cw != nil && token > cw.mine {
		cw.mine = token
	}
}

// beginClaim notes a claim of clientID under way here, until endClaim.
func (b *Broker) beginClaim(clientID string) {
	b.sessMu.Lock()
	defer b.sessMu.Unlock()
	if b.claiming == nil {
		b.claiming = make(map[string]*claimWatch)
	}
	cw := b.claiming[clientID]
	if cw == nil {
		cw = new(claimWatch)
		b.claiming[clientID] = cw
	}
	cw.n++
}

// endClaim ends what beginClaim began.
func (b *Broker) endClaim(clientID string) {
	b.sessMu.Lock()
	defer b.sessMu.Unlock()
	b.endClaimLocked(clientID)
}

func (b *Broker) endClaimLocked(clientID string) {
	if cw := b.claiming[clientID]; cw != nil {
		if cw.n--; cw.n == 0 {
			delete(b.claiming, clientID)
		}
	}
}

// overtakenLocked reports whether another node's claim, newer than c's,
// reached this node while c's was under way: the other node holds the
// session now (it handed it over here or took it from here before c's
// session was attached, which then finds nothing to take), and c must
// not be served a second copy of it. Seen after a freeze: a client's
// CONNECT to the frozen node, read at the thaw, won a claim over the one
// its client had made on another node meanwhile; both nodes then held
// the session, the live connection's on an older claim, and the
// messages the frozen node's publishers gave its copy never reached the
// client. b.sessMu is held.
func (b *Broker) overtakenLocked(c *client) bool {
	cw := b.claiming[c.id]
	return cw != nil && c.claimToken != 0 && cw.newest > c.claimToken
}

// TakenOver is how the cluster tells this node that another node claimed
// clientID's session with token. A connection of the client here that
// was claimed before is told 0x8E (Session taken over), its will going
// out under the usual rules (a will without delay now; a delayed will
// stays with the session, which the new owner resumes or ends). A
// persistent session is then handed over: its record is written, it
// leaves this node's memory and routing, and nothing of it is deleted,
// for the new owner to load (AdoptSession). A session that is not
// persistent ends here.
//
// TakenOver returns once everything this node wrote before, for this
// session too, is durable (or ctx ends), so that the new owner, told so,
// loads it all. It reports whether a session was here to give up.
func (b *Broker) TakenOver(ctx context.Context, clientID string, token uint64) bool {
	// A client that sent DISCONNECT here and connected to another node at
	// once expects the DISCONNECT to count (no will, its session expiry).
	b.awaitLeavingOf(clientID)
	gone, wait := b.takenOver(clientID, token)
	b.Settle(ctx) // the handed-over session's record included
	waitCtx(ctx, wait)
	return gone
}

// Settle returns once every transaction this node submitted before is
// durable (or ctx ends): a barrier, whose callback runs after theirs.
func (b *Broker) Settle(ctx context.Context) {
	barrier := make(chan struct{})
	if tx := b.newTxn(); tx != nil {
		b.commit(tx, func(error) { close(barrier) })
	} else {
		close(barrier)
	}
	select {
	case <-barrier:
	case <-ctx.Done():
	}
}

// waitCtx waits for wg, or for ctx to end.
func waitCtx(ctx context.Context, wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// takenOver is TakenOver without the waiting: the returned group is done
// once the publishers' transactions still holding deliveries of the
// session are durable.
func (b *Broker) takenOver(clientID string, token uint64) (bool, *sync.WaitGroup) {
	wait := new(sync.WaitGroup)
	b.sessMu.Lock()
	if cw := b.claiming[clientID]; cw != nil && token > cw.newest {
		cw.newest = token
	}
	s := b.sessions[clientID]
	if s == nil || s.internal {
		b.sessMu.Unlock()
		return false, wait
	}
	s.mu.Lock()
	if max(s.claim, s.adopted) >= token {
		// A later connection here claimed it again, or a claim under way
		// here adopted it: the claim that beat this one's is older news.
		s.mu.Unlock()
		b.sessMu.Unlock()
		return false, wait
	}
	if old := s.client; old != nil {
		s.client = nil
		s.online.Store(false)
		s.count(&b.stats.connected, -1)
		old.disconnect(packet.SessionTakenOver, "another node took over the session")
		s.offlineSince = b.clk.Now().UnixNano()
		if due := b.scheduleWillLocked(s); due != nil {
			b.publishWillAfter(b.saveSessionLocked(s, s.offlineSince), due)
		}
	}
	s.claim = 0 // ours no longer: nothing to release
	if !s.persistent(b) {
		s.mu.Unlock()
		b.endSessionLocked(s)
		b.sessMu.Unlock()
		b.flush()
		b.sessionEnded(clientID)
		return true, wait
	}
	// A claim of this node under way, newer than the news, adopts the
	// stored session (NoteClaim): this copy, from before both, leaves
	// without writing its record over the one the claim reads.
	cw := b.claiming[clientID]
	b.handOverLocked(s, wait, cw == nil || cw.mine < token)
	s.mu.Unlock()
	delete(b.sessions, s.id)
	s.count(&b.stats.sessions, -1)
	b.sessMu.Unlock()
	b.flush()
	return true, wait
}

// handOverLocked writes s for its new owner (unless save is false: the
// stored state is newer) and takes it out of this node: out of routing, its timers stopped, its window and queue dropped
// from memory (they are in the store, for the new owner), so that a late
// acknowledgement on the old connection changes nothing. Deliveries whose
// publisher has not yet submitted their transaction are waited for
// through wait. b.sessMu and s.mu are held.
func (b *Broker) handOverLocked(s *session, wait *sync.WaitGroup, save bool) {
	if s.willTimer != nil {
		s.willTimer.Stop()
		s.willTimer = nil
	}
	if s.expiryTimer != nil {
		s.expiryTimer.Stop()
		s.expiryTimer = nil
	}
	if s.offlineSince == 0 {
		s.offlineSince = b.clk.Now().UnixNano()
	}
	b.unparkLocked(s) // written before the handover's barrier
	pending := make(map[*txnCtx]bool)
	hold := func(d *delivery) {
		if d.tx != nil && !pending[d.tx] {
			pending[d.tx] = true
			wait.Add(1)
			if !d.tx.write(nil, wait.Done) {
				wait.Done() // submitted already: queued before the barrier
			}
		}
	}
	for f := s.oldest; f != nil; f = f.next {
		hold(&f.delivery)
	}
	s.queue.filter(func(d *delivery) bool { hold(d); return false })
	s.inflight, s.oldest, s.newest = nil, nil, nil
	s.awaitingRel, s.phased = nil, nil
	if save {
		b.submit(b.saveSessionLocked(s, s.offlineSince), nil)
	}
	for _, sub := range s.subs {
		b.unsubscribe(s, sub)
		s.count(&b.stats.subscriptions, -1)
	}
	s.subs = nil
	s.will = nil
	s.ended = true // late deliveries are dropped
}

// AdoptSession makes a session stored by another node this node's, under
// the claim token (0: none), as Start restores a session from the store:
// subscriptions, the window with its packet identifiers, the queue,
// inbound QoS 2 state, the will and its delay, the expiry. It is called
// before the client's CONNECT attaches to a session another node handed
// over, and for the sessions of a node that was lost (or of this node's
// previous run), which then stay offline here until their client comes
// back. A session whose connection was live when it was last written
// (DisconnectedAt 0: its node died under it) counts as disconnected now,
// so its will's delay and its expiry start now. A session that expired
// meanwhile is deleted, its claim released and its will published. A
// session of the client already here is replaced.
//
// routed, when not nil, is called once the stored deliveries are in place
// and before the session can be reached by anything else (a publisher,
// a connection, DeliverRouted): the routed deliveries it returns are the
// session's next ones, in that order, each stored in one transaction with
// its Remove.
func (b *Broker) AdoptSession(rec *store.Session, entries []store.Entry, inbound []Inbound, token uint64, routed func() []RoutedDelivery) error {
	b.sessMu.Lock()
	if old := b.sessions[rec.ClientID]; old != nil {
		// Stale: this node handed it over earlier and missed nothing
		// since, or the claim raced, or a claim of this node replaced
		// it (held under an older claim); the stored state is the truth.
		old.mu.Lock()
		if c := old.client; c != nil {
			old.client = nil
			old.online.Store(false)
			old.count(&b.stats.connected, -1)
			c.disconnect(packet.SessionTakenOver, "the session was taken over")
		}
		b.handOverLocked(old, new(sync.WaitGroup), false)
		old.mu.Unlock()
		delete(b.sessions, old.id)
		old.count(&b.stats.sessions, -1)
	}
	b.sessMu.Unlock()
	now := b.clk.Now()
	tx := b.newTxn()
	if tx != nil {
		tx.durable = true // what it delivers was read from the store
	}
	fx := restoreEffects{adopt: true, claim: token, routed: routed, tx: tx}
	ids := make([]uint16, len(inbound))
	for i := range inbound {
		ids[i] = inbound[i].PacketID
	}
	s, err := b.restoreSession(rec, entries, ids, now, &fx)
	if err != nil {
		tx.discard()
		return fmt.Errorf("adopting the session of %q: %w", rec.ClientID, err)
	}
	if s != nil {
		b.sessMu.Lock()
		var mine uint64
		if cw := b.claiming[rec.ClientID]; cw != nil {
			mine = cw.mine // the claim under way that adopts it (NoteClaim)
		}
		b.sessMu.Unlock()
		s.mu.Lock()
		s.adoptInbound(inbound)
		s.adopted = mine
		s.mu.Unlock()
	}
	if s == nil {
		id := rec.ClientID
		tx.write(func(t Txn) { t.DeleteSession(id) }, nil)
		if token != 0 && b.owner != nil {
			// Given up once the deletion is durable, as endSessionLocked does.
			if !tx.write(nil, func() { b.owner.Release(id, token) }) {
				b.owner.Release(id, token)
			}
		}
	}
	for _, r := range fx.rewrite {
		tx.write(func(t Txn) { t.PutSession(r) }, nil)
	}
	for i := range fx.entries {
		e := &fx.entries[i]
		tx.write(func(t Txn) { t.PutEntry(e.clientID, &e.e) }, nil)
	}
	var will *Message
	if len(fx.wills) > 0 {
		will = fx.wills[0]
	}
	b.publishWillAfter(tx, will)
	b.flush()
	return nil
}

// Inbound is an inbound QoS 2 identifier a session stored in cluster
// mode: its PUBLISH under PacketID has not been released (PUBREL). Msg,
// when set, is the message stored with it and ID the identifier it is
// routed under (two phases, phased.go): a resend of the PUBLISH routes it
// again under ID, idempotently, before its PUBREC.
type Inbound struct {
	PacketID uint16
	ID       MessageID
	Msg      *Message
}

// SharedRetained keeps, in cluster mode, one set of retained messages for
// every node. The broker writes a retained change through its Durable
// (PutRetained, DeleteRetained) and does not apply it itself: every
// change, this node's too, comes back through ApplyRetained in the one
// order the cluster committed them, so all nodes converge on the same
// index.
type SharedRetained interface {
	// Sync returns once this node has applied every retained change the
	// cluster had committed when Sync was called: a subscription made
	// after a retained message was acknowledged, on any node, gets it.
	Sync(ctx context.Context) error
}

// AttachSharedRetained makes retained messages cluster-wide (see
// SharedRetained). Call it after New and before Start.
func (b *Broker) AttachSharedRetained(r SharedRetained) { b.sharedRet = r }

// ApplyRetained sets (rec non-nil) or clears the retained message of topic
// as the cluster committed it. An expired message clears the topic.
func (b *Broker) ApplyRetained(topic string, rec *store.Message) error {
	if rec == nil {
		if b.retained.Delete(topic) {
			b.stats.retained.Add(-1)
		}
		return nil
	}
	m, err := messageFromRecord(rec)
	if err != nil {
		return fmt.Errorf("retained message %q: %w", topic, err)
	}
	m.Topic = topic
	if m.expired(b.clk.Now().UnixNano()) || len(m.Payload) == 0 {
		return b.ApplyRetained(topic, nil)
	}
	if _, existed := b.retained.Get(topic); !existed {
		b.stats.retained.Add(1)
	}
	b.retained.Set(topic, m)
	return nil
}

// syncRetained waits, in cluster mode, until the retained index holds
// every change committed before; it reports false when it could not.
func (b *Broker) syncRetained() bool {
	if b.sharedRet == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(b.halt, ClaimTimeout)
	defer cancel()
	if err := b.sharedRet.Sync(ctx); err != nil {
		b.errs.Log(slog.LevelWarn, "retained-sync", "sending retained messages without the cluster's latest changes", "err", err)
		return false
	}
	return true
}
