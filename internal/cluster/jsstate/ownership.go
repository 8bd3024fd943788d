package jsstate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/lifecycle"
	"github.com/edgeport/edgeport/internal/lograte"
)

// Bucket names. Every node of a cluster uses the same ones.
const (
	// OwnersBucket maps a client's key (clientKey) to the name of the node
	// that owns its session; the entry's revision is the claim's token.
	OwnersBucket = "edgeport-session-owners"
)

// DefaultReplicas is how many servers hold each bucket and stream: three,
// so that losing one loses nothing and a majority stays.
const DefaultReplicas = 3

// DefaultShards is how many streams hold the persistent sessions: each is
// a Raft group of its own with its own leader, so the sessions' writes
// spread over the servers (several leaders per server of a 3-node cluster).
const DefaultShards = 8

// Options configures the cluster state of one node.
type Options struct {
	// Node names this node; unique in the cluster (the cluster's member
	// name). Required.
	Node string
	// Replicas is how many JetStream servers hold each bucket and
	// stream; 0 means DefaultReplicas. It cannot exceed the JetStream
	// cluster's size.
	Replicas int
	// Shards is how many streams hold the persistent sessions; 0 means
	// DefaultShards. Every node of a cluster must use the same number: it
	// decides which stream holds a client's session.
	Shards int
	// Sizing, when set, is asked at Start for the replicas and shards in
	// force then (0: keep the field's): the cluster's configuration may
	// change between construction and start (a Broker resource).
	Sizing func() (replicas, shards int)
	// AckTimeout bounds how long a write waits for JetStream's
	// acknowledgement before it fails (no quorum): a commit of the
	// sessions' state (Store) and a state store write (StateBackend); 0
	// means AckTimeout. It must be shorter than DuplicateWindow.
	AckTimeout time.Duration
	// Logger receives the component's messages; nil discards them.
	Logger *slog.Logger
	// noAdoption turns the adoption of lost nodes' sessions off, for
	// tests of what a reconnecting client's claim does alone.
	noAdoption bool
	// arrivalFault, when set (tests), is asked before a shard's stream is
	// asked where its routed deliveries end (arrived): an error stands
	// for the stream's answer (a stream without a leader).
	arrivalFault func(shard int) error
}

