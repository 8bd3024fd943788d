package jsstate

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/store"
)

// The commit pipeline.
//
// Commit publishes a transaction's writes at once (pipelined on the
// store's connection) and the completer calls its done once JetStream
// acknowledged every one, or fails it after Options.AckTimeout. Three
// things keep a healthy majority acknowledging while JetStream elects a
// new leader for a stream whose leader was lost (a write sent to it then
// gets no answer, ever):
//
//   - Retries. Every write carries a Nats-Msg-Id (the node's incarnation
//     and a counter, unless the broker set one, see onceKey). A stream's
//     writes are kept, in publication order, until acknowledged; when the
//     oldest has had no answer for retryWait, every unacknowledged write
//     of that stream is published again, in their order, until their
//     commits' deadline. JetStream drops the copies of what it stored
//     (DuplicateWindow), and answers them with the first one's sequence.
//     Of several unacknowledged writes of one subject only the last is
//     published again, and an acknowledged write settles the earlier ones
//     of its subject: a stream keeps one message per subject, so a copy of
//     an older value sent after a newer one could otherwise land last.
//   - Order by lane. done is called in commit order only among commits
//     that share a lane: a stream written (each session shard, the
//     retained bucket), the local store, or a key the broker gives with
//     OrderBy (the publisher, whose acknowledgements leave in order). A
//     commit with neither writes nor keys (broker.Settle's barrier) waits
//     for every commit before it. So a lost leader holds up the commits of
//     its streams (and their publishers'), not the node's.
//   - Purges wait for their own stream only: a DeleteSession's purge runs
//     once the writes published to its shard before it are acknowledged,
//     and holds the shard's later writes until it is done, without
//     holding up the other streams (or Commit).

// retryWait is how long a stream's oldest unacknowledged write waits
// before the stream's unacknowledged writes are published again. A
// cluster with a quorum answers in milliseconds (hundreds under heavy
// load); JetStream takes seconds to elect a new leader for a stream
// whose leader was lost, so this costs a few copies per write at most.
const retryWait = time.Second

// retryTick is how often the retrier looks for streams to publish again
// and for commits past their deadline.
const retryTick = 100 * time.Millisecond

// DuplicateWindow is how long the session streams and the retained bucket
// remember the Nats-Msg-Id of a write (JetStream's default, set
// explicitly): a copy of a write published again within it is dropped.
// It must exceed AckTimeout, past which nothing is published again.
const DuplicateWindow = 2 * time.Minute

// purgeAttempt bounds one purge request; a purge is tried again until its
// commit's deadline.
const purgeAttempt = 2 * time.Second

// lane is one stream's writes, in the order they were published.
type lane struct {
	name string // the stream, for errors
	// shard is the session shard (purges), -1 for the retained bucket.
	shard int
	// writes holds the published writes not settled yet, in publication
	// order (settled ones are dropped from the front lazily).
	writes []*write
	open   int // writes not settled
	// subjects holds, per subject, its writes not settled yet, in order.
	subjects map[string][]*write
	// purging is the purge under way on this stream; held the writes (and
	// purges) committed after it or while the stream is stalled, published
	// once it is done and the stream answers again.
	purging *write
	held    []*write
	// stalled is set when the oldest write waited retryWait: the stream's
	// new writes are held until every published one is answered, so that
	// the copies published again land before them (a stream's writes stay
	// in the order they were committed; a consumer reads routed
	// deliveries in that order).
	stalled bool
	// probe is the write published again to learn when the stalled
	// stream answers again; tried when it was.
	probe   *write
	tried   time.Time
	drained chan struct{} // closed when open reaches 0 while purging
}

