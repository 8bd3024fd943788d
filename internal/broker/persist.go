package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
)

// Persistence. With a store attached, everything a persistent session (one
// with a non-zero expiry interval) must not lose is written to it:
//
//   - a QoS 1/2 delivery to a persistent session is an Entry, written in the
//     same transaction as the publisher's inbound QoS 2 state and retained
//     change; the publisher's PUBACK/PUBREC is sent only when that
//     transaction is durable (group commit), so kill -9 loses nothing that
//     was acknowledged;
//   - a QoS 2 delivery's packet identifier is durable before the PUBLISH is
//     written, and its PUBREC state before the PUBREL, so redelivery after a
//     crash reuses the identifier and the receiver deduplicates: exactly once;
//   - acknowledgements delete entries asynchronously (a crash before the
//     delete redelivers QoS 1, which at-least-once allows);
//   - sessions (subscriptions, expiry, will) are written on connect,
//     disconnect and subscription change; SUBACK waits for durability.
//
// The store's Commit is never called with a broker lock held: changes made
// under session.mu or Broker.sessMu queue their transaction on the broker's
// commitQueue, and whoever made them flushes it once the locks are
// released (see commitQueue). Commit callbacks run on the store's committer
// goroutine and only ever take client.outMu.

// txnCtx gathers one operation's writes and the actions that must wait for
// them to be durable.
//
// A routing txnCtx is shared: the deliveries it puts are visible to other
// goroutines (a subscriber's PUBACK, a queue drain) before the publisher
// hands it to the store. Their writes for such a delivery must not reach the
// store ahead of its put, or the put would land after its own deletion and
// stay on disk for ever; so until the txnCtx is submitted they go into it
// (write reports whether it still takes them).
//
// mu is held only inside txnCtx's methods (write, empty, discard, submit):
// no function returns with it held, and nothing is called under it but the
// store.Txn's own methods and, in submit, commitQueue.push.
type txnCtx struct {
	mu        sync.Mutex // guards txn, post and submitted
	txn       Txn
	post      []func()
	submitted bool // queued for the store (or discarded): txn is no longer ours
	// failed is set when the store refused the writes (quota, I/O): the
	// publisher was told so, and deliveries made under tx that have not
	// reached a subscriber yet are dropped rather than sent.
	failed atomic.Bool
	// durable marks a txnCtx whose deliveries are durable elsewhere
	// already (made from routed deliveries, or restored): should its
	// writes fail, they are delivered all the same, not refused.
	durable bool
}

// refused reports whether d was routed under writes the store refused.
// A delivery whose first write the Durable dropped as one another node
// made already (OnceTxn) is refused likewise: the session has it there.
// One whose first write the Durable stored is not, whatever became of its
// transaction: JetStream holds its entry, and the message routed again
// under its id (the publisher's resend through another node) would be
// dropped as a copy of it, so that dropping it too lost it.
func (d *delivery) refused() bool {
	if d.first != nil {
		switch {
		case d.first.copied.Load():
			return true
		case d.first.stored.Load():
			return false
		}
	}
	return d.tx != nil && d.tx.failed.Load()
}

// empty reports whether tx holds nothing to write or run.
func (tx *txnCtx) empty() bool {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return tx.txn.Len() == 0 && len(tx.post) == 0
}

// write applies f to tx's store transaction and queues post (either may be
// nil) to run once the writes are durable, unless tx was submitted already;
// it reports whether it did. A nil tx (no store, or the broker stopped)
// takes nothing.
func (tx *txnCtx) write(f func(Txn), post func()) bool {
	if tx == nil {
		return false
	}
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.submitted {
		return false
	}
	if f != nil {
		f(tx.txn)
	}
	if post != nil {
		tx.post = append(tx.post, post)
	}
	return true
}

// putEntry writes delivery d of s with packet identifier id (0: queued)
// into tx; false when tx no longer takes writes.
func (tx *txnCtx) putEntry(s *session, d *delivery, id uint16, released bool) bool {
	return tx.write(func(t Txn) { s.putEntry(t, d, id, released) }, nil)
}

// deleteEntry deletes entry seq of clientID in tx; false when tx no longer
// takes writes.
func (tx *txnCtx) deleteEntry(clientID string, seq uint64) bool {
	return tx.write(func(t Txn) { t.DeleteEntry(clientID, seq) }, nil)
}

