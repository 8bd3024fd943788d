package modbus

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector"
	"github.com/edgeport/edgeport/internal/connector/connectortest"
	"github.com/edgeport/edgeport/internal/mqtt/client"
)

// harness runs the connector runtime with the Modbus connector against the
// real broker.
type harness struct {
	t     *testing.T
	store *config.Store
	conn  *Connector
	mgr   *connector.Manager
	addr  string // broker
	b     *broker.Broker
	cl    *client.Client // the connector's client
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	b, addr := connectortest.Broker(t)
	st := connectortest.Store(t)
	reg := prometheus.NewRegistry()
	c := New(reg)
	cl := connectortest.Client(t, b, "$edgeport/connector")
	m, err := connector.New(connector.Options{
		Store: st, Connectors: []connector.Connector{c},
		Publisher:  connector.ClientPublisher{Client: cl},
		Registerer: reg, StatusInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.Stop(ctx)
	})
	return &harness{t: t, store: st, conn: c, mgr: m, addr: addr, b: b, cl: cl}
}

func deviceYAML(name, addr, extra string) string {
	return fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: Device
metadata: {name: %s}
spec:
  endpoints:
    inbound:
      tcp:
        endpointType: Microsoft.Modbus
        address: modbus-tcp://%s
        additionalConfiguration: {%s}
`, name, addr, extra)
}

// payload decodes a message into point → value (and status symbol).
func payload(t *testing.T, p *paho.Publish) map[string]any {
	t.Helper()
	var m map[string]struct {
		SourceTimestamp time.Time
		Value           any
		StatusCode      *connector.StatusCode
	}
	if err := json.Unmarshal(p.Payload, &m); err != nil {
		t.Fatalf("payload %s: %v", p.Payload, err)
	}
	out := map[string]any{}
	for k, v := range m {
		if v.SourceTimestamp.IsZero() {
			t.Fatalf("%s without SourceTimestamp: %s", k, p.Payload)
		}
		if v.StatusCode != nil {
			out[k] = v.StatusCode.Symbol
		} else {
			out[k] = v.Value
		}
	}
	return out
}

func userProp(p *paho.Publish, key string) string {
	for _, u := range p.Properties.User {
		if u.Key == key {
			return u.Value
		}
	}
	return ""
}

// TestPollPublishOnChange: a Sungrow-style asset on simonvetter's server:
// the first poll publishes a key frame with every point decoded and
// scaled, merged reads cover adjacent registers, unchanged polls publish
// nothing, and a change publishes just that point.
func TestPollPublishOnChange(t *testing.T) {
	srv := startServer(t, "")
	srv.set(srv.input, 5002, 1234)           // daily yield 123.4 kWh
	srv.set(srv.input, 5003, 0x0001, 0x86a0) // total yield 100000 kWh (uint32)
	srv.set(srv.input, 5007, 0xff9c)         // -10.0 °C (int16, scale 0.1)
	srv.set(srv.input, 5030, 0x0d48, 0x0000) // active power 3400 W, low word first
	srv.set(srv.holding, 5006, 100)          // power limit
	srv.mu.Lock()
	srv.coils[0] = true
	srv.mu.Unlock()
	h := newHarness(t)
	sub := connectortest.Subscribe(t, h.addr, "solar/#")
	connectortest.Apply(t, h.store, deviceYAML("logger", srv.addr, "requestTimeout: 500")+`---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: inverter-1}
spec:
  deviceRef: {deviceName: logger, endpointName: tcp}
  datasets:
  - name: power
    datasetConfiguration: {samplingInterval: 20}
    destinations: [{target: Mqtt, configuration: {topic: solar/inverter-1/power}}]
    dataPoints:
    - {name: dailyYield, dataSource: "input:5002", dataPointConfiguration: {scale: 0.1, unit: kWh}}
    - {name: totalYield, dataSource: "input:5003", dataPointConfiguration: {dataType: uint32, unit: kWh}}
    - {name: temperature, dataSource: "input:5007", dataPointConfiguration: {dataType: int16, scale: 0.1}}
    - {name: activePower, dataSource: "input:5030", dataPointConfiguration: {dataType: uint32, wordOrder: LittleEndian}}
    - {name: powerLimit, dataSource: "holding:5006"}
    - {name: running, dataSource: "coil:0"}
