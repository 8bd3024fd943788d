package jsstate

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/lifecycle"
	"github.com/edgeport/edgeport/internal/lograte"
	"github.com/edgeport/edgeport/internal/store"
)

// RetainedBucket holds the retained messages of the cluster: the key is
// topicKey(topic), the value the store's message record
// (store.AppendMessage); clearing a retained message deletes its key.
const RetainedBucket = "edgeport-retained"

// AckTimeout bounds how long a commit waits for JetStream's
// acknowledgement; past it the commit fails (the publisher is refused)
// rather than waiting on a cluster without quorum for ever. The default
// of Options.AckTimeout.
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
	nc   *nats.Conn          // the store's own connection, from Start; Stop closes it
	js   jetstream.JetStream // on nc
	b    *broker.Broker
	opts Options
	log  *slog.Logger

	streams  []jetstream.Stream // the session shards
	retained jetstream.KeyValue
	rwatch   *bucketWatch // the retained bucket's, from setup
	local    *store.Store // internal clients' sessions
	errs     *lograte.Limiter
	ready    chan struct{} // closed once setup is done
	// halt is cancelled when Stop begins: the setup, a purge and a retained
	// sync under way end; quit is its Done.
	halt    context.Context
	haltNow context.CancelFunc
	quit    <-chan struct{}
	// stopping is cancelled by BeginStop (at stopAt, Unix nanoseconds):
	// commits then wait at most StopGrace.
	stopping  context.Context
	stopNow   context.CancelFunc
	stopAt    atomic.Int64
	completed chan struct{} // closed when complete has called every commit's done
	// watchLife is the retained bucket's watch's lifetime, ended by Stop
	// after it closed nc (see watchBucket).
	watchLife context.Context
	endWatch  context.CancelFunc
	// retainedSubject prefixes a retained key into the subject a write
	// is published on ($KV.<bucket>.).
	retainedSubject string

	// retainedRev is, per retained key's subject, the last revision this
	// node knows of (the watch's, or its own write's acknowledgement): a
	// retained write expects it (fencing, see track).
	rmu         sync.Mutex // guards retainedRev
	retainedRev map[string]uint64

	mu      sync.Mutex    // guards applied and changed
	applied uint64        // the last revision of RetainedBucket applied to the index
	changed chan struct{} // closed and replaced when applied grows

	// index holds every persistent session's subscriptions, read by the
	// followers (routed.go).
	index        *sessionIndex
	fmu          sync.Mutex         // guards followers and endFollowers
	followers    []*streamReader    // one per shard, once started
	endFollowers context.CancelFunc // ends them

	imu          sync.Mutex    // guards indexed, indexChanged, sessionSeq, routedOut and moved
	indexed      []uint64      // per shard, the last stream sequence the follower applied
	indexChanged chan struct{} // closed and replaced when indexed grows
	// sessionSeq is, per client, what this node knows of its last session
	// record (Covers).
	sessionSeq map[string]recordSeq
	// routedOut is, per client, this node's routed deliveries to its
	// session not yet applied by this node's follower (Deferred).
	routedOut map[string]*routedOut
	// moved is, per client that has just come from another node, the
	// stream sequence of each shard's last routed delivery when it came
	// (0: none to wait for), until this node's followers have read it
	// (Deferred).
	moved map[string][]uint64

	fenceMu sync.Mutex          // guards fences
	fences  map[string]fenceRec // the fences this node wrote, by client (fence.go)

	amu      sync.Mutex           // guards adopting and readThrough
	adopting map[string]*adoption // sessions being adopted here, by client
	// readThrough is, per client whose session this node adopted, the
	// stream sequence through which the adoption read the session's
	// records: the followers give the session none of its routed
	// deliveries up to there (the adoption did, or found them taken
	// already), until they read past it (routed.go, adoptStored).
	readThrough map[string]*readMark

	// qmu orders the commits and every publication (Commit, the
	// retrier's and the purges'): a stream gets its writes in commit order.
	qmu         sync.Mutex // guards closed, msgSeq
	closed      bool       // Stop began: Commit refuses
	incarnation string     // this run's prefix of message ids
	msgSeq      uint64     // the last message id's counter
	// slots bounds the commits not finished (commitQueue): Commit takes
	// one, the completer gives it back after done.
	slots chan struct{}

	// The commit pipeline (pipeline.go).
	pmu         sync.Mutex           // guards the fields below, the lanes, and every pending and write
	lanes       []*lane              // one per session shard, then the retained bucket's
	attempts    map[*nats.Msg]*write // the publications waiting for an answer
	outstanding []*pending           // the commits not finished, in commit order
	lastBy      map[string]*pending  // per lane, its last commit not finished
	lastBarrier *pending             // the last barrier not finished
	settledQ    []*pending           // settled commits whose lanes are clear, for the completer
	draining    bool                 // Stop began: the completer returns once every commit finished
	wake        chan struct{}        // signals the completer (capacity 1)
	kick        chan struct{}        // signals the retrier: a stalled stream answered (capacity 1)
	resent      atomic.Uint64        // writes published again (retries)
	// routedWrites counts the routed deliveries this node put into
	// transactions (Route).
	routedWrites atomic.Uint64
	// readsBehind counts the reads of session records made again because
	// their consumer was on a replica behind the stream (readRecords).
	readsBehind atomic.Uint64
	// copies counts the entries JetStream dropped as copies of one
	// written before under the same delivery's message id (PutEntryOnce).
	copies atomic.Uint64
	// beforeDeliver, when set (tests), is called by a follower about to
	// give a routed delivery to a session this node holds: where the
	// broker waits, after a pause, until it knows which sessions are
	// still its own (broker.DeliverRouted).
	beforeDeliver func(clientID string)

	wg sync.WaitGroup
	// landed is, per stream, the highest sequence at which JetStream
	// acknowledged one of this node's routed deliveries whose commit
	// succeeded; only the completer uses it. See ErrOutOfOrder.
	landed map[string]uint64
}

