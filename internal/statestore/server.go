package statestore

import (
	"context"
	"errors"
	"fmt"
	"github.com/edgeport/edgeport/internal/lograte"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeport/edgeport/internal/broker"
	wallclock "github.com/edgeport/edgeport/internal/clock"
	"github.com/edgeport/edgeport/internal/lifecycle"
	mqtt "github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/store"
)

// Authorizer decides whether a client may read (GET, KEYNOTIFY, key
// listing) or write (SET, DEL, VDEL) a key. It is called for every
// request, on the executor goroutine and, for GETs, concurrently on the
// state store client's dispatch goroutine, so it must be quick and safe
// for concurrent use.
//
// The requester is the publishing client's ID as the broker vouches for it
// (broker.OriginProperty), falling back to the __invId or __srcId user
// property the SDKs send when the state store is reached without the
// broker's internal listener; username and attrs come with the security
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
	// Operations does; without it such a request is dropped. It must not
	// wait for the state store.
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
}

// Defaults applied to zero Options fields.
const (
	DefaultNodeID       = "edgeport"
	DefaultMaxClockSkew = time.Minute
	DefaultCacheTTL     = 10 * time.Second
	DefaultCacheEntries = 10000
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
	if o.MaxClockSkew < 0 || o.CacheTTL < 0 || o.CacheEntries < 0 {
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

// Server is the state store: an MQTT client of the broker that executes
// requests against an in-memory copy of the keys, persisted in a store.Store.
type Server struct {
	opts    Options
	log     *slog.Logger
	errLog  *lograte.Limiter // errors that repeat per request or notification, once a minute each
	metrics *metrics

	st       *store.Store // nil: in memory only
	serve    func(net.Conn)
	clientID string // set by Start

	reqs     chan *request
	control  chan func()
	stopping chan struct{}
	exDone   chan struct{} // closed when the executor has finished its last batch
	stopOnce sync.Once
	started  bool
	wg       sync.WaitGroup // run loop and executor

	reqPool   sync.Pool
	chunkPool sync.Pool

	cur linkRef // the live connection, read by the executor

	view    view    // durable keys, for GETs on the dispatch goroutine
	pending pending // requests in the executor, per invoker

	ex *executor
}

var _ lifecycle.Component = (*Server)(nil)

// New validates opts and registers the metrics; the Server does nothing
// until Start. It keeps its keys in st (nil: in memory only; st is started
// before the Server) and connects to the broker through serve, which must
// serve the connection as the broker's InternalListener
// (b.ServeConn(c, broker.InternalListener)).
func New(st *store.Store, serve func(net.Conn), opts Options) (*Server, error) {
	if serve == nil {
		return nil, errors.New("statestore: no broker to serve the connection")
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
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:     opts,
		log:      log,
		errLog:   lograte.New(log, time.Minute),
		metrics:  m,
		st:       st,
		serve:    serve,
		reqs:     make(chan *request, receiveMaximum),
		control:  make(chan func()),
		stopping: make(chan struct{}),
		exDone:   make(chan struct{}),
	}
	s.pending.n = make(map[string]int)
	s.reqPool.New = func() any { return new(request) }
	s.chunkPool.New = func() any { return new(chunk) }
	return s, nil
}

// Start restores the keys from the store and connects to the broker. It
// returns an error only when the keys cannot be restored: when the broker
// refuses the connection the state store logs it and keeps trying, so that
// a broker misconfiguration does not stop the rest of Edgeport.
func (s *Server) Start(ctx context.Context) error {
	if s.started {
		return errors.New("statestore: already started")
	}
	// The identifier is in the broker's reserved internal space, which no
	// network client may claim: nobody can take the session over.
	s.clientID = ClientID
	ex, err := newExecutor(s)
	if err != nil {
		return err
	}
	s.ex = ex
	failed := make(chan struct{})
	l, err := s.newLink(ctx, failed)
	if err != nil {
		return err // nothing runs yet: the Server is still unstarted
	}
	s.started = true
	s.cur.set(l)
	keys, bytes := ex.count, ex.bytes // read before the executor runs
	subCtx, cancelSub := context.WithCancel(context.WithoutCancel(ctx))
	ready := make(chan struct{})
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		defer close(s.exDone)
		s.ex.run()
	}()
	go func() {
		defer s.wg.Done()
		l.subscribe(subCtx, ready)
	}()
	go func() {
		defer s.wg.Done()
		// Once the executor has handed over its last answers, the client
		// sends what is queued, then DISCONNECT.
		<-s.exDone
		cancelSub()
		ctx, cancel := context.WithTimeout(context.Background(), stopFlush)
		defer cancel()
		_ = l.c.Stop(ctx)
	}()
	// Serve from the moment Start returns when the broker lets us; when
	// it does not, say so and keep trying, so that a broker
	// misconfiguration does not stop the rest of Edgeport.
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case <-ready:
		s.log.Info("state store started", "keys", keys, "bytes", bytes, "topic", InvokeTopic)
	case <-failed:
		s.log.Warn("the broker refused the state store's connection; retrying", "err", l.c.WaitConnected(expired))
	case <-t.C:
		s.log.Warn("the state store is not subscribed yet; retrying in the background", "topic", InvokeTopic)
	case <-ctx.Done():
	}
	return nil
}