// write is one write of a commit: a message to publish, or (purge set)
// the removal of a client's records.
type write struct {
	msg      *nats.Msg // with its Nats-Msg-Id (and TTL) headers
	purge    string    // the subject filter of a purge
	p        *pending
	lane     *lane
	session  string            // the client whose session record msg is, or ""
	answered func(copied bool) // called with JetStream's answer (op.answered)
	subs     uint64            // with session, the record's subscriptions (subsPrint)
	// routed is the client whose routed delivery msg is, or "", and seq
	// the stream sequence JetStream acknowledged it at (0: not).
	routed string
	seq    uint64
	dup    bool // acknowledged as a copy of one stored before (Nats-Msg-Id)
	// tries are the messages published for it (nats.go calls back with
	// them), sent the time of the last.
	tries   []*nats.Msg
	sent    time.Time
	settled bool // acknowledged, superseded, or dropped with its commit
	acked   bool // acknowledged, or superseded by an acknowledged one
}

// pending is a committed transaction waiting for its acknowledgements.
// Its fields are guarded by Store.pmu.
type pending struct {
	done      func(error)
	err       error
	left      int // writes, purges and the local commit not settled yet
	resolved  bool
	committed time.Time
	deadline  time.Time
	writes    []*write
	keys      []string // the lanes it orders on
	// waits counts the earlier commits sharing a lane not finished yet;
	// next are the later ones waiting for this one.
	waits    int
	next     []*pending
	lastNext *pending // the last appended to next (dependencies are counted once)
	finished bool
}

// newIncarnation returns a random prefix for this run's message ids.
func newIncarnation() string {
	var b [9]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// msgID returns the next Nats-Msg-Id of this run. s.qmu is held.
func (s *Store) msgID() string {
	s.msgSeq++
	return s.incarnation + "." + strconv.FormatUint(s.msgSeq, 36)
}

// jetStreamOptions are the store's publisher options: acknowledgements
// are handled by callbacks (Commit keeps no future), nats.go forgets an
// unanswered publish after AckTimeout (retries replace it long before),
// and the commit queue, not nats.go, bounds what is in flight.
func (s *Store) jetStreamOptions() []jetstream.JetStreamOpt {
	return []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
			s.acked(m, ack)
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			s.refused(m, err)
		}),
		jetstream.WithPublishAsyncTimeout(s.opts.AckTimeout),
		jetstream.WithPublishAsyncMaxPending(1 << 20),
	}
}

// laneOf returns the lane of o: its session shard's, or the retained
// bucket's.
func (s *Store) laneOf(o *op) *lane {
	if o.purge != "" {
		return s.lanes[o.shard]
	}
	if rest, ok := strings.CutPrefix(o.msg.Subject, sessionsPrefix); ok {
		if i := strings.IndexByte(rest, '.'); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil && n >= 0 && n < s.opts.Shards {
				return s.lanes[n]
			}
		}
	}
	return s.lanes[len(s.lanes)-1]
}

// sessionsPrefix starts the subjects of the session streams.
const sessionsPrefix = "edgeport.sessions."

