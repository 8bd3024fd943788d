package connector

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector/connectortest"
)

// driver stands in for a protocol driver: the runtime under test is real,
// and so are the broker and the subscriber. It hands each run's Endpoint
// to the test, which publishes through it.
type driver struct {
	typ  string
	runs chan *Endpoint
}

func (d *driver) EndpointType() string { return d.typ }

func (d *driver) Run(ctx context.Context, ep *Endpoint) error {
	ep.SetState(StateConnected, nil)
	d.runs <- ep
	<-ctx.Done()
	return nil
}

const device = `apiVersion: edgeport.io/v1
kind: Device
metadata: {name: press}
spec:
  endpoints:
    inbound:
      opc: {endpointType: Microsoft.OpcUa, address: "opc.tcp://127.0.0.1:4840"}
`

const asset = `apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: press-1}
spec:
  deviceRef: {deviceName: press, endpointName: opc}
  datasets:
  - name: thermostat
    typeRef: dtmi:plant:thermostat;1
    destinations:
    - target: Mqtt
      configuration: {topic: plant/press-1/thermostat, qos: Qos1, retain: Keep, ttl: 60}
    dataPoints:
    - {name: temperature, dataSource: "ns=3;s=Temperature"}
    - {name: pressure, dataSource: "ns=3;s=Pressure"}
`

func startManager(t *testing.T, st *config.Store, opts Options) (*Manager, *driver) {
	t.Helper()
	d := &driver{typ: config.EndpointTypeOpcUa, runs: make(chan *Endpoint, 10)}
	opts.Store, opts.Connectors = st, []Connector{d}
	if opts.StatusInterval == 0 {
		opts.StatusInterval = 10 * time.Millisecond
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return m, d
}

// runWith returns the first run of the driver with n assets (the device
// and its assets arrive one by one, each a restart).
func runWith(t *testing.T, d *driver, n int) *Endpoint {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ep := <-d.runs:
			if len(ep.Assets) == n {
				return ep
			}
		case <-timeout:
			t.Fatalf("the driver was not started with %d assets", n)
			return nil
		}
	}
}