// expired is an ended context, to read a client's last connection error.
var expired = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// stopFlush bounds how long Stop lets the client write what the executor
// queued last.
const stopFlush = 5 * time.Second

// Stop stops taking requests, answers those in progress, disconnects and
// waits for everything to end or ctx to expire. The store is left open: its
// owner closes it after Stop.
func (s *Server) Stop(ctx context.Context) error {
	if !s.started {
		return nil
	}
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
		if l := s.cur.get(); l != nil {
			_ = l.c.Stop(ctx) // ctx has ended: the connection closes at once
		}
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

type linkRef struct {
	mu sync.Mutex
	l  *link
}

func (r *linkRef) set(l *link) { r.mu.Lock(); r.l = l; r.mu.Unlock() }

func (r *linkRef) get() *link { r.mu.Lock(); defer r.mu.Unlock(); return r.l }

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

// request is one received PUBLISH on the invoke topic, copied out of the
// reader's buffer.
type request struct {
	link *link
	msg  *mqtt.Message // acknowledged once the answer is durable
	qos  byte

	respTopic    string
	hasRespTopic bool
	corr         []byte
	expiry       uint32
	hasExpiry    bool
	ts, ft       string // __ts, __ft
	hasTS, hasFT bool
	invoker      string // __invId, else __srcId
	protVer      string
	hasProtVer   bool
	payload      []byte
	pkey         string // its entry in Server.pending; "" when none
}

// maxPooledRequest keeps one huge request from pinning its buffer.
const maxPooledRequest = 64 << 10

// newRequest reads a request from a received message; the message owns
// its buffers, so only the payload and correlation data are copied into
// the pooled request's own.
func (s *Server) newRequest(l *link, m *mqtt.Message) *request {
	r := s.reqPool.Get().(*request)
	r.link, r.msg, r.qos = l, m, m.QoS
	r.hasRespTopic = m.ResponseTopic != ""
	r.respTopic = m.ResponseTopic
	r.corr = append(r.corr[:0], m.CorrelationData...)
	r.hasExpiry = m.MessageExpiry > 0
	r.expiry = m.MessageExpiry
	r.ts, r.ft, r.invoker, r.protVer = "", "", "", ""
	r.hasTS, r.hasFT, r.hasProtVer = false, false, false
	src, origin := "", ""
	for _, u := range m.User {
		switch u.Key {
		case broker.OriginProperty:
			origin = u.Value
		case propTimestamp:
			r.ts, r.hasTS = strings.Clone(u.Value), true
		case propFencingToken:
			r.ft, r.hasFT = strings.Clone(u.Value), true
		case propInvokerClientID:
			r.invoker = strings.Clone(u.Value)
		case propSourceID:
			src = u.Value
		case propProtocolVersion:
			r.protVer, r.hasProtVer = strings.Clone(u.Value), true
		}
	}
	if r.invoker == "" && src != "" {
		r.invoker = strings.Clone(src)
	}
	if origin != "" {
		// The broker vouches for the publisher's client ID: it wins over
		// whatever the request claims, for authorization and KEYNOTIFY.
		r.invoker = strings.Clone(origin)
	}
	r.payload = append(r.payload[:0], m.Payload...)
	return r
}

func (s *Server) putRequest(r *request) {
	if cap(r.payload) > maxPooledRequest {
		r.payload = nil
	}
	r.link, r.msg = nil, nil
	s.reqPool.Put(r)
}
