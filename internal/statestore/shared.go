package statestore

import (
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"time"
)

// A shared backend (cluster mode) is written by every node. The executor
// works as on one node — every key in memory, requests executed in
// batches — with three differences:
//
//   - Each write is a compare-and-set on the revision of the key it
//     replaces. One refused because the key changed on another node is
//     undone alone (a batch never writes one key twice), the key is read
//     again from the backend, and the request is executed again: two
//     nodes racing on one key never both win, and NX, NEX, VDEL and
//     fencing tokens are decided on the key's latest state.
//   - Memory follows the backend's changes (Watch), every node's, in the
//     backend's order, and notifications come from there: each node
//     notifies its own clients' registrations of every change, once.
//   - A GET first learns the backend's last revision and waits until the
//     executor applied it, so it sees every write answered anywhere
//     before it arrived.

// maxAttempts bounds how often a request is executed again because its
// key kept changing; past it the request is answered 503.
const maxAttempts = 16

// sweepRetry is how long expiry waits after a sweep's deletion failed.
const sweepRetry = time.Second

// notifyWrite notifies a change the executor made. With a shared backend
// it does nothing: the change is notified when the backend delivers it,
// on every node.
func (e *executor) notifyWrite(c *chunk, key string, value []byte, version HLC) {
	if !e.shared {
		e.notify(c, key, value, version)
	}
}

// settle applies the outcome of a shared backend's commit: the writes
// stored get their revisions; a request whose write was refused is undone
// (memory, answers, metrics) and executed again (its key changed: read
// anew) or answered 503 (the backend could not store it). It returns the
// requests answered.
func (e *executor) settle(batch []*request, c *chunk, err error) []*request {
	failed := make([]error, len(batch)) // per request: why its write failed
	anyFailed := false
	for i := range e.ws {
		w := &e.ws[i]
		if err != nil && w.Err == nil {
			w.Err = err
		}
		if w.Err == nil {
			if en := e.wen[i]; en != nil {
				en.rev = w.Rev
				delete(e.tomb, w.Key)
			} else {
				e.tomb[w.Key] = w.Rev
			}
			continue
		}
		if ri := e.wreq[i]; ri >= 0 {
			failed[ri], anyFailed = w.Err, true
			continue
		}
		// The sweep's: expired on another node too, or no quorum.
		e.undoOne(e.wundo[i])
		e.delta.expired--
		e.writeFailed(w.Key, w.Err)
		if !errors.Is(w.Err, ErrConflict) {
			e.sweepAfter = e.now.Add(sweepRetry)
		}
	}
	if !anyFailed {
		return batch
	}
	// Undo newest first; drop the failed requests' answers.
	final := e.delta
	for ri := len(batch) - 1; ri >= 0; ri-- {
		if failed[ri] == nil {
			continue
		}
		from, to, after := e.markRange(ri, final)
		for j := to - 1; j >= from; j-- {
			e.undoOne(j)
		}
		e.delta.sub(&after, &e.marks[ri].delta)
	}
	keep := 0
	answered := batch[:0:0]
	for ri, r := range batch {
		from := e.marks[ri].msgs
		to := len(c.msgs)
		if ri+1 < len(e.marks) {
			to = e.marks[ri+1].msgs
		}
		if failed[ri] == nil {
			keep += copy(c.msgs[keep:], c.msgs[from:to])
			answered = append(answered, r)
			continue
		}
		for _, m := range c.msgs[from:to] {
			c.size -= len(m.Topic) + len(m.Payload)
		}
	}
	clear(c.msgs[keep:])
	c.msgs = c.msgs[:keep]
	for ri, r := range batch {
		err := failed[ri]
		if err == nil {
			continue
		}
		key := e.ws[e.writeOf(ri)].Key
		e.writeFailed(key, err)
		r.attempts++
		if errors.Is(err, ErrConflict) && r.attempts < maxAttempts {
			e.retry = append(e.retry, r)
			continue
		}
		e.unavailable(r, c)
		answered = append(answered, r)
	}
	return answered
}

// markRange returns the undo records of the batch's request ri and the
// metrics after it (final: after the last one).
func (e *executor) markRange(ri int, final delta) (from, to int, after delta) {
	from, to, after = e.marks[ri].undo, len(e.undo), final
	if ri+1 < len(e.marks) {
		to, after = e.marks[ri+1].undo, e.marks[ri+1].delta
	}
	return from, to, after
}

// writeOf returns the write of the batch's request ri (it has one).
func (e *executor) writeOf(ri int) int {
	for i, r := range e.wreq {
		if r == ri {
			return i
		}
	}
	panic("statestore: a failed request without a write")
}

