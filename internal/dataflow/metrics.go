package dataflow

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
)

// counter is a monotonic count read by the collector and the status.
type counter struct{ n atomic.Uint64 }

func (c *counter) Inc()           { c.n.Add(1) }
func (c *counter) add(n int)      { c.n.Add(uint64(n)) }
func (c *counter) count() uint64  { return c.n.Load() }
func (c *counter) value() float64 { return float64(c.n.Load()) }

var errorKinds = []stage.ErrorKind{stage.KindTransform, stage.KindDestination, stage.KindRejected, stage.KindSource, stage.KindSchema}

// flowMetrics are one flow's counters. They outlive the flow's restarts
// (a changed flow keeps counting) and go when the flow is deleted. The
// runner updates them with atomics; the collector and the status read
// them.
type flowMetrics struct {
	received, sent, sentBatches, filtered, expired, retries, deadLettered counter
	errs                                                                  [5]counter // by errorKinds
	latency                                                               prometheus.Observer
	schemas                                                               schemaMetrics

	// failing is set while the destination does not accept messages.
	failing atomic.Bool
	// buffered is the outage buffer's fill level, sampled by the engine.
	bufferedMsgs, bufferedBytes atomic.Int64

	mu          sync.Mutex // guards lastErr and lastErrTime
	lastErr     string
	lastErrTime time.Time
}

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600}

func newFlowMetrics() *flowMetrics { return &flowMetrics{} }

func newLatencyVec() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "edgeport_dataflow_latency_seconds",
		Help:    "Time from the flow receiving a message to the destination accepting it.",
		Buckets: latencyBuckets,
	}, []string{"dataflow"})
}

func (m *flowMetrics) errors(k stage.ErrorKind) *counter {
	for i, e := range errorKinds {
		if e == k {
			return &m.errs[i]
		}
	}
	return &m.errs[len(m.errs)-1]
}

func (m *flowMetrics) setError(err error, at time.Time) {
	m.mu.Lock()
	m.lastErr, m.lastErrTime = err.Error(), at
	m.mu.Unlock()
}

// status snapshots the counters for the resource's status.
func (m *flowMetrics) status() config.DataflowStatus {
	st := config.DataflowStatus{
		Received: m.received.count(), Sent: m.sent.count(), Filtered: m.filtered.count(),
		Expired: m.expired.count(), Retries: m.retries.count(), DeadLettered: m.deadLettered.count(),
		BufferedMessages: m.bufferedMsgs.Load(), BufferedBytes: m.bufferedBytes.Load(),
	}
	for i := range m.errs {
		st.Errors += m.errs[i].count()
	}
	m.mu.Lock()
	if m.lastErr != "" {
		t := m.lastErrTime.UTC()
		st.LastError, st.LastErrorTime = m.lastErr, &t
	}
	m.mu.Unlock()
	return st
}

// Metric descriptions. The families parallel Azure IoT Operations'
// dataflow metrics (messages received, sent, dropped, errors, latency),
// labelled by dataflow.
var (
	descReceived = prometheus.NewDesc("edgeport_dataflow_messages_received_total",
		"Messages the dataflow received from its source.", []string{"dataflow"}, nil)
	descSent = prometheus.NewDesc("edgeport_dataflow_messages_sent_total",
		"Messages the destination accepted.", []string{"dataflow"}, nil)
	descBatches = prometheus.NewDesc("edgeport_dataflow_batches_sent_total",
		"Batches the destination accepted.", []string{"dataflow"}, nil)
	descFiltered = prometheus.NewDesc("edgeport_dataflow_messages_filtered_total",
		"Messages a filter dropped.", []string{"dataflow"}, nil)
	descExpired = prometheus.NewDesc("edgeport_dataflow_messages_expired_total",
		"Messages dropped because their message expiry passed before delivery.", []string{"dataflow"}, nil)
	descErrors = prometheus.NewDesc("edgeport_dataflow_errors_total",
		"Errors by kind: transform (the mapping failed), destination (not accepted, retried), rejected (refused permanently), source, schema (the message does not match the flow's schemaRef).", []string{"dataflow", "kind"}, nil)
	descRetries = prometheus.NewDesc("edgeport_dataflow_retries_total",
		"Attempts to deliver again after a destination did not accept.", []string{"dataflow"}, nil)
	descDead = prometheus.NewDesc("edgeport_dataflow_messages_dead_lettered_total",
		"Messages sent to the dead-letter destination (or dropped without one).", []string{"dataflow"}, nil)
	descBufMsgs = prometheus.NewDesc("edgeport_dataflow_buffered_messages",
		"Messages waiting in the dataflow's persistent session (the outage buffer).", []string{"dataflow"}, nil)
	descBufBytes = prometheus.NewDesc("edgeport_dataflow_buffered_bytes",
		"Payload bytes waiting in the dataflow's persistent session.", []string{"dataflow"}, nil)
	descRunning = prometheus.NewDesc("edgeport_dataflow_running",
		"1 when the dataflow runs, 0 when it is disabled or failed.", []string{"dataflow"}, nil)
	descSchemaValidations = prometheus.NewDesc("edgeport_schema_validations_total",
		"Messages a dataflow validated against a schema version (its source's or its transformation's schemaRef).", []string{"schema", "version", "dataflow"}, nil)
	descSchemaFailures = prometheus.NewDesc("edgeport_schema_validation_failures_total",
		"Messages that did not match the schema version (dead-lettered).", []string{"schema", "version", "dataflow"}, nil)
)

// collector exports every flow's metrics.
type collector struct{ e *Engine }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReceived, descSent, descBatches, descFiltered, descExpired, descErrors,
		descRetries, descDead, descBufMsgs, descBufBytes, descRunning, descSchemaValidations, descSchemaFailures} {
		ch <- d
	}
	c.e.latency.Describe(ch)
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, f := range c.e.snapshot() {
		m, n := f.metrics, f.name
		counter := func(d *prometheus.Desc, v *counter) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v.value(), n)
		}
		counter(descReceived, &m.received)
		counter(descSent, &m.sent)
		counter(descBatches, &m.sentBatches)
		counter(descFiltered, &m.filtered)
		counter(descExpired, &m.expired)
		counter(descRetries, &m.retries)
		counter(descDead, &m.deadLettered)
		for i, k := range errorKinds {
			ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, m.errs[i].value(), n, string(k))
		}
		ch <- prometheus.MustNewConstMetric(descBufMsgs, prometheus.GaugeValue, float64(m.bufferedMsgs.Load()), n)
		ch <- prometheus.MustNewConstMetric(descBufBytes, prometheus.GaugeValue, float64(m.bufferedBytes.Load()), n)
		running := 0.0
		if f.running {
			running = 1
		}
		ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, running, n)
		for _, sc := range m.schemas.snapshot() {
			ch <- prometheus.MustNewConstMetric(descSchemaValidations, prometheus.CounterValue, sc.validations.value(), sc.name, sc.version, n)
			ch <- prometheus.MustNewConstMetric(descSchemaFailures, prometheus.CounterValue, sc.failures.value(), sc.name, sc.version, n)
		}
	}
	c.e.latency.Collect(ch)
}