// TestPublishEndToEnd: a frame published by a driver reaches an MQTT 5
// subscriber of the real broker with Azure IoT Operations' payload shape,
// the destination's QoS, retain flag and expiry, and the CloudEvents user
// properties; status and metrics count it.
func TestPublishEndToEnd(t *testing.T) {
	b, addr := connectortest.Broker(t)
	st := connectortest.Store(t)
	reg := prometheus.NewRegistry()
	sub := connectortest.Subscribe(t, addr, "plant/#")
	_, d := startManager(t, st, Options{Publisher: ClientPublisher{Client: connectortest.Client(t, b, "$edgeport/connector")}, Registerer: reg})
	connectortest.Apply(t, st, device+"---\n"+asset)
	ep := runWith(t, d, 1)
	if len(ep.Assets) != 1 || len(ep.Assets[0].Datasets) != 1 {
		t.Fatalf("assets handed to the driver: %+v", ep.Assets)
	}
	ds := ep.Assets[0].Datasets[0]
	ts := time.Date(2024, 7, 29, 15, 2, 17, 185843500, time.UTC)
	ds.Publish(Frame{Keyframe: true, Samples: []Sample{
		{Name: "temperature", Value: 21.5, SourceTimestamp: ts},
		{Name: "pressure", Value: nil, SourceTimestamp: ts, Status: &StatusCode{Code: 0x80310000, Symbol: "BadNoCommunication"}},
	}})
	p := connectortest.Next(t, sub, 10*time.Second)
	want := `{"temperature":{"SourceTimestamp":"2024-07-29T15:02:17.1858435Z","Value":21.5},` +
		`"pressure":{"SourceTimestamp":"2024-07-29T15:02:17.1858435Z","Value":null,"StatusCode":{"Code":2150694912,"Symbol":"BadNoCommunication"}}}`
	if p.Topic != "plant/press-1/thermostat" || string(p.Payload) != want {
		t.Fatalf("got %s %s\nwant %s", p.Topic, p.Payload, want)
	}
	if p.QoS != 1 || p.Properties.MessageExpiry == nil || *p.Properties.MessageExpiry > 60 || *p.Properties.MessageExpiry < 59 ||
		p.Properties.ContentType != "application/json" {
		t.Fatalf("qos %d retain %v props %+v", p.QoS, p.Retain, p.Properties)
	}
	got := map[string]string{}
	var keys []string
	for _, u := range p.Properties.User {
		got[u.Key] = u.Value
		keys = append(keys, u.Key)
	}
	if strings.Join(keys, ",") != "specversion,type,source,id,time,subject,datacontenttype,dataschema" ||
		got["specversion"] != "1.0" || got["type"] != "ua-keyframe" || got["source"] != "opc.tcp://127.0.0.1:4840" ||
		got["subject"] != "press-1/thermostat" || got["dataschema"] != "dtmi:plant:thermostat;1" || len(got["id"]) != 36 {
		t.Fatalf("user properties: %v", p.Properties.User)
	}
	if _, err := time.Parse(time.RFC3339Nano, got["time"]); err != nil {
		t.Fatalf("time: %v", err)
	}
	// retain: Keep — a later subscriber gets the message as retained.
	if r := connectortest.Next(t, connectortest.Subscribe(t, addr, "plant/press-1/+"), 10*time.Second); !r.Retain || string(r.Payload) != want {
		t.Fatalf("retained: %v %s", r.Retain, r.Payload)
	}

	connectortest.Eventually(t, 10*time.Second, "asset status", func() bool {
		s := connectortest.Status(st, "Asset", "press-1")
		return s != nil && len(s.Datasets) == 1 && s.Datasets[0].Messages == 1
	})
	s := connectortest.Status(st, "Asset", "press-1")
	dss := s.Datasets[0]
	if dss.Samples != 2 || dss.DataPoints[0].Samples != 1 || dss.DataPoints[0].Error != "" ||
		dss.DataPoints[1].Error != "BadNoCommunication" || !dss.LastValueTime.Equal(ts.Truncate(time.Millisecond)) {
		t.Fatalf("dataset status: %+v", dss)
	}
	if r := s.Condition(config.ConditionReady); r.Status != config.ConditionFalse || r.Reason != "DataPointErrors" ||
		r.Message != "thermostat.pressure: BadNoCommunication" {
		t.Fatalf("asset ready: %+v", r)
	}
	dev := connectortest.Status(st, "Device", "press")
	if e := dev.Endpoints["opc"]; !e.Connected || e.State != StateConnected || dev.Condition(config.ConditionReady).Status != config.ConditionTrue {
		t.Fatalf("device status: %+v", dev)
	}
	if n := testutil.ToFloat64(ep.m.samples.WithLabelValues(config.EndpointTypeOpcUa, "press-1", "thermostat")); n != 2 {
		t.Fatalf("samples metric %v", n)
	}
	if n := testutil.ToFloat64(ep.m.messages.WithLabelValues(config.EndpointTypeOpcUa, "press-1", "thermostat")); n != 1 {
		t.Fatalf("messages metric %v", n)
	}
}

// TestLiveChanges: changing an asset restarts the device's driver with the
// new configuration; a dataset whose points did not change keeps its
// counts; deleting the device stops the driver and the asset says why.
func TestLiveChanges(t *testing.T) {
	b, _ := connectortest.Broker(t)
	st := connectortest.Store(t)
	_, d := startManager(t, st, Options{Publisher: ClientPublisher{Client: connectortest.Client(t, b, "$edgeport/connector")}})
	connectortest.Apply(t, st, device+"---\n"+asset)
	ep := runWith(t, d, 1)
	ep.Assets[0].Datasets[0].Publish(Frame{Samples: []Sample{{Name: "temperature", Value: 1, SourceTimestamp: time.Now()}}})

	connectortest.Apply(t, st, strings.Replace(asset, "qos: Qos1", "qos: Qos0", 1))
	ep2 := runWith(t, d, 1)
	if ep2 == ep || ep2.Assets[0].Spec.Datasets[0].Destinations[0].Configuration.Qos != config.Qos0 {
		t.Fatal("the driver did not get the new asset")
	}
	connectortest.Eventually(t, 10*time.Second, "counts kept", func() bool {
		s := connectortest.Status(st, "Asset", "press-1")
		return s != nil && len(s.Datasets) == 1 && s.Datasets[0].Samples == 1
	})

	if _, err := st.Delete(config.Key{Kind: "Device", Name: "press"}, ""); err != nil {
		t.Fatal(err)
	}
	connectortest.Eventually(t, 10*time.Second, "asset reports the missing device", func() bool {
		r := connectortest.Status(st, "Asset", "press-1").Condition(config.ConditionReady)
		return r != nil && r.Reason == "DeviceNotFound" && r.Message == `device "press" does not exist`
	})
	select {
	case ep := <-d.runs:
		t.Fatalf("driver started again for %s", ep.Device)
	default:
	}

	// An asset invalid for its device's endpoint type (applied before the
	// device, so the registry could not check it) is reported, not run.
	bad := strings.Replace(asset, `{name: pressure, dataSource: "ns=3;s=Pressure"}`,
		`{name: pressure, dataSource: "ns=3;s=Pressure", dataPointConfiguration: {queueSize: -1}}`, 1)
	connectortest.Apply(t, st, bad)
	connectortest.Apply(t, st, device)
	runWith(t, d, 0)
	connectortest.Eventually(t, 10*time.Second, "asset reports it is invalid", func() bool {
		r := connectortest.Status(st, "Asset", "press-1").Condition(config.ConditionReady)
		return r != nil && r.Reason == "Invalid" &&
			r.Message == "spec.datasets[0].dataPoints[1].dataPointConfiguration.queueSize: must be between 0 and 1048576 (got -1)"
	})
}

