package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Defaults applied to zero Options fields.
const (
	DefaultKeepAlive      = 60 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultWriteTimeout   = 30 * time.Second
	DefaultReceiveMaximum = 1024
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
	DefaultMaxQueuedQoS0  = 10000
)

// Options configure a Client. Dialer is required; every other zero field
// takes its default.
type Options struct {
	Dialer Dialer
	// ClientID identifies the session. Edgeport's own components use ids
	// beginning with "$edgeport/", which the broker accepts only from its
	// internal listener. Empty asks an MQTT 5 server to assign one.
	ClientID string
	// Version is packet.V5 (default) or packet.V311. With 3.1.1 there are
	// no properties, so Request, reason strings and user properties are
	// unavailable.
	Version packet.Version
	// CleanStart discards any existing session on the first connection.
	// Reconnections never set it, so that a session that outlives its
	// connection (SessionExpiry > 0) is resumed.
	CleanStart bool
	// SessionExpiry is how long the server keeps the session after a
	// disconnection (MQTT 5; rounded down to seconds). In 3.1.1 a non-zero
	// value means "clean session" is false on reconnections.
	SessionExpiry time.Duration
	// KeepAlive is the longest silence before the client pings; negative
	// turns keep-alive off. A server's Server Keep Alive overrides it.
	KeepAlive time.Duration
	// ReceiveMaximum bounds the QoS 1 and 2 messages the server sends
	// before they are acknowledged, and so the handlers' backlog.
	ReceiveMaximum uint16
	// MaxQueuedQoS0 bounds the QoS 0 messages waiting for a handler;
	// beyond it they are dropped and counted (Stats().DroppedQoS0).
	MaxQueuedQoS0 int
	Username      string
	Password      []byte
	// AuthMethod and AuthData are sent in CONNECT (MQTT 5 enhanced
	// authentication with a single step, such as a token).
	AuthMethod string
	AuthData   []byte
	Will       *packet.Will
	// User properties sent in CONNECT.
	User []packet.UserProperty
	// ConnectTimeout bounds dialing plus the CONNECT/CONNACK exchange.
	ConnectTimeout time.Duration
	// WriteTimeout bounds one write to the connection.
	WriteTimeout time.Duration
	// NoReconnect makes a lost connection final: waiting operations fail
	// with ErrConnectionLost. Otherwise the client reconnects, waiting
	// between MinBackoff and MaxBackoff (doubling, with jitter).
	NoReconnect            bool
	MinBackoff, MaxBackoff time.Duration
	// OnConnect is called after each successful CONNACK, before queued
	// publishes are sent; it runs on the client's connection goroutine and
	// must not block on the client.
	OnConnect func(ConnAck)
	// OnConnectionLost is called when an established connection ends, on
	// the client's connection goroutine.
	OnConnectionLost func(error)
	// OnConnectError is called when an attempt to connect fails (dialing,
	// or the server's refusal), on the client's connection goroutine,
	// before the client waits to try again.
	OnConnectError func(error)
	// DefaultHandler receives messages that match no subscription of this
	// client (a resumed session's subscriptions from an earlier process,
	// or messages a server routes to the session directly); when nil, such
	// messages are acknowledged and dropped.
	DefaultHandler Handler
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

// ConnAck is what the server said in its CONNACK.
type ConnAck struct {
	SessionPresent   bool
	AssignedClientID string
	// Limits the server announced (zero: not announced).
	ReceiveMaximum    uint16
	MaximumPacketSize uint32
	MaximumQoS        byte
	ServerKeepAlive   time.Duration
	RetainAvailable   bool
	Properties        packet.Properties
}

// Stats are counters of the client's life.
type Stats struct {
	Connects    uint64 // successful connections, the first included
	DroppedQoS0 uint64 // QoS 0 messages dropped because handlers lagged
}

// Client is an MQTT client. Its methods are safe for concurrent use.
type Client struct {
	opts Options
	log  *slog.Logger

	// mu guards the session state below. Lock order: mu → conn.ackMu →
	// conn.outMu; relMu and dmu are leaves.
	mu        sync.Mutex
	state     int // stateNew, stateRunning, stateClosed
	cur       *conn
	connected chan struct{} // closed while cur != nil; replaced when the connection ends
	clientID  string        // the id in use (assigned by the server when Options.ClientID is empty)
	lastErr   error         // why the last connection attempt or connection failed
	failed    chan struct{} // closed when a connection attempt fails; then replaced
	ids       [1 << 16]bool // packet identifiers in use by publishes, subscribes and unsubscribes
	nextID    uint16
	seq       uint64              // orders in-flight publishes for resending
	pending   []*outPub           // QoS 1/2 publishes waiting for a connection or for send quota
	inflight  map[uint16]*outPub  // sent, not yet completed
	ctrl      map[uint16]*ctrlReq // SUBSCRIBE/UNSUBSCRIBE waiting for their acks
	subs      []*subEntry
	nextSubID uint32
	stats     Stats

	relMu sync.Mutex      // guards rel
	rel   map[uint16]bool // inbound QoS 2 packet identifiers PUBREC'd, awaiting PUBREL

	// Dispatch queue between the reader and the handlers.
	dmu    sync.Mutex // guards dq, dqos0 and dclose
	dq     []*Message
	dqos0  int
	dclose bool
	dwake  chan struct{}

	reqMu     sync.Mutex // guards respTopics and waiting
	respTopic map[string]bool
	waiting   map[string]chan *Message // correlation data → the request waiting for it

	stopMgr    chan struct{} // closed by Stop: the connection manager ends
	cancelRun  context.CancelFunc
	wg         sync.WaitGroup // the manager and the dispatcher
	stopOnce   sync.Once
	stopResult error
}

const (
	stateNew = iota
	stateRunning
	stateClosed
)

// New checks opts and returns a client that does nothing until Connect or Start.
func New(opts Options) (*Client, error) {
	if opts.Dialer == nil {
		return nil, errors.New("mqtt client: no Dialer")
	}
	switch opts.Version {
	case 0:
		opts.Version = packet.V5
	case packet.V5, packet.V311:
	default:
		return nil, fmt.Errorf("mqtt client: unsupported protocol version %d", opts.Version)
	}
	if opts.Version != packet.V5 && (opts.AuthMethod != "" || len(opts.User) > 0) {
		return nil, errors.New("mqtt client: enhanced authentication and user properties need MQTT 5")
	}
	if opts.Version != packet.V5 && opts.ClientID == "" && !opts.CleanStart {
		return nil, errors.New("mqtt client: MQTT 3.1.1 needs a client id unless CleanStart is set")
	}
	if opts.KeepAlive == 0 {
		opts.KeepAlive = DefaultKeepAlive
	}
	if opts.KeepAlive > 65535*time.Second {
		return nil, errors.New("mqtt client: KeepAlive above 65535s")
	}
	if opts.SessionExpiry < 0 {
		return nil, errors.New("mqtt client: negative SessionExpiry")
	}
	if opts.ReceiveMaximum == 0 {
		opts.ReceiveMaximum = DefaultReceiveMaximum
	}
	if opts.MaxQueuedQoS0 <= 0 {
		opts.MaxQueuedQoS0 = DefaultMaxQueuedQoS0
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{
		opts:      opts,
		log:       log.With("client", opts.ClientID),
		connected: make(chan struct{}),
		failed:    make(chan struct{}),
		clientID:  opts.ClientID,
		inflight:  make(map[uint16]*outPub),
		ctrl:      make(map[uint16]*ctrlReq),
		rel:       make(map[uint16]bool),
		dwake:     make(chan struct{}, 1),
		respTopic: make(map[string]bool),
		waiting:   make(map[string]chan *Message),
		stopMgr:   make(chan struct{}),
	}, nil
}

// Connect makes the first connection and returns once the server accepted
// it, or with the reason it did not (a *ReasonError for a refusal); ctx
// bounds the attempt only. After a failed Connect the client is closed.
// After a successful one the client runs until Stop, reconnecting when the
// connection is lost unless Options.NoReconnect is set.
func (c *Client) Connect(ctx context.Context) error {
	if err := c.begin(); err != nil {
		return err
	}
	cn, ack, err := c.dial(ctx)
	if err != nil {
		c.mu.Lock()
		c.state = stateClosed
		c.mu.Unlock()
		return err
	}
	c.run(ctx, cn, ack)
	return nil
}

// Start runs the client in the background: it connects, and reconnects
// whenever the connection is lost, until Stop; ctx bounds only the call.
// It fails only when the client was already started. Use WaitConnected to
// wait for a connection; operations made before one queue (QoS 1/2
// publishes, subscriptions) or fail with ErrNotConnected (QoS 0).
func (c *Client) Start(ctx context.Context) error {
	if err := c.begin(); err != nil {
		return err
	}
	c.run(ctx, nil, ConnAck{})
	return nil
}

func (c *Client) begin() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateRunning:
		return errors.New("mqtt client: already started")
	case stateClosed:
		return ErrClosed
	}
	c.state = stateRunning
	return nil
}

