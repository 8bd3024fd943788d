// Package broker is Edgeport's MQTT 3.1.1 and 5.0 broker core: sessions, QoS
// state machines, routing, retained messages, wills, expiry and limits.
package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/clock"
	"github.com/edgeport/edgeport/internal/lifecycle"
	"github.com/edgeport/edgeport/internal/lograte"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/mqtt/topic"
)

// Broker routes messages between the clients of any number of listeners.
// It owns no sockets: listeners hand it accepted connections through ServeConn.
type Broker struct {
	opts atomic.Pointer[Options] // replaced whole by SetOptions; read per use
	log  *slog.Logger
	errs *lograte.Limiter // errors that repeat per message (a failing store)
	// refusals logs refused clients once a minute per reason and address.
	refusals *lograte.Limiter

	subs     *topic.Trie[*session, *subscription]
	retained *topic.Retained[*Message]

	sessMu   sync.Mutex // guards sessions and leaving; taken before any session.mu
	sessions map[string]*session
	// leaving holds, per connection a CONNECT is about to take a session
	// from, a channel closed when that connection has detached (see
	// awaitLeaving); empty but for the moment of a takeover.
	leaving map[*client]chan struct{}

	// draining counts connections being drained after a half-close
	// (client.endWrites), bounded by maxDraining.
	draining atomic.Int32
	connMu   sync.Mutex // guards conns
	conns    map[*client]struct{}
	connsWG  sync.WaitGroup
	// park holds idle TCP connections without their reader goroutines
	// (park_linux.go).
	park parker

	svcs services // in-process services by topic name (service.go)

	sharedMu sync.RWMutex // guards sharedRR
	sharedRR map[sharedRef]*atomic.Uint32

	listenerMu sync.Mutex // guards listeners
	listeners  map[string]*listenerStats

	sec   securityRegistry // per listener authentication and authorization
	owner Ownership        // cluster mode: who owns which session; nil on a single node
	fwd   Forwarder        // cluster mode: live routing between nodes; nil on a single node
	// remote, in cluster mode, stores QoS 1/2 publications for the
	// persistent sessions of other nodes; nil on a single node.
	remote RemoteSessions
	// sharedRet, in cluster mode, makes retained messages cluster-wide:
	// the index is then written only by ApplyRetained.
	sharedRet SharedRetained
	st        Durable     // nil: in memory only
	commits   commitQueue // transactions on their way to st, in change order
	// commitsDone is closed when runCommits exits; nil until Start runs it.
	commitsDone chan struct{}

	disconnectHooks []func(clientID string) // set before serving, read-only after
	sessionEndHooks []func(clientID string) // set before serving, read-only after

	heldMu    sync.Mutex     // guards heldWills
	heldWills []func()       // restored wills, held until ReleaseWills
	willMu    sync.Mutex     // orders willWG.Add against Shutdown's Wait
	willsDone bool           // Shutdown is waiting: no more willWG.Add
	willWG    sync.WaitGroup // will publications under way; Shutdown waits for them
	willsOut  atomic.Int64   // willWG's count, readable: tests wait for 0 before proving no will went out

	clk     clock.Clock // Options.Clock as New found it: timers and expiry deadlines
	stats   stats
	started time.Time
	closing atomic.Bool
	stopped atomic.Bool // Shutdown finished: nothing is written to the store any more
	pauses  *pauseWatch // cluster mode: the node's pauses (pause.go); set by Start
	// resynced is the last pause after which the ownership view was
	// resynced (afterPause); resyncMu guards resyncing, the one under way.
	resynced  atomic.Uint64
	resyncMu  sync.Mutex
	resyncing *resync
	// claiming holds, by client, the claims under way here (cluster
	// mode; cluster.go), guarded by sessMu.
	claiming map[string]*claimWatch
	stopSys  context.CancelFunc
	sysDone  chan struct{}
	stopOnce sync.Once
	// halt is cancelled when Stop begins: the cluster requests a
	// connection waits on (a claim, a retained sync) end at once instead
	// of holding the connection, and Stop, up to their own timeouts.
	halt    context.Context
	haltNow context.CancelFunc

	// bgMu guards bgDone and orders bg.Add before Stop's bg.Wait.
	bgMu   sync.Mutex
	bgDone bool           // Stop is waiting: no new background work
	bg     sync.WaitGroup // goroutines of goBackground and inBackground
}

