package dataflow

import (
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/testpeer/otlppeer"
	"github.com/edgeport/edgeport/internal/testseq"
	"github.com/edgeport/edgeport/internal/testwait"
)

// A flow from Kafka (kfake) through map rules into the OpenTelemetry
// Collector's own OTLP receiver survives the receiver being stopped for a
// while under load: records wait in Kafka, the flow retries, and when the
// receiver is back every record arrived as a data point, in order of
// first arrival. Run for OTLP/HTTP and OTLP/gRPC.
func TestEngineKafkaToOpenTelemetryOutage(t *testing.T) {
	for _, proto := range []string{config.OTelProtocolHttp, config.OTelProtocolGrpc} {
		t.Run(proto, func(t *testing.T) { testOTelOutage(t, proto) })
	}
}

func testOTelOutage(t *testing.T, proto string) {
	host := startKafka(t)
	rcv := otlppeer.Start(t, otlppeer.Options{})

	e := startEngine(t, Options{
		Builder:    &StageBuilder{Compile: CompileMapping(nil)},
		Registerer: prometheus.NewRegistry(), StatusInterval: 20 * time.Millisecond, Logger: testLogger(t),
	})

	kafkaEP := mustCheck(t, "DataflowEndpoint", "kafka", &config.DataflowEndpointSpec{
		EndpointType: config.EndpointKafka, KafkaSettings: &config.KafkaEndpointSettings{Host: host}})
	otelHost := rcv.GRPCAddr
	if proto == config.OTelProtocolHttp {
		otelHost = rcv.HTTPURL()
	}
	maxMsgs, latency := 100, 5
	otelEP := mustCheck(t, "DataflowEndpoint", "otel", &config.DataflowEndpointSpec{
		EndpointType: config.EndpointOpenTelemetry, OpenTelemetrySettings: &config.OTelEndpointSettings{Host: otelHost,
			Batching: config.Batching{MaxMessages: &maxMsgs, LatencyMs: &latency}}})
	initial, maxB := 5, 100
	flow := mustCheck(t, "Dataflow", "k2o", &config.DataflowSpec{
		Operations: []config.DataflowOperation{
			{OperationType: "Source", SourceSettings: &config.DataflowSource{EndpointRef: "kafka", DataSources: []string{"telemetry"}}},
			{OperationType: "BuiltInTransformation", BuiltInTransformationSettings: &config.DataflowTransformation{
				Map: []config.DataflowMap{
					{Inputs: []string{"seq"}, Output: "metrics.seq.value"},
					{Inputs: []string{"temperature"}, Output: "metrics.temperature.value", Expression: "cToF($1)"},
					{Inputs: []string{"seq"}, Output: "metrics.temperature.attributes.seq"},
					{Inputs: []string{"$metadata.topic"}, Output: "metrics.temperature.attributes.topic"},
				}}},
			{OperationType: "Destination", DestinationSettings: &config.DataflowDestination{EndpointRef: "otel", DataDestination: "plant"}},
		},
		Retry: config.DataflowRetry{InitialBackoffMs: &initial, MaxBackoffMs: &maxB},
	})
	e.Sync(Resolve([]*config.Object{flow}, []*config.Object{kafkaEP, otelEP}, nil))

	const n = 1000
	produce := seqProducer(t, host, `,"temperature":100`)
	seqs := func() []int {
		var out []int
		for _, p := range rcv.DataPoints() {
			if p.Name == "seq" {
				out = append(out, int(p.Value))
			}
		}
		return out
	}
	produce(0, n/4)
	testwait.For(t, "first data points", func() bool { return len(seqs()) > 0 })
	rcv.Stop()
	produce(n/4, n)
	testwait.For(t, "retries during the outage", func() bool {
		for _, f := range e.snapshot() {
			if f.metrics.retries.value() > 3 {
				return true
			}
		}
		return false
	})
	rcv.Restart()
	testwait.For(t, "every record after the outage", func() bool { return testutil.ToFloat64(sentCounter{e}) >= n })
	// At least once, in order of first arrival.
	testseq.CheckInOrder(t, seqs(), n)
	// The map rules' conversion and attributes reached the collector.
	var temps []otlppeer.DataPoint
	for _, p := range rcv.DataPoints() {
		if p.Name == "temperature" {
			temps = append(temps, p)
		}
	}
	sort.Slice(temps, func(i, j int) bool { return temps[i].Attributes["seq"].(int64) < temps[j].Attributes["seq"].(int64) })
	if len(temps) < n || temps[0].Value != 212 || temps[0].Attributes["topic"] != "telemetry" || temps[0].Type != "Gauge" {
		t.Fatalf("%d temperature points, first %+v", len(temps), temps[0])
	}
}
