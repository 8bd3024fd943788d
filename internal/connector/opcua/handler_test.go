package opcua

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/edgeport/edgeport/internal/connector"
	"github.com/edgeport/edgeport/internal/connector/connectortest"
	"github.com/edgeport/edgeport/internal/testwait"
)

// captureConnector hands the runtime's Endpoint to the benchmark instead of
// opening a session.
type captureConnector struct{ eps chan *connector.Endpoint }

func (c captureConnector) EndpointType() string { return EndpointType }

func (c captureConnector) Run(ctx context.Context, ep *connector.Endpoint) error {
	c.eps <- ep
	<-ctx.Done()
	return nil
}

// countingPublisher stands for the broker: it counts, and keeps the
// messages when keep is set.
type countingPublisher struct {
	n    atomic.Int64
	keep bool
	mu   sync.Mutex // guards msgs
	msgs []*connector.Message
}

func (p *countingPublisher) Publish(ctx context.Context, m *connector.Message) error {
	p.n.Add(1)
	if p.keep {
		p.mu.Lock()
		p.msgs = append(p.msgs, m)
		p.mu.Unlock()
	}
	return nil
}

func (p *countingPublisher) messages() []*connector.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*connector.Message(nil), p.msgs...)
}

// runtimeHandler applies yaml to a registry watched by the real connector
// runtime, whose publisher is pub, and returns the OPC UA handler and
// options built for the endpoint once it has `items` items.
func runtimeHandler(tb testing.TB, yaml string, items int, pub connector.Publisher) (Options, *handler) {
	tb.Helper()
	st := connectortest.Store(tb)
	cc := captureConnector{eps: make(chan *connector.Endpoint, 16)}
	m, err := connector.New(connector.Options{Store: st, Connectors: []connector.Connector{cc}, Publisher: pub, BufferSize: 1 << 20, Senders: 1, StatusInterval: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	if err := m.Start(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Stop(context.Background()) })
	connectortest.Apply(tb, st, yaml)
	// The runtime may start the endpoint before all assets are in and
	// restart it as they arrive: take the run that has them all.
	var opts Options
	var h *handler
	n := 0
	for deadline := time.After(60 * time.Second); n != items; {
		select {
		case ep := <-cc.eps:
			if opts, h, err = (&Connector{}).build(ep); err != nil {
				tb.Fatal(err)
			}
			n = 0
			for _, g := range opts.Groups {
				n += len(g.Items)
			}
		case <-deadline:
			tb.Fatalf("the connector runtime did not start the endpoint with its %d items", items)
		}
	}
	return opts, h
}

// TestHandlerFrames drives the handler with publish responses as the
// session delivers them: values an item's queue delivered together go out
// as consecutive messages, every third message of a dataset with
// keyFrameCount 3 is a key frame with the last value of every point, and
// the buffers reused between responses carry nothing over.
func TestHandlerFrames(t *testing.T) {
	pub := &countingPublisher{keep: true}
	opts, h := runtimeHandler(t, `apiVersion: edgeport.io/v1
kind: Device
metadata: {name: d}
spec:
  endpoints:
    inbound:
      opc: {endpointType: Microsoft.OpcUa, address: "opc.tcp://127.0.0.1:4840"}
---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: a}
spec:
  deviceRef: {deviceName: d, endpointName: opc}
  datasets:
  - name: line
    datasetConfiguration: {publishingInterval: 100, keyFrameCount: 3}
    destinations:
    - {target: Mqtt, configuration: {topic: t/line}}
    dataPoints:
    - {name: x, dataSource: "ns=2;s=X"}
    - {name: y, dataSource: "ns=2;s=Y"}
    - {name: z, dataSource: "ns=2;s=Z"}
`, 3, pub)
	ts := time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC)
	smp := func(name string, v float64) Sample {
		for _, it := range opts.Groups[0].Items {
			if it.Name == name {
				return Sample{Name: name, Dataset: it.Dataset, Point: it.Point, Value: v, SourceTimestamp: ts.Add(time.Duration(v) * time.Millisecond)}
			}
		}
		t.Fatalf("no item %s", name)
		return Sample{}
	}
	g := opts.Groups[0].Name
	h.Samples(g, []Sample{smp("x", 1), smp("y", 2), smp("x", 3)})         // two messages: {x:1,y:2}, {x:3}
	h.Samples(g, []Sample{smp("z", 4), {Name: "ghost", Dataset: "nope"}}) // key frame: {x:3,y:2,z:4}
	h.Samples(g, []Sample{smp("y", 5)})                                   // {y:5}
	want := []string{
		`{"x":{"SourceTimestamp":"2026-12-06T07:00:00.001Z","Value":1},"y":{"SourceTimestamp":"2026-12-06T07:00:00.002Z","Value":2}}`,
		`{"x":{"SourceTimestamp":"2026-12-06T07:00:00.003Z","Value":3}}`,
		`{"x":{"SourceTimestamp":"2026-12-06T07:00:00.003Z","Value":3},"y":{"SourceTimestamp":"2026-12-06T07:00:00.002Z","Value":2},"z":{"SourceTimestamp":"2026-12-06T07:00:00.004Z","Value":4}}`,
		`{"y":{"SourceTimestamp":"2026-12-06T07:00:00.005Z","Value":5}}`,
	}
	wantType := []string{"ua-deltaframe", "ua-deltaframe", "ua-keyframe", "ua-deltaframe"}
	connectortest.Eventually(t, 10*time.Second, "four messages", func() bool { return pub.n.Load() >= int64(len(want)) })
	msgs := pub.messages()
	if len(msgs) != len(want) {
		t.Fatalf("%d messages, want %d", len(msgs), len(want))
	}
	for i, m := range msgs {
		typ := ""
		for _, u := range m.User {
			if u.Key == "type" {
				typ = u.Value
			}
		}
		if string(m.Payload) != want[i] || typ != wantType[i] {
			t.Errorf("message %d: %s %s\nwant %s %s", i, typ, m.Payload, wantType[i], want[i])
		}
	}
}

