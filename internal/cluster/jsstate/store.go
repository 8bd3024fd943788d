package jsstate

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
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

// Store is the broker's Durable in cluster mode: everything the broker
// keeps durable is in JetStream, replicated on Options.Replicas servers.
//
//   - Sessions are sharded by client identifier (FNV-1a, modulo
//     Options.Shards) into a fixed set of streams, EDGEPORT_SESSIONS_<n>
//     on subjects edgeport.sessions.<n>.>; a client's records are
//     <key>.s (the session), <key>.e.<seq> (a queued or in-flight
//     delivery) and <key>.i.<id> (an inbound QoS 2 identifier), with
//     key = clientKey(id). A stream keeps one message per subject, so a
//     put replaces the record; a delete is a tombstone that expires a
//     second later; deleting a session purges <key>.>.
//   - Retained messages are RetainedBucket, shared by every node: a change
//     is published to the bucket and reaches every node's index (this
//     one's too) from one watch of the bucket per node, in the bucket's
//     order (broker.SharedRetained).
//
// Commits are pipelined: Commit publishes a transaction's writes
// asynchronously, and one goroutine waits for their acknowledgements, in
// commit order, before calling done. So a publisher's PUBACK/PUBREC leaves
// only once JetStream acknowledged every write of its publish at the
// configured replication.
type Store struct {
	src  JetStreamSource
	js   jetstream.JetStream // src's, from Start
	b    *broker.Broker
	opts Options
	log  *slog.Logger

	streams  []jetstream.Stream // the session shards
	owners   jetstream.KeyValue
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

// NewStore returns the cluster-mode Durable of broker b on src for the
// node opts.Node. Attach it with b.AttachDurable and b.AttachSharedRetained,
// and start it before the broker.
func NewStore(src JetStreamSource, b *broker.Broker, opts Options) (*Store, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Store{src: src, b: b, opts: o, log: o.Logger, changed: make(chan struct{})}, nil
}

// shard is the session stream of clientID.
func (s *Store) shard(clientID string) int {
	h := fnv.New32a()
	h.Write([]byte(clientID))
	return int(h.Sum32() % uint32(s.opts.Shards))
}

// sessionSubject is the subject of one record (rest: "s", "e.<seq>",
// "i.<id>", or ">" for all) of clientID.
func (s *Store) sessionSubject(clientID, rest string) string {
	return "edgeport.sessions." + strconv.Itoa(s.shard(clientID)) + "." + clientKey(clientID) + "." + rest
}

// sessionStream names the stream of shard n.
func sessionStream(n int) string { return "EDGEPORT_SESSIONS_" + strconv.Itoa(n) }

// Start creates (or joins) the session streams and the buckets, and
// applies the retained bucket's content to the broker's index before it
// returns.
func (s *Store) Start(ctx context.Context) error {
	s.js = s.src.JetStream()
	for n := range s.opts.Shards {
		st, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:              sessionStream(n),
			Description:       "Edgeport: the persistent sessions of one shard of client identifiers",
			Subjects:          []string{"edgeport.sessions." + strconv.Itoa(n) + ".>"},
			MaxMsgsPerSubject: 1,
			Discard:           jetstream.DiscardOld,
			Storage:           jetstream.FileStorage,
			Replicas:          s.opts.Replicas,
			AllowMsgTTL:       true,
		})
		if err != nil {
			return fmt.Errorf("creating stream %s: %w", sessionStream(n), err)
		}
		s.streams = append(s.streams, st)
	}
	owners, err := createOwners(ctx, s.js, s.opts.Replicas)
	if err != nil {
		return err
	}
	s.owners = owners
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
	if err := s.awaitLeaders(ctx); err != nil {
		return err
	}
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

