// Package listener accepts MQTT network connections over TCP, TLS and WebSocket
// and hands each one to the broker as a plain net.Conn.
package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/lifecycle"
	"github.com/edgeport/edgeport/internal/lograte"
)

// Protocol names accepted in Config.Protocol.
const (
	ProtocolTCP       = "tcp"
	ProtocolWebSocket = "websocket"
)

// DefaultWebSocketPath is the HTTP path MQTT-over-WebSocket clients connect to
// unless Config.Path says otherwise.
const DefaultWebSocketPath = "/mqtt"

const (
	// TCP keepalive finds peers that vanished without a FIN when the MQTT
	// keep-alive is 0 (disabled) or very long.
	keepAliveIdle     = 30 * time.Second
	keepAliveInterval = 15 * time.Second
	keepAliveCount    = 4

	// Accept errors such as EMFILE persist until descriptors are freed, so
	// retrying in a tight loop would only burn CPU and flood the log.
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second

	// A WebSocket close waits for the peer's close frame; a dead peer must
	// not hold the broker's Close call for the library's 5+5 s default.
	defaultWSCloseGrace = time.Second

	// DefaultHandshakeTimeout bounds a TLS handshake unless the Guard or
	// Config says otherwise: a client that opens a socket and says nothing
	// must not hold it for long.
	DefaultHandshakeTimeout = 10 * time.Second

	wsReadHeaderTimeout = 10 * time.Second
	wsIdleTimeout       = 30 * time.Second
	wsMaxHeaderBytes    = 16 << 10
)

// Handler serves one accepted connection until it ends; it owns conn.
type Handler interface {
	ServeConn(conn net.Conn, listener string)
}