// orderBy orders tx's completion after that of the transactions committed
// before with the same key (see OrderedTxn); a store that completes in
// commit order needs nothing.
func (tx *txnCtx) orderBy(key string) {
	if tx == nil {
		return
	}
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if o, ok := tx.txn.(OrderedTxn); ok && !tx.submitted {
		o.OrderBy(key)
	}
}

// discard drops tx's writes and post actions unsubmitted.
func (tx *txnCtx) discard() {
	if tx == nil {
		return
	}
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if !tx.submitted {
		tx.submitted = true
		tx.txn.Discard()
	}
}

func (b *Broker) newTxn() *txnCtx {
	if b.st == nil || b.stopped.Load() {
		return nil
	}
	return &txnCtx{txn: b.st.NewTxn()}
}

// submit queues tx's writes for the store (see commitQueue); the post
// actions and done run once they are durable. With nothing to write, done
// runs at once. It takes no lock but tx's and the queue's, so it may be
// called under any broker lock; the caller flushes once it holds none.
func (b *Broker) submit(tx *txnCtx, done func(error)) {
	if tx == nil {
		if done != nil {
			done(nil)
		}
		return
	}
	tx.submit(b, done)
}

// commit submits tx and flushes: the caller holds no broker lock.
func (b *Broker) commit(tx *txnCtx, done func(error)) {
	b.submit(tx, done)
	b.flush()
}

// submit is Broker.submit for a non-nil tx.
func (tx *txnCtx) submit(b *Broker, done func(error)) {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	tx.submitted = true
	if tx.txn.Len() == 0 && len(tx.post) == 0 && done == nil {
		tx.txn.Discard()
		return
	}
	post := tx.post
	// Queued under tx.mu, so every write another goroutine adds for one
	// of tx's deliveries goes either into tx or into a transaction queued
	// after it.
	b.commits.push(tx.txn, func(err error) {
		if err != nil {
			if !tx.durable {
				tx.failed.Store(true)
			}
			b.stats.storeErrors.Add(1)
			if !errors.Is(err, store.ErrQuotaExceeded) {
				// Every publish fails alike while the cause lasts.
				b.errs.Log(slog.LevelError, "commit", "store commit failed", "err", err)
			}
		}
		for _, f := range post {
			f()
		}
		if done != nil {
			done(err)
		}
	})
}

// commitQueue hands the broker's transactions to the store in the order
// their changes were made, without anyone holding a broker lock while
// store.Commit runs (it blocks while the store's queue is full).
//
// Code that changes durable state under session.mu or Broker.sessMu pushes
// the transaction here, which only appends, and once it has released those
// locks calls Broker.flush. Each change is pushed under the lock that
// orders it, the queue keeps that order, one goroutine at a time hands
// queued transactions to the store, and the store commits in submission
// order; so two records of one session, an entry's put and its deletion, or
// an ended session's range deletion and the records of the session that
// replaces it, reach the disk in the order they were made.
//
// flush submits what is queued itself when nobody else is submitting (the
// common, uncontended case costs no goroutine switch), but one batch only:
// what was pushed meanwhile is left to the broker's submitter goroutine
// (runCommits), so a connection's goroutine never works for others for
// long. A flush that finds a submitter at work returns at once, unless more
// than the store's own queue is waiting: then it waits for room, so that
// producers still slow down to the store's pace.
type commitQueue struct {
	mu         sync.Mutex // guards every field below
	work       sync.Cond  // signals runCommits: a batch is left over, or closing
	room       sync.Cond  // broadcast when a submitter takes the queue or finishes
	q, spare   []queuedCommit
	submitting bool // a goroutine is handing a batch to the store
	closed     bool // Stop: runCommits drains the queue and exits
	// queued mirrors len(q), written under mu: flush reads it without the
	// lock, so a publish with nothing to store (the common case) does not
	// contend on mu with every other connection's.
	queued atomic.Int32
}

type queuedCommit struct {
	txn  Txn
	done func(error)
}

// commitQueueLimit is how many transactions may wait before a flush waits
// for room: the store's own queue length.
const commitQueueLimit = store.DefaultQueueSize

// push queues t; done runs once t is durable (or refused).
func (q *commitQueue) push(t Txn, done func(error)) {
	q.mu.Lock()
	q.q = append(q.q, queuedCommit{t, done})
	q.queued.Store(int32(len(q.q)))
	q.mu.Unlock()
}