// run starts the connection manager (with cn, when the first connection is
// made already) and the dispatcher.
func (c *Client) run(ctx context.Context, cn *conn, ack ConnAck) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancelRun = cancel
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.dispatchLoop(runCtx)
	}()
	if cn != nil {
		c.attach(cn, ack)
	}
	go func() {
		defer c.wg.Done()
		c.manage(runCtx, cn)
	}()
}

// WaitConnected waits until the client has a connection, ctx ends or the
// client stops; it returns the last connection error with ctx's.
func (c *Client) WaitConnected(ctx context.Context) error {
	for {
		c.mu.Lock()
		ch, state, cur := c.connected, c.state, c.cur
		c.mu.Unlock()
		if cur != nil {
			return nil
		}
		if state == stateClosed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-c.stopMgr:
			return ErrClosed
		case <-ctx.Done():
			c.mu.Lock()
			last := c.lastErr
			c.mu.Unlock()
			if last != nil {
				return fmt.Errorf("%w (last error: %w)", ctx.Err(), last)
			}
			return ctx.Err()
		}
	}
}

// Connected reports whether the client has a connection now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil
}

// MaxPacketSize is the current connection's Maximum Packet Size as the
// server announced it; 0 when it announced none or there is no connection.
func (c *Client) MaxPacketSize() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return 0
	}
	return c.cur.maxPacket
}

