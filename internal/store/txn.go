package store

import (
	"fmt"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// Txn is a set of writes applied atomically, in the order they were added.
// Get one from NewTxn, add operations, and hand it to Commit or CommitSync
// (or drop it with Discard); the Txn must not be touched after that.
// A Txn is not safe for concurrent use.
type Txn struct {
	s   *Store
	b   *pebble.Batch
	key []byte // scratch for keys
	val []byte // scratch for encoded values

	ops      int
	addBytes int64 // bytes of Puts, checked against the quota
	err      error // first invalid operation; fails the whole Txn

	done   func(error)
	result error // set by the committer before done runs

	// CommitSync support: a Txn owns its reply channel so waiting costs no
	// allocation, and keep stops the committer from recycling the Txn
	// before the waiter has read the reply.
	keep     bool
	syncCh   chan error
	syncDone func(error)
}

// maxPooledScratch keeps one unusually large record from pinning its
// buffers in the pool.
const maxPooledScratch = 64 << 10

func newTxn(s *Store) *Txn {
	t := &Txn{s: s, syncCh: make(chan error, 1)}
	t.syncDone = func(err error) { t.syncCh <- err }
	return t
}

// NewTxn returns an empty Txn from the store's pool.
func (s *Store) NewTxn() *Txn {
	t := s.txnPool.Get().(*Txn)
	if t.b == nil {
		t.b = s.db.NewBatch()
	}
	return t
}

// Discard returns an uncommitted Txn to the pool.
func (t *Txn) Discard() { t.s.recycle(t) }

// Len returns the number of operations in the Txn.
func (t *Txn) Len() int { return t.ops }

// Err returns the first invalid operation added to the Txn, if any; Commit
// would fail the Txn with it.
func (t *Txn) Err() error { return t.err }

func (s *Store) recycle(t *Txn) {
	t.b.Reset()
	if cap(t.key) > maxPooledScratch {
		t.key = nil
	}
	if cap(t.val) > maxPooledScratch {
		t.val = nil
	}
	t.ops, t.addBytes = 0, 0
	t.err, t.result, t.done = nil, nil, nil
	t.keep = false
	s.txnPool.Put(t)
}

func (t *Txn) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

func validComponent(s string) bool { return strings.IndexByte(s, sep) < 0 }

func (t *Txn) checkClient(clientID string) bool {
	if !validComponent(clientID) {
		t.fail(fmt.Errorf("%w: NUL in client ID %q", ErrInvalid, clientID))
		return false
	}
	return true
}

func (t *Txn) set(key, val []byte) {
	if err := t.b.Set(key, val, nil); err != nil {
		t.fail(fmt.Errorf("store: batch set: %w", err))
		return
	}
	t.ops++
	t.addBytes += int64(len(key) + len(val))
}

func (t *Txn) delete(key []byte) {
	if err := t.b.Delete(key, nil); err != nil {
		t.fail(fmt.Errorf("store: batch delete: %w", err))
		return
	}
	t.ops++
}

// PutSession writes the session record, replacing any previous one. Its
// entries and inbound IDs are untouched.
func (t *Txn) PutSession(s *Session) {
	if !t.checkClient(s.ClientID) {
		return
	}
	if !validSession(s) {
		t.fail(fmt.Errorf("%w: session %q: QoS or retain handling out of range", ErrInvalid, s.ClientID))
		return
	}
	t.key = appendSessionKey(t.key[:0], s.ClientID)
	t.val = appendSession(t.val[:0], s)
	t.set(t.key, t.val)
}

// DeleteSession removes the session record and all of its entries and
// inbound IDs with one range deletion. A PutSession later in the same Txn
// survives it, which makes "clean start" a single Txn.
func (t *Txn) DeleteSession(clientID string) {
	if !t.checkClient(clientID) {
		return
	}
	t.key = appendClientPrefix(t.key[:0], clientID)
	start := len(t.key)
	t.key = append(t.key, t.key...)
	t.key[len(t.key)-1] = sep + 1
	if err := t.b.DeleteRange(t.key[:start], t.key[start:], nil); err != nil {
		t.fail(fmt.Errorf("store: batch delete range: %w", err))
		return
	}
	t.ops++
}

// PutEntry writes (or rewrites, e.g. once a packet ID is assigned) one
// entry of the client's queue.
func (t *Txn) PutEntry(clientID string, e *Entry) {
	if !t.checkClient(clientID) {
		return
	}
	if !validEntry(e) {
		t.fail(fmt.Errorf("%w: entry %q/%d: QoS out of range", ErrInvalid, clientID, e.Seq))
		return
	}
	t.key = appendEntryKey(t.key[:0], clientID, e.Seq)
	t.val = appendEntry(t.val[:0], e)
	t.set(t.key, t.val)
}

// DeleteEntry removes one entry.
func (t *Txn) DeleteEntry(clientID string, seq uint64) {
	if !t.checkClient(clientID) {
		return
	}
	t.key = appendEntryKey(t.key[:0], clientID, seq)
	t.delete(t.key)
}

// PutInbound records an inbound QoS 2 packet ID between PUBREC and PUBREL.
func (t *Txn) PutInbound(clientID string, packetID uint16) {
	if !t.checkClient(clientID) {
		return
	}
	t.key = appendInboundKey(t.key[:0], clientID, packetID)
	t.set(t.key, nil)
}

// DeleteInbound forgets an inbound QoS 2 packet ID (PUBREL received).
func (t *Txn) DeleteInbound(clientID string, packetID uint16) {
	if !t.checkClient(clientID) {
		return
	}
	t.key = appendInboundKey(t.key[:0], clientID, packetID)
	t.delete(t.key)
}

// PutRetained stores m as the retained message of m.Topic.
func (t *Txn) PutRetained(m *Message) {
	if !validMessage(m) {
		t.fail(fmt.Errorf("%w: retained %q: QoS out of range", ErrInvalid, m.Topic))
		return
	}
	t.key = appendRetainedKey(t.key[:0], m.Topic)
	t.val = appendMessage(t.val[:0], m)
	t.set(t.key, t.val)
}

// DeleteRetained clears the retained message of topic.
func (t *Txn) DeleteRetained(topic string) {
	t.key = appendRetainedKey(t.key[:0], topic)
	t.delete(t.key)
}

// PutKV stores value under bucket/key.
func (t *Txn) PutKV(bucket string, key, value []byte) {
	if !validComponent(bucket) {
		t.fail(fmt.Errorf("%w: NUL in bucket %q", ErrInvalid, bucket))
		return
	}
	t.key = appendKVKey(t.key[:0], bucket, key)
	t.set(t.key, value)
}

// DeleteKV removes bucket/key.
func (t *Txn) DeleteKV(bucket string, key []byte) {
	if !validComponent(bucket) {
		t.fail(fmt.Errorf("%w: NUL in bucket %q", ErrInvalid, bucket))
		return
	}
	t.key = appendKVKey(t.key[:0], bucket, key)
	t.delete(t.key)
}

// discardResult is the callback for Commit calls that pass nil.
func discardResult(error) {}

// Commit queues t for the committer and returns; it blocks only while the
// queue is full. done is called exactly once with nil when t is durable
// under the sync policy, or with the reason it was not written
// (ErrQuotaExceeded, ErrInvalid, an I/O error). done runs on the committer
// goroutine, in commit order, so it must be quick and must not call Commit
// or CommitSync; only on a closed Store is it called at once, from Commit,
// with ErrClosed.
func (s *Store) Commit(t *Txn, done func(error)) {
	if done == nil {
		done = discardResult
	}
	t.done = done
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		t.result = ErrClosed
		s.finish(t)
		return
	}
	s.queue <- t
	s.mu.RUnlock()
}

// CommitSync commits t and waits until it is durable.
func (s *Store) CommitSync(t *Txn) error {
	t.keep = true
	s.Commit(t, t.syncDone)
	err := <-t.syncCh
	s.recycle(t)
	return err
}

// finish runs the callback and recycles the Txn unless CommitSync still
// needs it.
func (s *Store) finish(t *Txn) {
	done, err, keep := t.done, t.result, t.keep
	if !keep {
		s.recycle(t)
	}
	done(err)
}
