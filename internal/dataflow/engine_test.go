package dataflow

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	"github.com/edgeport/edgeport/internal/testpeer/httpsink"
	"github.com/edgeport/edgeport/internal/testseq"
	"github.com/edgeport/edgeport/internal/testwait"
)

func mustCheck(t *testing.T, kind, name string, spec any) *config.Object {
	t.Helper()
	obj := &config.Object{APIVersion: config.APIVersion, Kind: kind, Metadata: config.Metadata{Name: name, UID: "uid-" + name, Generation: 1}, Spec: spec}
	if err := config.Builtin().Check(obj); err != nil {
		t.Fatal(err)
	}
	return obj
}

// startKafka runs a one-broker Kafka (kfake) on loopback with the topic
// "telemetry" until the test ends, and returns its address.
func startKafka(t *testing.T) string {
	t.Helper()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "telemetry"),
		kfake.ListenFn(func(n, _ string) (net.Listener, error) { return net.Listen(n, "127.0.0.1:0") }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	return kc.ListenAddrs()[0]
}

// seqProducer returns a function that produces the records {"seq":i<extra>}
// for i in [from, to) to the topic "telemetry" at host and waits until
// Kafka has them.
func seqProducer(t *testing.T, host, extra string) func(from, to int) {
	t.Helper()
	prod, err := kgo.NewClient(kgo.SeedBrokers(host))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	return func(from, to int) {
		t.Helper()
		ctx := context.Background()
		for i := from; i < to; i++ {
			prod.Produce(ctx, &kgo.Record{Topic: "telemetry", Value: []byte(`{"seq":` + strconv.Itoa(i) + extra + `}`)}, nil)
		}
		if err := prod.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// startEngine starts an engine with opts and stops it when the test ends.
func startEngine(t *testing.T, opts Options) *Engine {
	t.Helper()
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	return e
}

// A flow from Kafka (kfake) to HTTP survives a long destination outage
// under load: the records wait in Kafka (offsets are committed only for
// what the destination accepted), retries back off, the status says why,
// and afterwards every record arrived, in order.
func TestEngineKafkaToHTTPOutage(t *testing.T) {
	host := startKafka(t)
	s := httpsink.Start(t)

	reg := prometheus.NewRegistry()
	var repMu sync.Mutex
	var last config.DataflowStatus
	var lastReady bool
	var lastReason string
	e := startEngine(t, Options{
		Builder: &StageBuilder{}, Registerer: reg, StatusInterval: 20 * time.Millisecond, Logger: testLogger(t),
		Report: func(_ *config.Object, ready bool, reason, _ string, st config.DataflowStatus) {
			repMu.Lock()
			last, lastReady, lastReason = st, ready, reason
			repMu.Unlock()
		},
	})

	kafkaEP := mustCheck(t, "DataflowEndpoint", "kafka", &config.DataflowEndpointSpec{
		EndpointType: config.EndpointKafka, KafkaSettings: &config.KafkaEndpointSettings{Host: host}})
	maxMsgs, latency := 50, 5
	httpEP := mustCheck(t, "DataflowEndpoint", "web", &config.DataflowEndpointSpec{
		EndpointType: config.EndpointHttp, HttpSettings: &config.HttpEndpointSettings{URL: s.URL,
			Batching: config.Batching{MaxMessages: &maxMsgs, LatencyMs: &latency}}})
	initial, maxB := 5, 50
	flow := mustCheck(t, "Dataflow", "k2h", &config.DataflowSpec{
		Operations: []config.DataflowOperation{
			{OperationType: "Source", SourceSettings: &config.DataflowSource{EndpointRef: "kafka", DataSources: []string{"telemetry"}}},
			{OperationType: "Destination", DestinationSettings: &config.DataflowDestination{EndpointRef: "web", DataDestination: "/"}},
		},
		Retry: config.DataflowRetry{InitialBackoffMs: &initial, MaxBackoffMs: &maxB},
	})
	e.Sync(Resolve([]*config.Object{flow}, []*config.Object{kafkaEP, httpEP}, nil))

	const n = 2000
	produce := seqProducer(t, host, ``)
	produce(0, n/4)
	testwait.For(t, "first records delivered", func() bool { return len(s.Payloads()) > 0 })
	s.SetDown(true)
	hits := s.Hits()
	produce(n/4, n)
	testwait.For(t, "retries during the outage", func() bool { return s.Hits() > hits+5 })
	testwait.For(t, "status Retrying", func() bool {
		repMu.Lock()
		defer repMu.Unlock()
		return !lastReady && lastReason == "Retrying" && last.LastError != "" && last.Retries > 0
	})
	s.SetDown(false)
	testwait.For(t, "every record after the outage", func() bool {
		return testutil.ToFloat64(sentCounter{e}) >= n
	})
	// At least once, in order: duplicates may only repeat a suffix that
	// was resent; the sequence of first occurrences is 0..n-1.
	testseq.CheckInOrder(t, s.Seqs(), n)
	testwait.For(t, "status Ready again", func() bool {
		repMu.Lock()
		defer repMu.Unlock()
		return lastReady && last.Sent >= n && last.Received >= n
	})
}

// sentCounter reads the engine's sent total for the test.
type sentCounter struct{ e *Engine }

func (s sentCounter) Describe(ch chan<- *prometheus.Desc) { ch <- descSent }
func (s sentCounter) Collect(ch chan<- prometheus.Metric) {
	var total float64
	for _, f := range s.e.snapshot() {
		total += f.metrics.sent.value()
	}
	ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, total, "all")
}

var _ stage.Destination = (*recordingDest)(nil)

// recordingDest is used where a test needs a destination it controls
// directly (the transformation and dead-letter paths of the runner).
type recordingDest struct {
	mu  sync.Mutex
	got []*stage.Message
}

func (d *recordingDest) Send(_ context.Context, b []*stage.Message) error {
	d.mu.Lock()
	d.got = append(d.got, b...)
	d.mu.Unlock()
	return nil
}
func (d *recordingDest) Close(context.Context) error { return nil }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
