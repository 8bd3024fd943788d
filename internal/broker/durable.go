package broker

import (
	"github.com/edgeport/edgeport/internal/store"
)

// Durable is where the broker keeps what must survive it: sessions, their
// queued and in-flight QoS 1/2 deliveries, inbound QoS 2 state and
// retained messages. On a single node it is the local Pebble store
// (AttachStore); in cluster mode internal/cluster/jsstate provides one on
// NATS JetStream (AttachDurable). The broker's durability rules (persist.go)
// are the same on both: a publisher's PUBACK/PUBREC leaves once the
// transaction holding its deliveries is durable, and transactions are
// committed in the order their changes were made.
type Durable interface {
	// NewTxn returns an empty transaction.
	NewTxn() Txn
	// Commit queues t and returns; it may block while the backend's queue
	// is full. done is called exactly once, on one goroutine and in
	// commit order, with nil when t is durable or with why it is not
	// (store.ErrQuotaExceeded and store.ErrClosed are recognised). done
	// must be quick and must not call Commit. t is not touched afterwards.
	//
	// A backend whose Txn is an OrderedTxn keeps commit order only among
	// transactions that share a client's records or an OrderBy key; one
	// with no write and no key waits for every transaction before it.
	Commit(t Txn, done func(error))
	// Full reports whether writes that add data are refused (quota, disk).
	Full() bool
	// Load walks what the broker restores on Start.
	Load(fn store.LoadFuncs) error
}

// Txn is a set of writes applied atomically, in the order they were
// added; *store.Txn is the Pebble one. Not safe for concurrent use.
type Txn interface {
	PutSession(s *store.Session)
	// DeleteSession removes the session record, its entries and inbound
	// IDs; a PutSession later in the same Txn survives it.
	DeleteSession(clientID string)
	PutEntry(clientID string, e *store.Entry)
	DeleteEntry(clientID string, seq uint64)
	PutInbound(clientID string, packetID uint16)
	DeleteInbound(clientID string, packetID uint16)
	PutRetained(m *store.Message)
	DeleteRetained(topic string)
	// Len is the number of operations added.
	Len() int
	// Discard drops an uncommitted Txn.
	Discard()
}

// OrderedTxn is a Txn of a backend that calls done in commit order only
// among related transactions (cluster mode: a stream whose leader is lost
// does not hold up the others'); see Durable.Commit.
type OrderedTxn interface {
	Txn
	// OrderBy orders the transaction's done after those of the
	// transactions committed before it with the same key.
	OrderBy(key string)
}

// pebbleStore adapts the local store to Durable.
type pebbleStore struct{ *store.Store }

func (p pebbleStore) NewTxn() Txn { return p.Store.NewTxn() }

func (p pebbleStore) Commit(t Txn, done func(error)) { p.Store.Commit(t.(*store.Txn), done) }

var (
	_ Durable = pebbleStore{}
	_ Txn     = (*store.Txn)(nil)
)

// AttachStore makes the broker durable on st, a dependency given at
// construction: call it after New and before Start. Start restores every
// session, queue, in-flight message and retained message from st (which
// must be started first); from then on the broker writes through to it.
//
// Restored wills are held: those due are removed from the store by Start
// and published by ReleaseWills, which also starts the delays of the others.
func (b *Broker) AttachStore(st *store.Store) { b.st = pebbleStore{st} }

// AttachDurable makes the broker durable on d instead of a local store
// (cluster mode), with the same rules as AttachStore.
func (b *Broker) AttachDurable(d Durable) { b.st = d }

// commitSync commits t and waits until it is durable. No broker lock is
// held.
func (b *Broker) commitSync(t Txn) error {
	done := make(chan error, 1)
	b.st.Commit(t, func(err error) { done <- err })
	return <-done
}