// take makes the caller the submitter of everything queued. q.mu is held.
func (q *commitQueue) take() []queuedCommit {
	batch := q.q
	q.q, q.spare = q.spare[:0], nil
	q.queued.Store(0)
	q.submitting = true
	q.room.Broadcast()
	return batch
}

// taken ends a submission; what was pushed meanwhile goes to runCommits.
// q.mu is held.
func (q *commitQueue) taken(batch []queuedCommit) {
	clear(batch)
	q.spare = batch[:0]
	q.submitting = false
	q.room.Broadcast()
	if len(q.q) > 0 || q.closed {
		q.work.Signal()
	}
}

func (b *Broker) submitBatch(batch []queuedCommit) {
	for i := range batch {
		b.st.Commit(batch[i].txn, batch[i].done)
	}
}

// flush hands queued transactions to the store (see commitQueue). Call it
// with no broker lock held, and never from a commit callback (the store's
// committer would wait for itself).
func (b *Broker) flush() {
	if b.st == nil {
		return // nothing is ever queued
	}
	q := &b.commits
	if q.queued.Load() == 0 {
		// The common case: nothing waits, or a submitter took it. What
		// this goroutine pushed is seen here (it stored queued), unless a
		// submitter took it since.
		return
	}
	q.mu.Lock()
	if len(q.q) == 0 {
		q.mu.Unlock()
		return
	}
	if q.submitting {
		for q.submitting && len(q.q) >= commitQueueLimit {
			q.room.Wait()
		}
		q.mu.Unlock()
		return // the submitter or runCommits takes ours
	}
	// A few batches at most: pushes that come while this one submits are
	// usually few and taken here without waking runCommits; under a
	// steady stream, runCommits takes over.
	for i := 1; ; i++ {
		batch := q.take()
		q.mu.Unlock()
		b.submitBatch(batch)
		q.mu.Lock()
		if len(q.q) == 0 || i == flushBatches {
			q.taken(batch)
			break
		}
		clear(batch)
		q.spare = batch[:0]
	}
	q.mu.Unlock()
}

// flushBatches bounds the batches one flush submits before it leaves the
// rest to runCommits.
const flushBatches = 4

// runCommits submits what flushes leave over, until stopCommits; Start
// runs it on a goroutine of its own when a store is attached.
func (b *Broker) runCommits(done chan<- struct{}) {
	defer close(done)
	q := &b.commits
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		switch {
		case len(q.q) > 0 && !q.submitting:
			batch := q.take()
			q.mu.Unlock()
			b.submitBatch(batch)
			q.mu.Lock()
			q.taken(batch)
		case q.closed && len(q.q) == 0 && !q.submitting:
			return
		default:
			q.work.Wait()
		}
	}
}

// stopCommits returns once everything queued is handed to the store and
// runCommits has exited. Later pushes are submitted by their own flush.
func (b *Broker) stopCommits() {
	if b.commitsDone == nil {
		return
	}
	q := &b.commits
	q.mu.Lock()
	q.closed = true
	q.work.Signal()
	q.mu.Unlock()
	<-b.commitsDone
}

// persistent reports whether s is written to the store. s.mu is held.
func (s *session) persistent(b *Broker) bool { return b.st != nil && s.expiry > 0 && !s.ended }

// keepsWill reports whether s is written to the store for its will alone:
// in cluster mode a network client's session that ends with its
// connection (expiry 0) but has a will is stored while connected, so that
// if its node dies the node that adopts the session publishes the will
// (the connection ended without DISCONNECT). s.mu is held.
func (s *session) keepsWill(b *Broker) bool {
	return b.st != nil && b.owner != nil && !s.internal && s.will != nil && s.client != nil && !s.ended
}

// stores reports whether s is written to the store. s.mu is held.
func (s *session) stores(b *Broker) bool { return s.persistent(b) || s.keepsWill(b) }

