package helm

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// k8sVersion is the Kubernetes release whose tools scripts/k8s-tools.sh
// builds (kube-apiserver, etcd, kubectl, helm, kwok).
const k8sVersion = "v1.37.2"

// k8sBin returns the path of a Kubernetes tool built by
// scripts/k8s-tools.sh: $EDGEPORT_K8S_BIN, else /var/cache/k8s-bins/<version>.
// A missing tool fails the test: CI runs the script before the tests.
func k8sBin(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("EDGEPORT_K8S_BIN")
	if dir == "" {
		dir = filepath.Join("/var/cache/k8s-bins", k8sVersion)
	}
	p := filepath.Join(dir, name)
	if _, err := exec.LookPath(p); err != nil {
		t.Fatalf("%s not found in %s (run scripts/k8s-tools.sh, or set EDGEPORT_K8S_BIN): %v", name, dir, err)
	}
	return p
}

// repoRoot is the repository's top directory (this package is test/helm).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func chartDir(t testing.TB) string { return filepath.Join(repoRoot(t), "deploy", "helm", "edgeport") }
