package statestore

import (
	"context"
	"errors"
	"fmt"
	"github.com/edgeport/edgeport/internal/lograte"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeport/edgeport/internal/broker"
	wallclock "github.com/edgeport/edgeport/internal/clock"
	"github.com/edgeport/edgeport/internal/lifecycle"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
)

// Authorizer decides whether a client may read (GET, KEYNOTIFY, key
// listing) or write (SET, DEL, VDEL) a key. It is called for every
// request, on the executor goroutine and, for GETs, concurrently on the
// publishers' goroutines, so it must be quick and safe for concurrent use.
//
// The requester is the publishing client's ID as the broker vouches for it
// (broker.Message.Origin), falling back to the __invId or __srcId user
// property the SDKs send for a message without an origin; username and attrs come with the security
// issue's principal lookup (see docs/statestore.md).
type Authorizer interface {
	Authorize(clientID, username string, attrs map[string]string, key []byte, write bool) bool
}

// ResponseAuthorizer is implemented by an Authorizer that also decides
// whether a client may receive on a topic: a request whose response topic
// its client could not subscribe to is dropped, like one with a forbidden
// response topic.
type ResponseAuthorizer interface {
	AuthorizeResponse(clientID, topic string) bool
}

// Options configure a Server. The zero value serves an unlimited store.
type Options struct {
	// MaxKeys caps the number of keys; 0 = unlimited. A SET that would
	// create a key beyond it gets "the quota has been exceeded".
	MaxKeys int64
	// MaxBytes caps the bytes of all keys and values together; 0 = unlimited.
	MaxBytes int64
	// Authorizer controls access per key; nil allows everything.
	Authorizer Authorizer
	// Disconnect, when set, ends a client's connection for a protocol
	// violation (a response topic equal to the invoke topic), as Azure IoT
	// Operations does; without it such a request is dropped. It is called
	// on the executor and must not wait for the state store.
	Disconnect func(clientID, reason string)
	// Registerer receives the state store's metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// Logger receives the state store's messages; nil discards them.
	Logger *slog.Logger
	// NodeID is the node part of the versions the state store issues;
	// default "edgeport".
	NodeID string
	// MaxClockSkew is how far in the future a request's __ts or __ft may be;
	// default one minute, as the protocol documents.
	MaxClockSkew time.Duration
	// CacheTTL is how long a response stays in the command cache when the
	// request carries no Message Expiry Interval; default 10s (the SDKs'
	// default request timeout). Requests with one are cached for that long.
	CacheTTL time.Duration
	// CacheEntries bounds the command cache; default 10000.
	CacheEntries int
	// Clock drives key expiry (PX), the command cache and versions' wall
	// time; nil is the system clock. Tests pass a wallclock.Fake.
	Clock wallclock.Clock
	// Backend, when set, keeps the keys instead of the store given to
	// New: in cluster mode, the bucket every node shares (a
	// SharedBackend). It is started before the Server and stopped after.
	Backend Backend
	// SyncTimeout bounds how long a GET waits for a shared backend to
	// say which changes it must see; default 5s. Past it the GET is
	// answered 503.
	SyncTimeout time.Duration
}

// Defaults applied to zero Options fields.
const (
	DefaultNodeID       = "edgeport"
	DefaultMaxClockSkew = time.Minute
	DefaultCacheTTL     = 10 * time.Second
	DefaultCacheEntries = 10000
	DefaultSyncTimeout  = 5 * time.Second
)

// Validate reports options that are out of range, naming the field.
func (o Options) Validate() error {
	var errs []error
	if o.MaxKeys < 0 {
		errs = append(errs, errors.New("stateStoreMaxKeys: must not be negative"))
	}
	if o.MaxBytes < 0 {
		errs = append(errs, errors.New("stateStoreMaxBytes: must not be negative"))
	}
	if o.MaxClockSkew < 0 || o.CacheTTL < 0 || o.CacheEntries < 0 || o.SyncTimeout < 0 {
		errs = append(errs, errors.New("statestore: negative clock skew, cache TTL or cache size"))
	}
	for i := 0; i < len(o.NodeID); i++ {
		if o.NodeID[i] == ':' {
			errs = append(errs, fmt.Errorf("statestore: node ID %q contains ':'", o.NodeID))
			break
		}
	}
	return errors.Join(errs...)
}

