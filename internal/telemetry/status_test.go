package telemetry

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/broker/listener"
	"github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/cluster/clustertest"
	"github.com/edgeport/edgeport/internal/testwait"
)

func TestStatusz(t *testing.T) {
	b := startTestBroker(t, broker.Options{Version: "v9.9.9"})
	ln, err := listener.New(listener.Config{Name: "ws", Addr: "127.0.0.1:0", Protocol: listener.ProtocolWebSocket}, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	unstarted, err := listener.New(listener.Config{Name: "mqtt", Addr: "127.0.0.1:0", Protocol: listener.ProtocolTCP}, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ln.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Stop(context.Background()) })
	p := startProbe(t, internalServe(b), nil, ProbeOptions{Interval: 20 * time.Millisecond})
	waitStatus(t, p, "a round", func(s ProbeStatus) bool { return s.Runs > 0 })

	dir := t.TempDir()
	listeners := []*listener.Listener{ln, unstarted}
	describe := func() []ListenerInfo { return DescribeListeners(listeners) }
	s := startServer(t, nil, func(s *HTTPServer) {
		rs := ReadinessSource{Broker: b, Listeners: describe, DataDir: dir}
		s.Handle("GET /statusz", StatusSource{Broker: b, Probe: p, DataDir: dir, Listeners: describe, Readiness: rs.Readiness})
		s.AddReadyCheck("broker", rs.ReadyCheck())
	})
	// Reading the status writes nothing in the data directory: creating
	// and removing a file there would change its modification time.
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(dir, old, old); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, s, "/statusz")
	if fi, err := os.Stat(dir); err != nil || !fi.ModTime().Equal(old) {
		t.Errorf("GET /statusz changed the data directory (modified %v, err %v)", fi.ModTime(), err)
	}
	if code != http.StatusOK {
		t.Fatalf("GET /statusz = %d %s", code, body)
	}
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	if st.Version != "v9.9.9" || !st.Broker.Accepting || st.UptimeSeconds <= 0 {
		t.Errorf("status %+v", st)
	}
	wantWS := ListenerInfo{Name: "ws", Protocol: "websocket", Address: ln.Addr().String(), Configured: "127.0.0.1:0", Path: "/mqtt"}
	// An unbound listener still says where it is configured to listen.
	if len(st.Listeners) != 2 || st.Listeners[0] != wantWS || st.Listeners[1].Address != "" || st.Listeners[1].Configured != "127.0.0.1:0" {
		t.Errorf("listeners %+v, want %+v and an unbound mqtt", st.Listeners, wantWS)
	}
	if st.Storage == nil || st.Storage.Path != dir || !st.Storage.Writable || st.Storage.TotalBytes == 0 ||
		st.Storage.FreeBytes > st.Storage.TotalBytes {
		t.Errorf("storage %+v", st.Storage)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the write check left %v behind", entries)
	}
	if st.SelfTest == nil || st.SelfTest.Runs == 0 {
		t.Errorf("selftest %+v", st.SelfTest)
	}
	// An unbound listener beside a bound one leaves the instance ready,
	// and is named.
	if st.Readiness == nil || !st.Readiness.Ready || len(st.Readiness.Degraded) != 1 ||
		st.Readiness.Degraded[0] != "listener mqtt: not bound (127.0.0.1:0)" {
		t.Errorf("readiness %+v", st.Readiness)
	}
	if code, body := get(t, s, "/readyz"); code != http.StatusOK || body != "ok\nbroker: degraded: listener mqtt: not bound (127.0.0.1:0)\n" {
		t.Errorf("GET /readyz with an unbound listener = %d %q", code, body)
	}
	listeners = listeners[:1]
	if code, body := get(t, s, "/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("GET /readyz = %d %q", code, body)
	}
}

func TestStatuszWithoutProbeOrDataDir(t *testing.T) {
	b := startTestBroker(t, broker.Options{})
	s := startServer(t, nil, func(s *HTTPServer) { s.Handle("GET /statusz", StatusSource{Broker: b}) })
	_, body := get(t, s, "/statusz")
	var raw map[string]any
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{"selftest", "storage"} {
		if _, ok := raw[absent]; ok {
			t.Errorf("%s present: %s", absent, body)
		}
	}
	if ls, ok := raw["listeners"].([]any); !ok || len(ls) != 0 {
		t.Errorf("listeners = %v, want []", raw["listeners"])
	}
}

func TestCheckStorage(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		path     string
		writable bool
		errPart  string
	}{
		{"directory", dir, true, ""},
		{"missing", filepath.Join(dir, "missing"), false, "no such file or directory"},
		{"not a directory", file, false, "is not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := CheckStorage(tc.path)
			if s.Writable != tc.writable || !strings.Contains(s.Error, tc.errPart) || (tc.errPart == "" && s.Error != "") {
				t.Fatalf("CheckStorage(%s) = %+v", tc.path, s)
			}
		})
	}
}