// ErrOutOfOrder fails a transaction one of whose routed deliveries
// JetStream stored before a routed delivery this node committed earlier
// to the same stream, in a commit that succeeded: the earlier one was
// published again after the stream's leader was lost (by the retrier, or
// by nats.go after "no responders" during the election) and landed after
// later writes that reached the new leader first. The session's node
// reads them in stream order, so the publisher's messages would reach
// its subscriber out of order: the later one is refused instead (0x80),
// so that the acknowledged routed deliveries of a node are in every
// stream in the order it committed them (docs/cluster.md, "Order").
var ErrOutOfOrder = errors.New("stored before a write committed earlier to the same stream")

var (
	_ broker.Durable        = (*Store)(nil)
	_ broker.SharedRetained = (*Store)(nil)
	_ broker.RemoteSessions = (*Store)(nil)
	_ lifecycle.Component   = (*Store)(nil)
)

// NewStore returns the cluster-mode Durable of broker b on src for the
// node opts.Node. Attach it with b.AttachDurable and b.AttachSharedRetained,
// and start it before the broker.
func NewStore(src JetStreamSource, b *broker.Broker, local *store.Store, opts Options) (*Store, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Store{src: src, local: local, errs: lograte.New(o.Logger, time.Minute), b: b, opts: o, log: o.Logger, changed: make(chan struct{}),
		index: newSessionIndex(), indexChanged: make(chan struct{}), adopting: make(map[string]*adoption),
		sessionSeq: make(map[string]recordSeq), fences: make(map[string]fenceRec), routedOut: make(map[string]*routedOut),
		moved: make(map[string][]uint64), landed: make(map[string]uint64), readThrough: make(map[string]*readMark),
		retainedRev: make(map[string]uint64)}, nil
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
	opts, err := s.opts.withDefaults() // Sizing in force now
	if err != nil {
		return err
	}
	s.opts = opts
	s.indexed = make([]uint64, opts.Shards)
	if s.nc, err = s.src.Dial("cluster-state"); err != nil {
		return fmt.Errorf("cluster state: connecting to NATS: %w", err)
	}
	if s.js, err = jetstream.New(s.nc, s.jetStreamOptions()...); err != nil {
		s.nc.Close()
		return fmt.Errorf("cluster state: %w", err)
	}
	s.slots = make(chan struct{}, commitQueue)
	s.incarnation = newIncarnation()
	s.attempts = make(map[*nats.Msg]*write)
	s.lastBy = make(map[string]*pending)
	s.wake = make(chan struct{}, 1)
	s.kick = make(chan struct{}, 1)
	s.lanes = make([]*lane, opts.Shards+1)
	for n := range opts.Shards {
		s.lanes[n] = &lane{name: sessionStream(n), shard: n, subjects: make(map[string][]*write)}
	}
	s.lanes[opts.Shards] = &lane{name: "KV_" + RetainedBucket, shard: -1, subjects: make(map[string][]*write)}
	s.ready = make(chan struct{})
	s.halt, s.haltNow = context.WithCancel(context.Background())
	s.quit = s.halt.Done()
	s.stopping, s.stopNow = context.WithCancel(context.Background())
	s.completed = make(chan struct{})
	s.watchLife, s.endWatch = context.WithCancel(context.Background())
	s.wg.Add(3)
	go s.complete()
	go s.retry()
	go s.setup()
	return nil
}

