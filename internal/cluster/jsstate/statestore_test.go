package jsstate

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/cluster/clustertest"
	"github.com/edgeport/edgeport/internal/statestore"
	"github.com/edgeport/edgeport/internal/testlog"
	"github.com/edgeport/edgeport/internal/testwait"
)

// startStateStore runs a state store on nd backed by StateStoreBucket, as
// `serve --cluster` does, and waits until the bucket is watched.
func startStateStore(t testing.TB, nd *node, ackTimeout time.Duration) *StateBackend {
	t.Helper()
	logs := new(testlog.Buffer)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", nd.name)
	t.Cleanup(func() {
		if t.Failed() && logs.String() != "" {
			t.Logf("%s's state store logged:\n%s", nd.name, logs)
		}
	})
	be, err := NewStateBackend(nd.cn, Options{Node: nd.name, AckTimeout: ackTimeout, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := be.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ss, err := statestore.New(nil, nd.b, statestore.Options{Backend: be, NodeID: nd.name, SyncTimeout: ackTimeout, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	nd.b.OnSessionEnd(ss.ClientDisconnected)
	if err := ss.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*ackTimeout)
		defer cancel()
		if err := ss.Stop(ctx); err != nil {
			t.Errorf("%s: stopping the state store: %v", nd.name, err)
		}
		if err := be.Stop(ctx); err != nil {
			t.Errorf("%s: stopping the state store backend: %v", nd.name, err)
		}
	})
	select {
	case <-be.Ready():
	case <-ctx.Done():
		t.Fatalf("%s: state store bucket not ready", nd.name)
	}
	return be
}

// stateCluster is testCluster with a state store on every node.
func stateCluster(t testing.TB, ackTimeout time.Duration) []*node {
	t.Helper()
	nodes := testCluster(t)
	for _, nd := range nodes {
		startStateStore(t, nd, ackTimeout)
	}
	return nodes
}

// ssClient speaks the state store protocol as Azure IoT Operations' SDKs
// do (RESP3 requests published at QoS 1 with a response topic,
// correlation data, __ts, __invId and __protVer; notifications received
// without a subscription), over a Paho MQTT 5 connection to one node.
type ssClient struct {
	t    testing.TB
	id   string
	c    *mqttClient
	resp string

	mu    sync.Mutex
	seq   int
	notes []*paho.Publish // notifications, in arrival order
}

func newSSClient(t testing.TB, nd *node, id string) *ssClient {
	t.Helper()
	c := dial(t, nd.addr, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	sc := &ssClient{t: t, id: id, c: c,
		resp: "clients/" + id + "/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response"}
	c.subscribe(t, sc.resp)
	return sc
}

// answer is a state store response.
type answer struct {
	payload, stat, ts string
}

// call sends one request (ft: its fencing token, "" for none) and waits
// for its response; notifications arriving meanwhile are kept.
func (c *ssClient) call(ft string, args ...string) answer {
	c.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	c.mu.Lock()
	c.seq++
	corr := fmt.Sprintf("%s-%d", c.id, c.seq)
	c.mu.Unlock()
	user := paho.UserProperties{
		{Key: "__ts", Value: statestore.HLC{Wall: time.Now().UnixMilli(), Node: c.id}.String()},
		{Key: "__invId", Value: c.id},
		{Key: "__protVer", Value: "1.0"},
	}
	if ft != "" {
		user = append(user, paho.UserProperty{Key: "__ft", Value: ft})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		// The answer comes before the PUBACK (the SDKs' delayed ack).
		_, _ = c.c.Publish(ctx, &paho.Publish{Topic: statestore.InvokeTopic, QoS: 1, Payload: []byte(b.String()),
			Properties: &paho.PublishProperties{ResponseTopic: c.resp, CorrelationData: []byte(corr), User: user}})
	}()
	for {
		select {
		case m := <-c.c.msgs:
			if m.Topic != c.resp {
				c.mu.Lock()
				c.notes = append(c.notes, m)
				c.mu.Unlock()
				continue
			}
			if string(m.Properties.CorrelationData) != corr {
				continue // an answer nobody waits for any more
			}
			return answer{payload: string(m.Payload), stat: m.Properties.User.Get("__stat"), ts: m.Properties.User.Get("__ts")}
		case <-ctx.Done():
			c.t.Fatalf("%s: no answer to %q", c.id, args)
			return answer{}
		}
	}
}

// ok checks a successful answer's payload and returns its version.
func (c *ssClient) ok(want string, ft string, args ...string) string {
	c.t.Helper()
	a := c.call(ft, args...)
	if a.stat != "200" || a.payload != want {
		c.t.Fatalf("%s: %q: %s %q, want 200 %q", c.id, args, a.stat, a.payload, want)
	}
	return a.ts
}

// notifications waits until n notifications arrived and returns them.
func (c *ssClient) notifications(n int) []*paho.Publish {
	c.t.Helper()
	deadline := time.After(testwait.Timeout)
	for {
		c.mu.Lock()
		got := append([]*paho.Publish(nil), c.notes...)
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case m := <-c.c.msgs:
			c.mu.Lock()
			c.notes = append(c.notes, m)
			c.mu.Unlock()
		case <-deadline:
			c.t.Fatalf("%s: %d notifications, want %d", c.id, len(got), n)
		}
	}
}

func hlc(t testing.TB, s string) statestore.HLC {
	t.Helper()
	h, ok := statestore.ParseHLC(s)
	if !ok {
		t.Fatalf("version %q is not an HLC", s)
	}
	return h
}

// A key set through one node is read through another with its version;
// versions grow whichever node writes; DEL and VDEL through a third node
// are seen everywhere.
func TestStateStoreAcrossNodes(t *testing.T) {
	nodes := stateCluster(t, AckTimeout)
	c1 := newSSClient(t, nodes[0], "ss-1")
	c2 := newSSClient(t, nodes[1], "ss-2")
	c3 := newSSClient(t, nodes[2], "ss-3")

	v1 := c1.ok("+OK\r\n", "", "SET", "greeting", "hello")
	if got := c2.call("", "GET", "greeting"); got.payload != "$5\r\nhello\r\n" || got.ts != v1 {
		t.Fatalf("GET on node 2: %q version %q, want hello version %q", got.payload, got.ts, v1)
	}
	v2 := c2.ok("+OK\r\n", "", "SET", "greeting", "bonjour")
	v3 := c3.ok("+OK\r\n", "", "SET", "greeting", "hallo")
	if !(hlc(t, v1).Compare(hlc(t, v2)) < 0 && hlc(t, v2).Compare(hlc(t, v3)) < 0) {
		t.Fatalf("versions do not grow across nodes: %s, %s, %s", v1, v2, v3)
	}
	if n1, n3 := hlc(t, v1).Node, hlc(t, v3).Node; n1 != "node1" || n3 != "node3" {
		t.Fatalf("versions' nodes %q, %q: want node1, node3", n1, n3)
	}
	c1.ok("$5\r\nhallo\r\n", "", "GET", "greeting")
	c1.ok(":-1\r\n", "", "VDEL", "greeting", "hello")
	c1.ok(":1\r\n", "", "VDEL", "greeting", "hallo")
	c3.ok("$-1\r\n", "", "GET", "greeting")
	c2.ok(":0\r\n", "", "DEL", "greeting")
	// Recreated after its deletion, from another node.
	c3.ok("+OK\r\n", "", "SET", "greeting", "again", "NX")
	c2.ok("$5\r\nagain\r\n", "", "GET", "greeting")
	c2.ok(":1\r\n", "", "DEL", "greeting")
	c1.ok("$-1\r\n", "", "GET", "greeting")
}

// Two nodes racing SET NX on the same keys: exactly one wins each key,
// and every node then reads the winner's value.
func TestStateStoreNXRaceAcrossNodes(t *testing.T) {
	nodes := stateCluster(t, AckTimeout)
	clients := []*ssClient{newSSClient(t, nodes[0], "racer-1"), newSSClient(t, nodes[1], "racer-2")}
	const keys = 20
	wins := make([][]bool, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wins[i] = make([]bool, keys)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				a := c.call("", "SET", fmt.Sprintf("race/%d", k), c.id, "NX")
				wins[i][k] = a.payload == "+OK\r\n"
				if a.stat != "200" || !wins[i][k] && a.payload != ":-1\r\n" {
					t.Errorf("%s: SET NX race/%d: %s %q", c.id, k, a.stat, a.payload)
				}
			}
		}()
	}
	wg.Wait()
	total := 0
	for k := range keys {
		winner := ""
		for i, c := range clients {
			if wins[i][k] {
				if winner != "" {
					t.Fatalf("race/%d: both %s and %s won SET NX", k, winner, c.id)
				}
				winner = c.id
			}
		}
		if winner == "" {
			t.Fatalf("race/%d: nobody won SET NX", k)
		}
		total++
		want := fmt.Sprintf("$%d\r\n%s\r\n", len(winner), winner)
		for _, c := range clients {
			c.ok(want, "", "GET", fmt.Sprintf("race/%d", k))
		}
	}
	t.Logf("%d keys raced by two nodes, one winner each", total)
}

