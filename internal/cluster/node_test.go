package cluster_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

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