// ClientID returns the client identifier in use, which the server assigns
// when Options.ClientID is empty.
func (c *Client) ClientID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clientID
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	s := c.stats
	c.mu.Unlock()
	c.dmu.Lock()
	s.DroppedQoS0 = c.stats.DroppedQoS0
	c.dmu.Unlock()
	return s
}

// Stop disconnects (a DISCONNECT after whatever is already queued for the
// connection), stops reconnecting and waits for every goroutine of the
// client, the running handler included, to end. Operations still waiting
// fail with ErrClosed; QoS 1/2 publishes that were not acknowledged remain
// in the server's session if it outlives the connection. When ctx ends
// first the connection is closed at once; Stop still waits for the
// goroutines (which then end promptly, unless a handler ignores its ctx)
// and returns ctx's error. Safe to call more than once.
func (c *Client) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() { c.stopResult = c.stop(ctx) })
	return c.stopResult
}

// Close is Stop with a deadline of five seconds.
func (c *Client) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Stop(ctx)
}

func (c *Client) stop(ctx context.Context) error {
	c.mu.Lock()
	wasRunning := c.state == stateRunning
	c.state = stateClosed
	cur := c.cur
	done := c.failAllLocked(ErrClosed)
	c.mu.Unlock()
	for _, f := range done {
		f()
	}
	close(c.stopMgr)
	if !wasRunning {
		c.waitDialer()
		return nil
	}
	if cur != nil {
		cur.finish(c.opts.Version)
	}
	mgrDone := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(mgrDone)
	}()
	// The dispatcher ends once the manager has closed the queue; handlers
	// see their ctx end now, so that one waiting on the client returns.
	var err error
	select {
	case <-mgrDone:
	case <-ctx.Done():
		err = fmt.Errorf("mqtt client: stopping: %w", ctx.Err())
		if cur != nil {
			cur.fail(err)
		}
		c.cancelRun()
		<-mgrDone
	}
	c.cancelRun()
	c.waitDialer()
	return err
}

// waitDialer waits for an in-process dialer's serving goroutines.
func (c *Client) waitDialer() {
	if w, ok := c.opts.Dialer.(interface{ Wait() }); ok {
		w.Wait()
	}
}

// manage owns the connections: it serves each until it ends and makes the
// next, with backoff, until Stop. It closes the dispatch queue when done.
func (c *Client) manage(ctx context.Context, cn *conn) {
	defer c.closeDispatch()
	backoff := c.opts.MinBackoff
	for {
		if cn == nil {
			var ack ConnAck
			var err error
			cn, ack, err = c.dial(ctx)
			if err != nil {
				c.mu.Lock()
				c.lastErr = err
				close(c.failed)
				c.failed = make(chan struct{})
				c.mu.Unlock()
				if errors.Is(err, ErrDialerClosed) {
					return
				}
				if c.opts.OnConnectError != nil {
					c.opts.OnConnectError(err)
				}
				wait := jitter(backoff)
				c.log.Debug("connecting failed", "err", err, "retry_in", wait)
				backoff = min(2*backoff, c.opts.MaxBackoff)
				t := time.NewTimer(wait)
				select {
				case <-c.stopMgr:
					t.Stop()
					return
				case <-t.C:
				}
				continue
			}
			if !c.attach(cn, ack) {
				cn.fail(ErrClosed)
				cn.wg.Wait()
				return
			}
			backoff = c.opts.MinBackoff
		}
		cn.start(c)
		select {
		case <-cn.dead:
		case <-c.stopMgr:
			// Stop asked the writer to finish; wait for it.
			<-cn.dead
		}
		cn.wg.Wait()
		err := cn.err
		final := c.detach(cn, err)
		if c.opts.OnConnectionLost != nil && !errors.Is(err, errFinished) {
			c.opts.OnConnectionLost(err)
		}
		cn = nil
		if final {
			return
		}
	}
}