`)
	p := connectortest.Next(t, sub, 10*time.Second)
	got := payload(t, p)
	want := map[string]any{"dailyYield": 123.4, "totalYield": 100000.0, "temperature": -10.0, "activePower": 3400.0, "powerLimit": 100.0, "running": true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("key frame %v, want %v", got, want)
	}
	if userProp(p, "type") != "modbus-keyframe" || userProp(p, "source") != "modbus-tcp://"+srv.addr || userProp(p, "subject") != "inverter-1/power" {
		t.Fatalf("user properties %v", p.Properties.User)
	}
	// Five requests a poll (input 5002-5004 merged, 5007, 5030-5031,
	// holding 5006, coil 0): wait for three more polls.
	base := srv.count()
	connectortest.Eventually(t, 10*time.Second, "more polls", func() bool { return srv.count() >= base+5*3 })
	select {
	case p := <-sub:
		t.Fatalf("unchanged polls published %s", p.Payload)
	default:
	}
	srv.set(srv.input, 5007, 0xffa6) // -9.0 °C
	p = connectortest.Next(t, sub, 10*time.Second)
	if got := payload(t, p); fmt.Sprint(got) != "map[temperature:-9]" || userProp(p, "type") != "modbus-deltaframe" {
		t.Fatalf("delta frame %v %s", got, userProp(p, "type"))
	}
	connectortest.Eventually(t, 10*time.Second, "status", func() bool {
		s := connectortest.Status(h.store, "Asset", "inverter-1")
		d := connectortest.Status(h.store, "Device", "logger")
		return s != nil && len(s.Datasets) == 1 && s.Datasets[0].Messages == 2 && s.Condition(config.ConditionReady).Status == config.ConditionTrue &&
			d != nil && d.Endpoints["tcp"].Connected
	})
	if n := testutil.ToFloat64(h.conn.m.requests.WithLabelValues("logger", "tcp", config.ModbusInput)); n == 0 {
		t.Fatal("no input register requests counted")
	}
}

// TestMergedReads counts requests: a 1,000-register dataset is read in 8
// requests per poll, and the values arrive.
func TestMergedReads(t *testing.T) {
	srv := startServer(t, "")
	for a := range 1000 {
		srv.set(srv.input, a, uint16(a))
	}
	h := newHarness(t)
	sub := connectortest.Subscribe(t, h.addr, "big/#")
	var b strings.Builder
	for a := range 1000 {
		fmt.Fprintf(&b, "    - {name: r%d, dataSource: \"input:%d\"}\n", a, a)
	}
	connectortest.Apply(t, h.store, deviceYAML("big", srv.addr, "requestTimeout: 500")+`---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: big}
spec:
  deviceRef: {deviceName: big, endpointName: tcp}
  datasets:
  - name: all
    datasetConfiguration: {samplingInterval: 3600000}
    destinations: [{target: Mqtt, configuration: {topic: big/all}}]
    dataPoints:
`+b.String())
	got := payload(t, connectortest.Next(t, sub, 10*time.Second))
	if len(got) != 1000 || got["r999"] != 999.0 || got["r0"] != 0.0 {
		t.Fatalf("%d points, r999=%v", len(got), got["r999"])
	}
	if n := srv.count(); n != 8 {
		t.Fatalf("%d requests for 1000 registers, want 8", n)
	}
}

// TestExceptions: a register the device refuses shows its Modbus
// exception name on the point (and as the sample's status); the other
// points of the merged read are still read, one by one.
func TestExceptions(t *testing.T) {
	srv := startServer(t, "")
	srv.set(srv.holding, 0, 10, 11, 12)
	srv.mu.Lock()
	srv.refuse[1] = modbusErrIllegalDataAddress
	srv.mu.Unlock()
	h := newHarness(t)
	sub := connectortest.Subscribe(t, h.addr, "exc/#")
	connectortest.Apply(t, h.store, deviceYAML("plc", srv.addr, "requestTimeout: 500")+`---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: plc}
spec:
  deviceRef: {deviceName: plc, endpointName: tcp}
  datasets:
  - name: regs
    datasetConfiguration: {samplingInterval: 20}
    destinations: [{target: Mqtt, configuration: {topic: exc/regs}}]
    dataPoints:
    - {name: a, dataSource: "holding:0"}
    - {name: b, dataSource: "holding:1"}
    - {name: c, dataSource: "holding:2"}