// A fencing token stored through one node protects the key on every
// node: an older token, or none, is refused elsewhere; a newer one wins.
func TestStateStoreFencingAcrossNodes(t *testing.T) {
	nodes := stateCluster(t, AckTimeout)
	c1 := newSSClient(t, nodes[0], "holder-1")
	c2 := newSSClient(t, nodes[1], "holder-2")
	c3 := newSSClient(t, nodes[2], "stale")

	old := c1.ok("+OK\r\n", "", "SET", "lock", "holder-1", "NEX", "PX", "60000")
	c1.ok("+OK\r\n", old, "SET", "queue", "job-1")
	c1.ok(":1\r\n", "", "DEL", "lock")
	newer := c2.ok("+OK\r\n", "", "SET", "lock", "holder-2", "NEX", "PX", "60000")
	c2.ok("+OK\r\n", newer, "SET", "queue", "job-2")
	for _, c := range []*ssClient{c3, c1} {
		if a := c.call(old, "SET", "queue", "stale"); a.payload != "-ERR the request fencing token is a lower version than the fencing token protecting the resource\r\n" {
			t.Fatalf("%s: SET with the older token: %q", c.id, a.payload)
		}
		if a := c.call("", "DEL", "queue"); a.payload != "-ERR a fencing token is required for this request\r\n" {
			t.Fatalf("%s: DEL without a token: %q", c.id, a.payload)
		}
	}
	c3.ok("$5\r\njob-2\r\n", "", "GET", "queue")
	c3.ok(":1\r\n", newer, "DEL", "queue")
}

