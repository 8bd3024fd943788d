// Package clustertest starts real cluster nodes (embedded NATS servers with
// routes and JetStream) on loopback for tests; imported by tests only.
package clustertest

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/edgeport/edgeport/internal/testwait"
)

// Configs returns the configurations of n nodes named node1..nodeN on
// 127.0.0.1, each listing every node's route address, with their stores
// under the test's temporary directory.
//
// NATS routes need each other's addresses before any node starts, and
// nats-server takes a port, not a listener: the ports come from
// testserve.FreeAddrs, below the kernel's ephemeral range, where no
// outgoing connection takes one before its node binds it.
func Configs(t testing.TB, n int) []cluster.Config {
	t.Helper()
	ports := testserve.FreeAddrs(t, n)
	dir := t.TempDir()
	cfgs := make([]cluster.Config, n)
	for i := range cfgs {
		cfgs[i] = cluster.Config{
			Name:              fmt.Sprintf("node%d", i+1),
			ClusterName:       "test",
			Listen:            ports[i],
			Routes:            ports,
			StoreDir:          filepath.Join(dir, fmt.Sprintf("node%d", i+1)),
			Replicas:          min(n, 3),
			HeartbeatInterval: 200 * time.Millisecond,
		}
	}
	return cfgs
}

// StartNodes starts n nodes and waits until each knows every member and
// JetStream has a meta leader; they stop at the test's end.
func StartNodes(t testing.TB, n int) []*cluster.Node {
	t.Helper()
	return Start(t, Configs(t, n))
}

// Start starts a node of each configuration and waits until they have
// formed (WaitFormed); they stop at the test's end.
func Start(t testing.TB, cfgs []cluster.Config) []*cluster.Node {
	t.Helper()
	var nodes []*cluster.Node
	for _, cfg := range cfgs {
		nodes = append(nodes, StartNode(t, cfg))
	}
	WaitFormed(t, nodes...)
	return nodes
}

// StartNode starts a node of cfg without waiting for the others; it stops
// at the test's end.
func StartNode(t testing.TB, cfg cluster.Config) *cluster.Node {
	t.Helper()
	nd, err := cluster.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = nd.Start(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nd.Stop(context.Background()) })
	return nd
}

// WaitFormed waits until every node knows all of them as members and
// sees a JetStream meta leader with every peer current.
func WaitFormed(t testing.TB, nodes ...*cluster.Node) {
	t.Helper()
	WaitFormedOf(t, len(nodes), nodes...)
}

// WaitFormedOf is WaitFormed for a cluster of size members, of which nodes
// run in this process (the others in child processes).
func WaitFormedOf(t testing.TB, size int, nodes ...*cluster.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, nd := range nodes {
		if err := nd.WaitMembers(ctx, size); err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range nodes {
		var why []string
		// JetStream elects its meta leader in seconds, slower on a loaded
		// machine: a longer bound than testwait.For's.
		if !testwait.Within(30*time.Second, func() bool {
			st := nd.Status(ctx)
			var ok bool
			ok, why = st.Healthy()
			return ok && len(st.JetStream.Peers) == size-1
		}) {
			t.Fatalf("%s: cluster not formed: %v", nd.Name(), why)
		}
	}
}

// Secure gives the nodes of cfgs route credentials: a cluster CA, secret
// and per-node certificates made once with cluster.InitCredentials in a
// temporary directory. It returns that directory (dir/<node> is each
// node's credentials directory).
func Secure(t testing.TB, cfgs []cluster.Config) string {
	t.Helper()
	dir := t.TempDir()
	names := make([]string, len(cfgs))
	for i, c := range cfgs {
		names[i] = c.Name
	}
	if _, err := cluster.InitCredentials(dir, names, time.Now()); err != nil {
		t.Fatal(err)
	}
	for i := range cfgs {
		cfgs[i].CredentialsDir = filepath.Join(dir, cfgs[i].Name)
	}
	return dir
}

// StartNATS runs a standalone nats-server with JetStream on loopback (an
// external NATS for --nats-url), configured further by set (nil: as it
// is); it stops at the test's end.
func StartNATS(t testing.TB, set func(*server.Options)) *server.Server {
	t.Helper()
	opts := &server.Options{ServerName: "external", Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: t.TempDir(), NoSigs: true}
	if set != nil {
		set(opts)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return srv
}
