package app

import (
	"strings"
	"testing"
	"time"

	mqttc "github.com/edgeport/edgeport/internal/mqtt/client"
)

// serve --cluster runs the state store on the bucket every node shares: a
// key set through one node is read through the others with its version
// (which names the node that made it), and a SET NX through another node
// finds it.
func TestClusterStateStore(t *testing.T) {
	apps := startCluster(t, 3)
	for _, a := range apps {
		// The bucket is made or joined once JetStream has a quorum.
		select {
		case <-a.ssBucket.Ready():
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: state store bucket not ready", a.Cluster().Name())
		}
	}
	c1 := tcpClient(t, apps[0], "ss-app-1")
	c2 := tcpClient(t, apps[1], "ss-app-2")
	c3 := tcpClient(t, apps[2], "ss-app-3")

	set := stateCall(t, c1, "SET", "plant/mode", "eco")
	version, _ := set.UserValue("__ts")
	if string(set.Payload) != "+OK\r\n" || !strings.HasSuffix(version, ":"+apps[0].Cluster().Name()) {
		t.Fatalf("SET on node 1 answered %q, version %q", set.Payload, version)
	}
	for _, c := range []*mqttc.Client{c2, c3} {
		got := stateCall(t, c, "GET", "plant/mode")
		if v, _ := got.UserValue("__ts"); string(got.Payload) != "$3\r\neco\r\n" || v != version {
			t.Fatalf("GET through %s: %q version %q, want eco version %q", c.ClientID(), got.Payload, v, version)
		}
	}
	if got := stateCall(t, c3, "SET", "plant/mode", "boost", "NX"); string(got.Payload) != ":-1\r\n" {
		t.Fatalf("SET NX through node 3 of a key set through node 1: %q", got.Payload)
	}
}
