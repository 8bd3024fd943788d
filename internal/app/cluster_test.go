package app

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/cluster/clustertest"
)

// TestSingleNodeStartsNoNATS: without --cluster nothing of NATS runs: no
// component, no goroutine of nats-server or nats.go, no JetStream store.
func TestSingleNodeStartsNoNATS(t *testing.T) {
	a := startApp(t, Config{DataDir: t.TempDir()})
	if a.Cluster() != nil {
		t.Fatal("a cluster node in single-node mode")
	}
	if slices.Contains(a.group.Names(), "cluster") {
		t.Fatalf("group %v has a cluster component", a.group.Names())
	}
	if _, err := os.Stat(filepath.Join(a.cfg.DataDir, "cluster")); !os.IsNotExist(err) {
		t.Fatalf("data dir has a cluster directory: %v", err)
	}
	buf := make([]byte, 1<<22)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if strings.Contains(stacks, "github.com/nats-io/") {
		t.Fatalf("a NATS goroutine runs in single-node mode:\n%s", stacks)
	}
}

// TestClusterFromBrokerResource: the Broker resource's spec.cluster fills
// what the serve flags leave unset.
func TestClusterFromBrokerResource(t *testing.T) {
	dir := t.TempDir()
	doc := "apiVersion: edgeport.io/v1\nkind: Broker\nmetadata: {name: default}\nspec:\n  cluster: {name: from-resource, replicas: 1, shards: 2}\n"
	if err := os.WriteFile(filepath.Join(dir, "broker.yaml"), []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := clustertest.Configs(t, 1)[0]
	cfg.ClusterName, cfg.Replicas = "", 0 // not given as flags
	a := startApp(t, Config{ConfigDir: dir, ClusterEnabled: true, Cluster: cfg})
	got := a.Cluster().Config()
	if got.ClusterName != "from-resource" || got.Replicas != 1 || got.Shards != 2 || got.Name != "node1" {
		t.Fatalf("node config %+v", got)
	}
	st := a.Cluster().Status(context.Background())
	if st.ClusterName != "from-resource" || len(st.Members) != 1 {
		t.Fatalf("status %+v", st)
	}
}
