package jsstate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/lifecycle"
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

// Options configures the cluster state of one node.
type Options struct {
	// Node names this node; unique in the cluster (the cluster's member
	// name). Required.
	Node string
	// Replicas is how many JetStream servers hold each bucket; 0 means
	// DefaultReplicas. It cannot exceed the JetStream cluster's size.
	Replicas int
	// Logger receives the component's messages; nil discards them.
	Logger *slog.Logger
}

func (o *Options) withDefaults() (Options, error) {
	c := *o
	if c.Node == "" {
		return c, errors.New("jsstate: Options.Node is required")
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return c, fmt.Errorf("jsstate: replicas %d out of range (1 to 5, as JetStream allows)", c.Replicas)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
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
//     revision of its own claim (a newer claim survives).
//
// It implements broker.Ownership and lifecycle.Component.
type Ownership struct {
	js   jetstream.JetStream
	b    *broker.Broker
	opts Options
	log  *slog.Logger

	kv      jetstream.KeyValue
	watcher jetstream.KeyWatcher
	release chan released // Release's queue for the releaser goroutine
	done    chan struct{} // closed by Stop: the releaser exits
	wg      sync.WaitGroup
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

// NewOwnership returns the session ownership of the node opts.Node on js
// for broker b; attach it with b.AttachOwnership before the broker serves.
func NewOwnership(js jetstream.JetStream, b *broker.Broker, opts Options) (*Ownership, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Ownership{js: js, b: b, opts: o, log: o.Logger}, nil
}

// Start creates (or joins) the owners bucket and applies every claim
// made while this node was away before it returns, so that a session
// restored here but claimed elsewhere is gone before clients connect.
func (o *Ownership) Start(ctx context.Context) error {
	kv, err := o.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      OwnersBucket,
		Description: "Edgeport: the node that owns each client's session",
		History:     1,
		Replicas:    o.opts.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return fmt.Errorf("creating bucket %s: %w", OwnersBucket, err)
	}
	o.kv = kv
	// The watcher outlives ctx, which bounds the start only.
	w, err := kv.WatchAll(context.WithoutCancel(ctx), jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("watching bucket %s: %w", OwnersBucket, err)
	}
	o.watcher = w
	o.release = make(chan released, releaseQueue)
	o.done = make(chan struct{})
	caughtUp := make(chan struct{})
	o.wg.Add(2)
	go o.watch(caughtUp)
	go o.releaser()
	select {
	case <-caughtUp:
		return nil
	case <-ctx.Done():
		_ = o.Stop(context.Background())
		return fmt.Errorf("reading bucket %s: %w", OwnersBucket, ctx.Err())
	}
}

// Stop ends the watch and the releaser; releases still queued are
// dropped (their entries are replaced by the next claim).
func (o *Ownership) Stop(ctx context.Context) error {
	if o.watcher != nil {
		_ = o.watcher.Stop() // closes Updates: watch returns
	}
	if o.done != nil {
		close(o.done)
	}
	o.wg.Wait()
	return nil
}

// watch applies other nodes' claims until the watcher stops; caughtUp is
// closed once the claims present at the start are applied.
func (o *Ownership) watch(caughtUp chan<- struct{}) {
	defer o.wg.Done()
	for e := range o.watcher.Updates() {
		if e == nil {
			close(caughtUp)
			continue
		}
		if string(e.Value()) == o.opts.Node {
			continue // our own claim
		}
		id, err := clientID(e.Key())
		if err != nil {
			o.log.Warn("ignoring a session owner entry", "err", err)
			continue
		}
		if o.b.TakenOver(id, e.Revision()) {
			o.log.Debug("session taken over by another node", "client", id, "node", string(e.Value()), "revision", e.Revision())
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
			ctx, cancel := context.WithTimeout(context.Background(), broker.ClaimTimeout)
			err := o.kv.Delete(ctx, r.key, jetstream.LastRevision(r.token))
			cancel()
			if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				o.log.Debug("releasing a session owner entry", "key", r.key, "err", err)
			}
		}
	}
}

// Claim implements broker.Ownership.
func (o *Ownership) Claim(ctx context.Context, clientID string) (uint64, error) {
	key := clientKey(clientID)
	node := []byte(o.opts.Node)
	for {
		e, err := o.kv.Get(ctx, key)
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			rev, err = o.kv.Create(ctx, key, node)
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // claimed meanwhile
			}
		case err != nil:
		default:
			rev, err = o.kv.Update(ctx, key, node, e.Revision())
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue // claimed meanwhile
			}
		}
		if err != nil {
			return 0, fmt.Errorf("claiming the session of %q: %w", clientID, err)
		}
		return rev, nil
	}
}

// Release implements broker.Ownership; it never blocks.
func (o *Ownership) Release(clientID string, token uint64) {
	select {
	case o.release <- released{clientKey(clientID), token}:
	default:
	}
}
