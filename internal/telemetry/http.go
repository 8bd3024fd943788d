// Package telemetry is Edgeport's operational side: liveness, readiness,
// status and Prometheus metrics over HTTP, and the self-test probe.
package telemetry

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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgeport/edgeport/internal/lifecycle"
)

const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	// Scrapes of a large registry on a slow edge CPU can take a while.
	writeTimeout   = 30 * time.Second
	idleTimeout    = 60 * time.Second
	maxHeaderBytes = 8 << 10

	// Parallel scrapes each gather the whole registry; more than a few at
	// once only competes with the broker for CPU.
	maxMetricsInFlight = 4
)

type readyCheck struct {
	name  string
	check func() error
}

// HTTPServer serves /healthz, /readyz, /metrics and any extra handlers.
type HTTPServer struct {
	addr string
	log  *slog.Logger
	mux  *http.ServeMux

	checksMu sync.Mutex
	checks   []readyCheck

	tlsConfig *tls.Config // set by SetTLS before Start; nil serves plain HTTP

	mu      sync.Mutex
	srv     *http.Server
	ln      net.Listener
	done    chan struct{}
	started bool
	stopped bool
}

// NewHTTPServer returns a server for addr (host:port; port 0 picks a free
// port) that is not yet bound. /metrics is served from gatherer with the
// promhttp defaults (Prometheus text format, OpenMetrics off); a nil gatherer
// leaves /metrics unmounted. A nil log discards log output.
func NewHTTPServer(addr string, gatherer prometheus.Gatherer, log *slog.Logger) *HTTPServer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &HTTPServer{addr: addr, log: log, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", s.serveHealth)
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	if gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
			// One broken collector should not hide every other metric.
			ErrorHandling:       promhttp.ContinueOnError,
			MaxRequestsInFlight: maxMetricsInFlight,
		}))
	}
	return s
}

// Handle mounts h at pattern (http.ServeMux syntax). Call it before Start;
// like http.ServeMux it panics on a pattern that conflicts with an existing
// one.
func (s *HTTPServer) Handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
}

// SetTLS makes the server speak HTTPS with c. Call it before Start.
func (s *HTTPServer) SetTLS(c *tls.Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tlsConfig = c
}

// AddReadyCheck registers a check consulted on every /readyz request; a
// non-nil error marks the server unready. Checks should be cheap and must be
// safe for concurrent use. It may be called at any time.
func (s *HTTPServer) AddReadyCheck(name string, check func() error) {
	s.checksMu.Lock()
	defer s.checksMu.Unlock()
	s.checks = append(s.checks, readyCheck{name: name, check: check})
}

var _ lifecycle.Component = (*HTTPServer)(nil)

// Start binds the address and serves in a background goroutine until Stop.
// ctx bounds only the bind.
func (s *HTTPServer) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("telemetry: http server already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("telemetry: listen on %s: %w", s.addr, err)
	}
	if s.tlsConfig != nil {
		ln = tls.NewListener(ln, s.tlsConfig)
	}
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.ln = ln
	s.done = make(chan struct{})
	s.started = true
	go s.serve(s.srv, ln, s.done)
	s.log.Debug("telemetry http listening", "addr", ln.Addr().String())
	return nil
}

func (s *HTTPServer) serve(srv *http.Server, ln net.Listener, done chan struct{}) {
	defer close(done)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("telemetry http server stopped", "err", err)
	}
}

// Addr returns the bound address, or nil before Start.
func (s *HTTPServer) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Stop shuts the server down gracefully, letting in-flight requests finish
// until ctx ends, after which remaining connections are closed. Stop before
// Start, or a second Stop, is a no-op.
func (s *HTTPServer) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.started || s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	srv, done := s.srv, s.done
	s.mu.Unlock()

	var err error
	if serr := srv.Shutdown(ctx); serr != nil {
		err = fmt.Errorf("telemetry: shutdown: %w", serr)
		_ = srv.Close()
	}
	<-done // Serve returns as soon as the listener is closed.
	return err
}

func (s *HTTPServer) serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *HTTPServer) serveReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")

	s.checksMu.Lock()
	checks := s.checks[:len(s.checks):len(s.checks)]
	s.checksMu.Unlock()

	// Checks run outside the lock so a slow one cannot block registration.
	var failed, degraded strings.Builder
	for _, c := range checks {
		err := c.check()
		var d *degradedError
		switch {
		case err == nil:
		case errors.As(err, &d):
			fmt.Fprintf(&degraded, "%s: degraded: %v\n", c.name, d.err)
		default:
			fmt.Fprintf(&failed, "%s: %v\n", c.name, err)
		}
	}
	if failed.Len() > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(failed.String() + degraded.String()))
		return
	}
	_, _ = w.Write([]byte("ok\n" + degraded.String()))
}

// Degraded marks a ready check's error as not making the instance unready:
// /readyz answers 200 and lists it after "ok".
func Degraded(err error) error { return &degradedError{err} }

type degradedError struct{ err error }

func (d *degradedError) Error() string { return "degraded: " + d.err.Error() }
func (d *degradedError) Unwrap() error { return d.err }