// setupRetry is how long setup waits before trying again.
const setupRetry = 250 * time.Millisecond

// prepareTimeout bounds one attempt of setup.
const prepareTimeout = 5 * time.Second

// setup prepares the streams and buckets, retrying until JetStream can
// (a node that starts before the others has no quorum yet), and reports
// ready. The sessions this node owns are restored by the Ownership.
func (s *Store) setup() {
	defer s.wg.Done()
	ok := retrySetup(s.quit, s.errs, "cluster state not ready yet", func(ctx context.Context) error {
		if err := s.prepare(ctx); err != nil {
			return err
		}
		// Before any session is restored or adopted here: what the
		// followers read until they caught up is for sessions held
		// elsewhere, or read again by the adoption.
		ctx, cancel := context.WithTimeout(ctx, 2*AckTimeout)
		defer cancel()
		return s.startFollowers(ctx)
	})
	if ok {
		close(s.ready)
		s.log.Info("cluster state ready", "shards", s.opts.Shards, "replicas", s.opts.Replicas)
	}
}

// retrySetup calls try until it succeeds (true) or quit closes (false;
// closing also cancels the attempt under way). JetStream refuses or times out requests
// while it has no quorum, so a node's first attempts may fail: each is
// logged, rate-limited, and retried after setupRetry.
func retrySetup(quit <-chan struct{}, errs *lograte.Limiter, msg string, try func(context.Context) error) bool {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		err := try(ctx)
		if err == nil {
			return true
		}
		errs.Log(slog.LevelWarn, "setup", msg, "err", err)
		select {
		case <-quit:
			return false
		case <-time.After(setupRetry):
		}
	}
}