// New builds a broker with the given options (see Options.Validate).
func New(opts Options, log *slog.Logger) (*Broker, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := opts.withDefaults()
	b := &Broker{
		log:       log,
		errs:      lograte.New(log, time.Minute),
		refusals:  lograte.New(log, time.Minute),
		subs:      topic.NewTrie[*session, *subscription](),
		retained:  topic.NewRetained[*Message](),
		sessions:  make(map[string]*session),
		conns:     make(map[*client]struct{}),
		sharedRR:  make(map[sharedRef]*atomic.Uint32),
		listeners: make(map[string]*listenerStats),
		started:   time.Now(),
		clk:       clock.Or(o.Clock),
	}
	b.commits.work.L = &b.commits.mu
	b.commits.room.L = &b.commits.mu
	b.opts.Store(&o)
	b.park.init()
	b.halt, b.haltNow = context.WithCancel(context.Background())
	return b, nil
}

// o returns the options in force.
func (b *Broker) o() *Options { return b.opts.Load() }

// Options returns the options in force, defaults applied.
func (b *Broker) Options() Options { return *b.o() }

// SetOptions changes the broker's limits live. New values apply to the next
// operation they govern; what a connection was told in CONNACK (maximum
// packet size, receive maximum, topic alias maximum) stays in force for that
// connection, so nobody is disconnected by a change that does not concern it.
func (b *Broker) SetOptions(opts Options) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	o := opts.withDefaults()
	b.opts.Store(&o)
	return nil
}

// limits returns the topic limits in force.
func (b *Broker) limits() topic.Limits {
	o := b.o()
	return topic.Limits{MaxLength: o.MaxTopicLength, MaxLevels: o.MaxTopicLevels}
}

var _ lifecycle.Component = (*Broker)(nil)

// Start restores the attached store's sessions, queues and retained
// messages (see AttachStore) and runs the broker's background work ($SYS
// statistics) until Stop. Serve connections only after Start.
func (b *Broker) Start(ctx context.Context) error {
	if b.st != nil {
		if err := b.restore(); err != nil {
			b.stopTimers() // of the sessions restored before the failure
			return fmt.Errorf("restoring broker state: %w", err)
		}
		b.commitsDone = make(chan struct{})
		go b.runCommits(b.commitsDone)
	}
	ctx, b.stopSys = context.WithCancel(context.WithoutCancel(ctx))
	b.sysDone = make(chan struct{})
	if b.remote != nil && b.owner != nil {
		b.pauses = newPauseWatch()
	}
	go func() {
		defer close(b.sysDone)
		if b.pauses != nil {
			var wg sync.WaitGroup
			wg.Go(func() { b.pauses.run(ctx, b) })
			defer wg.Wait()
		}
		b.runSys(ctx)
	}()
	return nil
}

// stopTimers stops every session's expiry and will-delay timer.
func (b *Broker) stopTimers() {
	b.sessMu.Lock()
	defer b.sessMu.Unlock()
	for _, s := range b.sessions {
		s.mu.Lock()
		if s.expiryTimer != nil {
			s.expiryTimer.Stop()
		}
		if s.willTimer != nil {
			s.willTimer.Stop()
		}
		// Parked deliveries go to the store before it stops.
		b.unparkLocked(s)
		s.mu.Unlock()
	}
}

// goBackground runs f on a goroutine that Stop waits for; once Stop has
// begun waiting it runs nothing and reports false. Work that outlives the
// call that starts it (publishing a will, timer callbacks) goes through it.
func (b *Broker) goBackground(f func()) bool {
	b.bgMu.Lock()
	defer b.bgMu.Unlock()
	if b.bgDone {
		return false
	}
	b.bg.Add(1)
	go func() {
		defer b.bg.Done()
		f()
	}()
	return true
}

// inBackground runs f on the calling goroutine (a timer's) as background
// work Stop waits for, unless Stop is already waiting.
func (b *Broker) inBackground(f func()) {
	b.bgMu.Lock()
	if b.bgDone {
		b.bgMu.Unlock()
		return
	}
	b.bg.Add(1)
	b.bgMu.Unlock()
	defer b.bg.Done()
	f()
}

// ServeConn serves one client connection until it closes. It owns conn.
func (b *Broker) ServeConn(conn net.Conn, listener string) {
	b.serveConn(conn, listener, nil)
}

