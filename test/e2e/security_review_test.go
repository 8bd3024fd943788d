package e2e

import (
	"strings"
	"testing"
)

// TestReservedClientIDs: the built binary refuses network clients that
// claim an internal client's identifier (issue 10, item 3), with a real
// MQTT 5 and 3.1.1 client, and the state store keeps answering.
func TestReservedClientIDs(t *testing.T) {
	t.Parallel()
	e := startEdgeport(t)
	host, port := "127.0.0.1", e.port(t, "mqtt")
	for _, v := range []struct{ flag, want string }{
		{"mqttv5", "client identifier not valid"},
		{"mqttv311", "identifier rejected"},
	} {
		out, code := mosq(t, "mosquitto_pub", "-h", host, "-p", port, "-V", v.flag,
			"-i", "$edgeport/statestore", "-t", "x", "-m", "steal")
		if code == 0 || !strings.Contains(strings.ToLower(out), v.want) {
			t.Fatalf("%s with the state store's identifier: exit %d, %q; want refused (%s)", v.flag, code, out, v.want)
		}
	}
	// The state store's own session is untouched: it still answers.
	ss := dialStateStore(t, e.addr(t, "mqtt"), "reserved-check")
	if got, _ := ss.call(nil, "SET", "k", "v"); got != "+OK\r\n" {
		t.Fatalf("SET answered %q", got)
	}
}
