package cli

import (
	"bytes"
	"strings"
	"testing"
)

// TestClusterTurnsLeaderElectionOff: a cluster node in operator mode runs
// without the leader lease (every replica serves); asking for the lease
// with --cluster is refused before anything starts.
func TestClusterTurnsLeaderElectionOff(t *testing.T) {
	for _, tc := range []struct {
		name             string
		clustered, given bool
		want             bool
	}{
		{"single node keeps the lease", false, false, true},
		{"cluster node defaults to none", true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kf := serveKubeFlags{leaderElect: true}
			if err := clusterLeaderElection(tc.clustered, tc.given, &kf); err != nil {
				t.Fatal(err)
			}
			if kf.leaderElect != tc.want {
				t.Fatalf("leaderElect = %v, want %v", kf.leaderElect, tc.want)
			}
		})
	}

	var stdout, stderr bytes.Buffer
	code := Main([]string{"serve", "--kubernetes", "--cluster", "--leader-elect=true", "--data-dir", t.TempDir(),
		"--mqtt-addr", "off", "--ws-addr", "off", "--http-addr", "off"}, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "--leader-elect: a cluster node") {
		t.Fatalf("serve --kubernetes --cluster --leader-elect=true: exit %d, stderr %q", code, stderr.String())
	}
}