// ServeConnAsync serves conn like ServeConn, but may return while the
// connection is still open: an idle plain TCP connection is then held by
// the broker without a goroutine of its own. ended is called once the
// connection has ended and its socket is closed (also when the broker
// refuses it at once). The listeners use it for their TCP connections.
func (b *Broker) ServeConnAsync(conn net.Conn, listener string, ended func()) {
	if ended == nil {
		ended = func() {}
	}
	b.serveConn(conn, listener, ended)
}

func (b *Broker) serveConn(conn net.Conn, listener string, ended func()) {
	if b.closing.Load() {
		conn.Close()
		if ended != nil {
			ended()
		}
		return
	}
	c := newClient(b, conn, b.listenerStats(listener))
	c.trusted = listener == InternalListener // see InternalListener
	c.ended = ended
	b.connMu.Lock()
	b.conns[c] = struct{}{}
	b.connsWG.Add(1)
	b.connMu.Unlock()
	c.serve()
}

// forget removes an ended connection, once its reader has finished; its
// end is reported before Stop can see it gone.
func (b *Broker) forget(c *client) {
	b.connMu.Lock()
	delete(b.conns, c)
	b.connMu.Unlock()
	if c.ended != nil {
		c.ended()
	}
	b.connsWG.Done()
}

// Stop disconnects every client (MQTT 5 clients are told 0x8B, server
// shutting down) after flushing what is queued for them, and waits for their
// connections to end or ctx to expire, then for the wills their ends
// published and any other background work. Everything the broker
// acknowledged has then been handed to the store, which its owner stops
// after the broker.
func (b *Broker) Stop(ctx context.Context) error {
	b.stopOnce.Do(func() {
		b.closing.Store(true)
		b.haltNow()
		if b.stopSys != nil {
			b.stopSys()
			<-b.sysDone
		}
	})
	b.connMu.Lock()
	for c := range b.conns {
		c.disconnect(packet.ServerShuttingDown, "")
	}
	b.connMu.Unlock()
	done := make(chan struct{})
	go func() { b.connsWG.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		b.connMu.Lock()
		for c := range b.conns {
			c.closeNow()
		}
		b.connMu.Unlock()
		err = ctx.Err()
	}
	// Every connection has ended (or was closed just now): nothing is
	// parked any more.
	b.park.stop()
	// Offline sessions keep their state in the store; their timers must not
	// fire into a store that is about to close.
	b.stopTimers()
	// A timer that fired before being stopped may be running; then the
	// wills of the connections just ended are being published.
	b.bgMu.Lock()
	b.bgDone = true
	b.bgMu.Unlock()
	b.bg.Wait()
	b.willMu.Lock()
	b.willsDone = true
	b.willMu.Unlock()
	b.willWG.Wait()
	// Everything queued is handed to the store before the broker counts as
	// stopped: its owner stops the store next.
	b.stopCommits()
	b.stopped.Store(true)
	return err
}

// Publish injects a message as if a client had published it (used by $SYS,
// wills and in-process components). It returns how many sessions it reached.
func (b *Broker) Publish(m *Message) int {
	tx := b.newTxn()
	if m.Retain {
		b.setRetained(m, tx)
	}
	n, _ := b.publishRoute(m, tx)
	b.commit(tx, nil)
	return n
}

func (b *Broker) publishWill(m *Message) {
	if !b.willAllowed(m) {
		return
	}
	if m.willExpiry > 0 {
		m.Expiry = b.clk.Now().Add(m.willExpiry).UnixNano()
	}
	b.stats.willsPublished.Add(1)
	b.Publish(m)
}

// setRetained stores, replaces or (empty payload) clears a retained
// message, writing the change to tx. $SYS values are not persisted: they are
// regenerated.
func (b *Broker) setRetained(m *Message, tx *txnCtx) {
	persist := tx != nil && !strings.HasPrefix(m.Topic, "$SYS/")
	if persist && b.sharedRet != nil {
		// Cluster mode: the change comes back through ApplyRetained, in
		// the order every node applies.
		if len(m.Payload) == 0 {
			tx.write(func(t Txn) { t.DeleteRetained(m.Topic) }, nil)
			return
		}
		r := messageRecord(m)
		tx.write(func(t Txn) { t.PutRetained(&r) }, nil)
		return
	}
	if len(m.Payload) == 0 {
		if b.retained.Delete(m.Topic) {
			b.stats.retained.Add(-1)
			if persist {
				tx.write(func(t Txn) { t.DeleteRetained(m.Topic) }, nil)
			}
		}
		return
	}
	if _, existed := b.retained.Get(m.Topic); !existed {
		b.stats.retained.Add(1)
	}
	b.retained.Set(m.Topic, m)
	if persist {
		r := messageRecord(m)
		tx.write(func(t Txn) { t.PutRetained(&r) }, nil)
	}
}

