package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/simonvetter/modbus"
)

// pymodbus is Debian's python3-pymodbus 3.0 serving
// test/e2e/python/modbus_server.py: a Modbus device independent of the
// library Edgeport uses.
type pymodbus struct {
	t    *testing.T
	port string
	proc *proc
}

func requirePymodbus(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, debianPython, "-c", "import pymodbus; print(pymodbus.__version__)").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import pymodbus (%v: %s): run ./scripts/test.sh, which installs python3-pymodbus", debianPython, err, out)
	}
}

func freeTCPPort(t *testing.T) string { return strconv.Itoa(testserve.FreePort(t, "127.0.0.1")) }

func startPymodbus(t *testing.T, port string, delay string) *pymodbus {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{filepath.Join(root, "test/e2e/python/modbus_server.py"), port}
	if delay != "" {
		args = append(args, delay)
	}
	p := startProc(t, 5*time.Minute, "", debianPython, args...)
	p.name = "pymodbus"
	p.waitLine(t, 20*time.Second, "ready", func(l string) bool { return l == "ready" })
	return &pymodbus{t: t, port: port, proc: p}
}

func (p *pymodbus) stop() {
	_ = p.proc.cmd.Process.Kill()
	<-p.proc.done
}

// writeHolding writes holding registers with simonvetter's client, as
// another master on the bus would.
func (p *pymodbus) writeHolding(addr uint16, v uint16) {
	p.t.Helper()
	c, err := modbus.NewClient(&modbus.ClientConfiguration{URL: "tcp://127.0.0.1:" + p.port, Timeout: 5 * time.Second})
	if err != nil {
		p.t.Fatal(err)
	}
	if err := c.Open(); err != nil {
		p.t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteRegister(addr, v); err != nil {
		p.t.Fatal(err)
	}
}

// mqttMsg is one message as mosquitto_sub printed it.
type mqttMsg struct {
	topic string
	props string
	data  map[string]struct {
		SourceTimestamp time.Time
		Value           any
		StatusCode      *struct{ Symbol string }
	}
}

// values returns point → value, or the status symbol of a bad sample.
func (m mqttMsg) values() map[string]any {
	out := map[string]any{}
	for k, v := range m.data {
		if v.StatusCode != nil {
			out[k] = v.StatusCode.Symbol
		} else {
			out[k] = v.Value
		}
	}
	return out
}

// subReader reads mosquitto_sub's messages in order.
type subReader struct {
	p    *proc
	seen int
}

// subReader subscribes mosquitto_sub to filter (MQTT 5, line-buffered,
// one msgPrefix line a message) and reads its messages in order.
func (m *mosquitto) subReader(t *testing.T, filter string) *subReader {
	t.Helper()
	p := startProc(t, 5*time.Minute, "", m.stdbuf, "-oL", m.sub, "-h", m.host, "-p", m.port, "-V", "mqttv5", "-d",
		"-t", filter, "-F", msgPrefix+"%t|%P|%p")
	p.name = "mosquitto_sub"
	p.waitLine(t, lineWait, "SUBACK", func(l string) bool { return strings.Contains(l, "received SUBACK") })
	return &subReader{p: p}
}

func (r *subReader) next(t *testing.T, topic string, timeout time.Duration) mqttMsg {
	t.Helper()
	n := 0
	line, err := r.p.out.waitFor(timeout, func(l string) bool {
		if !strings.HasPrefix(l, msgPrefix) {
			return false
		}
		n++
		return n > r.seen && strings.HasPrefix(l, msgPrefix+topic+"|")
	})
	if err != nil {
		t.Fatalf("no message on %s within %v: %v\n%s", topic, timeout, err, r.p.out)
	}
	r.seen = n
	parts := strings.SplitN(strings.TrimPrefix(line, msgPrefix), "|", 3)
	m := mqttMsg{topic: parts[0], props: parts[1]}
	if err := json.Unmarshal([]byte(parts[2]), &m.data); err != nil {
		t.Fatalf("payload %q: %v", parts[2], err)
	}
	return m
}

// nextEach returns the first unread message of each topic, whatever their
// order, and moves past the last of them.
func (r *subReader) nextEach(t *testing.T, timeout time.Duration, topics ...string) map[string]mqttMsg {
	t.Helper()
	got := make(map[string]mqttMsg, len(topics))
	start, last := r.seen, r.seen
	for _, topic := range topics {
		r.seen = start
		got[topic] = r.next(t, topic, timeout)
		last = max(last, r.seen)
	}
	r.seen = last
	return got
}

func deviceStatus(t *testing.T, server, name string) (state, lastError string) {
	t.Helper()
	out, errOut, code := cli(t, "", nil, "get", "device", name, "-o", "json", "--server", server)
	if code != 0 {
		t.Fatalf("get device: %s", errOut)
	}
	var d struct {
		Status struct {
			Endpoints map[string]struct{ State, LastError string }
		}
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	e := d.Status.Endpoints["tcp"]
	return e.State, e.LastError
}

// waitTick paces a polling loop.
func waitTick() { <-time.After(50 * time.Millisecond) }

func waitDeviceState(t *testing.T, server, name, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		state, _ := deviceStatus(t, server, name)
		if state == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s is %s, not %s, after %v", name, state, want, timeout)
		}
		<-tick.C
	}
}

