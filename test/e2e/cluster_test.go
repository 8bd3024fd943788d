package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/edgeport/edgeport/internal/testwait"
)

// TestClusterThreeProcesses runs three `edgeport serve --cluster`
// processes, one command each, with route credentials from one
// `edgeport cluster init` (the documented setup), checks that `edgeport check` sees the
// cluster formed on every node, and routes between them with mosquitto
// clients connected to different nodes.
func TestClusterThreeProcesses(t *testing.T) {
	t.Parallel()
	// Every node lists every route address before any starts
	// (nats-server takes a port, not a listener).
	routes := testserve.FreeAddrs(t, 3)
	creds := t.TempDir()
	if out, code := runEdgeport(t, "cluster", "init", creds, "--nodes", "n1,n2,n3"); code != 0 || !strings.Contains(out, "node n3: --cluster-credentials "+filepath.Join(creds, "n3")) {
		t.Fatalf("edgeport cluster init: exit %d\n%s", code, out)
	}
	var nodes []*edgeport
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		nodes = append(nodes, startEdgeportAt(t, t.TempDir(), "--cluster", "--node-name", name,
			"--cluster-listen", routes[i], "--routes", strings.Join(routes, ","), "--http-addr", "127.0.0.1:0",
			"--cluster-credentials", filepath.Join(creds, name)))
	}
	for i, e := range nodes {
		// Formed: every member heard from and a JetStream meta leader with
		// every peer current. The first check of n1 passed 6-12 s after
		// the third node started on a loaded 2-core machine (the meta
		// group's first election), close to checkUntil's 15 s: the bound
		// of clustertest.WaitFormedOf instead.
		rep, _, out := checkUntilWithin(t, e, 30*time.Second, "cluster", "ok")
		if st, msg := rep.check(t, "cluster"); st != "ok" {
			t.Fatalf("node n%d: cluster check %s: %s\n%s", i+1, st, msg, out)
		} else {
			t.Logf("n%d: %s", i+1, msg)
		}
		if sec := routeSecurity(rep); sec != "mutual TLS with the cluster CA, authenticated with the cluster secret" {
			t.Fatalf("node n%d: route security %q", i+1, sec)
		}
	}

	m1, m2, m3 := newMosquitto(t, nodes[0]), newMosquitto(t, nodes[1]), newMosquitto(t, nodes[2])
	sub2 := m2.subscribe("-V", "mqttv5", "-q", "1", "-t", "e2e/#")
	sub3 := m3.subscribe("-V", "mqttv5", "-q", "0", "-t", "e2e/+")
	got := func(p *proc, topic string) []string {
		var out []string
		all, _, _ := p.out.snapshot()
		for _, m := range messages(all) {
			if strings.HasPrefix(m, topic+"|") {
				out = append(out, m)
			}
		}
		return out
	}
	// Readiness: the subscriptions have reached node 1 once a probe
	// published there arrives on both nodes.
	if !testwait.Within(20*time.Second, func() bool {
		m1.publish("-t", "e2e/probe", "-m", "p")
		return len(got(sub2, "e2e/probe")) > 0 && len(got(sub3, "e2e/probe")) > 0
	}) {
		t.Fatal("a probe published on n1 never reached the subscribers on n2 and n3")
	}
	m1.publish("-V", "mqttv5", "-q", "1", "-t", "e2e/x", "-m", "hello", "-D", "publish", "user-property", "site", "plant-1")
	// n1's publications reach each node in order: once the end marker is
	// there, so is everything published before it, duplicates included.
	m1.publish("-V", "mqttv5", "-q", "1", "-t", "e2e/end", "-m", "end")
	for _, p := range []*proc{sub2, sub3} {
		p.waitLine(t, 10*time.Second, "end marker", func(l string) bool { return strings.HasPrefix(l, msgPrefix+"e2e/end|") })
	}
	if g := got(sub2, "e2e/x"); len(g) != 1 || g[0] != "e2e/x|1|0|site:plant-1|hello" {
		t.Errorf("n2 (QoS 1 subscription) got %q, want once e2e/x|1|0|site:plant-1|hello", g)
	}
	if g := got(sub3, "e2e/x"); len(g) != 1 || g[0] != "e2e/x|0|0|site:plant-1|hello" {
		t.Errorf("n3 (QoS 0 subscription) got %q, want once e2e/x|0|0|site:plant-1|hello", g)
	}

	// The cluster state: sessions, retained messages and session ownership
	// are the cluster's. Every node is ready once its part of it is (the
	// streams and buckets made or joined).
	for i, e := range nodes {
		base := "http://" + e.addr(t, "http")
		var code int
		var body string
		if !testwait.Within(30*time.Second, func() bool {
			code, body = httpGet(t, base+"/readyz")
			return code == http.StatusOK
		}) {
			t.Fatalf("n%d not ready: %d %q", i+1, code, body)
		}
	}
	session := func(m *mosquitto, extra ...string) []string {
		return append([]string{"-h", m.host, "-p", m.port, "-V", "mqttv5", "-c", "-i", "e2e-dev", "-q", "1", "-t", "e2e/q/#"}, extra...)
	}
	// A persistent session made on n1 (-E: gone once subscribed) gets what
	// is published on n2 while it is away, and resumes on n3.
	runProc(t, procLimit, "", m1.sub, session(m1, "-E")...)
	var want []string
	for i := range 5 {
		m2.publish("-V", "mqttv5", "-q", "1", "-t", "e2e/q/x", "-m", fmt.Sprintf("q%d", i))
		want = append(want, fmt.Sprintf("e2e/q/x|1|q%d", i))
	}
	out := runProc(t, procLimit, "", m3.sub, session(m3, "-C", "5", "-F", msgPrefix+"%t|%q|%p")...)
	if g := messages(out); !slices.Equal(g, want) {
		t.Fatalf("the session resumed on n3 got %q, want %q (queued while away, in order)", g, want)
	}

	// A second connection of the client on another node takes the session
	// over: the first is told 0x8E (142).
	holder := m3.subscribe("-V", "mqttv5", "-c", "-i", "e2e-dev", "-q", "1", "-t", "e2e/q/#")
	runProc(t, procLimit, "", m1.sub, session(m1, "-E")...)
	holder.waitLine(t, lineWait, "DISCONNECT 0x8E", func(l string) bool { return strings.Contains(l, "Received DISCONNECT (142)") })

	// A retained message published on n1 reaches a new subscriber on n3.
	m1.publish("-V", "mqttv5", "-q", "1", "-r", "-t", "e2e/ret", "-m", "kept")
	out = runProc(t, procLimit, "", m3.sub, "-h", m3.host, "-p", m3.port, "-V", "mqttv5", "-q", "1", "-t", "e2e/ret",
		"-C", "1", "-F", msgPrefix+"%t|%q|%r|%p")
	if g := messages(out); !slices.Equal(g, []string{"e2e/ret|1|1|kept"}) {
		t.Fatalf("a new subscriber on n3 got %q, want the retained e2e/ret|1|1|kept", g)
	}

	// The whole cluster stops cleanly (SIGTERM, exit 0), one node after
	// the other: the last ones without a quorum.
	for i := len(nodes) - 1; i >= 0; i-- {
		began := time.Now()
		if err := nodes[i].stop(); err != nil {
			t.Errorf("n%d: %v", i+1, err)
		}
		t.Logf("n%d stopped in %v", i+1, time.Since(began))
	}
}

// TestClusterExposedRoutesRefused: a node whose route listener is not on
// loopback does not start without route credentials, and the error names
// the flags to give.
func TestClusterExposedRoutesRefused(t *testing.T) {
	t.Parallel()
	out, code := runEdgeport(t, "serve", "--cluster", "--node-name", "n1", "--data-dir", t.TempDir(),
		"--cluster-listen", "0.0.0.0:0", "--routes", "127.0.0.1:1",
		"--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off", "--http-addr", "off")
	if code == 0 || !strings.Contains(out, "--cluster-listen 0.0.0.0:0 is reachable from other machines, so routes must be authenticated and encrypted: missing --cluster-secret-file") ||
		!strings.Contains(out, "--cluster-credentials <dir>") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// routeSecurity is the cluster check's "route security" item.
func routeSecurity(rep checkReport) string {
	for _, c := range rep.Checks {
		for _, it := range c.Items {
			if c.Name == "cluster" && it.Name == "route security" {
				return it.Message
			}
		}
	}
	return ""
}
