package modbus

import "github.com/prometheus/client_golang/prometheus"

// metrics are the Modbus connector's own families; the shared ones
// (connected, errors by kind, samples, messages, drops) are the runtime's.
type metrics struct {
	polls    *prometheus.CounterVec   // device, endpoint, result
	requests *prometheus.CounterVec   // device, endpoint, table
	latency  *prometheus.HistogramVec // device, endpoint
	degraded *prometheus.GaugeVec     // device, endpoint
	writes   *prometheus.CounterVec   // device, endpoint, result
}

// Poll results.
const (
	pollOK      = "ok"
	pollFailed  = "failed"
	pollSkipped = "skipped" // degraded: waiting for the next backoff probe
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeport_modbus_polls_total",
			Help: "Dataset polls by result: ok, failed (the device did not answer), skipped (degraded, backing off).",
		}, []string{"device", "endpoint", "result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeport_modbus_requests_total",
			Help: "Modbus read requests sent (merged reads count once), by table.",
		}, []string{"device", "endpoint", "table"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edgeport_modbus_request_duration_seconds",
			Help:    "Time from sending a Modbus request to its answer (or error).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"device", "endpoint"}),
		degraded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgeport_modbus_degraded",
			Help: "1 while a device is degraded (too many consecutive failed polls; polled with backoff).",
		}, []string{"device", "endpoint"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeport_modbus_writes_total",
			Help: "Writes requested over MQTT, by result (ok, refused, failed).",
		}, []string{"device", "endpoint", "result"}),
	}
	if reg != nil {
		reg.MustRegister(m.polls, m.requests, m.latency, m.degraded, m.writes)
	}
	return m
}