// prepare creates (or joins) the session streams and the buckets, waits
// for their leaders and applies the retained bucket to the broker's index.
func (s *Store) prepare(ctx context.Context) error {
	// Short attempts: what one made is kept, and a request sent while
	// JetStream had no meta leader may hang until its timeout.
	ctx, cancel := context.WithTimeout(ctx, prepareTimeout)
	defer cancel()
	s.streams = s.streams[:0]
	for n := range s.opts.Shards {
		st, err := ensureStream(ctx, s.js, jetstream.StreamConfig{
			Name:              sessionStream(n),
			Description:       "Edgeport: the persistent sessions of one shard of client identifiers",
			Subjects:          []string{"edgeport.sessions." + strconv.Itoa(n) + ".>"},
			MaxMsgsPerSubject: 1,
			// Set rather than left to the default (the same): copies of
			// a write published again are dropped within it (pipeline.go),
			// and so is a delivery of a QoS 2 message routed again by a
			// node that completes its phases (onceKey).
			Duplicates:  DuplicateWindow,
			Discard:     jetstream.DiscardOld,
			Storage:     jetstream.FileStorage,
			Replicas:    s.opts.Replicas,
			AllowMsgTTL: true,
		})
		if err != nil {
			return fmt.Errorf("creating stream %s: %w", sessionStream(n), err)
		}
		s.streams = append(s.streams, st)
	}
	// The Ownership uses it; made here too, so awaitLeaders finds it.
	if _, err := createOwners(ctx, s.js, s.opts.Replicas); err != nil {
		return err
	}
	kv, err := ensureBucket(ctx, s.js, jetstream.KeyValueConfig{
		Bucket:      RetainedBucket,
		Description: "Edgeport: retained MQTT messages, one key per topic",
		History:     1,
		// Its stream's duplicate window is nats.go's for a bucket
		// without TTL: 2 minutes, DuplicateWindow (pipeline.go).
		Replicas: s.opts.Replicas,
		Storage:  jetstream.FileStorage,
	})
	if err != nil {
		return fmt.Errorf("creating bucket %s: %w", RetainedBucket, err)
	}
	s.retained = kv
	s.retainedSubject = "$KV." + RetainedBucket + "."
	if err := s.awaitLeaders(ctx); err != nil {
		return err
	}
	if s.rwatch != nil {
		return nil // a later step of the setup failed: the watch goes on
	}
	w, err := watchBucket(ctx, s.watchLife, s.js, RetainedBucket, &s.wg, s.log, s.watch)
	if err != nil {
		return err
	}
	s.rwatch = w
	return nil
}

// ensureStream joins the stream of cfg.Name, or creates it when no node
// has yet. Nodes starting together would otherwise all update the same
// stream while its creation is in flight, which JetStream answers slowly.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, cfg.Name)
	if err == nil {
		return st, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, err
	}
	st, err = js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return js.Stream(ctx, cfg.Name) // another node created it meanwhile
	}
	return st, err
}

// ensureBucket is ensureStream for a key-value bucket.
func ensureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, err
	}
	kv, err = js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return js.KeyValue(ctx, cfg.Bucket)
	}
	return kv, err
}

// Ready is closed once the streams and buckets are usable. Before, every
// write to JetStream fails (clients are refused: their claims fail).
func (s *Store) Ready() <-chan struct{} { return s.ready }

func (s *Store) isReady() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// ErrNotReady fails writes to JetStream before the cluster state is ready.
var ErrNotReady = errors.New("jsstate: cluster state not ready (no JetStream quorum yet)")

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

// StopGrace is how long Stop lets the commits under way get JetStream's
// acknowledgement (a cluster with a quorum answers in milliseconds); the
// ones still waiting then fail with store.ErrClosed instead of waiting
// AckTimeout on a cluster that has lost its quorum.
const StopGrace = 250 * time.Millisecond

// Stop ends the store quickly whatever the cluster's state: new commits
// are refused, the setup and a purge under way are cancelled, the commits
// waiting for their acknowledgement get StopGrace (see BeginStop; at most
// ctx) and then fail with store.ErrClosed, and the store's NATS connection is closed,
// which ends the retained bucket's watch without a request to JetStream
// (stopping a watcher deletes its consumer with a request that, without a
// quorum, waits out nats.go's 5 s timeout; the server removes the
// ephemeral consumer of a closed connection itself). Call it after the
// broker stopped.
func (s *Store) Stop(ctx context.Context) error {
	if s.quit == nil {
		return nil
	}
	s.BeginStop()
	s.haltNow()
	s.qmu.Lock()
	s.closed = true
	s.qmu.Unlock()
	s.pmu.Lock()
	s.draining = true
	s.pmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	// Every commit waits at most StopGrace now (BeginStop).
	select {
	case <-s.completed:
	case <-ctx.Done():
		s.abortAll()
		<-s.completed
	}
	s.stopFollowers()
	s.nc.Close()
	s.endWatch()
	s.wg.Wait()
	return nil
}

