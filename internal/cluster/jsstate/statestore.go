package jsstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/lifecycle"
	"github.com/edgeport/edgeport/internal/lograte"
	"github.com/edgeport/edgeport/internal/statestore"
)

// StateStoreBucket holds the state store's keys in cluster mode: the key
// is topicKey(state store key) (any bytes: letters, digits, '-', '_' and
// '/' kept, the rest =XX), the value the state store's record (value,
// version, fencing token, expiry). A deletion is a KV delete marker
// whose payload is the deletion's version, so every node notifies it
// with the same one.
const StateStoreBucket = "edgeport-statestore"

// stateStoreHistory is how many revisions of a key the bucket keeps. A
// node's watch reads the changes from the stream: with one revision per
// key, a change the next change of the same key replaced before the watch
// read it was gone, and that node's KEYNOTIFY registrations never heard
// of it (6 of 90 runs of TestStateStoreKeyNotifyAcrossNodes on a loaded
// machine, a DEL replaced 2 ms later). Reads and compare-and-set look at
// the latest revision only; the older ones cost their bytes.
const stateStoreHistory = 16

// StateBackend is the state store's statestore.SharedBackend in cluster
// mode: a replicated key-value bucket every node reads and writes.
//
//   - A write is published with the revision it expects the key to have
//     (Nats-Expected-Last-Subject-Sequence: 0 for a key never written);
//     JetStream refuses it when another node wrote the key first
//     (statestore.ErrConflict), and acknowledges it only once it is on a
//     majority of the replicas. The writes of a batch are pipelined.
//   - One watch of the bucket per node delivers every change, this node's
//     too, to the state store, in the bucket's order.
//   - LastRevision asks the bucket's stream leader for its last sequence.
type StateBackend struct {
	src  JetStreamSource
	opts Options
	log  *slog.Logger
	errs *lograte.Limiter

	nc      *nats.Conn                         // the backend's own connection, from Start; Stop closes it
	js      jetstream.JetStream                // on nc
	subject string                             // "$KV.<bucket>.", the prefix of a key's subject
	kv      atomic.Pointer[jetstream.KeyValue] // set by setup before ready is closed
	apply   func([]statestore.Change, bool)    // from Watch
	ready   chan struct{}                      // closed once the bucket is watched
	quit    chan struct{}                      // closed by Stop
	halt    chan struct{}                      // closed by BeginStop (or Stop): waits for JetStream end
	haltMu  sync.Mutex                         // guards closing halt and quit
	wg      sync.WaitGroup                     // setup, the watch
	// watchLife is the bucket's watch's lifetime, ended by Stop after it
	// closed nc (see watchBucket).
	watchLife context.Context
	endWatch  context.CancelFunc
}

var (
	_ statestore.SharedBackend = (*StateBackend)(nil)
	_ lifecycle.Component      = (*StateBackend)(nil)
)

// NewStateBackend returns the state store's backend on src. Start it
// before the state store (statestore.Options.Backend), stop it after.
func NewStateBackend(src JetStreamSource, opts Options) (*StateBackend, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &StateBackend{src: src, opts: o, log: o.Logger, errs: lograte.New(o.Logger, time.Minute),
		subject: "$KV." + StateStoreBucket + ".",
		ready:   make(chan struct{}), quit: make(chan struct{}), halt: make(chan struct{})}, nil
}

// Start connects to the node's NATS; the bucket is created (or joined)
// by Watch, in the background, once JetStream has a quorum.
func (b *StateBackend) Start(context.Context) error {
	opts, err := b.opts.withDefaults() // Sizing in force now
	if err != nil {
		return err
	}
	b.opts = opts
	if b.nc, err = b.src.Dial("statestore"); err != nil {
		return fmt.Errorf("state store backend: connecting to NATS: %w", err)
	}
	if b.js, err = jetstream.New(b.nc); err != nil {
		b.nc.Close()
		return fmt.Errorf("state store backend: %w", err)
	}
	b.watchLife, b.endWatch = context.WithCancel(context.Background())
	return nil
}

// BeginStop is called when the node begins to stop, before the state
// store stops: from then on a write or read waiting for JetStream fails at
// once (503) instead of waiting out AckTimeout on a cluster without
// quorum, so the state store's Stop is quick.
func (b *StateBackend) BeginStop() {
	b.haltMu.Lock()
	defer b.haltMu.Unlock()
	select {
	case <-b.halt:
	default:
		close(b.halt)
	}
}

// Stop ends the watch and waits for the requests under way.
func (b *StateBackend) Stop(context.Context) error {
	b.BeginStop()
	b.haltMu.Lock()
	select {
	case <-b.quit:
	default:
		close(b.quit)
	}
	b.haltMu.Unlock()
	if b.nc != nil {
		// Closing the connection ends the watch (and any request under
		// way) at once, whatever JetStream's state (see watchBucket).
		b.nc.Close()
		b.endWatch()
	}
	b.wg.Wait()
	return nil
}