// takeoverGrace bounds how long a CONNECT that takes a session over waits
// for the connection holding it to handle what it already received.
const takeoverGrace = 500 * time.Millisecond

// awaitLeaving lets the connection that holds c's session finish what its
// client already sent before c takes the session over. A client that sends
// DISCONNECT and reconnects at once (as Paho's interoperability tests do)
// expects that DISCONNECT to count: no will, and the session expiry it set
// (0 ends the session, so the new CONNACK says no session is present). The
// new CONNECT can be read before the old connection's DISCONNECT, so when
// the old socket has input waiting or its peer's close (the DISCONNECT or
// its end), the takeover waits until that connection has detached, at most
// takeoverGrace. A genuine takeover, of a connection whose client went
// silent, has no input waiting and does not wait.
func (b *Broker) awaitLeaving(c *client) { b.awaitLeavingOf(c.id) }

// awaitLeavingOf is awaitLeaving for the connection of clientID; a
// takeover from another node (TakenOver) waits the same way.
func (b *Broker) awaitLeavingOf(clientID string) {
	b.sessMu.Lock()
	var old *client
	if s := b.sessions[clientID]; s != nil {
		s.mu.Lock()
		old = s.client
		s.mu.Unlock()
	}
	if old == nil || !inputWaiting(old.conn) {
		b.sessMu.Unlock()
		return
	}
	ch := b.leaving[old]
	if ch == nil {
		ch = make(chan struct{})
		if b.leaving == nil {
			b.leaving = make(map[*client]chan struct{})
		}
		b.leaving[old] = ch
	}
	b.sessMu.Unlock()
	t := time.NewTimer(takeoverGrace)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		b.sessMu.Lock()
		if b.leaving[old] == ch {
			delete(b.leaving, old)
		}
		b.sessMu.Unlock()
	}
}

// attach binds client c to its session, creating, resuming or replacing it
// per clean start, and taking the session over from an older connection.
// It returns the session and whether an existing one was resumed.
func (b *Broker) attach(c *client, cleanStart bool, expiry time.Duration) (*session, bool) {
	s, present, ended := b.attachLocked(c, cleanStart, expiry)
	if s == nil {
		return nil, false
	}
	if ended && !c.trusted {
		// Before CONNACK: what the new session registers is not undone.
		b.sessionEnded(c.id)
	}
	return s, present
}

// attachLocked is attach under b.sessMu; ended reports that an existing
// session was ended (clean start, or another principal's).
// s is nil when another node's newer claim overtook c's (cluster mode).
func (b *Broker) attachLocked(c *client, cleanStart bool, expiry time.Duration) (s *session, present, ended bool) {
	b.sessMu.Lock()
	defer b.sessMu.Unlock()
	if b.owner != nil && !c.trusted {
		overtaken := b.overtakenLocked(c)
		b.endClaimLocked(c.id)
		if overtaken {
			return nil, false, false
		}
	}
	s = b.sessions[c.id]
	if s != nil {
		s.mu.Lock()
		// A session whose expiry is 0 (3.1.1: clean session) ends with its
		// connection [MQTT-3.1.2-23], and a takeover ends that connection:
		// such a session is never resumed, however quickly the new
		// connection came (the old one's DISCONNECT may still be unread).
		endsWithConn := s.expiry == 0
		if old := s.client; old != nil {
			s.client = nil
			s.online.Store(false)
			s.count(&b.stats.connected, -1)
			old.disconnect(packet.SessionTakenOver, "another connection took over the session")
			// The old connection ended abnormally: its will follows the
			// usual rules, and a resumed session cancels a delayed will.
			if due := b.scheduleWillLocked(s); due != nil {
				b.publishWillAfter(b.saveSessionLocked(s, 0), due)
			}
		}
		resumable := s.resumableBy(c)
		if !cleanStart && !resumable {
			// Another principal's session: it is discarded, not resumed,
			// so nothing queued or in flight for its owner reaches c.
			b.log.Info("session of another principal discarded, not resumed", "client", c.id, "listener", c.ls.name)
		}
		if cleanStart || !resumable || endsWithConn {
			s.mu.Unlock()
			b.endSessionLocked(s)
			s = nil
			ended = true
		} else {
			if s.expiryTimer != nil {
				s.expiryTimer.Stop()
				s.expiryTimer = nil
			}
			if s.willTimer != nil {
				s.willTimer.Stop()
				s.willTimer = nil
			}
			s.will = nil
			s.mu.Unlock()
		}
	}
	present = s != nil
	if s == nil {
		s = &session{id: c.id, internal: c.trusted}
		b.sessions[c.id] = s
		s.count(&b.stats.sessions, 1)
	}
	s.mu.Lock()
	s.client = c
	s.claim = c.claimToken
	s.setOwner(c)
	s.online.Store(true)
	s.expiry = expiry
	s.version = c.version
	s.mu.Unlock()
	s.count(&b.stats.connected, 1)
	return s, present, ended
}