// restore loads the attached store's contents; Start calls it.
func (b *Broker) restore() error {
	st := b.st
	now := b.clk.Now()
	restored, queued := 0, 0
	var expiredSessions []string
	var fx restoreEffects
	err := st.Load(store.LoadFuncs{
		Session: func(rec *store.Session, entries []store.Entry, inbound []uint16) error {
			s, err := b.restoreSession(rec, entries, inbound, now, &fx)
			if err != nil {
				return fmt.Errorf("restoring session %q: %w", rec.ClientID, err)
			}
			if s == nil {
				expiredSessions = append(expiredSessions, rec.ClientID)
				return nil
			}
			restored++
			queued += len(entries)
			return nil
		},
		Retained: func(rec *store.Message) error {
			m, err := messageFromRecord(rec)
			if err != nil {
				return fmt.Errorf("restoring retained message %q: %w", rec.Topic, err)
			}
			if m.expired(now.UnixNano()) {
				return nil
			}
			b.setRetained(m, nil)
			return nil
		},
	})
	if err != nil {
		return err
	}
	if len(expiredSessions) > 0 || len(fx.rewrite) > 0 || len(fx.entries) > 0 {
		tx := b.st.NewTxn()
		for _, id := range expiredSessions {
			tx.DeleteSession(id)
		}
		for _, rec := range fx.rewrite {
			tx.PutSession(rec)
		}
		for i := range fx.entries {
			tx.PutEntry(fx.entries[i].clientID, &fx.entries[i].e)
		}
		if err := b.commitSync(tx); err != nil {
			return fmt.Errorf("updating restored sessions: %w", err)
		}
	}
	b.heldMu.Lock()
	for _, w := range fx.wills {
		b.heldWills = append(b.heldWills, func() { b.publishWill(w) })
	}
	b.heldMu.Unlock()
	b.log.Info("restored broker state", "sessions", restored, "messages", queued,
		"retained", b.stats.retained.Load(), "expired_sessions", len(expiredSessions), "took", b.clk.Now().Sub(now).String())
	return nil
}

// ReleaseWills publishes the wills that AttachStore found due and starts
// the delays of the other restored wills. Call it once every listener's
// authentication and authorization is in force (SetListenerSecurity): a
// will is published only if its owner may publish there under the policy
// in force when it goes out, and before that the broker does not know the
// policies. A second call does nothing.
func (b *Broker) ReleaseWills() {
	b.heldMu.Lock()
	held := b.heldWills
	b.heldWills = nil
	b.heldMu.Unlock()
	for _, f := range held {
		f()
	}
}

// restoreEffects is what restoring sessions leaves for AttachStore to do
// once everything is restored: wills due now are published then, so that
// they reach every restored subscriber and replace retained messages stored
// before them; session records are rewritten when their will is gone or the
// broker stopped while they were connected (the restart time stands for
// their disconnection, so that later restarts count from it).
type restoreEffects struct {
	// adopt marks a session taken from another node (AdoptSession)
	// rather than restored at Start: its will delay starts at once.
	adopt bool
	// claim is the cluster claim token an adopted session is held under.
	claim   uint64
	wills   []*Message
	rewrite []*store.Session
	entries []restoredEntry // entries whose packet identifier changed
	// routed, when set (AdoptSession), gives the routed deliveries the
	// session takes after its stored ones, delivered into tx before the
	// session is seen by anyone else.
	routed func() []RoutedDelivery
	tx     *txnCtx
}

type restoredEntry struct {
	clientID string
	e        store.Entry
}