// jitter spreads a backoff over [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// attach makes cn the current connection: it resends or requeues the
// session's in-flight state and sends what waited for a connection. It
// reports false when the client has stopped meanwhile.
func (c *Client) attach(cn *conn, ack ConnAck) bool {
	if c.opts.OnConnect != nil {
		c.opts.OnConnect(ack)
	}
	var done []func()
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return false
	}
	c.stats.Connects++
	if ack.AssignedClientID != "" {
		c.clientID = ack.AssignedClientID
	}
	c.cur = cn
	c.lastErr = nil
	if ack.SessionPresent {
		// Resend in the order first sent, with the same identifiers
		// (MQTT 5.0 §4.4).
		for _, op := range c.inflightInOrder() {
			if op.awaitComp {
				cn.writePacket(&packet.Ack{Type: packet.PUBREL, PacketID: op.id}, c.opts.Version)
				continue
			}
			op.setDup()
			cn.write(op.pkt)
		}
	} else {
		// The server has no session: what was in flight is sent again as
		// new messages, subscriptions are made again, and inbound QoS 2
		// state is forgotten.
		var again []*outPub
		for _, op := range c.inflightInOrder() {
			delete(c.inflight, op.id)
			c.ids[op.id] = false
			if op.awaitComp {
				// PUBREC said the server has it.
				done = append(done, op.complete(packet.Success, nil))
				continue
			}
			op.id = 0
			again = append(again, op)
		}
		c.pending = append(again, c.pending...)
		c.relMu.Lock()
		clear(c.rel)
		c.relMu.Unlock()
		c.resubscribeLocked(cn)
	}
	// Subscribe and unsubscribe requests cut off by the last connection,
	// unless they were sent often enough to suspect that they are what
	// the server closes the connection over.
	for _, r := range c.ctrlInOrder() {
		if r.sends >= maxCtrlSends {
			delete(c.ctrl, r.id)
			c.ids[r.id] = false
			done = append(done, r.fail(fmt.Errorf("%w %d times while waiting for the acknowledgement", ErrConnectionLost, r.sends)))
			continue
		}
		r.sends++
		cn.writePacket(r.packet(), c.opts.Version)
	}
	c.pumpLocked()
	close(c.connected)
	c.mu.Unlock()
	for _, f := range done {
		f()
	}
	c.log.Debug("connected", "session_present", ack.SessionPresent)
	return true
}

// detach forgets a connection that ended; it reports whether the client
// is done (stopped, or not reconnecting).
func (c *Client) detach(cn *conn, err error) bool {
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
		c.connected = make(chan struct{})
	}
	c.lastErr = err
	final := c.state == stateClosed || c.opts.NoReconnect
	var done []func()
	if final && c.state != stateClosed {
		done = c.failAllLocked(fmt.Errorf("%w: %w", ErrConnectionLost, err))
		c.state = stateClosed
	}
	c.mu.Unlock()
	for _, f := range done {
		f()
	}
	if !errors.Is(err, errFinished) {
		c.log.Debug("connection lost", "err", err)
	}
	return final
}

// failAllLocked ends every waiting operation with err; it returns the
// completions to run once mu is released.
func (c *Client) failAllLocked(err error) []func() {
	var done []func()
	for _, op := range c.pending {
		done = append(done, op.complete(0, err))
	}
	c.pending = nil
	for id, op := range c.inflight {
		done = append(done, op.complete(0, err))
		delete(c.inflight, id)
		c.ids[id] = false
	}
	for id, r := range c.ctrl {
		done = append(done, r.fail(err))
		delete(c.ctrl, id)
		c.ids[id] = false
	}
	return done
}

func (c *Client) inflightInOrder() []*outPub {
	ops := make([]*outPub, 0, len(c.inflight))
	for _, op := range c.inflight {
		ops = append(ops, op)
	}
	slices.SortFunc(ops, func(a, b *outPub) int { return cmp.Compare(a.seq, b.seq) })
	return ops
}

func (c *Client) ctrlInOrder() []*ctrlReq {
	rs := make([]*ctrlReq, 0, len(c.ctrl))
	for _, r := range c.ctrl {
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b *ctrlReq) int { return cmp.Compare(a.seq, b.seq) })
	return rs
}

// allocID reserves a free packet identifier; ok is false when all 65535
// are in use.
func (c *Client) allocIDLocked() (uint16, bool) {
	for range 1 << 16 {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		if !c.ids[c.nextID] {
			c.ids[c.nextID] = true
			return c.nextID, true
		}
	}
	return 0, false
}
