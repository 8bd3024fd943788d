package app

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeport/edgeport/internal/cluster/clustertest"
)

// TestClusterCredentialsFromBrokerResource: route credentials given by the
// Broker resource's spec.cluster.credentialsDir (no credential flag) secure
// the node's routes.
func TestClusterCredentialsFromBrokerResource(t *testing.T) {
	cfgs := clustertest.Configs(t, 1)
	creds := clustertest.Secure(t, cfgs)
	cfg := cfgs[0]
	cfg.Replicas, cfg.CredentialsDir = 1, "" // not given as flags
	dir := t.TempDir()
	doc := "apiVersion: edgeport.io/v1\nkind: Broker\nmetadata: {name: default}\nspec:\n  cluster:\n    credentialsDir: " +
		filepath.Join(creds, cfg.Name) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "broker.yaml"), []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startApp(t, Config{ConfigDir: dir, ClusterEnabled: true, Cluster: cfg})
	got := a.Cluster().Config()
	if got.RouteSecretFile != filepath.Join(creds, cfg.Name, "secret") || got.RouteTLS.Cert != filepath.Join(creds, cfg.Name, "tls.crt") {
		t.Fatalf("node config %+v", got)
	}
	if st := a.Cluster().Status(context.Background()); !st.RouteAuth || !st.RouteTLS {
		t.Fatalf("routes not secured: %+v", st)
	}
}