// restoreSession rebuilds one session; it returns nil when the session
// expired while the broker was down (its will, if any, is published).
func (b *Broker) restoreSession(rec *store.Session, entries []store.Entry, inbound []uint16, now time.Time, fx *restoreEffects) (*session, error) {
	var will *Message
	if rec.Will != nil && rec.Owner == nil {
		// Written before owners were kept: nobody can say whether the
		// will is authorised, so it is not published.
		b.log.Warn("dropping a restored will whose owner is unknown (stored by an earlier version)", "client", rec.ClientID, "topic", rec.Will.Topic)
		rec.Will = nil
		fx.rewrite = append(fx.rewrite, rec)
	}
	if rec.Will != nil {
		w, err := messageFromRecord(rec.Will)
		if err != nil {
			return nil, err
		}
		w.willExpiry = rec.WillExpiry
		w.owner = b.restoredOwner(rec.ClientID, rec.Owner)
		will = w
	}
	// A session connected when the broker stopped is taken as disconnected now.
	offlineSince := now
	if rec.DisconnectedAt != 0 {
		offlineSince = time.Unix(0, rec.DisconnectedAt)
	} else {
		rec.DisconnectedAt = now.UnixNano()
		if n := len(fx.rewrite); n == 0 || fx.rewrite[n-1] != rec {
			fx.rewrite = append(fx.rewrite, rec)
		}
	}
	down := now.Sub(offlineSince)
	if rec.Expiry != expiryNever && down >= rec.Expiry {
		if will != nil {
			fx.wills = append(fx.wills, will)
		}
		return nil, nil
	}
	s := &session{id: rec.ClientID, expiry: rec.Expiry, version: packet.Version(rec.Version), will: will, willDelay: rec.WillDelay,
		stored: true, offlineSince: offlineSince.UnixNano(), claim: fx.claim}
	if o := rec.Owner; o != nil && o.Listener == InternalListener {
		s.internal = true
	} else if o != nil {
		s.owner = &Principal{ClientID: rec.ClientID, Username: o.Username, Attributes: o.Attributes, Method: o.Method}
		s.ownerListener = o.Listener
	}
	if err := b.restoreDeliveries(s, entries, fx); err != nil {
		return nil, err
	}
	for _, id := range inbound {
		if s.awaitingRel == nil {
			s.awaitingRel = make(map[uint16]struct{})
		}
		s.awaitingRel[id] = struct{}{}
	}
	// The session appears whole: its subscriptions, stored deliveries and
	// routed deliveries are in place before a publisher or a connection
	// can reach it (an adopted session's routed deliveries come before
	// anything published after).
	b.sessMu.Lock()
	b.sessions[s.id] = s
	s.mu.Lock()
	b.sessMu.Unlock()
	s.count(&b.stats.sessions, 1)
	for _, r := range rec.Subs {
		sub := &subscription{filter: r.Filter, qos: r.QoS, noLocal: r.NoLocal, retainAsPublished: r.RetainAsPublished,
			retainHandling: r.RetainHandling, id: r.ID, inner: r.Filter}
		if strings.HasPrefix(r.Filter, "$share/") {
			if rest, ok := strings.CutPrefix(r.Filter, "$share/"); ok {
				if i := strings.IndexByte(rest, '/'); i > 0 {
					sub.group, sub.inner = rest[:i], rest[i+1:]
				}
			}
		}
		if s.subs == nil {
			s.subs = make(map[string]*subscription)
		}
		s.subs[sub.filter] = sub
		b.subscribe(s, sub)
		s.count(&b.stats.subscriptions, 1)
	}
	if fx.routed != nil {
		nowNs := now.UnixNano()
		for _, r := range fx.routed() {
			b.deliverRoutedLocked(s, r.ID, r.Msg, r.Shared, nowNs, fx.tx, false)
			fx.tx.write(r.Remove, nil)
		}
	}
	if s.expiry != expiryNever {
		s.expiryTimer = b.clk.AfterFunc(s.expiry-down, func() { b.inBackground(func() { b.expireSession(s) }) })
	}
	if will != nil {
		delay := s.willDelay - down
		if delay <= 0 {
			s.will = nil
			fx.wills = append(fx.wills, will)
			// Published, the will leaves the stored record too, or the
			// next start would publish it again.
			if n := len(fx.rewrite); n == 0 || fx.rewrite[n-1] != rec {
				fx.rewrite = append(fx.rewrite, rec)
			}
			rec.Will = nil
		} else {
			s.willDelay = delay
			if fx.adopt {
				// Adopted from another node: the policies are in force.
				b.scheduleWillLocked(s) // has a delay: returns nil
				s.mu.Unlock()
				return s, nil
			}
			// Held like the due wills: the delay may end before the
			// listeners' policies are in force.
			b.heldMu.Lock()
			b.heldWills = append(b.heldWills, func() {
				s.mu.Lock()
				defer s.mu.Unlock()
				if s.client == nil && !s.ended && s.will != nil && s.willTimer == nil {
					b.scheduleWillLocked(s) // has a delay: returns nil
				}
			})
			b.heldMu.Unlock()
		}
	}
	s.mu.Unlock()
	return s, nil
}