// benchAssets is one device and `datasets` assets of `per` points each, all
// at one publishing interval: the shape of bench/opcua.
func benchAssets(datasets, per int) string {
	var b strings.Builder
	b.WriteString(`apiVersion: edgeport.io/v1
kind: Device
metadata: {name: bench}
spec:
  endpoints:
    inbound:
      opc: {endpointType: Microsoft.OpcUa, address: "opc.tcp://127.0.0.1:4840"}
`)
	for d := 0; d < datasets; d++ {
		fmt.Fprintf(&b, `---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: bench-%d}
spec:
  deviceRef: {deviceName: bench, endpointName: opc}
  datasets:
  - name: bulk
    datasetConfiguration: {publishingInterval: 100, samplingInterval: 100}
    destinations:
    - {target: Mqtt, configuration: {topic: bench/%d}}
    dataPoints:
`, d, d)
		for i := 0; i < per; i++ {
			fmt.Fprintf(&b, "    - {name: b%d, dataSource: \"ns=2;s=Bulk/%d\"}\n", d*per+i, d*per+i)
		}
	}
	return b.String()
}

// BenchmarkDeliver measures Edgeport's own work per sample between gopcua
// and the broker: one publish response of 10,000 data changes (10 datasets
// of 1,000 points, as bench/opcua subscribes) turned into samples, split by
// dataset, encoded as Azure IoT Operations' JSON and queued for the broker,
// whose stand-in only counts. gopcua's decoding is BenchmarkDecodePublish.
//
//	go test -run X -bench Deliver -benchmem ./internal/connector/opcua/
func BenchmarkDeliver(b *testing.B) {
	const datasets, per = 10, 1000
	pub := &countingPublisher{}
	opts, h := runtimeHandler(b, benchAssets(datasets, per), datasets*per, pub)
	g := &group{spec: opts.Groups[0]}
	items := map[uint32]*item{}
	dcn := &ua.DataChangeNotification{}
	now := time.Now()
	for i, is := range g.spec.Items {
		items[uint32(i+1)] = &item{g: g, spec: is, nodeID: is.NodeID}
		dcn.MonitoredItems = append(dcn.MonitoredItems, &ua.MonitoredItemNotification{
			ClientHandle: uint32(i + 1),
			Value:        &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp, Value: ua.MustVariant(float64(now.UnixMilli())), SourceTimestamp: now, ServerTimestamp: now},
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		out := dataChange(dcn, items, now)
		h.Samples(g.spec.Name, out)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(dcn.MonitoredItems)), "ns/sample")
	testwait.For(b, "every dataset's messages published", func() bool { return pub.n.Load() >= int64(b.N*datasets) })
}

// BenchmarkDecodePublish measures gopcua v0.8.0 decoding one PublishResponse
// of 10,000 Double data changes (what arrives per cycle in bench/opcua).
func BenchmarkDecodePublish(b *testing.B) {
	now := time.Now()
	dcn := &ua.DataChangeNotification{}
	for i := 0; i < 10000; i++ {
		dcn.MonitoredItems = append(dcn.MonitoredItems, &ua.MonitoredItemNotification{
			ClientHandle: uint32(i + 1),
			Value:        &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp, Value: ua.MustVariant(float64(i)), SourceTimestamp: now, ServerTimestamp: now},
		})
	}
	res := &ua.PublishResponse{
		ResponseHeader: &ua.ResponseHeader{Timestamp: now, ServiceDiagnostics: &ua.DiagnosticInfo{}, StringTable: []string{}, AdditionalHeader: ua.NewExtensionObject(nil)},
		SubscriptionID: 1, AvailableSequenceNumbers: []uint32{1},
		NotificationMessage: &ua.NotificationMessage{SequenceNumber: 1, PublishTime: now, NotificationData: []*ua.ExtensionObject{ua.NewExtensionObject(dcn)}},
		Results:             []ua.StatusCode{}, DiagnosticInfos: []*ua.DiagnosticInfo{},
	}
	buf, err := ua.Encode(res)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		var r ua.PublishResponse
		if _, err := ua.Decode(buf, &r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10000, "ns/sample")
}