`)
	got := payload(t, connectortest.Next(t, sub, 10*time.Second))
	if fmt.Sprint(got) != "map[a:10 b:IllegalDataAddress c:12]" {
		t.Fatalf("got %v", got)
	}
	connectortest.Eventually(t, 10*time.Second, "point status", func() bool {
		s := connectortest.Status(h.store, "Asset", "plc")
		r := s.Condition(config.ConditionReady)
		return len(s.Datasets) == 1 && s.Datasets[0].DataPoints[1].Error == "IllegalDataAddress" &&
			r.Reason == "DataPointErrors" && r.Message == "regs.b: IllegalDataAddress"
	})
	// The device answered: it is connected, not failing.
	if d := connectortest.Status(h.store, "Device", "plc"); !d.Endpoints["tcp"].Connected {
		t.Fatalf("device %+v", d.Endpoints)
	}
	srv.mu.Lock()
	delete(srv.refuse, 1)
	srv.mu.Unlock()
	if got := payload(t, connectortest.Next(t, sub, 10*time.Second)); fmt.Sprint(got) != "map[b:11]" {
		t.Fatalf("after recovery %v", got)
	}
}

// TestDegradeAndRecover: a device that stops answering is marked degraded
// after degradedAfter failed polls (status, metric) and probed with
// backoff; when it is back on the same port it recovers by itself and data
// flows again.
func TestDegradeAndRecover(t *testing.T) {
	srv := startServer(t, "")
	srv.set(srv.holding, 0, 1)
	h := newHarness(t)
	sub := connectortest.Subscribe(t, h.addr, "deg/#")
	connectortest.Apply(t, h.store, deviceYAML("flaky", srv.addr, "requestTimeout: 500, degradedAfter: 3, maxBackoff: 200")+`---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: flaky}
spec:
  deviceRef: {deviceName: flaky, endpointName: tcp}
  datasets:
  - name: d
    datasetConfiguration: {samplingInterval: 20}
    destinations: [{target: Mqtt, configuration: {topic: deg/d}}]
    dataPoints: [{name: v, dataSource: "holding:0"}]
`)
	connectortest.Next(t, sub, 10*time.Second)
	srv.stop()
	connectortest.Eventually(t, 20*time.Second, "degraded", func() bool {
		d := connectortest.Status(h.store, "Device", "flaky")
		return d.Endpoints["tcp"].State == connector.StateDegraded
	})
	if g := testutil.ToFloat64(h.conn.m.degraded.WithLabelValues("flaky", "tcp")); g != 1 {
		t.Fatalf("degraded gauge %v", g)
	}
	connectortest.Eventually(t, 20*time.Second, "polls skipped while backing off", func() bool {
		return testutil.ToFloat64(h.conn.m.polls.WithLabelValues("flaky", "tcp", pollSkipped)) > 0
	})
	a := connectortest.Status(h.store, "Asset", "flaky")
	if r := a.Condition(config.ConditionReady); r.Reason != "DeviceNotConnected" || r.Message != "device flaky endpoint tcp is degraded" {
		t.Fatalf("asset ready %+v", r)
	}
	srv.set(srv.holding, 0, 2)
	srv.start(t)
	if got := payload(t, connectortest.Next(t, sub, 20*time.Second)); fmt.Sprint(got) != "map[v:2]" {
		t.Fatalf("after recovery %v", got)
	}
	connectortest.Eventually(t, 10*time.Second, "recovered", func() bool {
		d := connectortest.Status(h.store, "Device", "flaky")
		return d.Endpoints["tcp"].Connected && d.Endpoints["tcp"].Reconnects == 1
	})
	if g := testutil.ToFloat64(h.conn.m.degraded.WithLabelValues("flaky", "tcp")); g != 0 {
		t.Fatalf("degraded gauge %v after recovery", g)
	}
}

// TestSlowDevice: a device slower than the poll interval is polled as fast
// as it answers; polls do not pile up and requests stay serialised.
func TestSlowDevice(t *testing.T) {
	srv := startServer(t, "")
	gate := make(chan struct{})
	srv.mu.Lock()
	srv.gate = gate
	srv.mu.Unlock()
	h := newHarness(t)
	connectortest.Apply(t, h.store, deviceYAML("slow", srv.addr, "requestTimeout: 5000")+`---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: slow}
spec:
  deviceRef: {deviceName: slow, endpointName: tcp}
  datasets:
  - {name: a, datasetConfiguration: {samplingInterval: 10}, destinations: [{target: Mqtt, configuration: {topic: slow/a}}], dataPoints: [{name: v, dataSource: "holding:0"}]}
  - {name: b, datasetConfiguration: {samplingInterval: 10}, destinations: [{target: Mqtt, configuration: {topic: slow/b}}], dataPoints: [{name: v, dataSource: "holding:1"}]}
`)
	// Two datasets poll every 10 ms, but concurrency 1 lets one request
	// reach the device at a time.
	for i := range 5 {
		connectortest.Eventually(t, 10*time.Second, "a request waiting", func() bool { return srv.count() == i+1 })
		gate <- struct{}{}
	}
	close(gate)
	connectortest.Eventually(t, 10*time.Second, "both datasets delivered", func() bool {
		s := connectortest.Status(h.store, "Asset", "slow")
		return s != nil && len(s.Datasets) == 2 && s.Datasets[0].Messages >= 1 && s.Datasets[1].Messages >= 1
	})
}