func (o *Options) withDefaults() (Options, error) {
	c := *o
	if c.Sizing != nil {
		r, n := c.Sizing()
		if r != 0 {
			c.Replicas = r
		}
		if n != 0 {
			c.Shards = n
		}
	}
	if c.Node == "" {
		return c, errors.New("jsstate: Options.Node is required")
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.Shards == 0 {
		c.Shards = DefaultShards
	}
	if c.Shards < 1 || c.Shards > 1024 {
		return c, fmt.Errorf("jsstate: shards %d out of range (1 to 1024)", c.Shards)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return c, fmt.Errorf("jsstate: replicas %d out of range (1 to 5, as JetStream allows)", c.Replicas)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = AckTimeout
	}
	if c.AckTimeout >= DuplicateWindow {
		// A write published again after the window would be stored twice.
		return c, fmt.Errorf("jsstate: ack timeout %v must be shorter than the duplicate window (%v)", c.AckTimeout, DuplicateWindow)
	}
	return c, nil
}

// Ownership decides which node owns each client's session, with a
// compare-and-set on the client's entry in OwnersBucket:
//
//   - a client connecting to any node is claimed before its CONNACK: the
//     node reads the entry and writes its own name under the revision it
//     read (a conflict means another node claimed meanwhile: read again);
//   - every node watches the bucket, and when another node's claim
//     replaces one of its sessions it disconnects the connection with
//     0x8E, Session taken over (broker.TakenOver); the claim's revision
//     orders claims, so a late event never ends a newer connection;
//   - a session that ends on its owner deletes the entry, under the
//     revision of its own claim (a newer claim survives);
//   - the sessions of a node that is lost are adopted by the survivors,
//     and a node that restarts claims again what its entries name
//     (orphans.go).
//
// It implements broker.Ownership and lifecycle.Component.
type Ownership struct {
	src      JetStreamSource
	nc       *nats.Conn          // the ownership's own connection, from Start; Stop closes it
	js       jetstream.JetStream // on nc
	b        *broker.Broker
	sessions *Store // where taken-over sessions are read from; nil: not carried over
	opts     Options
	log      *slog.Logger

	members Members // src's, when it has them: lost nodes' sessions are adopted

	kv      jetstream.KeyValue // set by setup before bucket is closed
	bucket  chan struct{}      // closed once kv is set and the watch caught up
	ready   chan struct{}      // closed once setup is done (own sessions restored)
	errs    *lograte.Limiter
	handoff *nats.Subscription // other nodes' requests to hand a session over

	hmu      sync.Mutex     // guards stopping and hwg.Add
	stopping bool           // Stop began: handoff requests are not served
	hwg      sync.WaitGroup // handoff requests being served
	release  chan released  // Release's queue for the releaser goroutine
	// halt is cancelled when Stop begins: claims, handoffs, takeovers,
	// adoptions and releases under way end at once; done is its Done.
	halt    context.Context
	haltNow context.CancelFunc
	done    <-chan struct{}
	// watchLife is the owners bucket's watch's lifetime, ended by Stop
	// after it closed nc (see watchBucket).
	watchLife context.Context
	endWatch  context.CancelFunc
	watcher   *bucketWatch // the watch, from prepare
	wg        sync.WaitGroup

	// applied is the revision of the last owners bucket change the
	// watch has applied (its takeover included); appliedMu guards it and
	// appliedCh, closed and replaced each time it moves (Resync).
	appliedMu sync.Mutex
	applied   uint64
	appliedCh chan struct{}

	amu      sync.Mutex                   // guards adopting, owners and ownerOf
	adopting map[string]chan struct{}     // clients being adopted here, closed when done
	owners   map[string]map[string]uint64 // the owners bucket from the watch: node → key → revision
	ownerOf  map[string]string            // key → the node owners lists it under
	adopted  atomic.Uint64
	// unrestored holds sessions this node claimed to adopt but has not
	// restored yet (key → token): setup's goroutine, then (after ready)
	// reap's.
	unrestored map[string]uint64

	turnMu sync.Mutex               // guards turns
	turns  map[string]chan struct{} // clients with a claim under way here, closed when it ends
	// claimWaits counts the claims that waited for another claim of the
	// same client here to end.
	claimWaits atomic.Uint64
	// beforeLoad, when set (tests), is called by a claim just before it
	// reads the session's records.
	beforeLoad func(clientID string)
	// beforeFence, when set (tests), is called by a claim after the
	// previous owner's handoff, just before it writes the session's
	// fence; an error fails the claim there, as a fence JetStream cannot
	// read does (503 while it elects leaders after a node thawed).
	beforeFence func(clientID string) error
}

type released struct {
	key   string
	token uint64
}

var (
	_ broker.Ownership    = (*Ownership)(nil)
	_ lifecycle.Component = (*Ownership)(nil)
)

// releaseQueue bounds the releases waiting for the bucket; beyond it a
// release is dropped, which only leaves a stale entry the next claim
// replaces.
const releaseQueue = 4096

// NewOwnership returns the session ownership of the node opts.Node on src
// for broker b; attach it with b.AttachOwnership before the broker serves.
// A session claimed from another node is read from sessions (the broker's
// Durable) and adopted; with sessions nil it is not carried over.
func NewOwnership(src JetStreamSource, b *broker.Broker, sessions *Store, opts Options) (*Ownership, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	own := &Ownership{src: src, b: b, sessions: sessions, opts: o, log: o.Logger, errs: lograte.New(o.Logger, time.Minute),
		adopting: make(map[string]chan struct{}), owners: make(map[string]map[string]uint64), ownerOf: make(map[string]string),
		unrestored: make(map[string]uint64), turns: make(map[string]chan struct{})}
	if m, ok := src.(Members); ok && sessions != nil && !o.noAdoption {
		own.members = m
	}
	return own, nil
}

// JetStreamSource connects to the cluster's NATS: *cluster.Node, started
// before the components that use it.
type JetStreamSource interface {
	// Dial opens a connection of the caller's own, named name. The store
	// and the ownership each have one, which their Stop closes: what is
	// under way on it (requests, watches) ends at once, where a request to
	// a JetStream without quorum would wait out its timeout.
	Dial(name string, opts ...nats.Option) (*nats.Conn, error)
}

// createOwners creates (or joins) OwnersBucket.
func createOwners(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := ensureBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      OwnersBucket,
		Description: "Edgeport: the node that owns each client's session",
		History:     1,
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("creating bucket %s: %w", OwnersBucket, err)
	}
	return kv, nil
}

// handoffSubject is where node asks are sent to hand a session over.
func handoffSubject(node string) string { return "edgeport.handoff." + clientKey(node) }