const pymodbusAsset = `apiVersion: edgeport.io/v1
kind: Device
metadata: {name: pylogger}
spec:
  endpoints:
    inbound:
      tcp:
        endpointType: Microsoft.Modbus
        address: modbus-tcp://127.0.0.1:%s
        additionalConfiguration: {requestTimeout: 1000, degradedAfter: 2, maxBackoff: 400}
---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: pyasset}
spec:
  deviceRef: {deviceName: pylogger, endpointName: tcp}
  defaultDatasetsConfiguration: {samplingInterval: 50}
  datasets:
  - name: types
    destinations: [{target: Mqtt, configuration: {topic: pymodbus/types}}]
    dataPoints:
    - {name: i16, dataSource: "holding:0", dataPointConfiguration: {dataType: int16}}
    - {name: u16, dataSource: "holding:1", dataPointConfiguration: {writable: true}}
    - {name: i32, dataSource: "holding:2", dataPointConfiguration: {dataType: int32}}
    - {name: u32le, dataSource: "holding:4", dataPointConfiguration: {dataType: uint32, wordOrder: LittleEndian}}
    - {name: f32, dataSource: "holding:6", dataPointConfiguration: {dataType: float32}}
    - {name: f64, dataSource: "holding:8", dataPointConfiguration: {dataType: float64}}
    - {name: i64, dataSource: "holding:12", dataPointConfiguration: {dataType: int64}}
    - {name: u64le, dataSource: "holding:16", dataPointConfiguration: {dataType: uint64, wordOrder: LittleEndian}}
    - {name: model, dataSource: "holding:20", dataPointConfiguration: {dataType: string, count: 3}}
    - {name: scaled, dataSource: "holding:23", dataPointConfiguration: {scale: 0.1}}
    - {name: i16swapped, dataSource: "holding:24", dataPointConfiguration: {dataType: int16, byteOrder: LittleEndian}}
    - {name: f32le, dataSource: "holding:25", dataPointConfiguration: {dataType: float32, wordOrder: LittleEndian}}
    - {name: coil0, dataSource: "coil:0"}
    - {name: coil1, dataSource: "coil:1"}
    - {name: missing, dataSource: "holding:40"}
  - name: control
    destinations: [{target: BrokerStateStore, configuration: {key: pyasset/control}}]
    dataPoints:
    - {name: model, dataSource: "holding:20", dataPointConfiguration: {dataType: string, count: 3}}
  - name: big
    datasetConfiguration: {samplingInterval: 3600000}
    destinations: [{target: Mqtt, configuration: {topic: pymodbus/big}}]
    dataPoints:
%s`

