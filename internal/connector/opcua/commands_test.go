package opcua

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/connector/connectortest"
)

// mosquittoRR sends one MQTT 5 request with mosquitto_rr (response topic
// and correlation data) and returns the response payload.
func mosquittoRR(t *testing.T, addr, topic, payload string) CommandResponse {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "mosquitto_rr", "-h", host, "-p", port, "-t", topic, "-e", topic+"/response/"+t.Name(),
		"-m", payload, "-W", "20", "-q", "1", "-D", "publish", "correlation-data", "c-42").Output()
	if err != nil {
		t.Fatalf("mosquitto_rr %s %s: %v", topic, payload, err)
	}
	var r CommandResponse
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("response %q: %v", out, err)
	}
	return r
}

// TestCommands: writes and method calls requested by mosquitto_rr (a real
// MQTT 5 client) through the broker reach the OPC UA server, and every bad
// request gets an error response naming the problem.
func TestCommands(t *testing.T) {
	env := startConnector(t)
	cmds := NewCommands(env.conn, connectortest.Client(t, env.broker, "$edgeport/connector"), nil)
	if err := cmds.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := cmds.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	apply(t, env.store, deviceYAML("press", shared.URL, "None", "None")+"---\n"+strings.Replace(assetYAML("press-1", "press"),
		`    - {name: missing, dataSource: "ns=2;s=DoesNotExist"}`, `    - {name: setpoint, dataSource: "ns=2;s=Setpoint"}`, 1))
	connectortest.Eventually(t, 20*time.Second, "connected", func() bool {
		s := connectortest.Status(env.store, "Device", "press")
		return s != nil && s.Endpoints["opc"].Connected
	})

	topic := CommandTopicPrefix + "/press-1/"
	if r := mosquittoRR(t, env.addr, topic+"write", `{"dataPoint":"line/setpoint","value":17.25}`); r.Status != "ok" {
		t.Fatalf("write: %+v", r)
	}
	s, _ := env.conn.Session("press", "")
	c, _ := s.current()
	if v, err := c.Node(mustNode(t, "ns=2;s=Setpoint")).Value(t.Context()); err != nil || v.Float() != 17.25 {
		t.Fatalf("setpoint after the write: %v %v", v, err)
	}
	r := mosquittoRR(t, env.addr, topic+"call", `{"objectId":"ns=2;s=Boiler","methodId":"ns=2;s=Boiler.Add","arguments":[1.5,2]}`)
	if r.Status != "ok" || len(r.Outputs) != 1 || r.Outputs[0] != 3.5 {
		t.Fatalf("call: %+v", r)
	}
	for _, bad := range []struct{ verb, payload, want string }{
		{"write", `{"dataPoint":"nope","value":1}`, `asset press-1 has no data point "nope"`},
		{"write", `{"dataPoint":"setpoint","value":"warm"}`, "want a number for Double"},
		{"write", `{"nodeId":"ns=2;s=Constant","value":1}`, "BadNotWritable"},
		{"write", `{"dataPoint":"setpoint"}`, "value is required"},
		{"write", `{"dataPoint":"setpoint","value":1,"extra":2}`, `unknown field "extra"`},
		{"write", `not json`, "write request: invalid character"},
		{"call", `{"objectId":"ns=2;s=Boiler","methodId":"ns=2;s=Boiler.Add","arguments":[1]}`, "takes 2 arguments, got 1"},
		{"call", `{"objectId":"ns=2;s=Boiler"}`, "objectId and methodId are required"},
	} {
		if r := mosquittoRR(t, env.addr, topic+bad.verb, bad.payload); r.Status != "error" || !strings.Contains(r.Error, bad.want) {
			t.Errorf("%s %s: %+v, want an error containing %q", bad.verb, bad.payload, r, bad.want)
		}
	}
	if r := mosquittoRR(t, env.addr, CommandTopicPrefix+"/nobody/write", `{"nodeId":"ns=2;s=Setpoint","value":1}`); r.Status != "error" ||
		!strings.Contains(r.Error, `asset "nobody" is not read through a running OPC UA endpoint`) {
		t.Fatalf("unknown asset: %+v", r)
	}
	// Data keeps flowing: the commands disturbed nothing.
	before := connectortest.Status(env.store, "Asset", "press-1").Datasets[0].Samples
	connectortest.Eventually(t, 10*time.Second, "more samples", func() bool {
		return connectortest.Status(env.store, "Asset", "press-1").Datasets[0].Samples > before
	})
}