// HandoffTimeout bounds how long a claim waits for the previous owner to
// hand the session over; a node that does not answer (stopped, cut off)
// is passed over, and what it had made durable is what the new owner gets.
const HandoffTimeout = 2 * time.Second

// Start serves other nodes' handoff requests at once, and prepares the
// owners bucket in the background, retrying until JetStream can (a node
// that starts before the others has no quorum yet): until Ready, claims
// fail and clients are refused with 0x88. Once ready, the claims made
// while this node was away have been applied, so a session restored here
// but claimed elsewhere is gone.
func (o *Ownership) Start(ctx context.Context) error {
	opts, err := o.opts.withDefaults() // Sizing in force now
	if err != nil {
		return err
	}
	o.opts = opts
	if o.nc, err = o.src.Dial("session-ownership"); err != nil {
		return fmt.Errorf("session ownership: connecting to NATS: %w", err)
	}
	if o.js, err = jetstream.New(o.nc); err != nil {
		o.nc.Close()
		return fmt.Errorf("session ownership: %w", err)
	}
	o.release = make(chan released, releaseQueue)
	o.halt, o.haltNow = context.WithCancel(context.Background())
	o.done = o.halt.Done()
	o.watchLife, o.endWatch = context.WithCancel(context.Background())
	o.ready = make(chan struct{})
	o.bucket = make(chan struct{})
	o.handoff, err = o.nc.Subscribe(handoffSubject(o.opts.Node), o.serveHandoff)
	if err != nil {
		o.nc.Close()
		return fmt.Errorf("serving handoffs: %w", err)
	}
	o.wg.Add(2)
	go o.setup()
	go o.releaser()
	if o.members != nil {
		o.wg.Add(1)
		go o.reap()
	}
	return nil
}

// sessionsReady is the sessions store's Ready, or a closed channel.
func (o *Ownership) sessionsReady() <-chan struct{} {
	if o.sessions == nil {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return o.sessions.Ready()
}

// Ready is closed once claims can be made.
func (o *Ownership) Ready() <-chan struct{} { return o.ready }

// Claimable reports why a client's claim could not be made now, nil when
// it could: Ready is closed and the owners bucket has a stream leader
// with a majority of its replicas current (a claim is a compare-and-set
// on the bucket, acknowledged by a majority). It asks the leader (one
// JetStream request, bounded by ctx), so readiness follows a leader lost
// after the start, not only the start.
func (o *Ownership) Claimable(ctx context.Context) error {
	select {
	case <-o.Ready():
	default:
		return errors.New("session ownership not ready yet")
	}
	if o.js == nil {
		return ErrNotReady
	}
	st, err := o.js.Stream(ctx, "KV_"+OwnersBucket)
	if err != nil {
		return fmt.Errorf("sessions cannot be claimed: bucket %s: %w", OwnersBucket, err)
	}
	info := st.CachedInfo()
	if info.Cluster == nil {
		return nil // a single JetStream server
	}
	if info.Cluster.Leader == "" {
		return fmt.Errorf("sessions cannot be claimed: bucket %s has no leader (JetStream is electing one)", OwnersBucket)
	}
	current := 1 // the leader
	for _, p := range info.Cluster.Replicas {
		if p.Current && !p.Offline {
			current++
		}
	}
	if total := 1 + len(info.Cluster.Replicas); current < total/2+1 {
		return fmt.Errorf("sessions cannot be claimed: bucket %s has %d of %d replicas current, fewer than a majority", OwnersBucket, current, total)
	}
	return nil
}

// setup prepares the bucket and its watch, then restores the sessions the
// bucket gives this node, retrying each until it can.
func (o *Ownership) setup() {
	defer o.wg.Done()
	if !retrySetup(o.done, o.errs, "session ownership not ready yet", o.prepare) {
		return
	}
	close(o.bucket)
	if o.sessions != nil {
		select {
		case <-o.sessions.Ready():
		case <-o.done:
			return
		}
		resolved := make(map[string]bool) // across attempts
		if !retrySetup(o.done, o.errs, "restoring the sessions this node owns", func(ctx context.Context) error {
			return o.restoreOwned(ctx, resolved)
		}) {
			return
		}
	}
	close(o.ready)
}

// restoreOwned restores the sessions whose entries name this node: they
// were its own before it restarted. Each is claimed again by
// compare-and-set first, so a session a survivor adopted meanwhile is not
// restored here, and no survivor adopts one restored here. resolved holds
// the keys done with by earlier attempts.
func (o *Ownership) restoreOwned(ctx context.Context, resolved map[string]bool) error {
	ctx, cancel := context.WithTimeout(ctx, adoptTimeout)
	defer cancel()
	claims := make(map[string]uint64)
	for key, rev := range o.entriesOf(o.opts.Node) {
		if !resolved[key] {
			claims[key] = rev
		}
	}
	maps.Copy(claims, o.unrestored) // claimed already, under these tokens
	done := o.adopt(ctx, claims, "")
	for key := range done {
		resolved[key] = true
	}
	if left := len(claims) - len(done); left > 0 {
		return fmt.Errorf("%d of the %d sessions this node owns not restored yet", left, len(claims))
	}
	return nil
}

// prepare creates (or joins) the owners bucket and applies its claims.
func (o *Ownership) prepare(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, prepareTimeout)
	defer cancel()
	kv, err := createOwners(ctx, o.js, o.opts.Replicas)
	if err != nil {
		return err
	}
	o.kv = kv
	o.watcher, err = watchBucket(ctx, o.watchLife, o.js, OwnersBucket, &o.wg, o.log, o.watch)
	return err
}