// watch applies the bucket's changes to the broker's retained index.
func (s *Store) watch(w jetstream.KeyWatcher, caughtUp chan<- struct{}) {
	defer s.wg.Done()
	for e := range w.Updates() {
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
		s.noteRetained(s.retainedSubject+e.Key(), e.Revision())
		s.mu.Lock()
		if e.Revision() > s.applied {
			s.applied = e.Revision()
			close(s.changed)
			s.changed = make(chan struct{})
		}
		s.mu.Unlock()
	}
}

// Sync implements broker.SharedRetained: it asks the bucket's stream
// leader for its last revision and waits until the watch has applied it.
func (s *Store) Sync(ctx context.Context) error {
	// Only internal clients subscribe before the state is ready (a network
	// client's CONNECT waits for it): they are not held up by a cluster
	// that is still forming.
	if !s.isReady() {
		return ErrNotReady
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.halt, cancel)()
	st, err := s.retained.Status(ctx)
	if err != nil {
		return fmt.Errorf("reading the state of bucket %s: %w", RetainedBucket, err)
	}
	kvs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return fmt.Errorf("bucket %s: unexpected status %T", RetainedBucket, st)
	}
	last := kvs.StreamInfo().State.LastSeq
	// A watch that stays behind this without reading anything gets a
	// new consumer (its own may sit on a replica that caught up out of
	// band, see bucketWatch).
	s.rwatch.noteLast(last)
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

// Full implements broker.Durable: the local store's limits (internal
// clients' sessions). JetStream enforces its own: a write it refuses fails
// its commit, and the publisher is refused.
func (s *Store) Full() bool { return s.local != nil && s.local.Full() }

// txn is a Store transaction: the JetStream writes in the order they
// were added, and the writes of internal clients' sessions, which stay in
// the node's local store (each node runs its own internal clients).
type txn struct {
	s     *Store
	ops   []op
	local *store.Txn // nil until an internal client's write
	keys  []string   // OrderBy's
	// shards are session shards it orders on without writing to them
	// (awaitShard).
	shards []int
}

// OrderBy implements broker.OrderedTxn.
func (t *txn) OrderBy(key string) { t.keys = append(t.keys, key) }

// op is one write: a message to publish, or (purge set) the removal of
// every record of a client, which waits for the writes before it.
type op struct {
	msg   *nats.Msg
	ttl   bool   // a tombstone: published with a short TTL, so it leaves no trace
	purge string // the subject filter of the records to remove
	shard int
	// session names the client whose session record msg is, and subs
	// its subscriptions' fingerprint: its stream sequence, once
	// acknowledged, is noted for Covers.
	session string
	subs    uint64
	// routed names the client whose routed delivery msg is (Deferred).
	routed string
	// answered is called when JetStream answers msg (PutEntryOnce):
	// copied when it dropped it as a copy of a write with its
	// Nats-Msg-Id that another node made.
	answered func(copied bool)
	// first marks an entry's first write (PutEntryOnce): nothing of the
	// entry is in the stream before it.
	first bool
}

// NewTxn implements broker.Durable.
func (s *Store) NewTxn() broker.Txn { return &txn{s: s} }

// internal reports whether clientID's session stays on this node.
func internal(clientID string) bool {
	return strings.HasPrefix(clientID, broker.InternalClientIDPrefix)
}

// inLocal applies f to the local transaction (made on first use) when
// id is an internal client's, and reports whether it was; with no local
// store (a node kept in memory) such writes are dropped.
func (t *txn) inLocal(id string, f func(*store.Txn)) bool {
	if !internal(id) {
		return false
	}
	if t.s.local != nil {
		if t.local == nil {
			t.local = t.s.local.NewTxn()
		}
		f(t.local)
	}
	return true
}

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
	if t.inLocal(r.ClientID, func(l *store.Txn) { l.PutSession(r) }) {
		return
	}
	t.put(t.s.sessionSubject(r.ClientID, "s"), store.AppendSession(nil, r))
	t.ops[len(t.ops)-1].session = r.ClientID
	t.ops[len(t.ops)-1].subs = subsPrint(r)
}