// restoreDeliveries puts a restored session's stored deliveries (in Seq
// order, which is the order they reached the session) back into its
// inflight window and queue so that they are resent in that order.
//
// A delivery sent straight to a connected client is stored with its packet
// identifier; one sent from the queue keeps its queued record (no
// identifier: QoS 1 may be redelivered as a new PUBLISH) unless it is QoS 2,
// whose identifier is stored before it is sent. So the stored window may
// hold a delivery with an identifier after ones without, and restoring by
// identifier alone would resend it first. Instead:
//
//   - the leading deliveries that have an identifier are the window,
//     resent with DUP under it (MQTT 5 §4.4);
//   - an unreleased QoS 2 delivery with an identifier must keep it (the
//     receiver may hold it to deduplicate), so the window extends to the
//     last one, and the deliveries without an identifier before it join
//     the window under new identifiers, in order (a new PUBLISH, no DUP);
//   - after the window, a QoS 1 delivery that had an identifier is queued
//     again as a new delivery, which at-least-once allows;
//   - a released QoS 2 delivery (PUBREL pending: its message was
//     delivered) stays in the window wherever it is, with its identifier.
//
// Entries whose identifier changes are rewritten (fx), so that the store
// matches the window before any client connects.
func (b *Broker) restoreDeliveries(s *session, entries []store.Entry, fx *restoreEffects) error {
	first := len(entries) // the first entry without an identifier
	for i := range entries {
		if entries[i].PacketID == 0 {
			first = i
			break
		}
	}
	last := -1 // the last unreleased QoS 2 entry with an identifier
	for i := first; i < len(entries); i++ {
		if e := &entries[i]; e.PacketID != 0 && e.QoS == 2 && !e.Released {
			last = i
		}
	}
	window := max(first, last+1)
	kept := make(map[uint16]bool) // identifiers restored as they were
	for i := range entries {
		if e := &entries[i]; e.PacketID != 0 && (i < window || e.Released) {
			kept[e.PacketID] = true
		}
	}
	for i := range entries {
		e := &entries[i]
		m, err := messageFromRecord(&e.Msg)
		if err != nil {
			return err
		}
		d := delivery{msg: m, qos: e.QoS, retain: e.Retain, subIDs: e.SubIDs, seq: e.Seq, routed: e.Routed}
		if !d.routed.IsZero() {
			s.noteRouted(d.routed)
		}
		if e.SharedGroup != "" {
			d.shared = &sharedRef{group: e.SharedGroup, filter: e.SharedFilter}
		}
		if e.Seq > s.seq {
			s.seq = e.Seq
		}
		switch {
		case e.PacketID != 0 && (i < window || e.Released):
			s.restoreFlight(&flight{delivery: d, released: e.Released}, e.PacketID)
		case i < window:
			f := &flight{delivery: d, fresh: true}
			s.restoreFlight(f, s.freeID(kept))
			e.PacketID = f.id
			fx.entries = append(fx.entries, restoredEntry{s.id, *e})
		default:
			if e.PacketID != 0 {
				e.PacketID = 0
				fx.entries = append(fx.entries, restoredEntry{s.id, *e})
			}
			s.queue.push(d)
		}
	}
	return nil
}

// freeID returns a packet identifier that is neither in the window nor
// reserved. s.mu is held or s is not shared yet.
func (s *session) freeID(reserved map[uint16]bool) uint16 {
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, used := s.inflight[s.nextID]; !used && !reserved[s.nextID] {
			return s.nextID
		}
	}
}

// restoreFlight puts f back in the inflight window with its original
// packet identifier.
func (s *session) restoreFlight(f *flight, id uint16) {
	if s.inflight == nil {
		s.inflight = make(map[uint16]*flight)
	}
	f.id = id
	s.inflight[id] = f
	f.prev, f.next = s.newest, nil
	if s.newest != nil {
		s.newest.next = f
	} else {
		s.oldest = f
	}
	s.newest = f
	if id > s.nextID {
		s.nextID = id
	}
}

// restoredOwner is the authentication state a restored will is checked
// with: its owner's principal on its owner's listener. An internal
// client's will needs none.
func (b *Broker) restoredOwner(clientID string, o *store.Principal) *clientAuth {
	if o.Listener == InternalListener {
		return nil
	}
	a := &clientAuth{sec: b.secFor(o.Listener), ls: b.listenerStats(o.Listener), label: o.Method}
	a.principal.Store(&Principal{ClientID: clientID, Username: o.Username, Attributes: o.Attributes, Method: o.Method})
	return a
}

// ownerRecord is the durable form of who owns s. s.mu is held.
func (s *session) ownerRecord() *store.Principal {
	if s.internal {
		return &store.Principal{Listener: InternalListener}
	}
	if s.owner == nil {
		return nil
	}
	return &store.Principal{Listener: s.ownerListener, Username: s.owner.Username, Method: s.owner.Method, Attributes: s.owner.Attributes}
}