// Stop ends the watch, the setup, the releaser and the adoptions at
// once, whatever the cluster's state: claims, handoffs and takeovers
// under way are cancelled, releases still queued are dropped (their
// entries are replaced by the next claim), and the ownership's NATS
// connection is closed, which ends the owners bucket's watch and the
// handoff service without a request to JetStream (see watchBucket). A
// second Stop does nothing.
func (o *Ownership) Stop(ctx context.Context) error {
	if o.done == nil {
		return nil
	}
	o.hmu.Lock()
	again := o.stopping
	o.stopping = true
	o.hmu.Unlock()
	if again {
		return nil
	}
	o.haltNow()
	o.nc.Close() // the watch's Updates close: watch returns
	o.endWatch()
	o.hwg.Wait() // the request being served, if any
	o.wg.Wait()
	return nil
}

// watch applies other nodes' claims until the watcher stops; caughtUp is
// closed once the claims present at the start are applied.
func (o *Ownership) watch(w jetstream.KeyWatcher, caughtUp chan<- struct{}) {
	defer o.wg.Done()
	for e := range w.Updates() {
		if e == nil {
			close(caughtUp)
			continue
		}
		if strings.HasPrefix(e.Key(), resyncPrefix) {
			o.noteApplied(e.Revision()) // a node's Resync mark, not a session
			continue
		}
		o.indexEntry(e)
		if e.Operation() != jetstream.KeyValuePut || string(e.Value()) == o.opts.Node {
			o.noteApplied(e.Revision())
			continue // a release, or our own claim
		}
		id, err := clientID(e.Key())
		if err != nil {
			o.log.Warn("ignoring a session owner entry", "err", err)
			o.noteApplied(e.Revision())
			continue
		}
		ctx, cancel := context.WithTimeout(o.halt, HandoffTimeout)
		o.awaitAdopt(ctx, id)
		gone := o.b.TakenOver(ctx, id, e.Revision())
		cancel()
		if gone {
			o.log.Debug("session taken over by another node", "client", id, "node", string(e.Value()), "revision", e.Revision())
		}
		o.noteApplied(e.Revision())
	}
}

// noteApplied records that the watch applied the owners bucket up to
// revision rev.
func (o *Ownership) noteApplied(rev uint64) {
	o.appliedMu.Lock()
	defer o.appliedMu.Unlock()
	if rev <= o.applied {
		return
	}
	o.applied = rev
	if o.appliedCh != nil {
		close(o.appliedCh)
		o.appliedCh = nil
	}
}

// resyncPrefix begins the owners bucket keys Resync writes: a session's
// key (base64url) has no dot.
const resyncPrefix = "resync."

// Resync implements broker.Resyncer: it writes this node's mark in the
// owners bucket (key resync.<node>) and returns once the watch has
// applied the bucket up to the mark's revision, so every session another
// node claimed before the call has been taken from this node
// (TakenOver). A write, not a read of the bucket's last revision: the
// stream's leader orders it after every earlier claim, where a node that
// has just thawed may wait seconds for an answer to a stream info
// request (seen: over 5 s, while its writes were acknowledged in
// milliseconds). A node that was paused calls it before it acts for the
// sessions it holds again (broker/pause.go).
func (o *Ownership) Resync(ctx context.Context) error {
	select {
	case <-o.bucket:
	case <-ctx.Done():
		return ctx.Err()
	}
	last, err := o.kv.Put(ctx, resyncPrefix+clientKey(o.opts.Node), []byte(o.opts.Node))
	if err != nil {
		return fmt.Errorf("writing this node's resync mark in the session owners: %w", err)
	}
	for {
		o.appliedMu.Lock()
		if o.applied >= last {
			o.appliedMu.Unlock()
			return nil
		}
		if o.appliedCh == nil {
			o.appliedCh = make(chan struct{})
		}
		ch := o.appliedCh
		o.appliedMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("applying the session owners up to revision %d: %w", last, ctx.Err())
		}
	}
}