// Server is the state store: an in-process service of the broker
// (service.go) that executes requests against an in-memory copy of the
// keys, persisted in a store.Store.
type Server struct {
	opts    Options
	log     *slog.Logger
	errLog  *lograte.Limiter // errors that repeat per request or notification, once a minute each
	metrics *metrics

	be       Backend       // where the keys are kept
	shared   SharedBackend // be, when other nodes write it too; nil on a single node
	b        *broker.Broker
	clientID string // set by Start

	reqs      chan *request
	control   chan func()
	changes   chan changeBatch // from shared.Watch, to the executor
	syncReqs  chan *request    // shared: requests waiting for syncLoop
	stopping  chan struct{}
	stopOnce  sync.Once
	started   bool
	stopServe func()         // set by Start: ends broker.Serve
	wg        sync.WaitGroup // the executor

	reqPool     sync.Pool
	chunkPool   sync.Pool
	scratchPool sync.Pool // *fastScratch, for GETs answered on publishers' goroutines

	view    view    // durable keys, for GETs answered outside the executor
	pending pending // requests in the executor, per invoker

	ex *executor

	amu       sync.Mutex    // guards applied and appliedCh
	applied   uint64        // the last revision of the shared backend the executor applied
	appliedCh chan struct{} // closed and replaced when applied grows
}

// changeBatch is one delivery of SharedBackend.Watch.
type changeBatch struct {
	cs   []Change
	live bool
}

var _ lifecycle.Component = (*Server)(nil)

// New validates opts and registers the metrics; the Server does nothing
// until Start. It keeps its keys in opts.Backend, else in st (nil: in
// memory only; st is started before the Server), and serves the invoke
// topic of b (started before the Server, stopped after it).
func New(st *store.Store, b *broker.Broker, opts Options) (*Server, error) {
	if b == nil {
		return nil, errors.New("statestore: no broker to serve")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.Clock = wallclock.Or(opts.Clock)
	if opts.NodeID == "" {
		opts.NodeID = DefaultNodeID
	}
	if opts.MaxClockSkew == 0 {
		opts.MaxClockSkew = DefaultMaxClockSkew
	}
	if opts.CacheTTL == 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.CacheEntries == 0 {
		opts.CacheEntries = DefaultCacheEntries
	}
	if opts.SyncTimeout == 0 {
		opts.SyncTimeout = DefaultSyncTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:      opts,
		log:       log,
		errLog:    lograte.New(log, time.Minute),
		metrics:   m,
		b:         b,
		reqs:      make(chan *request, queueLength),
		control:   make(chan func()),
		changes:   make(chan changeBatch, 64),
		syncReqs:  make(chan *request, queueLength),
		stopping:  make(chan struct{}),
		appliedCh: make(chan struct{}),
	}
	switch {
	case opts.Backend != nil:
		s.be = opts.Backend
	case st != nil:
		s.be = localBackend{st}
	default:
		s.be = memoryBackend{}
	}
	s.shared, _ = s.be.(SharedBackend)
	s.pending.n = make(map[string]int)
	s.reqPool.New = func() any { return new(request) }
	s.chunkPool.New = func() any { return new(chunk) }
	s.scratchPool.New = func() any { return new(fastScratch) }
	return s, nil
}

// queueLength bounds the requests waiting for the executor; beyond it
// their publishers wait.
const queueLength = 1024

// Start restores the keys from the store and starts serving the invoke
// topic; it returns an error only when the keys cannot be restored.
func (s *Server) Start(ctx context.Context) error {
	if s.started {
		return errors.New("statestore: already started")
	}
	// The identifier is in the broker's reserved internal space, which no
	// network client may claim. It is the origin of the state store's
	// answers and notifications (No Local, $edgeport.origin).
	s.clientID = ClientID
	ex, err := newExecutor(s)
	if err != nil {
		return err
	}
	s.ex = ex
	s.started = true
	keys, bytes := ex.count, ex.bytes // read before the executor runs
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.ex.run()
	}()
	if s.shared != nil {
		s.shared.Watch(s.deliver)
		s.wg.Add(1)
		go s.syncLoop()
	}
	s.stopServe = s.b.Serve(InvokeTopic, s.serve)
	s.log.Info("state store started", "keys", keys, "bytes", bytes, "topic", InvokeTopic)
	return nil
}

