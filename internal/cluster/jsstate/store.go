package jsstate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/lifecycle"
	"github.com/edgeport/edgeport/internal/store"
)

// RetainedBucket holds the retained messages of the cluster: the key is
// topicKey(topic), the value the store's message record
// (store.AppendMessage); clearing a retained message deletes its key.
const RetainedBucket = "edgeport-retained"

// AckTimeout bounds how long a commit waits for JetStream's
// acknowledgement; past it the commit fails (the publisher is refused)
// rather than waiting on a cluster without quorum for ever.
const AckTimeout = 10 * time.Second

// commitQueue bounds the commits waiting for their acknowledgements;
// Commit blocks beyond it, which slows producers to the cluster's pace.
const commitQueue = 1024

// Store is the broker's Durable in cluster mode. Retained messages go to
// RetainedBucket, shared by every node: a change is published to the
// bucket and reaches every node's index (this one's too) from one watch of
// the bucket per node, in the bucket's order (broker.SharedRetained).
// Session records still go to the node's local store.
//
// Commits are pipelined: Commit publishes a transaction's bucket writes
// asynchronously and hands its session writes to the local store, and one
// goroutine waits for both, in commit order, before calling done. So a
// publisher's PUBACK leaves only once JetStream acknowledged its retained
// change at the bucket's replication.
type Store struct {
	js    jetstream.JetStream
	b     *broker.Broker
	local *store.Store
	opts  Options
	log   *slog.Logger

	retained jetstream.KeyValue
	watcher  jetstream.KeyWatcher
	// retainedSubject prefixes a retained key into the subject a write
	// is published on ($KV.<bucket>.).
	retainedSubject string

	mu      sync.Mutex    // guards applied and changed
	applied uint64        // the last revision of RetainedBucket applied to the index
	changed chan struct{} // closed and replaced when applied grows

	qmu    sync.Mutex    // guards closed and sends on queue (Stop closes it)
	closed bool          // Stop began: Commit refuses
	queue  chan *pending // commits waiting for acknowledgements, in order
	wg     sync.WaitGroup
}

var (
	_ broker.Durable        = (*Store)(nil)
	_ broker.SharedRetained = (*Store)(nil)
	_ lifecycle.Component   = (*Store)(nil)
)

// NewStore returns the cluster-mode Durable of broker b on js, keeping
// sessions in local (started before it). Attach it with b.AttachDurable
// and b.AttachSharedRetained, and start it before the broker.
func NewStore(js jetstream.JetStream, b *broker.Broker, local *store.Store, opts Options) (*Store, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if local == nil {
		return nil, errors.New("jsstate: NewStore needs the local store")
	}
	return &Store{js: js, b: b, local: local, opts: o, log: o.Logger, changed: make(chan struct{})}, nil
}

// Start creates (or joins) the retained bucket and applies its content to
// the broker's index before it returns.
func (s *Store) Start(ctx context.Context) error {
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      RetainedBucket,
		Description: "Edgeport: retained MQTT messages, one key per topic",
		History:     1,
		Replicas:    s.opts.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return fmt.Errorf("creating bucket %s: %w", RetainedBucket, err)
	}
	s.retained = kv
	s.retainedSubject = "$KV." + RetainedBucket + "."
	w, err := kv.WatchAll(context.WithoutCancel(ctx))
	if err != nil {
		return fmt.Errorf("watching bucket %s: %w", RetainedBucket, err)
	}
	s.watcher = w
	s.queue = make(chan *pending, commitQueue)
	caughtUp := make(chan struct{})
	s.wg.Add(2)
	go s.watch(caughtUp)
	go s.complete()
	select {
	case <-caughtUp:
		return nil
	case <-ctx.Done():
		_ = s.Stop(context.Background())
		return fmt.Errorf("reading bucket %s: %w", RetainedBucket, ctx.Err())
	}
}

// Stop waits for the commits under way (each at most AckTimeout) and ends
// the watch. Call it after the broker stopped.
func (s *Store) Stop(ctx context.Context) error {
	s.qmu.Lock()
	if !s.closed && s.queue != nil {
		close(s.queue)
	}
	s.closed = true
	s.qmu.Unlock()
	if s.watcher != nil {
		_ = s.watcher.Stop()
	}
	s.wg.Wait()
	return nil
}

// watch applies the bucket's changes to the broker's retained index.
func (s *Store) watch(caughtUp chan<- struct{}) {
	defer s.wg.Done()
	for e := range s.watcher.Updates() {
		if e == nil {
			close(caughtUp)
			continue
		}
		topic, err := keyTopic(e.Key())
		if err != nil {
			s.log.Warn("ignoring a retained entry", "err", err)
		} else {
			var rec *store.Message
			if e.Operation() == jetstream.KeyValuePut {
				rec, err = store.DecodeMessage(e.Value())
			}
			if err == nil {
				err = s.b.ApplyRetained(topic, rec)
			}
			if err != nil {
				s.log.Warn("ignoring a retained entry", "topic", topic, "err", err)
			}
		}
		s.mu.Lock()
		if e.Revision() > s.applied {
			s.applied = e.Revision()
			close(s.changed)
			s.changed = make(chan struct{})
		}
		s.mu.Unlock()
	}
}