// Commit implements broker.Durable. Writes are published without waiting;
// a purge (DeleteSession) runs once every write published to its shard
// before it is acknowledged, and the shard's writes after it are published
// once it is done. Internal clients' writes go to the local store.
func (s *Store) Commit(bt broker.Txn, done func(error)) {
	t := bt.(*txn)
	if done == nil {
		done = func(error) {}
	}
	// A slot first, outside qmu: the retrier and the purges take qmu to
	// publish, and the slots free only as commits finish.
	select {
	case s.slots <- struct{}{}:
	case <-s.quit:
		t.Discard()
		done(store.ErrClosed)
		return
	}
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.closed {
		<-s.slots
		t.Discard()
		done(store.ErrClosed)
		return
	}
	now := time.Now()
	p := &pending{done: done, committed: now, deadline: now.Add(s.opts.AckTimeout)}
	if len(t.ops) > 0 && !s.isReady() {
		p.err = ErrNotReady
		for _, o := range t.ops {
			if o.routed != "" {
				s.routedEnd(o.routed, 0)
			}
		}
		t.ops = nil
	}
	var publish []*write
	s.pmu.Lock()
	s.outstanding = append(s.outstanding, p)
	for i := range t.ops {
		o := &t.ops[i]
		l := s.laneOf(o)
		w := &write{msg: o.msg, purge: o.purge, p: p, lane: l, session: o.session, answered: o.answered, subs: o.subs, routed: o.routed}
		if w.msg != nil {
			if w.msg.Header.Get(jetstream.MsgIDHeader) == "" {
				w.msg.Header.Set(jetstream.MsgIDHeader, s.msgID())
			}
			if o.ttl {
				w.msg.Header.Set(jetstream.MsgTTLHeader, tombstoneTTL.String())
			}
		}
		p.writes = append(p.writes, w)
		p.left++
		p.addKey("l" + l.name)
		switch {
		case l.purging != nil || l.stalled || len(l.held) > 0:
			l.held = append(l.held, w)
		case w.purge != "":
			s.startPurge(l, w)
		default:
			s.track(w, now)
			publish = append(publish, w)
		}
	}
	if t.local != nil {
		p.left++
		p.addKey("local")
	}
	for _, k := range t.keys {
		p.addKey("k" + k)
	}
	for _, n := range t.shards {
		p.addKey("l" + s.lanes[n].name)
	}
	s.order(p)
	if p.left == 0 {
		s.resolve(p)
	}
	s.pmu.Unlock()
	if t.local != nil {
		s.local.Commit(t.local, func(err error) { s.localDone(p, err) })
		t.local = nil
	}
	s.publish(publish)
}

// awaitShard returns once every commit made here before with a write to
// session shard n has finished (or ctx ends).
func (s *Store) awaitShard(ctx context.Context, n int) {
	done := make(chan struct{})
	s.Commit(&txn{s: s, shards: []int{n}}, func(error) { close(done) })
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// addKey adds lane key k to p once.
func (p *pending) addKey(k string) {
	for _, have := range p.keys {
		if have == k {
			return
		}
	}
	p.keys = append(p.keys, k)
}

// order makes p wait for the last unfinished commit of each of its lanes
// (all of them for a barrier) and become the last of its lanes. s.pmu is
// held.
func (s *Store) order(p *pending) {
	after := func(prev *pending) {
		if prev == nil || prev.finished || prev == p || prev.lastNext == p {
			return
		}
		prev.next = append(prev.next, p)
		prev.lastNext = p
		p.waits++
	}
	if len(p.keys) == 0 {
		for _, prev := range s.lastBy {
			after(prev)
		}
		after(s.lastBarrier)
		s.lastBarrier = p
		return
	}
	for _, k := range p.keys {
		after(s.lastBy[k])
		s.lastBy[k] = p
	}
}

// track adds w, about to be published, to its lane. s.pmu is held.
//
// A retained write expects the key's revision this node knows (unless an
// earlier write of this node to the key is not answered yet): one that
// lands late, after the node was cut off and its commit failed, does not
// replace a newer message another node retained meanwhile; JetStream
// refuses it. (Two nodes retaining on one topic at the same moment: the
// one whose view is behind is refused, 0x80, and its client resends.)
func (s *Store) track(w *write, now time.Time) {
	l := w.lane
	l.writes = append(l.writes, w)
	l.open++
	subj := w.msg.Subject
	if l.shard < 0 && len(l.subjects[subj]) == 0 {
		s.rmu.Lock()
		rev := s.retainedRev[subj]
		s.rmu.Unlock()
		w.msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	}
	l.subjects[subj] = append(l.subjects[subj], w)
	s.try(w, now)
}

// try registers a new attempt of w (published by the caller, under qmu).
// s.pmu is held.
func (s *Store) try(w *write, now time.Time) *nats.Msg {
	m := &nats.Msg{Subject: w.msg.Subject, Data: w.msg.Data, Header: w.msg.Header}
	w.tries = append(w.tries, m)
	w.sent = now
	s.attempts[m] = w
	return m
}

// publish sends the last attempt of each write, in order. s.qmu is held
// (it orders every publication), s.pmu is not.
func (s *Store) publish(ws []*write) {
	for _, w := range ws {
		s.pmu.Lock()
		if w.settled {
			// Settled since it was queued for publication (acknowledged,
			// superseded, or its commit failed): nothing to send.
			s.pmu.Unlock()
			continue
		}
		m := w.tries[len(w.tries)-1]
		s.pmu.Unlock()
		if _, err := s.js.PublishMsgAsync(m); err != nil {
			if errors.Is(err, nats.ErrConnectionClosed) {
				s.pmu.Lock()
				s.fail(w.p, fmt.Errorf("publishing to %s: %w", m.Subject, err))
				s.pmu.Unlock()
			}
			// Otherwise the retrier publishes it again.
		}
	}
}

// acked is nats.go's callback for an acknowledged publication.
func (s *Store) acked(m *nats.Msg, ack *jetstream.PubAck) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	w := s.attempts[m]
	if w == nil || w.settled {
		return
	}
	if w.session != "" && !ack.Duplicate {
		s.noteSession(w.session, ack.Sequence, w.subs)
	}
	if w.answered != nil {
		// A copy not of our own first attempt (it had none): another
		// node, or an earlier routing of the message, wrote this
		// delivery's entry (PutEntryOnce). Otherwise it is stored, and
		// the delivery is kept whatever becomes of its commit.
		copied := ack.Duplicate && len(w.tries) == 1
		if copied {
			s.copies.Add(1)
			s.log.Debug("a delivery's entry was written already by another node", "subject", w.msg.Subject, "msgid", w.msg.Header.Get(jetstream.MsgIDHeader), "seq", ack.Sequence)
		}
		w.answered(copied)
	}
	w.seq, w.dup = ack.Sequence, ack.Duplicate
	if w.lane.shard < 0 {
		s.noteRetained(w.msg.Subject, ack.Sequence)
	}
	// The earlier writes of the same subject are superseded: the stream
	// keeps this one.
	l := w.lane
	for _, e := range l.subjects[w.msg.Subject] {
		if e == w {
			break
		}
		e.acked = true
		s.settle(e)
		s.doneWrite(e.p)
	}
	w.acked = true
	s.settle(w)
	s.doneWrite(w.p)
}