// Stop stops taking requests, finishes the batch in progress and waits for
// the executor or ctx to expire. Requests still queued stay unanswered:
// their clients retry. The store is left open: its owner closes it after
// Stop.
func (s *Server) Stop(ctx context.Context) error {
	if !s.started {
		return nil
	}
	s.stopServe()
	s.stopOnce.Do(func() { close(s.stopping) })
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		<-done
		return fmt.Errorf("statestore: stopping: %w", ctx.Err())
	}
}

// SetLimits changes the key-count and byte quotas (0: unlimited); the next
// request is checked against them.
func (s *Server) SetLimits(maxKeys, maxBytes int64) {
	if !s.started {
		s.opts.MaxKeys, s.opts.MaxBytes = maxKeys, maxBytes
		return
	}
	s.do(func() { s.opts.MaxKeys, s.opts.MaxBytes = maxKeys, maxBytes })
}

// ClientDisconnected forgets the KEYNOTIFY registrations of a client when
// its session ends (registrations live as long as the session, so a
// persistent session keeps them across reconnects); the app registers it
// with broker.OnSessionEnd.
func (s *Server) ClientDisconnected(clientID string) {
	s.do(func() { s.ex.forgetClient(clientID) })
}

// Stats is a snapshot of what the state store holds.
type Stats struct {
	Keys  int64
	Bytes int64
}

// Stats returns the number of keys and their bytes.
func (s *Server) Stats() Stats {
	var st Stats
	s.do(func() { st = Stats{Keys: s.ex.count, Bytes: s.ex.bytes} })
	return st
}

// do runs f on the executor goroutine and waits for it; it does nothing
// once the Server is stopping.
func (s *Server) do(f func()) {
	if !s.started {
		return
	}
	done := make(chan struct{})
	select {
	case s.control <- func() { f(); close(done) }:
		<-done
	case <-s.stopping:
	}
}

// ClientID is the state store's MQTT client identifier.
func (s *Server) ClientID() string { return s.clientID }

// ClientID is the state store's MQTT client identifier.
const ClientID = broker.InternalClientIDPrefix + "statestore"

func (s *Server) getChunk() *chunk { return s.chunkPool.Get().(*chunk) }

// maxPooledChunk keeps one huge response from pinning its buffer.
const maxPooledChunk = 256 << 10

func (s *Server) putChunk(c *chunk) {
	if c.size > maxPooledChunk {
		return
	}
	c.reset()
	s.chunkPool.Put(c)
}

// request is one message received on the invoke topic. Its fields alias
// the broker.Message, which is immutable: nothing is copied.
type request struct {
	qos byte

	respTopic    string
	hasRespTopic bool
	corr         []byte
	expiry       uint32 // seconds left of the request's Message Expiry Interval
	hasExpiry    bool
	ts, ft       string // __ts, __ft
	hasTS, hasFT bool
	invoker      string // the publisher's client ID, else __invId, else __srcId
	protVer      string
	hasProtVer   bool
	payload      []byte
	pkey         string // its entry in Server.pending; "" when none
	// A shared backend's: how many times its write was refused because
	// its key changed meanwhile, and (GET) whether it could not learn
	// what it must see.
	attempts    int
	unavailable bool
}

// newRequest reads a request from a routed message.
func (s *Server) newRequest(m *broker.Message) *request {
	r := s.reqPool.Get().(*request)
	*r = request{qos: m.QoS, payload: m.Payload}
	if m.Expiry != 0 {
		r.expiry, r.hasExpiry = m.ExpiryLeft(s.opts.Clock.Now()), true
	}
	src := ""
	if p := m.Props; p != nil {
		r.respTopic = p.ResponseTopic
		r.hasRespTopic = p.Has(packet.PropResponseTopic) && p.ResponseTopic != ""
		if p.Has(packet.PropCorrelationData) {
			r.corr = p.CorrelationData
		}
		for _, u := range p.User {
			switch u.Key {
			case propTimestamp:
				r.ts, r.hasTS = u.Value, true
			case propFencingToken:
				r.ft, r.hasFT = u.Value, true
			case propInvokerClientID:
				r.invoker = u.Value
			case propSourceID:
				src = u.Value
			case propProtocolVersion:
				r.protVer, r.hasProtVer = u.Value, true
			}
		}
	}
	if r.invoker == "" {
		r.invoker = src
	}
	if m.Origin != "" {
		// The broker vouches for the publisher's client ID: it wins over
		// whatever the request claims, for authorization and KEYNOTIFY.
		r.invoker = m.Origin
	}
	return r
}

func (s *Server) putRequest(r *request) {
	*r = request{}
	s.reqPool.Put(r)
}