// AsyncHandler is implemented by Handlers that may hold a connection
// without a goroutine (the broker parks idle TCP connections): the
// listener's plain TCP and TLS connections are given to ServeConnAsync,
// which may return before the connection ends and calls ended once it has.
type AsyncHandler interface {
	ServeConnAsync(conn net.Conn, listener string, ended func())
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(conn net.Conn, listener string)

// ServeConn calls f(conn, listener).
func (f HandlerFunc) ServeConn(conn net.Conn, listener string) { f(conn, listener) }

// RejectCounter is implemented by Handlers that count the connections a
// listener refused (the broker, for its metrics); reason is one of the
// Reject constants.
type RejectCounter interface {
	ConnectionRejected(listener, reason string)
}

// Why a connection was refused, as metrics label it.
const (
	RejectListenerLimit = "listener_limit" // Config.MaxConnections reached
	RejectTotalLimit    = "total_limit"    // Limits.MaxConnections reached
	RejectAddressLimit  = "address_limit"  // Limits.MaxConnectionsPerAddress reached
	RejectRateLimit     = "rate_limit"     // Limits.ConnectRate exceeded
	RejectTLSHandshake  = "tls_handshake"  // handshake failed or timed out
	RejectOrigin        = "origin"         // a browser page of an origin not allowed (WebSocket)
)

// rejectReasons index Listener.rejectedBy, in the order of Rejections' fields.
var rejectReasons = [...]string{RejectListenerLimit, RejectTotalLimit, RejectAddressLimit, RejectRateLimit, RejectTLSHandshake, RejectOrigin}

// Config describes one listener.
type Config struct {
	Name           string      // listener name used in logs and metrics; defaults to Protocol
	Addr           string      // host:port; port 0 picks a free port
	Protocol       string      // ProtocolTCP or ProtocolWebSocket
	Path           string      // websocket path, default DefaultWebSocketPath
	TLS            *tls.Config // optional; turns tcp into TLS and websocket into WSS
	MaxConnections int         // 0 = unlimited; connections over the limit are closed at once and counted
	// Guard holds limits shared with other listeners; nil for none.
	Guard *Guard
	// HandshakeTimeout bounds the TLS handshake when the Guard sets no
	// timeout; 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// AllowedOrigins lists the web origins (scheme://host[:port]) whose
	// pages may open WebSocket connections, besides pages served from the
	// IP address or localhost the request is addressed to; AnyOrigin
	// allows every page. Requests without an Origin header (programs, not
	// browsers) are always allowed. Other upgrades get 403 (see
	// originAllowed).
	AllowedOrigins []string
}

// Stats is a snapshot of a listener's connection counters.
type Stats struct {
	Accepted   uint64     // connections handed to the Handler since Start
	Rejected   uint64     // connections refused, for any reason
	Rejections Rejections // Rejected by reason
	Open       int64      // connections handed to the Handler and not yet ended
}

// LogValue logs the counters as fields (stats.accepted=3 ...), with a
// rejection reason only when it happened.
func (s Stats) LogValue() slog.Value {
	attrs := []slog.Attr{slog.Uint64("accepted", s.Accepted), slog.Uint64("rejected", s.Rejected), slog.Int64("open", s.Open)}
	r := s.Rejections
	for i, n := range [...]uint64{r.ListenerLimit, r.TotalLimit, r.AddressLimit, r.RateLimit, r.TLSHandshake, r.Origin} {
		if n > 0 {
			attrs = append(attrs, slog.Uint64("rejected_"+rejectReasons[i], n))
		}
	}
	return slog.GroupValue(attrs...)
}

// Rejections count refused connections by reason (see the Reject constants).
type Rejections struct {
	ListenerLimit, TotalLimit, AddressLimit, RateLimit, TLSHandshake, Origin uint64
}

// Listener accepts connections for one Config and passes them to a Handler.
type Listener struct {
	cfg        Config
	h          Handler
	log        *slog.Logger
	errs       *lograte.Limiter // accept errors that repeat are logged once a minute
	closeGrace time.Duration    // tests shorten it

	tls *tls.Config // cfg.TLS as served (WSS: HTTP/1.1 only)

	mu       sync.Mutex
	ln       net.Listener
	srv      *http.Server // websocket only
	queue    *connQueue   // websocket only: prepared connections for srv
	started  bool
	stopped  bool
	quit     chan struct{} // closed by Stop; interrupts accept backoff
	done     chan struct{} // closed when the accept loop has returned
	httpDone chan struct{} // closed when srv.Serve has returned (websocket)

	accepted   atomic.Uint64
	rejected   atomic.Uint64
	rejectedBy [len(rejectReasons)]atomic.Uint64
	open       atomic.Int64
}

// New validates cfg and returns a Listener that is not yet bound.
// A nil log discards log output.
func New(cfg Config, h Handler, log *slog.Logger) (*Listener, error) {
	if h == nil {
		return nil, errors.New("listener: nil handler")
	}
	switch cfg.Protocol {
	case ProtocolTCP:
	case ProtocolWebSocket:
		if cfg.Path == "" {
			cfg.Path = DefaultWebSocketPath
		}
		if !strings.HasPrefix(cfg.Path, "/") {
			return nil, fmt.Errorf("listener %q: websocket path %q must start with /", cfg.Name, cfg.Path)
		}
	default:
		return nil, fmt.Errorf("listener %q: unknown protocol %q (want %q or %q)",
			cfg.Name, cfg.Protocol, ProtocolTCP, ProtocolWebSocket)
	}
	if cfg.Name == "" {
		cfg.Name = cfg.Protocol
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("listener %q: address %q: %w", cfg.Name, cfg.Addr, err)
	}
	if len(cfg.AllowedOrigins) > 0 {
		if cfg.Protocol != ProtocolWebSocket {
			return nil, fmt.Errorf("listener %q: allowed origins apply to websocket listeners only", cfg.Name)
		}
		origins, err := CheckOrigins(cfg.AllowedOrigins)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", cfg.Name, err)
		}
		cfg.AllowedOrigins = origins
	}
	if cfg.MaxConnections < 0 {
		return nil, fmt.Errorf("listener %q: negative max connections %d", cfg.Name, cfg.MaxConnections)
	}
	if cfg.TLS != nil && len(cfg.TLS.Certificates) == 0 &&
		cfg.TLS.GetCertificate == nil && cfg.TLS.GetConfigForClient == nil {
		return nil, fmt.Errorf("listener %q: TLS config has no certificate source", cfg.Name)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("listener", cfg.Name)
	return &Listener{
		cfg:        cfg,
		h:          h,
		log:        log,
		errs:       lograte.New(log, time.Minute),
		closeGrace: defaultWSCloseGrace,
	}, nil
}

var _ lifecycle.Component = (*Listener)(nil)

// Start binds the socket and serves in background goroutines owned by the
// Listener until Stop. ctx bounds only the bind; Addr is valid once Start
// returns nil.
func (l *Listener) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started {
		return fmt.Errorf("listener %q: already started", l.cfg.Name)
	}

	lc := net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{
		Enable:   true,
		Idle:     keepAliveIdle,
		Interval: keepAliveInterval,
		Count:    keepAliveCount,
	}}
	ln, err := lc.Listen(ctx, "tcp", l.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listener %q: listen on %s: %w", l.cfg.Name, l.cfg.Addr, err)
	}
	if l.cfg.TLS != nil {
		l.tls = l.cfg.TLS
		if l.cfg.Protocol == ProtocolWebSocket {
			// The WebSocket upgrade exists only in HTTP/1.1; an h2 ALPN
			// offer that we accepted would make the handshake impossible.
			l.tls = l.tls.Clone()
			l.tls.NextProtos = []string{"http/1.1"}
		}
	}

	l.ln = ln
	l.started = true
	l.quit = make(chan struct{})
	l.done = make(chan struct{})
	if l.cfg.Protocol == ProtocolWebSocket {
		// Connections reach the HTTP server only once admitted and past
		// the TLS handshake, both done by the accept loop's goroutines.
		l.queue = newConnQueue(ln.Addr())
		l.srv = l.newWebSocketServer()
		l.httpDone = make(chan struct{})
		go l.serveHTTP(l.queue, l.srv)
	}
	go l.acceptLoop(ln)
	l.log.Debug("listening", "protocol", l.cfg.Protocol, "addr", ln.Addr().String(), "tls", l.cfg.TLS != nil)
	return nil
}