// Sync implements broker.SharedRetained: it asks the bucket for its last
// revision and waits until the watch has applied it.
func (s *Store) Sync(ctx context.Context) error {
	st, err := s.retained.Status(ctx)
	if err != nil {
		return fmt.Errorf("reading the state of bucket %s: %w", RetainedBucket, err)
	}
	kvs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return fmt.Errorf("bucket %s: unexpected status %T", RetainedBucket, st)
	}
	last := kvs.StreamInfo().State.LastSeq
	for {
		s.mu.Lock()
		applied, changed := s.applied, s.changed
		s.mu.Unlock()
		if applied >= last {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for retained revision %d (applied %d): %w", last, applied, ctx.Err())
		}
	}
}

// Full implements broker.Durable: the local store's limits.
func (s *Store) Full() bool { return s.local.Full() }

// Load implements broker.Durable: sessions from the local store; retained
// messages come from the bucket's watch instead.
func (s *Store) Load(fn store.LoadFuncs) error {
	return s.local.Load(store.LoadFuncs{Session: fn.Session})
}

// txn is a Store transaction: session writes for the local store, retained
// writes for the bucket.
type txn struct {
	s     *Store
	local *store.Txn
	msgs  []*nats.Msg
}

// NewTxn implements broker.Durable.
func (s *Store) NewTxn() broker.Txn { return &txn{s: s, local: s.local.NewTxn()} }

func (t *txn) PutSession(r *store.Session)              { t.local.PutSession(r) }
func (t *txn) DeleteSession(id string)                  { t.local.DeleteSession(id) }
func (t *txn) PutEntry(id string, e *store.Entry)       { t.local.PutEntry(id, e) }
func (t *txn) DeleteEntry(id string, seq uint64)        { t.local.DeleteEntry(id, seq) }
func (t *txn) PutInbound(id string, packetID uint16)    { t.local.PutInbound(id, packetID) }
func (t *txn) DeleteInbound(id string, packetID uint16) { t.local.DeleteInbound(id, packetID) }
func (t *txn) Len() int                                 { return t.local.Len() + len(t.msgs) }
func (t *txn) Discard()                                 { t.local.Discard() }

func (t *txn) PutRetained(m *store.Message) {
	msg := nats.NewMsg(t.s.retainedSubject + topicKey(m.Topic))
	msg.Data = store.AppendMessage(nil, m)
	t.msgs = append(t.msgs, msg)
}

func (t *txn) DeleteRetained(topic string) {
	msg := nats.NewMsg(t.s.retainedSubject + topicKey(topic))
	msg.Header.Set("KV-Operation", "DEL") // a key-value delete, as watchers read it
	t.msgs = append(t.msgs, msg)
}

// pending is a committed transaction waiting for its acknowledgements.
type pending struct {
	done     func(error)
	err      error // a publish that failed at once
	futures  []jetstream.PubAckFuture
	local    chan error // the local store's result; nil when it had nothing
	deadline time.Time
}

// Commit implements broker.Durable.
func (s *Store) Commit(bt broker.Txn, done func(error)) {
	t := bt.(*txn)
	if done == nil {
		done = func(error) {}
	}
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.closed {
		t.local.Discard()
		done(store.ErrClosed)
		return
	}
	p := &pending{done: done, deadline: time.Now().Add(AckTimeout)}
	for _, m := range t.msgs {
		f, err := s.js.PublishMsgAsync(m)
		if err != nil {
			p.err = fmt.Errorf("publishing to %s: %w", m.Subject, err)
			break
		}
		p.futures = append(p.futures, f)
	}
	if t.local.Len() > 0 {
		p.local = make(chan error, 1)
		s.local.Commit(t.local, func(err error) { p.local <- err })
	} else {
		t.local.Discard()
	}
	// Blocks while the queue is full: the completer takes no lock.
	s.queue <- p
}

// complete calls each commit's done once it is durable, in commit order.
func (s *Store) complete() {
	defer s.wg.Done()
	for p := range s.queue {
		err := p.err
		if p.local != nil {
			if e := <-p.local; err == nil {
				err = e
			}
		}
		if len(p.futures) > 0 {
			timer := time.NewTimer(time.Until(p.deadline))
			for _, f := range p.futures {
				if err != nil {
					break // the commit failed: the rest need no wait
				}
				select {
				case <-f.Ok():
				case e := <-f.Err():
					err = fmt.Errorf("writing to JetStream: %w", e)
				case <-timer.C:
					err = fmt.Errorf("writing to JetStream: no acknowledgement within %v", AckTimeout)
				}
			}
			timer.Stop()
		}
		p.done(err)
	}
}