func (t *txn) DeleteSession(id string) {
	if t.inLocal(id, func(l *store.Txn) { l.DeleteSession(id) }) {
		return
	}
	t.ops = append(t.ops, op{purge: t.s.sessionSubject(id, ">"), shard: t.s.shard(id)})
	// The purge is invisible to the nodes' session indexes: a tombstone
	// tells them.
	t.tombstone(t.s.sessionSubject(id, "s"))
}

func (t *txn) PutEntry(id string, e *store.Entry) {
	if t.inLocal(id, func(l *store.Txn) { l.PutEntry(id, e) }) {
		return
	}
	t.put(t.s.sessionSubject(id, "e."+strconv.FormatUint(e.Seq, 10)), store.AppendEntry(nil, e))
}

func (t *txn) DeleteEntry(id string, seq uint64) {
	if t.inLocal(id, func(l *store.Txn) { l.DeleteEntry(id, seq) }) {
		return
	}
	subject := t.s.sessionSubject(id, "e."+strconv.FormatUint(seq, 10))
	if i := slices.IndexFunc(t.ops, func(o op) bool { return o.msg != nil && o.msg.Subject == subject }); i >= 0 && t.ops[i].first {
		// Put for the first time and deleted before anything of it was
		// written (a delivery acknowledged while its transaction was
		// parked, broker/parked.go): none of it is.
		t.ops = slices.DeleteFunc(t.ops, func(o op) bool { return o.msg != nil && o.msg.Subject == subject })
		return
	}
	t.tombstone(subject)
}

func (t *txn) PutInbound(id string, packetID uint16) {
	if t.inLocal(id, func(l *store.Txn) { l.PutInbound(id, packetID) }) {
		return
	}
	t.put(t.s.sessionSubject(id, "i."+strconv.FormatUint(uint64(packetID), 10)), []byte{inboundPlain})
}

// PutEntryOnce implements broker.OnceTxn: the entry's first write carries
// the key of its delivery ("e." and the onceKey of e.Routed and the
// session), so that JetStream stores one entry per delivery, whichever
// node writes it (the node holding the session, one that lost it while
// frozen or stopping, or one routing the message again); a write dropped
// as a copy of another node's is answered copied, one JetStream stored is
// answered not copied, before the commit's done: should the commit fail
// after (ErrOutOfOrder), the broker keeps that delivery, whose entry is
// in the stream and whose message id now names it.
func (t *txn) PutEntryOnce(id string, e *store.Entry, answered func(copied bool)) {
	t.PutEntry(id, e)
	if r := broker.MessageID(e.Routed); !internal(id) && !r.IsZero() {
		o := &t.ops[len(t.ops)-1]
		o.msg.Header.Set(jetstream.MsgIDHeader, "e."+onceKey(r, id))
		o.answered = answered
		o.first = true
	}
}

func (t *txn) DeleteInbound(id string, packetID uint16) {
	if t.inLocal(id, func(l *store.Txn) { l.DeleteInbound(id, packetID) }) {
		return
	}
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

func (t *txn) Len() int {
	n := len(t.ops)
	if t.local != nil {
		n += t.local.Len()
	}
	return n
}

func (t *txn) Discard() {
	for _, o := range t.ops {
		if o.routed != "" {
			t.s.routedEnd(o.routed, 0)
		}
	}
	t.ops = nil
	t.keys = nil
	if t.local != nil {
		t.local.Discard()
		t.local = nil
	}
}

// tombstoneTTL is how long a deleted record's tombstone stays (JetStream's
// smallest per-message TTL).
const tombstoneTTL = time.Second

// BeginStop tells the store that the node is stopping (the app calls it
// first thing in its stop, before the clients are disconnected): from
// then on a commit waits at most StopGrace for JetStream's
// acknowledgement, and fails with store.ErrClosed past it. A cluster
// with a quorum acknowledges in milliseconds and loses nothing by it; a
// node whose peers are gone would otherwise hold every commit behind
// one waiting AckTimeout (done is called in commit order), and with them
// the internal clients' writes the stopping components wait for.
func (s *Store) BeginStop() {
	if s.stopping == nil {
		return // not started
	}
	s.stopAt.CompareAndSwap(0, time.Now().UnixNano())
	s.stopNow()
}