// releaser deletes the entries of sessions that ended here.
func (o *Ownership) releaser() {
	defer o.wg.Done()
	for {
		select {
		case <-o.done:
			return
		case r := <-o.release:
			select {
			case <-o.bucket:
			default:
				continue // an entry left over is replaced by the next claim
			}
			ctx, cancel := context.WithTimeout(o.halt, broker.ClaimTimeout)
			err := o.kv.Delete(ctx, r.key, jetstream.LastRevision(r.token))
			cancel()
			if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				o.log.Debug("releasing a session owner entry", "key", r.key, "err", err)
			}
		}
	}
}

// serveHandoff answers another node's request to hand a session over
// (token, 8 bytes big-endian, then the client identifier) once this node
// has let it go and everything it wrote is durable.
func (o *Ownership) serveHandoff(m *nats.Msg) {
	if len(m.Data) < 8 {
		return
	}
	o.hmu.Lock()
	if o.stopping {
		o.hmu.Unlock()
		return
	}
	o.hwg.Add(1)
	o.hmu.Unlock()
	defer o.hwg.Done()
	token := binary.BigEndian.Uint64(m.Data)
	id := string(m.Data[8:])
	ctx, cancel := context.WithTimeout(o.halt, HandoffTimeout)
	defer cancel()
	o.awaitAdopt(ctx, id)
	had := o.b.TakenOver(ctx, id, token)
	o.log.Debug("handed a session over", "client", id, "token", token, "had", had)
	_ = m.Respond(nil)
}