// Ready is closed once the bucket is watched and its content delivered.
func (b *StateBackend) Ready() <-chan struct{} { return b.ready }

func (b *StateBackend) isReady() bool {
	select {
	case <-b.ready:
		return true
	default:
		return false
	}
}

// Load implements statestore.Backend: the keys come through Watch.
func (b *StateBackend) Load(func(key, rec []byte) error) error { return nil }

// Watch implements statestore.SharedBackend: it creates (or joins) the
// bucket, retrying until JetStream can, and delivers its content and
// then its changes to apply.
func (b *StateBackend) Watch(apply func(cs []statestore.Change, live bool)) {
	b.apply = apply
	b.wg.Add(1)
	go b.setup()
}

func (b *StateBackend) setup() {
	defer b.wg.Done()
	ok := retrySetup(b.quit, b.errs, "state store bucket not ready yet", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, prepareTimeout)
		defer cancel()
		kv, err := ensureBucket(ctx, b.js, jetstream.KeyValueConfig{
			Bucket:      StateStoreBucket,
			Description: "Edgeport: the state store's keys",
			History:     stateStoreHistory,
			Replicas:    b.opts.Replicas,
			Storage:     jetstream.FileStorage,
		})
		if err != nil {
			return fmt.Errorf("creating bucket %s: %w", StateStoreBucket, err)
		}
		// The watch needs the bucket's stream leader: until there is one
		// it fails, and the next attempt tries again.
		b.kv.Store(&kv)
		_, err = watchBucket(ctx, b.watchLife, b.js, StateStoreBucket, &b.wg, b.log, b.watch)
		return err
	})
	if ok {
		close(b.ready)
		b.log.Info("state store bucket ready", "bucket", StateStoreBucket, "replicas", b.opts.Replicas)
	}
}

// maxDelivery bounds the changes handed to the state store at once.
const maxDelivery = 256

// watch delivers the bucket's entries: the initial content (live false),
// then a live delivery with no change once it is caught up, then each
// change as it comes, grouped while more are waiting.
func (b *StateBackend) watch(w jetstream.KeyWatcher, caughtUp chan<- struct{}) {
	defer b.wg.Done()
	live := false
	var batch []statestore.Change
	flush := func() {
		if len(batch) > 0 {
			b.apply(batch, live)
			batch = nil
		}
	}
	updates := w.Updates()
	for e := range updates {
		if e == nil {
			flush()
			live = true
			b.apply(nil, true)
			close(caughtUp)
			continue
		}
		key, err := keyTopic(e.Key())
		if err != nil {
			b.errs.Log(slog.LevelWarn, "key", "ignoring a state store entry", "err", err)
			continue
		}
		op := e.Operation()
		batch = append(batch, statestore.Change{Key: key, Rev: e.Revision(), Data: e.Value(),
			Delete: op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge})
		if len(batch) >= maxDelivery || len(updates) == 0 {
			flush()
		}
	}
	flush()
}

// Commit implements statestore.Backend: each write is a compare-and-set
// on its key's revision, published without waiting; then every
// acknowledgement is awaited (at most Options.AckTimeout in all).
func (b *StateBackend) Commit(ws []statestore.Write) error {
	if len(ws) == 0 {
		return nil
	}
	if !b.isReady() {
		return fmt.Errorf("%w: bucket %s not ready (no JetStream quorum yet)", statestore.ErrUnavailable, StateStoreBucket)
	}
	futures := make([]jetstream.PubAckFuture, len(ws))
	for i := range ws {
		w := &ws[i]
		m := nats.NewMsg(b.subject + topicKey(w.Key))
		m.Data = w.Data
		if w.Delete {
			m.Header.Set(kvOperation, "DEL")
		}
		f, err := b.js.PublishMsgAsync(m, jetstream.WithExpectLastSequencePerSubject(w.Expect))
		if err != nil {
			w.Err = fmt.Errorf("%w: %w", statestore.ErrUnavailable, err)
			continue
		}
		futures[i] = f
	}
	timer := time.NewTimer(b.opts.AckTimeout)
	defer timer.Stop()
	var expired <-chan time.Time = timer.C // nil once it fired: later waits take what is there
	for i, f := range futures {
		if f == nil {
			continue
		}
		if ack, ok, err := awaitAck(f, expired, b.halt); ok {
			ws[i].Rev, ws[i].Err = ack, err
			continue
		}
		expired = nil
		ws[i].Err = fmt.Errorf("%w: no acknowledgement from JetStream within %v", statestore.ErrUnavailable, b.opts.AckTimeout)
	}
	return nil
}