// awaitLeaders waits until every session stream and bucket has a leader:
// a stream just created (or whose leader is being elected) answers
// nothing, and the first writes would fail.
func (s *Store) awaitLeaders(ctx context.Context) error {
	names := []string{"KV_" + OwnersBucket, "KV_" + RetainedBucket}
	for n := range s.opts.Shards {
		names = append(names, sessionStream(n))
	}
	for _, name := range names {
		for {
			st, err := s.js.Stream(ctx, name)
			if err == nil {
				info := st.CachedInfo()
				if info.Cluster == nil || info.Cluster.Leader != "" {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for a leader of stream %s: %w (last: %v)", name, ctx.Err(), err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
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

// Full implements broker.Durable. JetStream enforces its own limits: a
// write it refuses fails its commit, and the publisher is refused.
func (s *Store) Full() bool { return false }

// txn is a Store transaction: the JetStream writes in the order they
// were added.
type txn struct {
	s   *Store
	ops []op
}

// op is one write: a message to publish, or (purge set) the removal of
// every record of a client, which waits for the writes before it.
type op struct {
	msg   *nats.Msg
	ttl   bool   // a tombstone: published with a short TTL, so it leaves no trace
	purge string // the subject filter of the records to remove
	shard int
}

// NewTxn implements broker.Durable.
func (s *Store) NewTxn() broker.Txn { return &txn{s: s} }

func (t *txn) put(subject string, data []byte) {
	m := nats.NewMsg(subject)
	m.Data = data
	t.ops = append(t.ops, op{msg: m})
}

// tombstone replaces a record with an empty message that expires: the
// stream keeps one message per subject, so the record is gone at once
// and the tombstone a second later.
func (t *txn) tombstone(subject string) {
	t.ops = append(t.ops, op{msg: nats.NewMsg(subject), ttl: true})
}

func (t *txn) PutSession(r *store.Session) {
	t.put(t.s.sessionSubject(r.ClientID, "s"), store.AppendSession(nil, r))
}

func (t *txn) DeleteSession(id string) {
	shard := t.s.shard(id)
	t.ops = append(t.ops, op{purge: t.s.sessionSubject(id, ">"), shard: shard})
}

func (t *txn) PutEntry(id string, e *store.Entry) {
	t.put(t.s.sessionSubject(id, "e."+strconv.FormatUint(e.Seq, 10)), store.AppendEntry(nil, e))
}

func (t *txn) DeleteEntry(id string, seq uint64) {
	t.tombstone(t.s.sessionSubject(id, "e."+strconv.FormatUint(seq, 10)))
}

func (t *txn) PutInbound(id string, packetID uint16) {
	t.put(t.s.sessionSubject(id, "i."+strconv.FormatUint(uint64(packetID), 10)), []byte{1})
}

func (t *txn) DeleteInbound(id string, packetID uint16) {
	t.tombstone(t.s.sessionSubject(id, "i."+strconv.FormatUint(uint64(packetID), 10)))
}

func (t *txn) PutRetained(m *store.Message) {
	t.put(t.s.retainedSubject+topicKey(m.Topic), store.AppendMessage(nil, m))
}

func (t *txn) DeleteRetained(topic string) {
	msg := nats.NewMsg(t.s.retainedSubject + topicKey(topic))
	msg.Header.Set("KV-Operation", "DEL") // a key-value delete, as watchers read it
	t.ops = append(t.ops, op{msg: msg})
}

func (t *txn) Len() int { return len(t.ops) }
func (t *txn) Discard() { t.ops = nil }

// pending is a committed transaction waiting for its acknowledgements.
type pending struct {
	done     func(error)
	err      error // a write that failed at once
	futures  []jetstream.PubAckFuture
	deadline time.Time
}

// Commit implements broker.Durable. Writes are published without waiting;
// a purge (DeleteSession) first waits until every write published before
// it is acknowledged, so that it removes them, and what follows it in the
// transaction is published after it.
func (s *Store) Commit(bt broker.Txn, done func(error)) {
	t := bt.(*txn)
	if done == nil {
		done = func(error) {}
	}
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.closed {
		done(store.ErrClosed)
		return
	}
	p := &pending{done: done, deadline: time.Now().Add(AckTimeout)}
	for _, o := range t.ops {
		if o.purge != "" {
			if err := s.purge(o.shard, o.purge, p.deadline); err != nil {
				p.err = err
				break
			}
			continue
		}
		var opts []jetstream.PublishOpt
		if o.ttl {
			opts = append(opts, jetstream.WithMsgTTL(tombstoneTTL))
		}
		f, err := s.js.PublishMsgAsync(o.msg, opts...)
		if err != nil {
			p.err = fmt.Errorf("publishing to %s: %w", o.msg.Subject, err)
			break
		}
		p.futures = append(p.futures, f)
	}
	// Blocks while the queue is full: the completer takes no lock.
	s.queue <- p
}

// tombstoneTTL is how long a deleted record's tombstone stays (JetStream's
// smallest per-message TTL).
const tombstoneTTL = time.Second

// purge removes the records under filter from shard once every write
// published before is acknowledged.
func (s *Store) purge(shard int, filter string, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	select {
	case <-s.js.PublishAsyncComplete():
	case <-ctx.Done():
		return fmt.Errorf("removing %s: earlier writes not acknowledged: %w", filter, ctx.Err())
	}
	if err := s.streams[shard].Purge(ctx, jetstream.WithPurgeSubject(filter)); err != nil {
		return fmt.Errorf("removing %s: %w", filter, err)
	}
	return nil
}

// complete calls each commit's done once it is durable, in commit order.
func (s *Store) complete() {
	defer s.wg.Done()
	for p := range s.queue {
		err := p.err
		if len(p.futures) > 0 && err == nil {
			timer := time.NewTimer(time.Until(p.deadline))
			for _, f := range p.futures {
				select {
				case <-f.Ok():
					continue
				case e := <-f.Err():
					err = fmt.Errorf("writing to JetStream: %w", e)
				case <-timer.C:
					err = fmt.Errorf("writing to JetStream: no acknowledgement within %v", AckTimeout)
				}
				break // the commit failed: the rest need no wait
			}
			timer.Stop()
		}
		p.done(err)
	}
}