// slowPublisher is a broker that accepts nothing until released: a
// stand-in for a broker too slow to keep up (the real broker never is in a
// unit test).
type slowPublisher struct {
	release chan struct{}
	mu      sync.Mutex
	got     int
}

func (p *slowPublisher) Publish(ctx context.Context, m *Message) error {
	select {
	case <-p.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.mu.Lock()
	p.got++
	p.mu.Unlock()
	return nil
}

// TestSlowBrokerNeverBlocks: with a broker that does not accept anything,
// a driver's Publish still returns at once; what does not fit in the
// buffer is dropped and counted, and the rest is delivered once the broker
// accepts again.
func TestSlowBrokerNeverBlocks(t *testing.T) {
	st := connectortest.Store(t)
	pub := &slowPublisher{release: make(chan struct{})}
	m, d := startManager(t, st, Options{Publisher: pub, BufferSize: 10, Senders: 1})
	connectortest.Apply(t, st, device+"---\n"+asset)
	ds := runWith(t, d, 1).Assets[0].Datasets[0]
	const n = 100
	for i := range n {
		ds.Publish(Frame{Samples: []Sample{{Name: "temperature", Value: i, SourceTimestamp: time.Now()}}})
	}
	// Publish returned for every frame with the broker stalled: ten
	// messages are buffered (the one the sender holds among them), the
	// rest were dropped.
	if got := testutil.ToFloat64(m.m.dropped.WithLabelValues(config.EndpointTypeOpcUa, dropBufferFull)); got != n-10 {
		t.Fatalf("dropped %v, want %d", got, n-10)
	}
	close(pub.release)
	connectortest.Eventually(t, 10*time.Second, "buffer drained", func() bool {
		pub.mu.Lock()
		defer pub.mu.Unlock()
		return pub.got+int(testutil.ToFloat64(m.m.dropped.WithLabelValues(config.EndpointTypeOpcUa, dropBufferFull))) == n
	})
	if pub.got != 10 {
		t.Fatalf("delivered %d, want the 10 buffered", pub.got)
	}
	connectortest.Eventually(t, 10*time.Second, "status counts drops", func() bool {
		s := connectortest.Status(st, "Asset", "press-1")
		return s != nil && len(s.Datasets) == 1 && s.Datasets[0].Dropped+s.Datasets[0].Messages == n
	})
}

func TestEncodePayload(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	got, err := EncodePayload(nil, []Sample{
		{Name: "a\"b", Value: math.NaN(), SourceTimestamp: ts},
		{Name: "inf", Value: math.Inf(-1), SourceTimestamp: ts},
		{Name: "f32", Value: float32(0.1), SourceTimestamp: ts},
		{Name: "u64", Value: uint64(math.MaxUint64), SourceTimestamp: ts},
		{Name: "s", Value: "line\n\xff", SourceTimestamp: ts},
		{Name: "obj", Value: map[string]int{"x": 1}, SourceTimestamp: ts},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"a\"b":{"SourceTimestamp":"2026-01-02T02:04:05Z","Value":"NaN"},` +
		`"inf":{"SourceTimestamp":"2026-01-02T02:04:05Z","Value":"-Infinity"},` +
		`"f32":{"SourceTimestamp":"2026-01-02T02:04:05Z","Value":0.1},` +
		`"u64":{"SourceTimestamp":"2026-01-02T02:04:05Z","Value":18446744073709551615},` +
		`"s":{"SourceTimestamp":"2026-01-02T02:04:05Z","Value":"line\n\ufffd"},` +
		`"obj":{"SourceTimestamp":"2026-01-02T02:04:05Z","Value":{"x":1}}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if !json.Valid(got) {
		t.Fatal("not valid JSON")
	}
	if _, err := EncodePayload(nil, []Sample{{Name: "c", Value: make(chan int)}}); err == nil {
		t.Fatal("a value JSON cannot hold was encoded")
	}
}
