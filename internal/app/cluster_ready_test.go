package app

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/cluster/clustertest"
	"github.com/edgeport/edgeport/internal/testwait"
)

// readyz returns the status code and body of a's /readyz.
func readyz(t *testing.T, a *App) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + a.Addrs()["http"].String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestClusterReadyzMeansConnect: /readyz is what a Kubernetes Service
// (the Helm chart's readiness probe) and `edgeport check` go by, so in
// cluster mode it says ready only once the node can take a network
// client: a CONNECT sent the moment /readyz first answers 200 is claimed
// and accepted on every node of three started together (not refused 0x88
// while the session state is still being set up). And it stops saying so
// when claims cannot be made: the node left alone answers 503, naming the
// cluster.
func TestClusterReadyzMeansConnect(t *testing.T) {
	var apps []*App
	for _, cfg := range clustertest.Configs(t, 3) {
		apps = append(apps, newTestApp(t, Config{ClusterEnabled: true, Cluster: cfg, HTTPAddr: "127.0.0.1:0"}))
	}
	// Started together, and nothing waited for but /readyz.
	startTogether(t, apps)
	for i, a := range apps {
		var code int
		var body string
		// A bound for a failing test: JetStream elects slowly on a loaded
		// machine (as clusterStateReady allows).
		if !testwait.Within(30*time.Second, func() bool { code, body = readyz(t, a); return code == http.StatusOK }) {
			t.Fatalf("node %d never ready: %d %q", i+1, code, body)
		}
		// At once: dialNodeWith fails the test unless the CONNACK is a
		// success.
		_, ack := dialNodeWith(t, a, persistentConnect("ready-"+a.Cluster().Name(), true))
		if ack.ReasonCode != 0 {
			t.Fatalf("node %d: CONNACK 0x%02X right after /readyz said ready", i+1, ack.ReasonCode)
		}
	}

	// Alone, node 1 cannot claim a session (no quorum): not ready.
	stopApp(t, apps[1])
	stopApp(t, apps[2])
	var code int
	var body string
	if !testwait.Within(30*time.Second, func() bool { code, body = readyz(t, apps[0]); return code == http.StatusServiceUnavailable }) {
		t.Fatalf("node 1 alone: /readyz %d %q, want 503", code, body)
	}
	if !strings.Contains(body, "cluster: ") {
		t.Fatalf("node 1 alone: /readyz %q does not name the cluster", body)
	}
	t.Logf("node 1 alone: %s", strings.TrimSpace(body))
}