// KEYNOTIFY registered on node 3 reports changes made through nodes 1
// and 2, and an expiry, once each, in order, with the writes' versions —
// also when they come faster than node 3's watch reads them (the bucket
// keeps the revisions its watch has not read yet, stateStoreHistory).
func TestStateStoreKeyNotifyAcrossNodes(t *testing.T) {
	nodes := stateCluster(t, AckTimeout)
	w := newSSClient(t, nodes[2], "watcher")
	c1 := newSSClient(t, nodes[0], "writer-1")
	c2 := newSSClient(t, nodes[1], "writer-2")

	w.ok("+OK\r\n", "", "KEYNOTIFY", "k")
	v1 := c1.ok("+OK\r\n", "", "SET", "k", "one")
	c2.ok(":1\r\n", "", "DEL", "k")
	c1.ok("+OK\r\n", "", "SET", "k", "short", "PX", "300")
	// Expired by whichever node swept first; read as gone everywhere.
	w.notifications(4)
	c2.ok("$-1\r\n", "", "GET", "k")
	v5 := c2.ok("+OK\r\n", "", "SET", "k", "last")
	notes := w.notifications(5)
	want := []string{
		"*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$3\r\none\r\n",
		"*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n",
		"*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$5\r\nshort\r\n",
		"*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n",
		"*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$4\r\nlast\r\n",
	}
	if len(notes) != len(want) {
		t.Fatalf("%d notifications, want %d", len(notes), len(want))
	}
	topic := "clients/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/" + fmt.Sprintf("%X", "watcher") + "/command/notify/" + fmt.Sprintf("%X", "k")
	var prev statestore.HLC
	for i, n := range notes {
		if n.Topic != topic || string(n.Payload) != want[i] {
			t.Fatalf("notification %d: %s %q, want %s %q", i, n.Topic, n.Payload, topic, want[i])
		}
		v := hlc(t, n.Properties.User.Get("__ts"))
		if v.Compare(prev) <= 0 {
			t.Fatalf("notification %d: version %v not after %v", i, v, prev)
		}
		prev = v
	}
	if got := notes[0].Properties.User.Get("__ts"); got != v1 {
		t.Fatalf("first notification's version %s, want the SET's %s", got, v1)
	}
	if got := notes[4].Properties.User.Get("__ts"); got != v5 {
		t.Fatalf("last notification's version %s, want the SET's %s", got, v5)
	}
}