// TestModbusPymodbus runs the built binary against Debian's pymodbus 3.0:
// every data type and order decoded, a 1,000-register dataset, an
// exception named on its point, publish on change, a device that stops and
// comes back, one slower than the poll interval, and `connector modbus
// scan`; messages are read with mosquitto_sub.
func TestModbusPymodbus(t *testing.T) {
	t.Parallel()
	requirePymodbus(t)
	port := freeTCPPort(t)
	dev := startPymodbus(t, port, "")
	e := startEdgeport(t)
	server := "http://" + e.addr(t, "http")
	m := newMosquitto(t, e)
	sub := m.subReader(t, "pymodbus/#")

	var big strings.Builder
	for a := range 1000 {
		fmt.Fprintf(&big, "    - {name: r%d, dataSource: \"input:%d\"}\n", a, a)
	}
	if out, errOut, code := cli(t, fmt.Sprintf(pymodbusAsset, port, big.String()), nil, "apply", "-f", "-", "--server", server); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}

	// The two datasets are polled independently: their first messages
	// may arrive in either order.
	first := sub.nextEach(t, 30*time.Second, "pymodbus/types", "pymodbus/big")
	types := first["pymodbus/types"]
	want := map[string]any{
		"i16": -2.0, "u16": 65534.0, "i32": -16.0, "u32le": 100000.0, "f32": 25.0, "f64": 25.0, "i64": -3.0,
		"u64le": float64(0x0001000200030004), "model": "SG10K", "scaled": 123.4, "i16swapped": -2.0, "f32le": 12.0,
		"coil0": true, "coil1": false, "missing": "IllegalDataAddress",
	}
	if got := types.values(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("types:\n got  %v\n want %v", got, want)
	}
	for _, kv := range []string{"specversion:1.0", "type:modbus-keyframe", "subject:pyasset/types", "source:modbus-tcp://127.0.0.1:" + port} {
		if !strings.Contains(types.props, kv) {
			t.Fatalf("user properties %q lack %s", types.props, kv)
		}
	}
	bigMsg := first["pymodbus/big"].values()
	if len(bigMsg) != 1000 || bigMsg["r0"] != 0.0 || bigMsg["r999"] != 999.0 {
		t.Fatalf("big: %d points, r999=%v", len(bigMsg), bigMsg["r999"])
	}

	// A BrokerStateStore destination keeps the latest message under its
	// key.
	for deadline := time.Now().Add(20 * time.Second); ; {
		out, _, code := cli(t, "", nil, "state", "get", "pyasset/control", "--addr", e.addr(t, "mqtt"))
		if code == 0 && strings.Contains(out, `"model":{"SourceTimestamp":`) && strings.Contains(out, `"Value":"SG10K"}`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state store key: %d %s", code, out)
		}
		waitTick()
	}

	// Publish on change: another master writes a register.
	dev.writeHolding(1, 7)
	if got := sub.next(t, "pymodbus/types", 30*time.Second).values(); fmt.Sprint(got) != "map[u16:7]" {
		t.Fatalf("change: %v", got)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		out, _, _ := cli(t, "", nil, "get", "assets", "--server", server)
		if strings.Contains(out, "types.missing: IllegalDataAddress") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("get assets:\n%s", out)
		}
		waitTick()
	}

	// The device stops: degraded after two failed polls; back on the same
	// port it recovers by itself (its registers are fresh: u16 is 65534).
	dev.stop()
	waitDeviceState(t, server, "pylogger", "Degraded", 30*time.Second)
	rep, _, out := runCheck(t, e)
	if st, msg := rep.check(t, "connectors"); st != "warn" || msg != "0 of 1 device endpoints connected; 1 assets, 1 with problems" {
		t.Fatalf("check while degraded: %s %q\n%s", st, msg, out)
	}
	if _, lastErr := deviceStatus(t, server, "pylogger"); !strings.Contains(lastErr, "connect") {
		t.Fatalf("last error %q", lastErr)
	}
	dev = startPymodbus(t, port, "0.2")
	if got := sub.next(t, "pymodbus/types", 30*time.Second).values(); got["u16"] != 65534.0 {
		t.Fatalf("after restart: %v", got)
	}
	waitDeviceState(t, server, "pylogger", "Connected", 30*time.Second)
	// The point's exception is back in status with the first poll after
	// recovery; status is written every second.
	for deadline := time.Now().Add(20 * time.Second); ; {
		rep, _, out = runCheck(t, e)
		st, msg := rep.check(t, "connectors")
		if st == "warn" && msg == "1 of 1 device endpoints connected; 1 assets, 1 with problems" &&
			strings.Contains(out, "types.missing: IllegalDataAddress") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("check after recovery: %s %q\n%s", st, msg, out)
		}
		waitTick()
	}

	// Now every read takes 200 ms, four times the 50 ms poll: polls do not
	// pile up, changes still arrive, the device is not degraded.
	dev.writeHolding(1, 9)
	if got := sub.next(t, "pymodbus/types", 30*time.Second).values(); fmt.Sprint(got) != "map[u16:9]" {
		t.Fatalf("slow device change: %v", got)
	}
	if state, _ := deviceStatus(t, server, "pylogger"); state != "Connected" {
		t.Fatalf("slow device is %s", state)
	}

	// A write requested with mosquitto_rr (MQTT 5 request/response): the
	// device's value read back is the answer, and the poll publishes it.
	rr := requirePeer(t, "mosquitto_rr", mosquittoPkg)
	rrOut := runProc(t, procLimit, "", rr, "-h", m.host, "-p", m.port, "-V", "mqttv5", "-t", "edgeport/modbus/pyasset/write",
		"-e", "replies/pyasset", "-m", `{"dataPoint":"types/u16","value":4321}`, "-W", "15")
	if strings.Join(rrOut, "") != `{"status":"ok","value":4321}` {
		t.Fatalf("mosquitto_rr write: %q", rrOut)
	}
	if got := sub.next(t, "pymodbus/types", 30*time.Second).values(); fmt.Sprint(got) != "map[u16:4321]" {
		t.Fatalf("after the write: %v", got)
	}
	rrOut = runProc(t, procLimit, "", rr, "-h", m.host, "-p", m.port, "-V", "mqttv5", "-t", "edgeport/modbus/pyasset/write",
		"-e", "replies/pyasset", "-m", `{"dataPoint":"types/i16","value":1}`, "-W", "15")
	if strings.Join(rrOut, "") != `{"status":"error","error":"data point \"types/i16\" is not writable (set dataPointConfiguration.writable: true)"}` {
		t.Fatalf("mosquitto_rr refused write: %q", rrOut)
	}

	// scan: pymodbus answers every unit id; a probe shows where the
	// register map ends.
	out, errOut, code := cli(t, "", nil, "connector", "modbus", "scan", "127.0.0.1:"+port, "--units", "1-2", "--timeout", "2s")
	_ = errOut
	if code != 0 || !strings.Contains(out, "1     65534") || !strings.Contains(out, "2     65534") {
		t.Fatalf("scan (%d):\n%s%s", code, out, errOut)
	}
	out, errOut, code = cli(t, "", nil, "connector", "modbus", "scan", "127.0.0.1:"+port, "--table", "holding", "--range", "28-31", "--timeout", "2s")
	if code != 0 || !strings.Contains(out, "holding:29  0") || !strings.Contains(out, "holding:30  IllegalDataAddress") {
		t.Fatalf("probe (%d):\n%s%s", code, out, errOut)
	}
}
