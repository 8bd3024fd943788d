package modbus

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeport/edgeport/internal/connector/connectortest"
	"github.com/edgeport/edgeport/internal/mqtt/client"
)

// TestWrites: a coil and holding registers written through MQTT 5
// request/response (another internal client as the requester), each value
// read back from the device and returned; refusals say why.
func TestWrites(t *testing.T) {
	srv := startServer(t, "")
	h := newHarness(t)
	cmds := NewCommands(h.conn, h.cl, nil)
	if err := cmds.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmds.Stop(context.Background()) })
	connectortest.Apply(t, h.store, deviceYAML("plc", srv.addr, "requestTimeout: 1000")+`---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: pump}
spec:
  deviceRef: {deviceName: plc, endpointName: tcp}
  datasets:
  - name: control
    datasetConfiguration: {samplingInterval: 1000}
    destinations: [{target: Mqtt, configuration: {topic: pump/control}}]
    dataPoints:
    - {name: run, dataSource: "coil:3", dataPointConfiguration: {writable: true}}
    - {name: limit, dataSource: "holding:10", dataPointConfiguration: {scale: 0.1, writable: true}}
    - {name: setpoint, dataSource: "holding:20", dataPointConfiguration: {dataType: float32, wordOrder: LittleEndian, writable: true}}
    - {name: status, dataSource: "holding:30"}
`)
	req := connectortest.Client(t, h.b, "$edgeport/test-requester")
	write := func(point string, v any) (string, map[string]any) {
		t.Helper()
		payload, _ := json.Marshal(map[string]any{"dataPoint": point, "value": v})
		var resp *client.Message
		connectortest.Eventually(t, 10*time.Second, "a response", func() bool {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			r, err := req.Request(ctx, &client.Message{Topic: "edgeport/modbus/pump/write", QoS: 1, Payload: payload})
			if err != nil {
				t.Fatal(err)
			}
			resp = r
			// Until the run has registered the asset, the answer is that
			// it is not served yet.
			return !json.Valid(r.Payload) || !strings.Contains(string(r.Payload), "is not served")
		})
		var out map[string]any
		if err := json.Unmarshal(resp.Payload, &out); err != nil {
			t.Fatal(err)
		}
		st, _ := resp.UserValue("status")
		return st, out
	}
	if st, out := write("control/run", true); st != "ok" || out["value"] != true {
		t.Fatalf("coil: %s %v", st, out)
	}
	srv.mu.Lock()
	coil := srv.coils[3]
	srv.mu.Unlock()
	if !coil {
		t.Fatal("coil not set on the device")
	}
	if st, out := write("limit", 55.5); st != "ok" || out["value"] != 55.5 {
		t.Fatalf("scaled register: %s %v", st, out)
	}
	if st, out := write("setpoint", 12); st != "ok" || out["value"] != 12.0 {
		t.Fatalf("float32: %s %v", st, out)
	}
	srv.mu.Lock()
	regs := fmt.Sprintf("%d %04x %04x", srv.holding[10], srv.holding[20], srv.holding[21])
	srv.mu.Unlock()
	if regs != "555 0000 4140" {
		t.Fatalf("device registers %s", regs)
	}
	for _, tc := range []struct {
		point string
		v     any
		want  string
	}{
		{"status", 1, `data point "status" is not writable (set dataPointConfiguration.writable: true)`},
		{"limit", -1, `data point "limit": -10 does not fit uint16`},
		{"nope", 1, `asset "pump" has no data point "nope" (name it dataset/point)`},
	} {
		if st, out := write(tc.point, tc.v); st != "error" || out["error"] != tc.want {
			t.Errorf("%s=%v: %s %v, want %s", tc.point, tc.v, st, out, tc.want)
		}
	}
	srv.mu.Lock()
	srv.refuse[10] = modbusErrIllegalDataAddress
	srv.mu.Unlock()
	if st, out := write("limit", 1); st != "error" || out["error"] != "writing limit: the device answered IllegalDataAddress" {
		t.Fatalf("exception: %s %v", st, out)
	}
	for res, want := range map[string]float64{"ok": 3, "refused": 1, "failed": 1} {
		if n := testutil.ToFloat64(h.conn.m.writes.WithLabelValues("plc", "tcp", res)); n != want {
			t.Errorf("writes %s: %v, want %v", res, n, want)
		}
	}
}
