// Package httpsink is a real HTTP destination for dataflow tests: a loopback
// server that records every payload it accepts, in arrival order, and can be
// taken away (it answers 503 while down). Imported by tests only.
package httpsink

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// Sink is the destination. A body that is a JSON array is a batch: each
// element is one payload; any other body is one payload.
type Sink struct {
	// URL is where the destination listens (http://127.0.0.1:port).
	URL string

	t    testing.TB
	down atomic.Bool
	hits atomic.Int64

	mu  sync.Mutex // guards got
	got []string
}

// Start serves a sink on 127.0.0.1:0 until the test ends.
func Start(t testing.TB) *Sink {
	t.Helper()
	s := &Sink{t: t}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *Sink) serve(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	b, err := io.ReadAll(r.Body)
	if err != nil || s.down.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	var batch []json.RawMessage
	s.mu.Lock()
	if json.Unmarshal(b, &batch) == nil {
		for _, p := range batch {
			s.got = append(s.got, string(p))
		}
	} else {
		s.got = append(s.got, string(b))
	}
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// SetDown takes the destination away (true) or brings it back (false).
func (s *Sink) SetDown(down bool) { s.down.Store(down) }

// Down reports whether the destination is away.
func (s *Sink) Down() bool { return s.down.Load() }

// Hits counts the requests so far, refused ones included: a test waits on
// it to see the flow retry while the destination is away.
func (s *Sink) Hits() int64 { return s.hits.Load() }

// Payloads returns the accepted payloads in arrival order.
func (s *Sink) Payloads() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// Seqs returns the "seq" field of every accepted payload in arrival order.
// A payload without one fails the test: every message a test sends through
// the sink is numbered.
func (s *Sink) Seqs() []int {
	var out []int
	for _, p := range s.Payloads() {
		var v struct{ Seq *int }
		if err := json.Unmarshal([]byte(p), &v); err != nil || v.Seq == nil {
			s.t.Errorf("httpsink: payload %q has no seq", p)
			continue
		}
		out = append(out, *v.Seq)
	}
	return out
}