// Claim implements broker.Ownership: the compare-and-set, then, when
// another node owned the session, its handoff and the adoption of what it
// stored.
func (o *Ownership) Claim(ctx context.Context, clientID string) (uint64, error) {
	if o.halt == nil {
		return 0, ErrNotReady // not started
	}
	// Stop cancels a claim under way.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(o.halt, cancel)()
	// A node that has just started waits for its cluster state (at most
	// ctx: the broker's ClaimTimeout).
	for _, ready := range []<-chan struct{}{o.ready, o.sessionsReady()} {
		select {
		case <-ready:
		case <-ctx.Done():
			return 0, ErrNotReady
		case <-o.done:
			return 0, ErrNotReady
		}
	}
	// One claim of a client at a time on this node. A node that thaws
	// reads several CONNECTs of one client at once (its retries, queued in
	// the node's sockets during the freeze); the later claim found the
	// earlier one's entry (this node) and read the session's records
	// while the earlier one still waited for the node that held the
	// session to hand it over — that node went on delivering, then
	// handed over what the later claim had not read: QoS 2 messages
	// delivered twice (`frozen-sub-n3 got QoS 2 frozen-pub-q2-n1:1155 2
	// times`, n3's claims 25 and 28 of it, n2 handing it over to claim 25
	// after claim 28 had read it). Waiting for the earlier claim, the
	// later one finds the session here, held under the claim it replaces.
	for {
		o.turnMu.Lock()
		busy := o.turns[clientID]
		if busy == nil {
			mine := make(chan struct{})
			o.turns[clientID] = mine
			o.turnMu.Unlock()
			defer func() {
				o.turnMu.Lock()
				delete(o.turns, clientID)
				o.turnMu.Unlock()
				close(mine)
			}()
			break
		}
		o.turnMu.Unlock()
		o.claimWaits.Add(1)
		select {
		case <-busy:
		case <-ctx.Done():
			return 0, fmt.Errorf("claiming the session of %q: waiting for its claim under way here: %w", clientID, ctx.Err())
		}
	}
	key := clientKey(clientID)
	node := []byte(o.opts.Node)
	var prev string    // the node that owned the session before
	var prevRev uint64 // and the revision of its claim
	var token uint64
	for {
		e, err := o.kv.Get(ctx, key)
		prev, prevRev = "", 0
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			token, err = o.kv.Create(ctx, key, node)
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // claimed meanwhile
			}
		case err != nil:
		default:
			prev, prevRev = string(e.Value()), e.Revision()
			token, err = o.kv.Update(ctx, key, node, e.Revision())
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue // claimed meanwhile
			}
		}
		if err != nil {
			return 0, fmt.Errorf("claiming the session of %q: %w", clientID, err)
		}
		break
	}
	// From now on older claims are stale news here (a watch behind).
	o.b.NoteClaim(clientID, token)
	if o.sessions == nil {
		return token, nil
	}
	// This node may be adopting the session right now (its node was
	// lost, or it is this node's own from before a restart): the claim
	// above came after the adoption's, and the session is here once the
	// adoption is done.
	o.awaitAdopt(ctx, clientID)
	if prev == o.opts.Node {
		if held, ok := o.b.HeldUnder(clientID); ok && held == prevRev {
			return token, nil
		}
		// Ours on paper only: an adoption that lost the race to this
		// claim, or a session that ended here, whose records are being
		// deleted: what is read below comes after that deletion. Or
		// held here under an older claim than the one this claim
		// replaced: a claim of this node that failed after the previous
		// owner handed the session over (a node just thawed, its fence
		// unanswered), whose handover this node's copy, from before,
		// knows nothing of — the stored state is the truth, and the
		// adoption below replaces the copy (seen: `frozen-paho-sub`
		// given n3's copy from before a freeze, claim 4, after n1 had
		// held the session under claim 18 and handed it to n3's failed
		// claim 22; the QoS 2 messages n1 had stored for it were
		// dropped as copies and never sent).
		o.b.Settle(ctx)
	} else if prev != "" {
		o.awaitHandoff(ctx, prev, clientID, token)
		// This node may have held the session before prev (it handed
		// it over, or adopted it after a loss, then another node's claim
		// took it): what it wrote then, and could not make durable
		// within its own handover (a stream without a leader), is read
		// below with the rest, not found later by the next owner.
		sctx, cancel := context.WithTimeout(ctx, HandoffTimeout)
		o.b.Settle(sctx)
		cancel()
	}
	if o.beforeFence != nil {
		if err := o.beforeFence(clientID); err != nil {
			return 0, err
		}
	}
	// After the previous owner's handoff, before the records are read:
	// what it has not stored yet cannot be stored any more (fence.go).
	fenced, err := o.sessions.fence(ctx, clientID, token)
	if err != nil {
		o.log.Debug("claim fenced out", "client", clientID, "token", token, "prev", prev, "err", err)
		return 0, err
	}
	o.log.Debug("session claimed", "client", clientID, "token", token, "prev", prev)
	if prev == "" {
		return token, nil
	}
	if o.beforeLoad != nil {
		o.beforeLoad(clientID)
	}
	// Routed deliveries the followers read from now on wait for the
	// session to be here; those written before are read with it.
	o.sessions.beginAdopt(clientID)
	defer o.sessions.endAdopt(clientID)
	st, err := o.sessions.loadSession(ctx, clientID, fenced)
	if err != nil {
		return 0, fmt.Errorf("loading the session of %q: %w", clientID, err)
	}
	if st != nil {
		// No token: the connecting client's attach holds the claim, which a
		// session that expired meanwhile must not release.
		if err := o.sessions.adoptStored(st, 0); err != nil {
			return 0, err
		}
	}
	if prev != o.opts.Node {
		// What the client published through prev comes first.
		o.sessions.arrived(ctx, clientID)
	}
	return token, nil
}

// awaitHandoff asks node prev to hand clientID's session over and waits
// for its answer: at once when prev is not connected (no responders), at
// most HandoffTimeout when it does not answer.
func (o *Ownership) awaitHandoff(ctx context.Context, prev, clientID string, token uint64) {
	ctx, cancel := context.WithTimeout(ctx, HandoffTimeout)
	defer cancel()
	req := binary.BigEndian.AppendUint64(nil, token)
	req = append(req, clientID...)
	_, err := o.nc.RequestWithContext(ctx, handoffSubject(prev), req)
	switch {
	case err == nil:
	case errors.Is(err, nats.ErrNoResponders):
		o.log.Info("taking over a session from a node that is gone", "client", clientID, "node", prev)
	default:
		o.log.Warn("taking over a session without its previous owner's handoff", "client", clientID, "node", prev, "err", err)
	}
}

// Release implements broker.Ownership; it never blocks.
func (o *Ownership) Release(clientID string, token uint64) {
	select {
	case o.release <- released{clientKey(clientID), token}:
	default:
	}
}