// detach unbinds c from its session when the connection ends: the will is
// published or scheduled, shared-subscription deliveries move to another
// member, and the session ends now or when its expiry interval has passed.
func (b *Broker) detach(c *client, publishWill bool) {
	s := c.sess
	if s == nil {
		return
	}
	b.sessMu.Lock()
	if ch := b.leaving[c]; ch != nil {
		close(ch)
		delete(b.leaving, c)
	}
	s.mu.Lock()
	if s.client != c {
		// Taken over: the new owner already dealt with the session.
		s.mu.Unlock()
		b.sessMu.Unlock()
		return
	}
	s.client = nil
	s.online.Store(false)
	s.count(&b.stats.connected, -1)
	if !publishWill {
		s.will = nil
	}
	moved := s.takeShared(func(d *delivery) bool { return b.otherMemberOnline(s, d) }, true)
	ended := s.expiry == 0
	if ended {
		s.mu.Unlock()
		b.endSessionLocked(s)
	} else {
		s.offlineSince = b.clk.Now().UnixNano()
		due := b.scheduleWillLocked(s)
		if s.expiry != expiryNever {
			s.expiryTimer = b.clk.AfterFunc(s.expiry, func() { b.inBackground(func() { b.expireSession(s) }) })
		}
		b.publishWillAfter(b.saveSessionLocked(s, s.offlineSince), due)
		s.mu.Unlock()
	}
	b.sessMu.Unlock()
	for _, d := range moved {
		if b.reroute(s, d) {
			b.dropEntry(s, &d)
		}
	}
	b.flush()
	if !c.trusted {
		for _, f := range b.disconnectHooks {
			f(c.id)
		}
		if ended {
			b.sessionEnded(c.id)
		}
	}
}

// OnSessionEnd registers f to be called with a client's ID when its
// session ends: with the connection when the session has no expiry, when
// its expiry interval has passed, or when a clean start replaces it. Not
// when a persistent session's connection drops: state kept per session,
// such as the state store's KEYNOTIFY registrations, survives reconnects.
// Called without broker locks held. Register before the broker serves
// connections.
func (b *Broker) OnSessionEnd(f func(clientID string)) {
	b.sessionEndHooks = append(b.sessionEndHooks, f)
}

func (b *Broker) sessionEnded(id string) {
	for _, f := range b.sessionEndHooks {
		f(id)
	}
}

// OnDisconnect registers f to be called with a client's ID when its
// connection ends (not when another connection takes its session over).
// Components keeping per-client state, such as the state store's KEYNOTIFY
// registrations, use it. Register before the broker serves connections.
func (b *Broker) OnDisconnect(f func(clientID string)) {
	b.disconnectHooks = append(b.disconnectHooks, f)
}

// expiryNever is the session expiry that never ends (0xFFFFFFFF seconds).
const expiryNever = 0xFFFFFFFF * time.Second

func (b *Broker) expireSession(s *session) {
	b.sessMu.Lock()
	s.mu.Lock()
	if s.client != nil || s.ended || b.sessions[s.id] != s {
		s.mu.Unlock()
		b.sessMu.Unlock()
		return
	}
	s.mu.Unlock()
	b.endSessionLocked(s)
	b.sessMu.Unlock()
	b.flush()
	if !s.internal {
		b.sessionEnded(s.id)
	}
}

