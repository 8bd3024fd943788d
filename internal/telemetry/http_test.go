package telemetry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func startServer(t *testing.T, g prometheus.Gatherer, setup func(*HTTPServer)) *HTTPServer {
	t.Helper()
	s := NewHTTPServer("127.0.0.1:0", g, nil)
	if setup != nil {
		setup(s)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s
}

func get(t *testing.T, s *HTTPServer, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + s.Addr().String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s body: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	published := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgeport_messages_published_total",
		Help: "Messages published.",
	})
	reg.MustRegister(published)
	published.Add(3)

	s := startServer(t, reg, func(s *HTTPServer) {
		s.Handle("GET /debug/hello", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "hello")
		}))
	})
	tests := []struct {
		path     string
		wantCode int
		wantBody string
	}{
		{"/healthz", http.StatusOK, "ok\n"},
		{"/readyz", http.StatusOK, "ok\n"},
		{"/metrics", http.StatusOK, "edgeport_messages_published_total 3\n"},
		{"/debug/hello", http.StatusOK, "hello"},
		{"/nope", http.StatusNotFound, "404 page not found\n"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, body := get(t, s, tt.path)
			if code != tt.wantCode || !strings.Contains(body, tt.wantBody) {
				t.Fatalf("GET %s = %d %q, want %d containing %q", tt.path, code, body, tt.wantCode, tt.wantBody)
			}
		})
	}
}

func TestNilGathererLeavesMetricsUnmounted(t *testing.T) {
	s := startServer(t, nil, nil)
	if code, _ := get(t, s, "/metrics"); code != http.StatusNotFound {
		t.Fatalf("GET /metrics = %d, want 404", code)
	}
}

func TestReadyChecks(t *testing.T) {
	var brokerUp, storeUp atomic.Bool
	check := func(up *atomic.Bool, why string) func() error {
		return func() error {
			if !up.Load() {
				return errors.New(why)
			}
			return nil
		}
	}
	s := startServer(t, nil, func(s *HTTPServer) {
		s.AddReadyCheck("broker", check(&brokerUp, "listeners not bound"))
	})
	// Registration after Start is allowed.
	s.AddReadyCheck("store", check(&storeUp, "not opened"))

	tests := []struct {
		name          string
		broker, store bool
		wantCode      int
		want, notWant []string
	}{
		{"both failing", false, false, http.StatusServiceUnavailable,
			[]string{"broker: listeners not bound", "store: not opened"}, nil},
		{"one failing", true, false, http.StatusServiceUnavailable,
			[]string{"store: not opened"}, []string{"broker"}},
		{"all passing", true, true, http.StatusOK, []string{"ok"}, []string{"broker", "store"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			brokerUp.Store(tt.broker)
			storeUp.Store(tt.store)
			code, body := get(t, s, "/readyz")
			if code != tt.wantCode {
				t.Fatalf("GET /readyz = %d %q, want %d", code, body, tt.wantCode)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("body %q lacks %q", body, w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(body, w) {
					t.Errorf("body %q mentions %q", body, w)
				}
			}
		})
	}
	if code, _ := get(t, s, "/healthz"); code != http.StatusOK {
		t.Fatalf("GET /healthz = %d while unrelated to readiness, want 200", code)
	}
}

func TestLifecycle(t *testing.T) {
	s := NewHTTPServer("127.0.0.1:0", nil, nil)
	if s.Addr() != nil {
		t.Fatalf("Addr before Start = %v", s.Addr())
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err == nil {
		t.Fatal("second Start succeeded")
	}
	addr := s.Addr().String()
	if code, _ := get(t, s, "/healthz"); code != http.StatusOK {
		t.Fatalf("GET /healthz = %d", code)
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	if resp, err := client.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("request after Stop succeeded")
	}
}

func TestBindError(t *testing.T) {
	s := startServer(t, nil, nil)
	dup := NewHTTPServer(s.Addr().String(), nil, nil)
	if err := dup.Start(t.Context()); err == nil {
		_ = dup.Stop(context.Background())
		t.Fatal("binding an address in use succeeded")
	}
}