// record is the session's durable form. s.mu is held.
func (s *session) record(disconnectedAt int64) *store.Session {
	rec := &store.Session{ClientID: s.id, Version: byte(s.version), Expiry: s.expiry, DisconnectedAt: disconnectedAt, WillDelay: s.willDelay,
		Owner: s.ownerRecord()}
	for _, sub := range s.subs {
		rec.Subs = append(rec.Subs, store.Subscription{Filter: sub.filter, QoS: sub.qos, NoLocal: sub.noLocal,
			RetainAsPublished: sub.retainAsPublished, RetainHandling: sub.retainHandling, ID: sub.id})
	}
	if s.will != nil {
		w := messageRecord(s.will)
		rec.Will = &w
		rec.WillExpiry = s.will.willExpiry

	}
	return rec
}

// putEntry writes delivery d of s with packet identifier id (0: queued).
func (s *session) putEntry(tx Txn, d *delivery, id uint16, released bool) {
	e := store.Entry{Seq: d.seq, Msg: messageRecord(d.msg), QoS: d.qos, Retain: d.retain, SubIDs: d.subIDs, PacketID: id, Released: released,
		Routed: d.routed}
	if d.shared != nil {
		e.SharedGroup, e.SharedFilter = d.shared.group, d.shared.filter
	}
	if d.once {
		d.once = false // later writes of the entry (identifier, release) are not
		if o, ok := tx.(OnceTxn); ok {
			first := new(onceWrite)
			d.first = first
			o.PutEntryOnce(s.id, &e, func(copied bool) {
				if copied {
					first.copied.Store(true)
				} else {
					first.stored.Store(true)
				}
			})
			return
		}
	}
	tx.PutEntry(s.id, &e)
}

// deleteEntry queues the deletion of a persisted delivery; the caller
// flushes once it holds no broker lock.
func (b *Broker) deleteEntry(s *session, seq uint64) {
	if seq == 0 || b.st == nil || b.stopped.Load() {
		return
	}
	tx := b.st.NewTxn()
	tx.DeleteEntry(s.id, seq)
	b.commits.push(tx, nil)
}

// dropEntry removes d's store entry: inside the txnCtx that puts it while
// that is not yet submitted, otherwise in a transaction of its own, queued
// for the caller to flush.
func (b *Broker) dropEntry(s *session, d *delivery) {
	if d.seq == 0 || b.dropPending(s, d) {
		return
	}
	d.tx = nil
	b.deleteEntry(s, d.seq)
}

// dropPending deletes d's entry inside the txnCtx that puts it, if that is
// still pending, and reports whether it did.
func (b *Broker) dropPending(s *session, d *delivery) bool {
	return d.seq != 0 && d.tx.deleteEntry(s.id, d.seq)
}

// saveSessionLocked writes s (or deletes it when it is no longer
// persistent) and returns the transaction for the caller to submit. s.mu
// is held.
func (b *Broker) saveSessionLocked(s *session, disconnectedAt int64) *txnCtx {
	if b.st == nil {
		return nil
	}
	b.unparkLocked(s) // the session's deliveries before its record
	tx := b.newTxn()
	if tx == nil {
		return nil
	}
	if s.stores(b) {
		rec := s.record(disconnectedAt)
		tx.write(func(t Txn) { t.PutSession(rec) }, nil)
	} else if s.stored {
		tx.write(func(t Txn) { t.DeleteSession(s.id) }, nil)
	}
	s.stored = s.stores(b)
	return tx
}

// MessageRecord is the durable form of m.
func MessageRecord(m *Message) store.Message { return messageRecord(m) }

// MessageFromRecord rebuilds a message from its durable form.
func MessageFromRecord(r *store.Message) (*Message, error) { return messageFromRecord(r) }

func messageRecord(m *Message) store.Message {
	r := store.Message{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, Expiry: m.Expiry, Origin: m.Origin}
	if m.Props != nil {
		r.Props = packet.AppendProperties(nil, m.Props)
	}
	return r
}

func messageFromRecord(r *store.Message) (*Message, error) {
	m := &Message{Topic: r.Topic, Payload: r.Payload, QoS: r.QoS, Retain: r.Retain, Expiry: r.Expiry, Origin: r.Origin}
	if len(r.Props) > 0 {
		var p packet.Properties
		if err := packet.DecodeProperties(r.Props, &p); err != nil {
			return nil, fmt.Errorf("message properties: %w", err)
		}
		m.Props = &p
	}
	return m, nil
}
