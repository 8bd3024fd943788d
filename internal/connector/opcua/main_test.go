package opcua

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/connector/opcua/testserver"
)

// The node-opcua server takes seconds to start, so the package shares one
// for every test that does not stop, restart or freeze it; those start their
// own (see startServer).
var shared *testserver.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "opcua-shared-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared, err = testserver.Start(dir, testserver.Config{
		AllowAnonymous: true,
		Users:          map[string]string{"operator": "secret"},
		AutoAccept:     true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the node-opcua test server:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	shared.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startServer starts a private server for a test that disturbs it.
func startServer(t *testing.T, cfg testserver.Config) *testserver.Server {
	t.Helper()
	s, err := testserver.Start(t.TempDir(), cfg)
	if err != nil {
		t.Fatalf("starting node-opcua: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// newDialer makes an application certificate and trust list in a temporary
// data dir; with trustServers, the given servers' certificates are trusted.
func newDialer(t *testing.T, trustServers ...*testserver.Server) *Dialer {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki", "opcua")
	app, err := LoadOrCreateAppCert(dir, "urn:edgeport:test", "localhost", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	trust, err := OpenTrustList(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range trustServers {
		pem, err := os.ReadFile(filepath.Join(s.PKI(), "own", "certs", "certificate.pem"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := trust.Add(pem, false); err != nil {
			t.Fatal(err)
		}
	}
	return &Dialer{App: app, Trust: trust}
}

// recorder is a Handler that keeps everything for assertions.
type recorder struct {
	mu       sync.Mutex // guards the fields below
	samples  map[string][]Sample
	batches  int
	events   []Event
	statuses []Status
	items    map[string]error
	itemSeen map[string]bool
}

func newRecorder() *recorder {
	return &recorder{samples: map[string][]Sample{}, items: map[string]error{}, itemSeen: map[string]bool{}}
}

func (r *recorder) Samples(group string, s []Sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches++
	for _, x := range s {
		r.samples[x.Name] = append(r.samples[x.Name], x)
	}
}

func (r *recorder) Event(group string, ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recorder) SessionStatus(st Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses = append(r.statuses, st)
}

func (r *recorder) ItemStatus(group, dataset, item string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items[item] = err
	r.itemSeen[item] = true
}

func (r *recorder) count(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.samples[name])
}

func (r *recorder) get(name string) []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Sample(nil), r.samples[name]...)
}

func (r *recorder) lastStatus() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.statuses) == 0 {
		return Status{}
	}
	return r.statuses[len(r.statuses)-1]
}

// lastStatusIn is the latest status in state st: with a backoff this short the session may already
// be connecting again when the test looks, so the last status overall may carry no error.
func (r *recorder) lastStatusIn(st State) Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.statuses) - 1; i >= 0; i-- {
		if r.statuses[i].State == st {
			return r.statuses[i]
		}
	}
	return Status{}
}

func (r *recorder) statusCount(st State) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.statuses {
		if s.State == st {
			n++
		}
	}
	return n
}

func (r *recorder) eventList() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func (r *recorder) itemErr(name string) (error, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.items[name], r.itemSeen[name]
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		<-tick.C
	}
}

// startSession starts a session and stops it at cleanup.
func startSession(t *testing.T, d *Dialer, opts Options, h Handler) *Session {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := NewSession(d, opts, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := contextWithTimeout(10 * time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("stopping session: %v", err)
		}
	})
	return s
}

// tWriter sends log lines to the test's log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