// awaitAck waits for f's outcome until expired fires (nil: only what is
// there already) or halt closes, and returns the sequence it was stored at or why it was
// refused; ok is false when there was no outcome in time.
func awaitAck(f jetstream.PubAckFuture, expired <-chan time.Time, halt <-chan struct{}) (seq uint64, ok bool, err error) {
	if expired == nil {
		select {
		case ack := <-f.Ok():
			return ack.Sequence, true, nil
		case err := <-f.Err():
			return 0, true, writeError(err)
		default:
			return 0, false, nil
		}
	}
	select {
	case ack := <-f.Ok():
		return ack.Sequence, true, nil
	case err := <-f.Err():
		return 0, true, writeError(err)
	case <-expired:
		return 0, false, nil
	case <-halt:
		return 0, true, fmt.Errorf("%w: the node is stopping", statestore.ErrUnavailable)
	}
}

// kvOperation is the header JetStream's key-value clients read a
// deletion from.
const kvOperation = "KV-Operation"

// writeError classifies a refused write: a conflict (the key's revision
// was not the expected one), or the store being unavailable.
func writeError(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return statestore.ErrConflict
	}
	return fmt.Errorf("%w: %w", statestore.ErrUnavailable, err)
}

// Get implements statestore.SharedBackend: the key's last message, as
// the bucket's stream leader has it. (A direct get, which nats.go uses for
// key-value buckets, may be answered by a replica that has not yet
// applied the write a compare-and-set just lost to, so the retry would
// lose again.)
func (b *StateBackend) Get(ctx context.Context, key string) (statestore.Change, error) {
	if !b.isReady() {
		return statestore.Change{}, statestore.ErrUnavailable
	}
	ctx, stop := b.untilHalt(ctx)
	defer stop()
	req, err := json.Marshal(msgGetRequest{LastBySubject: b.subject + topicKey(key)})
	if err != nil {
		return statestore.Change{}, err
	}
	m, err := b.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+StateStoreBucket, req)
	if err != nil {
		return statestore.Change{}, fmt.Errorf("%w: reading %s: %w", statestore.ErrUnavailable, StateStoreBucket, err)
	}
	var resp msgGetResponse
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return statestore.Change{}, fmt.Errorf("%w: reading %s: %w", statestore.ErrUnavailable, StateStoreBucket, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return statestore.Change{Key: key, Delete: true}, nil
	case resp.Error != nil:
		return statestore.Change{}, fmt.Errorf("%w: reading %s: %w", statestore.ErrUnavailable, StateStoreBucket, resp.Error)
	case resp.Message == nil:
		return statestore.Change{}, fmt.Errorf("%w: reading %s: an answer without a message", statestore.ErrUnavailable, StateStoreBucket)
	}
	ch := statestore.Change{Key: key, Rev: resp.Message.Sequence, Data: resp.Message.Data}
	if len(resp.Message.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Header)
		if err != nil {
			return statestore.Change{}, fmt.Errorf("%w: reading %s: %w", statestore.ErrUnavailable, StateStoreBucket, err)
		}
		op := h.Get(kvOperation)
		ch.Delete = op == "DEL" || op == "PURGE"
	}
	return ch, nil
}

// msgGetRequest and msgGetResponse are JetStream's STREAM.MSG.GET API.
type msgGetRequest struct {
	LastBySubject string `json:"last_by_subj"`
}

type msgGetResponse struct {
	Error   *jetstream.APIError `json:"error,omitempty"`
	Message *struct {
		Sequence uint64 `json:"seq"`
		Header   []byte `json:"hdrs,omitempty"`
		Data     []byte `json:"data,omitempty"`
	} `json:"message,omitempty"`
}

// LastRevision implements statestore.SharedBackend: the bucket's last
// sequence, as its stream leader has it (the state store asks once per
// round of requests).
func (b *StateBackend) LastRevision(ctx context.Context) (uint64, error) {
	kv := b.kv.Load()
	if kv == nil || !b.isReady() {
		return 0, fmt.Errorf("%w: bucket %s not ready (no JetStream quorum yet)", statestore.ErrUnavailable, StateStoreBucket)
	}
	ctx, stop := b.untilHalt(ctx)
	defer stop()
	st, err := (*kv).Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: reading the state of %s: %w", statestore.ErrUnavailable, StateStoreBucket, err)
	}
	kvs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, fmt.Errorf("bucket %s: unexpected status %T", StateStoreBucket, st)
	}
	return kvs.StreamInfo().State.LastSeq, nil
}

// untilHalt returns ctx, also cancelled when BeginStop is called; stop
// releases it.
func (b *StateBackend) untilHalt(ctx context.Context) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-b.halt:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
