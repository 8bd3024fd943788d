package cluster_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"go.uber.org/goleak"

	"github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/cluster/clustertest"
	"github.com/edgeport/edgeport/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestThreeNodesForm(t *testing.T) {
	nodes := clustertest.StartNodes(t, 3)
	st := nodes[0].Status(context.Background())
	if len(st.Members) != 3 || st.JetStream.MetaLeader == "" || len(st.Routes) != 2 {
		t.Fatalf("status: %+v", st)
	}
	for _, m := range st.Members {
		if !m.Healthy {
			t.Errorf("member %s unhealthy", m.Name)
		}
	}
	// JetStream works with replication 3 across the nodes.
	ctx := context.Background()
	kv, err := nodes[1].JetStream().CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	kv2, err := nodes[2].JetStream().KeyValue(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv2.Get(ctx, "k")
	if err != nil || string(e.Value()) != "v" {
		t.Fatalf("get from another node: %v %v", e, err)
	}

	// A node that leaves is gone from the others' member lists at once.
	if err := nodes[2].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "node3 gone from node1's members", func() bool {
		return len(nodes[0].Members()) == 2
	})
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  cluster.Config
		want string
	}{
		{cluster.Config{Name: "a b", StoreDir: "x"}, `--node-name "a b"`},
		{cluster.Config{Name: "a", Listen: "nohost", StoreDir: "x"}, `--cluster-listen "nohost"`},
		{cluster.Config{Name: "a", Routes: []string{"h"}, StoreDir: "x"}, `--routes[0] "h": needs a port`},
		{cluster.Config{Name: "a"}, "needs a data directory"},
		{cluster.Config{Name: "a", StoreDir: "x", Replicas: 7}, "replicas 7: must be between 1 and 5"},
		{cluster.Config{Name: "a", StoreDir: "x", Shards: -1}, "shards -1"},
	} {
		_, err := cluster.New(c.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestRouteAddressTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	nd, err := cluster.New(cluster.Config{Name: "n1", Listen: l.Addr().String(), StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = nd.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--cluster-listen "+l.Addr().String()) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("start with a taken route port: %v", err)
	}
}

// A client address nats-server cannot bind ends the start with
// nats-server's reason, not "not ready" after waiting for a listener that
// never comes.
func TestClientAddressTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := clustertest.Configs(t, 1)[0]
	cfg.ClientListen = l.Addr().String()
	nd, err := cluster.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := nd.Start(context.Background()); err == nil {
		_ = nd.Stop(context.Background())
		t.Fatal("started with a taken client port")
	} else if !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("start with a taken client port: %v, want nats-server's listen error", err)
	}
}

// TestReadyFollowsQuorum: a node is not ready alone (its cluster of three
// has no quorum, so JetStream has no meta leader), is ready once a
// majority has joined, and is not ready again when it loses the others.
func TestReadyFollowsQuorum(t *testing.T) {
	ctx := context.Background()
	cfgs := clustertest.Configs(t, 3)
	nodes := make([]*cluster.Node, len(cfgs))
	start := func(i int) {
		t.Helper()
		nd, err := cluster.New(cfgs[i], nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := nd.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nd.Stop(context.Background()) })
		nodes[i] = nd
	}
	start(0)
	if err := nodes[0].Ready(ctx); err == nil || !strings.Contains(err.Error(), "no meta leader") {
		t.Fatalf("a node alone of three: Ready = %v, want no meta leader", err)
	}
	start(1)
	start(2)
	for _, nd := range nodes {
		if !testwait.Within(30*time.Second, func() bool { return nd.Ready(ctx) == nil }) {
			t.Fatalf("%s not ready once the cluster formed: %v", nd.Name(), nd.Ready(ctx))
		}
	}
	for _, nd := range nodes[1:] {
		if err := nd.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !testwait.Within(30*time.Second, func() bool { return nodes[0].Ready(ctx) != nil }) {
		t.Fatal("node1 still ready after losing both other nodes")
	}
	if err := nodes[0].Ready(ctx); !strings.Contains(err.Error(), "no meta leader") {
		t.Fatalf("node1 alone: Ready = %v, want no meta leader", err)
	}
}

// TestPausedNodeCountsSilenceFromTheThaw: a node that did not run for a
// while (SIGSTOP) heard no heartbeat meanwhile, and right after the thaw
// its routes may not be made again yet, so that the others' sync
// subjects have no responders there although they run: it must not count
// them lost for a silence it could not hear. node2 is gone (its server
// shut down, as kill -9: no responders on node3), then node3's member
// table is aged as a 40 s freeze leaves it: node3 still counts node2
// live right after, and finds it lost once it has run three heartbeat
// intervals without hearing it. Before, node3 found node2 lost at once:
// in the SIGSTOP fault test the thawed node adopted the sessions of a
// live node, whose subscriber then lost the messages that node went on
// storing for it.
func TestPausedNodeCountsSilenceFromTheThaw(t *testing.T) {
	cfgs := clustertest.Configs(t, 3)
	for i := range cfgs {
		cfgs[i].HeartbeatInterval = time.Second // three of them to look before the judgement
	}
	nodes := clustertest.Start(t, cfgs)
	n3 := nodes[2]
	ctx := context.Background()
	nodes[1].Server().Shutdown()
	testwait.For(t, "node2's sync subject without responders on node3", func() bool {
		_, err := n3.Conn().Request(n3.SyncSubject("node2"), nil, time.Second)
		return errors.Is(err, nats.ErrNoResponders)
	})

	cluster.PauseForTest(n3, 40*time.Second)
	thaw := time.Now()
	lost, live := n3.Lost(ctx, "node2"), n3.LiveMembers()
	if took := time.Since(thaw); took < 2*time.Second { // well within the three intervals
		if lost || !slices.Contains(live, "node2") {
			t.Fatalf("node3 counts node2 lost (%v) or not live (%v) right after its pause: the silence of the pause counted", lost, live)
		}
	}
	testwait.For(t, "node3 to find node2 lost", func() bool { return n3.Lost(ctx, "node2") })
	if took := time.Since(thaw); took < 3*cfgs[2].HeartbeatInterval {
		t.Fatalf("node3 found node2 lost %v after its pause, before three heartbeat intervals of its running time", took)
	}
	if live := n3.LiveMembers(); !slices.Equal(live, []string{"node1", "node3"}) {
		t.Fatalf("node3's live members %v, want node1 and node3", live)
	}
}