// Config returns the listener's configuration, defaults applied.
func (l *Listener) Config() Config { return l.cfg }

// Addr returns the bound address, or nil before Start.
func (l *Listener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln == nil {
		return nil
	}
	return l.ln.Addr()
}

// Stop closes the socket and waits for the accept goroutine (and, for
// WebSocket, for in-progress HTTP upgrades) until ctx ends. Connections
// already handed to the Handler are left running: the broker drains them.
// Stop before Start, or a second Stop, is a no-op.
func (l *Listener) Stop(ctx context.Context) error {
	l.mu.Lock()
	if !l.started || l.stopped {
		l.mu.Unlock()
		return nil
	}
	l.stopped = true
	close(l.quit)
	ln, srv, done, httpDone := l.ln, l.srv, l.done, l.httpDone
	l.mu.Unlock()

	var err error
	if cerr := ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
		err = fmt.Errorf("listener %q: close: %w", l.cfg.Name, cerr)
	}
	if srv != nil {
		// Shutdown ignores hijacked (upgraded) connections, so it waits
		// only for requests that have not become MQTT connections yet.
		if serr := srv.Shutdown(ctx); serr != nil {
			err = errors.Join(err, fmt.Errorf("listener %q: shutdown: %w", l.cfg.Name, serr))
			_ = srv.Close()
		}
	}

	for _, ch := range []chan struct{}{done, httpDone} {
		if ch == nil {
			continue
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return errors.Join(err, fmt.Errorf("listener %q: waiting for accept loop: %w", l.cfg.Name, ctx.Err()))
		}
	}
	l.log.Info("stopped", "stats", l.Stats())
	return err
}

// Stats returns the current counters.
func (l *Listener) Stats() Stats {
	by := &l.rejectedBy
	return Stats{
		Accepted: l.accepted.Load(),
		Rejected: l.rejected.Load(),
		Rejections: Rejections{
			ListenerLimit: by[0].Load(), TotalLimit: by[1].Load(), AddressLimit: by[2].Load(),
			RateLimit: by[3].Load(), TLSHandshake: by[4].Load(), Origin: by[5].Load(),
		},
		Open: l.open.Load(),
	}
}

// reject counts a refused connection, here and in the Handler's metrics,
// and logs it at info once a minute per reason and client address: enough
// to see who is refused and why without a line per attempt.
func (l *Listener) reject(reason, remote string) {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	l.errs.Log(slog.LevelInfo, "refused "+reason+" "+host, "refused a connection", "reason", reason, "remote", remote)
	l.rejected.Add(1)
	for i, r := range rejectReasons {
		if r == reason {
			l.rejectedBy[i].Add(1)
		}
	}
	if rc, ok := l.h.(RejectCounter); ok {
		rc.ConnectionRejected(l.cfg.Name, reason)
	}
}

// handshakeTimeout is the Guard's, which follows the broker's options
// live, or else the Config's.
func (l *Listener) handshakeTimeout() time.Duration {
	if g := l.cfg.Guard; g != nil {
		if d := g.Limits().HandshakeTimeout; d > 0 {
			return d
		}
	}
	if l.cfg.HandshakeTimeout > 0 {
		return l.cfg.HandshakeTimeout
	}
	return DefaultHandshakeTimeout
}

// reserve claims an open-connection slot; false when the limit is reached.
// A compare-and-swap keeps concurrent WebSocket upgrades from overshooting
// the limit.
func (l *Listener) reserve() bool {
	limit := int64(l.cfg.MaxConnections)
	if limit == 0 {
		l.open.Add(1)
		return true
	}
	for {
		n := l.open.Load()
		if n >= limit {
			return false
		}
		if l.open.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (l *Listener) release() { l.open.Add(-1) }

// handOff runs the Handler for a connection whose slot is already
// reserved; after is called once the connection has ended.
func (l *Listener) handOff(conn net.Conn, after func()) {
	l.accepted.Add(1)
	if ah, ok := l.h.(AsyncHandler); ok && after != nil {
		ah.ServeConnAsync(conn, l.cfg.Name, func() {
			l.release()
			after()
		})
		return
	}
	defer l.release()
	if after != nil {
		defer after()
	}
	l.h.ServeConn(conn, l.cfg.Name)
}