// writeFailed reads key anew after a conflict, so that the next attempt
// decides on its latest state, and logs other failures.
func (e *executor) writeFailed(key string, err error) {
	if !errors.Is(err, ErrConflict) {
		e.s.errLog.Log(slog.LevelWarn, "shared store", "the shared state store refused a write", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.opts.SyncTimeout)
	defer cancel()
	ch, err := e.s.shared.Get(ctx, key)
	if err != nil {
		// The next attempt fails again, or the watch brings the key.
		e.s.errLog.Log(slog.LevelWarn, "shared get", "reading a key of the shared state store failed", "err", err)
		return
	}
	e.applyChange(&ch, nil, false)
}

// unavailable answers a request the shared backend could not serve.
func (e *executor) unavailable(r *request, c *chunk) {
	e.delta.errors[errKindStorage]++
	e.respondStatus(r, c, 503, "the state store cannot reach a quorum of the cluster", false)
}

// undoOne undoes the batch's undo record j.
func (e *executor) undoOne(j int) {
	saved := e.undo
	e.undo = e.undo[j : j+1]
	e.rollback()
	e.undo = saved
	// Done: later undo passes (finish's view update) see the key as it
	// is now, which is what they copy.
}

// sub subtracts the metrics between from and to (to - from) from d.
func (d *delta) sub(to, from *delta) {
	d.insertions -= to.insertions - from.insertions
	d.modifications -= to.modifications - from.modifications
	d.deletions -= to.deletions - from.deletions
	d.expired -= to.expired - from.expired
	d.retrievals -= to.retrievals - from.retrievals
	d.keyNotify -= to.keyNotify - from.keyNotify
	d.notifications -= to.notifications - from.notifications
	for i := range d.requests {
		d.requests[i] -= to.requests[i] - from.requests[i]
	}
	for i := range d.errors {
		d.errors[i] -= to.errors[i] - from.errors[i]
	}
}

// apply brings memory up to date with a delivery of the shared backend
// and notifies its changes once the initial content is in.
func (e *executor) apply(b changeBatch) {
	e.now = e.opts.Clock.Now()
	e.begin()
	c := e.s.getChunk()
	var last uint64
	for i := range b.cs {
		e.applyChange(&b.cs[i], c, b.live)
		last = max(last, b.cs[i].Rev)
	}
	e.live = e.live || b.live
	e.finish()
	e.s.publish(c)
	e.s.noteApplied(last)
}

// applyChange installs a change of the shared backend in memory, unless
// memory already holds it or a later one (this node's own writes are in
// memory from their commit), and notifies it when notify is set.
func (e *executor) applyChange(ch *Change, c *chunk, notify bool) {
	en, deleted, err := decodeChange(ch, e.intern)
	if err != nil {
		e.s.errLog.Log(slog.LevelWarn, "shared record", "ignoring a record of the shared state store", "err", err)
		return
	}
	k := ch.Key
	if ch.Rev > e.revOf(k) {
		if cur := e.keys[k]; cur != nil {
			e.count--
			e.bytes -= int64(len(k) + len(cur.value))
			delete(e.keys, k)
		}
		if en != nil {
			e.keys[k] = en
			e.count++
			e.bytes += int64(len(k) + len(en.value))
			if en.expiry != 0 {
				heap.Push(&e.exp, expiryItem{at: en.expiry, key: k, e: en})
			}
			delete(e.tomb, k)
			e.clock.observe(en.version)
		} else {
			e.tomb[k] = ch.Rev
			e.clock.observe(deleted)
		}
		e.s.view.mu.Lock()
		if en != nil {
			e.s.view.keys[k] = en
		} else {
			delete(e.s.view.keys, k)
		}
		e.s.view.mu.Unlock()
	}
	if !notify || c == nil {
		return
	}
	if en != nil {
		e.notify(c, k, en.value, en.version)
		return
	}
	if deleted.IsZero() {
		// Deleted by another program: a version of our own.
		deleted = e.clock.tick(e.now, nil)
	}
	e.notify(c, k, nil, deleted)
}

// deliver is the shared backend's Watch callback: it hands the changes to
// the executor.
func (s *Server) deliver(cs []Change, live bool) {
	select {
	case s.changes <- changeBatch{cs: cs, live: live}:
	case <-s.stopping:
	}
}

// noteApplied records that the executor applied the shared backend up to
// rev, waking the GETs waiting for it.
func (s *Server) noteApplied(rev uint64) {
	s.amu.Lock()
	defer s.amu.Unlock()
	if rev > s.applied {
		s.applied = rev
		close(s.appliedCh)
		s.appliedCh = make(chan struct{})
	}
}

// maxSyncBatch bounds the requests one syncLoop round releases.
const maxSyncBatch = 1024

// syncLoop releases the requests in arrival order once the executor
// applied every change the shared backend acknowledged before they
// arrived: one LastRevision per round for every request that came while
// the previous round was under way, so publishers never wait for it and
// a round's cost is shared. A GET is then answered from the view (or by
// the executor, behind its client's write of the key), and a write
// decides NX, NEX, VDEL and fencing on the key's latest state. When the
// backend cannot say (no quorum), GETs and writes are answered 503.
func (s *Server) syncLoop() {
	defer s.wg.Done()
	var batch []*request
	for {
		select {
		case r := <-s.syncReqs:
			batch = append(batch, r)
		case <-s.stopping:
			return
		}
	drain:
		for len(batch) < maxSyncBatch {
			select {
			case r := <-s.syncReqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		ok := s.syncReads()
		for _, r := range batch {
			r.unavailable = !ok
			s.dispatch(r)
		}
		clear(batch)
		batch = batch[:0]
	}
}

// syncReads waits until the executor applied every change the shared
// backend acknowledged before the call; false when that cannot be known
// within SyncTimeout (no quorum).
func (s *Server) syncReads() bool {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.SyncTimeout)
	defer cancel()
	rev, err := s.shared.LastRevision(ctx)
	if err != nil {
		s.errLog.Log(slog.LevelWarn, "shared sync", "a GET could not learn the shared state store's last revision", "err", err)
		return false
	}
	for {
		s.amu.Lock()
		applied, changed := s.applied, s.appliedCh
		s.amu.Unlock()
		if applied >= rev {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		case <-s.stopping:
			return false
		}
	}
}