// endSessionLocked removes s from the broker. b.sessMu is held, s.mu is not.
// A pending will is published now: the session end ends its delay.
func (b *Broker) endSessionLocked(s *session) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	for _, sub := range s.subs {
		b.unsubscribe(s, sub)
		s.count(&b.stats.subscriptions, -1)
	}
	s.subs = nil
	if s.expiryTimer != nil {
		s.expiryTimer.Stop()
	}
	if s.willTimer != nil {
		s.willTimer.Stop()
	}
	will := s.will
	s.will = nil
	dropped := s.queue.len() + len(s.inflight)
	tx := b.newTxn()
	if s.claim != 0 && b.owner != nil {
		// Given up once the deletion is durable: a node that claims the
		// client next must not see its records deleted after its own.
		id, claim := s.id, s.claim
		if !tx.write(nil, func() { b.owner.Release(id, claim) }) {
			b.owner.Release(id, claim)
		}
		s.claim = 0
	}
	if s.stored && tx != nil {
		// The range deletion does not cover puts still pending in some
		// publisher's txnCtx: those are deleted there.
		for f := s.oldest; f != nil; f = f.next {
			b.dropPending(s, &f.delivery)
		}
		s.queue.filter(func(d *delivery) bool { b.dropPending(s, d); return true })
		tx.write(func(t Txn) { t.DeleteSession(s.id) }, nil)
		s.stored = false
	}
	b.unparkLocked(s) // before the deletion

	// The will goes out once the deletion is durable.
	b.publishWillAfter(tx, will)
	s.mu.Unlock()
	if b.sessions[s.id] == s {
		delete(b.sessions, s.id)
		s.count(&b.stats.sessions, -1)
	}
	if dropped > 0 {
		b.stats.dropped[dropSessionEnded].Add(uint64(dropped))
	}
}

// scheduleWillLocked starts the delay of the session's will, or, when it
// has none (or the session ends with the connection), takes the will out of
// the session and returns it: the caller saves the session and publishes
// it with publishWillAfter. s.mu is held.
func (b *Broker) scheduleWillLocked(s *session) *Message {
	will := s.will
	if will == nil {
		return nil
	}
	if s.willDelay == 0 || s.expiry == 0 {
		s.will = nil
		return will
	}
	delay := s.willDelay
	if s.expiry != expiryNever && s.expiry < delay {
		delay = s.expiry
	}
	s.willTimer = b.clk.AfterFunc(delay, func() { b.inBackground(func() { b.delayedWill(s) }) })
	return nil
}

// delayedWill publishes s's will when its delay has passed, unless the
// session was resumed or ended.
func (b *Broker) delayedWill(s *session) {
	s.mu.Lock()
	w := s.will
	if s.client != nil || w == nil || s.ended {
		s.mu.Unlock()
		return
	}
	// Fired, the will leaves the stored session before it goes out,
	// so no later restart publishes it again.
	s.will = nil
	tx := b.saveSessionLocked(s, s.offlineSince)
	s.mu.Unlock()
	b.publishWillAfter(tx, w)
	b.flush()
}

// publishWillAfter submits tx, which removes will w from its stored
// session, and publishes w (when it is still authorised) once that is
// durable: a will goes out at most once, even across a crash. Should the
// removal fail (a full disk), w is published all the same, and a restart
// may publish it again. A nil w only submits tx. It may be called under
// broker locks; the caller flushes once it holds none.
func (b *Broker) publishWillAfter(tx *txnCtx, w *Message) {
	if w == nil {
		b.submit(tx, nil)
		return
	}
	b.willMu.Lock()
	if b.willsDone {
		// A delay that ended during Shutdown: the will stays in the stored
		// session, for the next start to publish.
		b.willMu.Unlock()
		tx.discard()
		return
	}
	b.willWG.Add(1)
	b.willsOut.Add(1)
	b.willMu.Unlock()
	b.submit(tx, func(err error) {
		if err != nil {
			b.log.Warn("publishing a will whose removal from the store failed: a restart may publish it again", "client", w.Origin, "err", err)
		}
		// Not on the committer's goroutine: publishing commits too.
		go func() {
			defer b.willWG.Done()
			defer b.willsOut.Add(-1)
			b.publishWill(w)
		}()
	})
}

// newClientID assigns an identifier to a client that sent none.
func newClientID() string {
	var buf [12]byte
	_, _ = rand.Read(buf[:])
	return "edgeport-" + hex.EncodeToString(buf[:])
}

func (b *Broker) listenerStats(name string) *listenerStats {
	b.listenerMu.Lock()
	defer b.listenerMu.Unlock()
	ls := b.listeners[name]
	if ls == nil {
		ls = &listenerStats{name: name}
		b.listeners[name] = ls
	}
	return ls
}