// TestReadinessVerdicts: what /readyz answers for each state of the
// listeners, the data directory and the store (see Readiness).
func TestReadinessVerdicts(t *testing.T) {
	b, err := broker.New(broker.Options{SysInterval: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	open := ListenerInfo{Name: "mqtt", Address: "127.0.0.1:1883", Admits: "everyone"}
	authed := ListenerInfo{Name: "secure:8883", Address: "0.0.0.0:8883", Admits: "authenticated"}
	unbound := ListenerInfo{Name: "ws", Configured: "127.0.0.1:8083", Error: "listen tcp 127.0.0.1:8083: bind: address already in use"}
	nobody := ListenerInfo{Name: "edge:1883", Address: "0.0.0.0:1883", Admits: "nobody"}
	for _, tc := range []struct {
		name      string
		ls        []ListenerInfo
		dataDir   string
		full      bool
		wantCode  int
		wantBody  string
		wantReady bool
	}{
		{"all served", []ListenerInfo{open, authed}, dir, false, 200, "ok\n", true},
		{"one port failed to bind", []ListenerInfo{open, unbound}, dir, false, 200,
			"ok\nbroker: degraded: listener ws: not bound: listen tcp 127.0.0.1:8083: bind: address already in use\n", true},
		{"one port admits nobody", []ListenerInfo{authed, nobody}, dir, false, 200,
			"ok\nbroker: degraded: listener edge:1883 (0.0.0.0:1883): admits nobody: every client is refused\n", true},
		{"every port failed", []ListenerInfo{unbound}, dir, false, 503,
			"broker: no MQTT listener is bound and admits clients; listener ws: not bound: listen tcp 127.0.0.1:8083: bind: address already in use\n", false},
		{"the only port admits nobody", []ListenerInfo{nobody}, dir, false, 503,
			"broker: no MQTT listener is bound and admits clients; listener edge:1883 (0.0.0.0:1883): admits nobody: every client is refused\n", false},
		{"no MQTT listener configured", nil, dir, false, 200, "ok\nbroker: degraded: no MQTT listener is configured\n", true},
		{"data directory not writable", []ListenerInfo{open}, file, false, 503,
			"broker: data directory " + file + ": not writable: " + file + " is not a directory\n", false},
		{"store full", []ListenerInfo{open}, dir, true, 200,
			"ok\nbroker: degraded: store is full: publishers get 0x97 quota exceeded until subscribers drain it or space is freed\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := ReadinessSource{Broker: b, Listeners: func() []ListenerInfo { return tc.ls }, DataDir: tc.dataDir,
				StoreFull: func() bool { return tc.full }}
			s := startServer(t, nil, func(s *HTTPServer) { s.AddReadyCheck("broker", rs.ReadyCheck()) })
			if code, body := get(t, s, "/readyz"); code != tc.wantCode || body != tc.wantBody {
				t.Errorf("GET /readyz = %d %q, want %d %q", code, body, tc.wantCode, tc.wantBody)
			}
			if r := rs.Readiness(); r.Ready != tc.wantReady {
				t.Errorf("readiness %+v, want ready %v", r, tc.wantReady)
			}
		})
	}
	// Shutting down is not ready, whatever the listeners.
	if err := b.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	rs := ReadinessSource{Broker: b, Listeners: func() []ListenerInfo { return []ListenerInfo{open} }}
	if err := rs.ReadyCheck()(); err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("after shutdown: %v", err)
	}
}

// TestReadinessClusterMember: in cluster mode /readyz answers 503 while
// the node's cluster has no quorum (real embedded NATS servers: one node
// of three started alone), and 200 once the others joined.
func TestReadinessClusterMember(t *testing.T) {
	b, err := broker.New(broker.Options{SysInterval: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfgs := clustertest.Configs(t, 3)
	var nodes []*cluster.Node
	for _, cfg := range cfgs {
		nd, err := cluster.New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, nd)
	}
	start := func(nd *cluster.Node) {
		t.Helper()
		if err := nd.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nd.Stop(context.Background()) })
	}
	start(nodes[0])
	open := ListenerInfo{Name: "mqtt", Address: "127.0.0.1:1883", Admits: "everyone"}
	rs := ReadinessSource{Broker: b, Listeners: func() []ListenerInfo { return []ListenerInfo{open} }, Cluster: nodes[0].Ready}
	s := startServer(t, nil, func(s *HTTPServer) { s.AddReadyCheck("broker", rs.ReadyCheck()) })
	want := "broker: cluster: jetstream has no meta leader: the cluster has no quorum yet\n"
	if code, body := get(t, s, "/readyz"); code != 503 || body != want {
		t.Fatalf("alone: GET /readyz = %d %q, want 503 %q", code, body, want)
	}
	start(nodes[1])
	start(nodes[2])
	if !testwait.Within(30*time.Second, func() bool { code, _ := get(t, s, "/readyz"); return code == 200 }) {
		code, body := get(t, s, "/readyz")
		t.Fatalf("cluster formed: GET /readyz = %d %q, want 200", code, body)
	}
	if r := rs.Readiness(); !r.Ready {
		t.Fatalf("readiness %+v, want ready", r)
	}
}
