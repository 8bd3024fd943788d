package app

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
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
