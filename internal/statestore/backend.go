package statestore

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgeport/edgeport/internal/store"
)

// Backend is where the state store keeps its keys. Two are built: the
// node's own store (single node: New with a *store.Store) and, in
// cluster mode, a replicated JetStream key-value bucket every node shares
// (a SharedBackend, internal/cluster/jsstate.StateBackend).
//
// The executor keeps every key in memory either way and hands the backend
// the writes of each batch; no answer of the batch leaves before Commit
// returned.
type Backend interface {
	// Load calls apply with every stored key and its record before the
	// state store serves; a shared backend delivers its keys through
	// Watch instead and loads nothing here.
	Load(apply func(key, rec []byte) error) error
	// Commit makes the writes of one batch durable. A local backend
	// stores all of them or none and returns the error; a shared backend
	// stores each on its own, sets its Rev or Err, and returns nil.
	Commit(ws []Write) error
}

// SharedBackend is a Backend that other nodes write too. Its writes are
// compare-and-set on the key's revision (Write.Expect): of two nodes
// racing on one key, one wins and the other gets ErrConflict, reads the
// key again (Get) and decides again. Every node learns every change,
// its own included, from Watch, which is where notifications come from.
type SharedBackend interface {
	Backend
	// Watch starts delivering the changes of the keys to apply, on one
	// goroutine, in revision order: first what the backend holds (live
	// false), then every change as it is made (live true). apply must
	// not block for long. Watch is called once, by the state store's
	// Start; the backend's Stop ends the deliveries.
	Watch(apply func(cs []Change, live bool))
	// Get reads a key's current state from the backend itself (Rev 0
	// and Delete when it was never written).
	Get(ctx context.Context, key string) (Change, error)
	// LastRevision returns the revision of the last change acknowledged
	// by the backend, from any node: once Watch delivered it, every write
	// answered before LastRevision was called is in memory.
	LastRevision(ctx context.Context) (uint64, error)
}

// Write is one change of a batch: a key's new record, or its deletion.
type Write struct {
	Key    string
	Delete bool
	// Data is the record (store it under Key), or, for a deletion, the
	// deletion's version (appendHLC), which a shared backend keeps with
	// the deletion so that every node notifies it with that version.
	Data []byte
	// Expect is the revision of the key this write replaces (0: none);
	// a shared backend refuses the write with ErrConflict when the key
	// has another revision. A local backend ignores it.
	Expect uint64

	// Results, set by a shared backend's Commit.
	Rev uint64 // the key's new revision
	Err error  // nil, ErrConflict, or why the write was not stored
}

// Change is a key's state as a shared backend delivers it.
type Change struct {
	Key    string
	Delete bool
	Data   []byte // as Write.Data; a deletion made by another program may have none
	Rev    uint64
}

var (
	// ErrConflict refuses a write whose key changed since its Expect
	// revision (another node wrote it first).
	ErrConflict = errors.New("statestore: the key changed meanwhile")
	// ErrUnavailable fails the writes and reads a shared backend cannot
	// serve (no quorum, not ready): the requests are answered 503.
	ErrUnavailable = errors.New("statestore: the shared store is unavailable")
)

// localBackend keeps the keys in the node's store.Store, one batch per
// transaction, synced before Commit returns.
type localBackend struct {
	st *store.Store
}

func (l localBackend) Load(apply func(key, rec []byte) error) error {
	var aerr error
	err := l.st.ScanKV(Bucket, nil, func(k, v []byte) bool {
		aerr = apply(k, v)
		return aerr == nil
	})
	if err == nil {
		err = aerr
	}
	return err
}

func (l localBackend) Commit(ws []Write) error {
	if len(ws) == 0 {
		// Nothing to write; everything read was made durable by an
		// earlier batch, which this one waited for.
		return nil
	}
	tx := l.st.NewTxn()
	for i := range ws {
		if ws[i].Delete {
			tx.DeleteKV(Bucket, []byte(ws[i].Key))
		} else {
			tx.PutKV(Bucket, []byte(ws[i].Key), ws[i].Data)
		}
	}
	return l.st.CommitSync(tx)
}

// memoryBackend keeps nothing: a state store without a store.
type memoryBackend struct{}

func (memoryBackend) Load(func(key, rec []byte) error) error { return nil }
func (memoryBackend) Commit([]Write) error                   { return nil }

// decodeChange decodes what a shared backend delivers: the entry of a
// put (with its revision), or the version of a deletion (zero when the
// deletion carries none).
func decodeChange(ch *Change, node func([]byte) string) (en *entry, deleted HLC, err error) {
	if ch.Delete {
		if len(ch.Data) > 0 {
			h, rest, ok := decodeHLC(ch.Data, node)
			if !ok || len(rest) != 0 {
				return nil, HLC{}, fmt.Errorf("state store key %q: %w (deletion)", ch.Key, errBadRecord)
			}
			deleted = h
		}
		return nil, deleted, nil
	}
	en, err = decodeRecord(ch.Data, node)
	if err != nil {
		return nil, HLC{}, fmt.Errorf("state store key %q: %w", ch.Key, err)
	}
	en.rev = ch.Rev
	return en, HLC{}, nil
}