// refused is nats.go's callback for a publication that failed: one the
// stream refused fails its commit; no answer in time, no responders, a
// disconnection or a copy of a write still being stored leave it to the
// retrier.
func (s *Store) refused(m *nats.Msg, err error) {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode == jsDuplicateInProcess || apiErr.ErrorCode == jsClusterNotLeader {
		return
	}
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if w := s.attempts[m]; w != nil && !w.settled {
		s.fail(w.p, fmt.Errorf("writing to JetStream (%s): %w", m.Subject, err))
	}
}

// JetStream error codes a retry may clear.
const (
	jsClusterNotLeader   = 10009 // JetStream cluster can not handle request
	jsDuplicateInProcess = 10158 // duplicate message id is in process
)

// noteRetained records that the retained key of subject is at revision
// rev at least.
func (s *Store) noteRetained(subject string, rev uint64) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if rev > s.retainedRev[subject] {
		s.retainedRev[subject] = rev
	}
}

// settle takes w out of its lane. s.pmu is held.
func (s *Store) settle(w *write) {
	if w.settled {
		return
	}
	w.settled = true
	for _, m := range w.tries {
		delete(s.attempts, m)
	}
	w.tries = nil
	if w.msg == nil || w.sent.IsZero() {
		return // a purge, or a write held behind one
	}
	l := w.lane
	l.open--
	subj := w.msg.Subject
	ws := l.subjects[subj]
	for i, e := range ws {
		if e == w {
			ws = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(l.subjects, subj)
	} else {
		l.subjects[subj] = ws
	}
	for len(l.writes) > 0 && l.writes[0].settled {
		l.writes[0] = nil
		l.writes = l.writes[1:]
	}
	if l.open == 0 && l.drained != nil {
		close(l.drained)
		l.drained = nil
	}
	if l.stalled && (l.open == 0 || w == l.probe) {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// doneWrite counts one write of p settled. s.pmu is held.
func (s *Store) doneWrite(p *pending) {
	if p.resolved {
		return
	}
	p.left--
	if p.left == 0 {
		s.resolve(p)
	}
}

// fail settles p with err (its unsettled writes are dropped). s.pmu is
// held.
func (s *Store) fail(p *pending, err error) {
	if p.resolved {
		return
	}
	p.err = err
	for _, w := range p.writes {
		s.settle(w)
	}
	s.resolve(p)
}

// localDone is the local store's result for p.
func (s *Store) localDone(p *pending, err error) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if err != nil {
		s.fail(p, err)
		return
	}
	s.doneWrite(p)
}

// resolve marks p settled: it finishes once the commits before it in its
// lanes have. s.pmu is held.
func (s *Store) resolve(p *pending) {
	p.resolved = true
	if p.waits == 0 {
		s.settledQ = append(s.settledQ, p)
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// complete calls each commit's done once it is settled and the commits
// before it in its lanes finished, so in commit order per lane. It
// returns once the store is closed and every commit finished.
func (s *Store) complete() {
	defer s.wg.Done()
	defer close(s.completed)
	for {
		s.pmu.Lock()
		batch := s.settledQ
		s.settledQ = nil
		if len(batch) == 0 && s.drainedAll() {
			s.pmu.Unlock()
			return
		}
		s.pmu.Unlock()
		if len(batch) == 0 {
			<-s.wake
			continue
		}
		for i := 0; i < len(batch); i++ {
			p := batch[i]
			s.checkOrder(p)
			p.done(p.err)
			s.pmu.Lock()
			batch = append(batch, s.finish(p)...)
			s.pmu.Unlock()
			<-s.slots
		}
	}
}

// drainedAll reports whether the store is closed and no commit is left.
// s.pmu is held.
func (s *Store) drainedAll() bool {
	return s.draining && len(s.outstanding) == 0
}

// finish records that p's done was called and returns the commits that
// may finish now. s.pmu is held.
func (s *Store) finish(p *pending) []*pending {
	p.finished = true
	for _, k := range p.keys {
		if s.lastBy[k] == p {
			delete(s.lastBy, k)
		}
	}
	if s.lastBarrier == p {
		s.lastBarrier = nil
	}
	var ready []*pending
	for _, q := range p.next {
		q.waits--
		if q.waits == 0 && q.resolved {
			ready = append(ready, q)
		}
	}
	p.next = nil
	for len(s.outstanding) > 0 && s.outstanding[0].finished {
		s.outstanding[0] = nil
		s.outstanding = s.outstanding[1:]
	}
	return ready
}

// retry runs until the store stops: it fails the commits past their
// deadline and publishes again the unacknowledged writes of every stream
// whose oldest one has waited retryWait.
func (s *Store) retry() {
	defer s.wg.Done()
	tick := time.NewTicker(retryTick)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-s.completed:
			return
		case <-tick.C:
		case <-s.kick: // a stalled stream answered
		}
		now := time.Now()
		paused := now.Sub(last) - retryTick
		last = now
		var due []*lane
		s.pmu.Lock()
		if paused >= pauseSlack {
			s.extendDeadlines(paused)
		}
		for _, p := range s.outstanding {
			if p.resolved {
				continue
			}
			d := s.deadlineOf(p)
			if d.After(now) {
				break // deadlines grow in commit order
			}
			s.fail(p, s.timeoutErr())
		}
		for _, l := range s.lanes {
			if s.needsCare(l, now) {
				due = append(due, l)
			}
		}
		s.pmu.Unlock()
		if len(due) > 0 {
			s.tend(due)
		}
	}
}

// pauseSlack is how late the retrier may run before the node counts
// itself paused: far more than a loaded machine's scheduling delay, far
// less than AckTimeout.
const pauseSlack = time.Second

// extendDeadlines moves every unsettled commit's deadline paused later:
// the node did not run for that long (SIGSTOP, a suspended VM, a
// starved process), so the acknowledgements JetStream sent meanwhile are
// still unread in its connection. A commit fails after AckTimeout of
// the node's own running time, not because the node was not looking:
// failing it would refuse (and drop the deliveries of) a publish
// JetStream stored, and a write stored under a message id (a delivery
// made once cluster-wide) would then never be made again. s.pmu is held.
func (s *Store) extendDeadlines(paused time.Duration) {
	n := 0
	for _, p := range s.outstanding {
		if !p.resolved {
			p.deadline = p.deadline.Add(paused)
			n++
		}
	}
	s.log.Warn("the node did not run for a while: its pending JetStream writes get that much longer", "paused", paused.Round(time.Millisecond), "commits", n)
}

// needsCare reports whether tend has something to do on l. s.pmu is held.
func (s *Store) needsCare(l *lane, now time.Time) bool {
	switch {
	case l.open == 0:
		return l.stalled
	case l.stalled:
		return l.probe != nil && l.probe.acked || now.Sub(l.tried) >= retryWait
	default:
		return now.Sub(l.writes[0].sent) >= retryWait
	}
}

// tend publishes again what lanes need. A stream whose oldest write had no
// answer for retryWait is stalled: its new writes are held, and the first
// of its unacknowledged writes is published again, every retryWait, until
// it is acknowledged (the stream has a leader again); then all the others,
// in their order; once every one is answered, the held writes. So a
// stream gets its writes in commit order even when a new leader is
// elected while copies are on their way.
func (s *Store) tend(lanes []*lane) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	now := time.Now()
	var publish []*write
	var resent int
	s.pmu.Lock()
	for _, l := range lanes {
		if !s.needsCare(l, now) {
			continue
		}
		switch {
		case l.open == 0:
			l.stalled, l.probe = false, nil
			publish = append(publish, s.release(l, now)...)
		case l.stalled && l.probe != nil && l.probe.acked:
			l.probe, l.tried = nil, now
			for _, w := range l.writes {
				if s.resendable(w) {
					s.try(w, now)
					publish = append(publish, w)
					resent++
				}
			}
		default:
			l.stalled, l.probe, l.tried = true, nil, now
			for _, w := range l.writes {
				if s.resendable(w) {
					l.probe = w
					s.try(w, now)
					publish = append(publish, w)
					resent++
					break
				}
			}
		}
	}
	s.pmu.Unlock()
	s.resent.Add(uint64(resent))
	s.publish(publish)
}

// resendable reports whether w is published again: unanswered, and the
// last write of its subject. s.pmu is held.
func (s *Store) resendable(w *write) bool {
	if w.settled {
		return false
	}
	same := w.lane.subjects[w.msg.Subject]
	return same[len(same)-1] == w
}

// abortAll fails every commit not settled yet with store.ErrClosed.
func (s *Store) abortAll() {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	for _, p := range s.outstanding {
		s.fail(p, fmt.Errorf("writing to JetStream: stopped before the acknowledgement: %w", store.ErrClosed))
	}
}

// deadlineOf is when p fails: AckTimeout after its commit, or StopGrace
// after the later of its commit and the node's stop once it is stopping.
func (s *Store) deadlineOf(p *pending) time.Time {
	if at := s.stopAt.Load(); at != 0 {
		from := time.Unix(0, at)
		if p.committed.After(from) {
			from = p.committed
		}
		if d := from.Add(StopGrace); d.Before(p.deadline) {
			return d
		}
	}
	return p.deadline
}

func (s *Store) timeoutErr() error {
	if s.stopAt.Load() != 0 {
		return fmt.Errorf("writing to JetStream: no acknowledgement within %v of the node's stop: %w", StopGrace, store.ErrClosed)
	}
	return fmt.Errorf("writing to JetStream: no acknowledgement within %v", s.opts.AckTimeout)
}

// release publishes, in order, the writes l held while a purge was under
// way or it was stalled, up to the next purge (which it starts); the
// caller publishes what it returns, under s.qmu. s.pmu is held.
func (s *Store) release(l *lane, now time.Time) []*write {
	if l.purging != nil || l.stalled {
		return nil
	}
	var publish []*write
	held := l.held
	l.held = nil
	for i, h := range held {
		if h.settled {
			continue // its commit failed meanwhile
		}
		if h.purge != "" {
			l.held = held[i+1:]
			s.startPurge(l, h)
			break
		}
		s.track(h, now)
		publish = append(publish, h)
	}
	return publish
}

// startPurge makes w the purge under way on l: it runs once l's writes
// published before it are acknowledged. s.pmu is held.
func (s *Store) startPurge(l *lane, w *write) {
	l.purging = w
	if l.open > 0 {
		l.drained = make(chan struct{})
	}
	drained := l.drained
	s.wg.Add(1)
	go s.runPurge(l, w, drained)
}

// runPurge removes the records under w.purge once the writes before it on
// its stream are acknowledged, then publishes the stream's writes held
// behind it.
func (s *Store) runPurge(l *lane, w *write, drained chan struct{}) {
	defer s.wg.Done()
	s.pmu.Lock()
	deadline := s.deadlineOf(w.p)
	s.pmu.Unlock()
	ctx, cancel := context.WithDeadline(s.halt, deadline)
	defer cancel()
	// Once the node is stopping, StopGrace more at most.
	defer context.AfterFunc(s.stopping, func() { time.AfterFunc(StopGrace, cancel) })()
	err := func() error {
		if drained != nil {
			select {
			case <-drained:
			case <-ctx.Done():
				return fmt.Errorf("removing %s: earlier writes not acknowledged: %w", w.purge, ctx.Err())
			}
		}
		for {
			actx, acancel := context.WithTimeout(ctx, purgeAttempt)
			err := s.streams[l.shard].Purge(actx, jetstream.WithPurgeSubject(w.purge))
			acancel()
			if err == nil {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("removing %s: %w", w.purge, err)
			case <-time.After(setupRetry):
			}
		}
	}()
	s.qmu.Lock()
	defer s.qmu.Unlock()
	s.pmu.Lock()
	if err != nil {
		s.fail(w.p, err)
	} else if !w.settled {
		s.settle(w)
		s.doneWrite(w.p)
	}
	l.purging = nil
	publish := s.release(l, time.Now())
	s.pmu.Unlock()
	s.publish(publish)
}

// checkOrder fails p with ErrOutOfOrder when one of its routed
// deliveries was stored before a routed delivery of a commit this node
// made earlier to the same stream and acknowledged (a write published
// again after its stream's leader was lost lands after the later writes
// that reached the new leader first), and counts p's routed deliveries
// done with (Deferred). The completer calls it just before p's done:
// every earlier commit sharing a lane with p has finished.
func (s *Store) checkOrder(p *pending) {
	var routed []*write
	for _, w := range p.writes {
		if w.routed != "" {
			routed = append(routed, w)
		}
	}
	if len(routed) == 0 {
		return
	}
	if p.err == nil {
		for _, w := range routed {
			// A copy of a routed delivery stored before (the same
			// Nats-Msg-Id, see onceKey) changes nothing where it is.
			if w.seq != 0 && !w.dup && w.seq < s.landed[w.lane.name] {
				p.err = fmt.Errorf("writing to JetStream: %s sequence %d, after %d: %w", w.lane.name, w.seq, s.landed[w.lane.name], ErrOutOfOrder)
				break
			}
		}
	}
	for _, w := range routed {
		if p.err == nil && !w.dup {
			s.landed[w.lane.name] = max(s.landed[w.lane.name], w.seq)
		}
		s.routedEnd(w.routed, w.seq)
	}
}