// A node cut off from the others (both other servers stopped) cannot
// reach JetStream's quorum: its state store answers writes and reads 503
// instead of answering from what it alone holds.
func TestStateStoreNoQuorumRefuses(t *testing.T) {
	// An Edgeport node on the first of three JetStream servers; the
	// other two hold the bucket's replicas and nothing else, so that
	// stopping them ends only their servers.
	cns := clustertest.StartNodes(t, 3)
	nd := startNode(t, cns[0])
	startStateStore(t, nd, time.Second)
	c := newSSClient(t, nd, "alone")
	c.ok("+OK\r\n", "", "SET", "k", "before")
	stopServers(t, cns[1:]...)
	for _, args := range [][]string{{"SET", "k", "after"}, {"DEL", "k"}, {"SET", "other", "x", "NX"}} {
		a := c.call("", args...)
		if a.stat != "503" {
			t.Fatalf("%q without quorum: %s %q, want 503", args, a.stat, a.payload)
		}
	}
	// A read is refused too, or (while the stream leader JetStream elected
	// before the loss is this node and has not yet noticed it) answered
	// from what was acknowledged: never from a refused write.
	a := c.call("", "GET", "k")
	if a.stat != "503" && (a.stat != "200" || a.payload != "$6\r\nbefore\r\n") {
		t.Fatalf("GET without quorum: %s %q, want 503 or the acknowledged value", a.stat, a.payload)
	}
	t.Logf("GET without quorum: %s %q", a.stat, a.payload)
}

// stopServers stops the JetStream servers of cns, each within 10 s.
func stopServers(t *testing.T, cns ...*cluster.Node) {
	t.Helper()
	for _, cn := range cns {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := cn.Stop(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// BeginStop (the node begins to stop) ends the waits for a JetStream
// without quorum at once: a write is answered 503 instead of waiting out
// an acknowledgement timeout of a minute.
func TestStateStoreBeginStopEndsWaits(t *testing.T) {
	cns := clustertest.StartNodes(t, 3)
	nd := startNode(t, cns[0])
	be := startStateStore(t, nd, time.Minute)
	c := newSSClient(t, nd, "stopping")
	c.ok("+OK\r\n", "", "SET", "k", "before")
	stopServers(t, cns[1:]...)
	be.BeginStop()
	// call gives up after 20 s, far less than the minute a write would
	// otherwise wait.
	if a := c.call("", "SET", "k", "after"); a.stat != "503" {
		t.Fatalf("SET after BeginStop: %s %q, want 503", a.stat, a.payload)
	}
}
