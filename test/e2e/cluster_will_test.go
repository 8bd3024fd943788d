package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/edgeport/edgeport/internal/testwait"
)

// TestClusterWillOnceAfterKill9 (issue 18, items 3 and 4): a client with a
// will is connected to the first of three `edgeport serve --cluster`
// processes, which is killed with SIGKILL. A survivor adopts the session
// and publishes the will, once: a subscriber on the second node gets it,
// and nothing more after markers published through both survivors and,
// once it has started again on its data directory, through the killed
// node.
func TestClusterWillOnceAfterKill9(t *testing.T) {
	t.Parallel()
	// Fixed route ports: the killed node starts again on its own.
	routes := testserve.FreeAddrs(t, 3)
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	start := func(i int) (*edgeport, *mosquitto) {
		e := startEdgeportAt(t, dirs[i], "--cluster", "--node-name", fmt.Sprintf("n%d", i+1),
			"--cluster-listen", routes[i], "--routes", strings.Join(routes, ","))
		return e, newMosquitto(t, e)
	}
	// A node refuses clients (0x88) until the cluster's state is ready,
	// which takes a quorum of the nodes, and again for a few seconds
	// after a node's loss while JetStream elects new leaders for what
	// the lost node led (docs/cluster.md, "When a node is lost"); a
	// client tries again, as real ones do.
	publish := func(m *mosquitto, topic, payload string) {
		t.Helper()
		if !testwait.Within(60*time.Second, func() bool {
			return exec.Command(m.pub, "-h", m.host, "-p", m.port, "-V", "mqttv5", "-q", "1", "-t", topic, "-m", payload).Run() == nil
		}) {
			t.Fatalf("node on port %s never took a QoS 1 publish on %s", m.port, topic)
		}
	}
	ready := func(m *mosquitto) { publish(m, "probe/ready", "x") }
	var nodes []*edgeport
	var ms []*mosquitto
	for i := range 3 {
		e, m := start(i)
		nodes, ms = append(nodes, e), append(ms, m)
	}
	for _, m := range ms {
		ready(m)
	}
	watch := ms[1].subscribeFor(3*time.Minute, "-V", "mqttv5", "-q", "1", "-t", "wills/#", "-i", "watcher")
	// wills/# routes from n1 to n2 once a probe published on n1 arrives.
	if !testwait.Within(30*time.Second, func() bool {
		ms[0].publish("-V", "mqttv5", "-q", "1", "-t", "wills/probe", "-m", "probe")
		all, _, _ := watch.out.snapshot()
		return strings.Contains(strings.Join(all, "\n"), "wills/probe|")
	}) {
		t.Fatal("a probe published on n1 never reached the subscriber on n2")
	}
	ms[0].subscribeFor(3*time.Minute, "-V", "mqttv5", "-i", "dev", "-t", "dev/in",
		"--will-topic", "wills/dev", "--will-payload", "dev is gone", "--will-qos", "1")

	nodes[0].kill()
	watch.waitLine(t, time.Minute, "the will", func(l string) bool { return strings.HasSuffix(l, "|dev is gone") })
	wills := func() int {
		all, _, _ := watch.out.snapshot()
		return strings.Count(strings.Join(messages(all), "\n"), "wills/dev|")
	}
	marker := func(m *mosquitto, text string) {
		t.Helper()
		publish(m, "wills/marker", text)
		watch.waitLine(t, lineWait, text, func(l string) bool { return strings.HasSuffix(l, "|"+text) })
	}
	marker(ms[1], "marker from n2")
	marker(ms[2], "marker from n3")
	if n := wills(); n != 1 {
		t.Fatalf("the will arrived %d times, want once", n)
	}

	// n1 starts again on its data directory: it restores only what the
	// owners bucket gives it (nothing), and publishes no will again.
	nodes[0], ms[0] = start(0)
	ready(ms[0])
	marker(ms[0], "marker from n1")
	if n := wills(); n != 1 {
		t.Fatalf("after n1's restart the will arrived %d times, want once", n)
	}
	t.Logf("the will of a client of the killed node arrived once (watcher saw %d)", wills())
}
