package connector

import "github.com/prometheus/client_golang/prometheus"

// metrics are the families every connector shares (docs/metrics.md).
// Protocol-specific families (Modbus polls, OPC UA sessions) belong to
// their connector.
type metrics struct {
	connected  *prometheus.GaugeVec   // type, device, endpoint
	reconnects *prometheus.CounterVec // type, device, endpoint
	errors     *prometheus.CounterVec // type, device, endpoint, kind
	samples    *prometheus.CounterVec // type, asset, dataset
	messages   *prometheus.CounterVec // type, asset, dataset
	dropped    *prometheus.CounterVec // type, reason
	buffered   prometheus.Gauge
	latency    *prometheus.HistogramVec // type
}

// Drop reasons.
const (
	dropBufferFull   = "buffer_full"
	dropPublishError = "publish_error"
	dropShutdown     = "shutdown"
	dropEncoding     = "encoding"
	dropNoStateStore = "no_state_store"
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgeport_connector_endpoint_connected",
			Help: "1 while a device endpoint is connected (or, for polled protocols, answering).",
		}, []string{"type", "device", "endpoint"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeport_connector_reconnects_total",
			Help: "Connections re-established to a device endpoint after a loss.",
		}, []string{"type", "device", "endpoint"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeport_connector_errors_total",
			Help: "Errors talking to a device endpoint, by kind (connect, timeout, exception name, ...).",
		}, []string{"type", "device", "endpoint", "kind"}),
		samples: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeport_connector_samples_total",
			Help: "Data point values a dataset published.",
		}, []string{"type", "asset", "dataset"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeport_connector_messages_total",
			Help: "Messages of a dataset or event the broker (or state store) accepted.",
		}, []string{"type", "asset", "dataset"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeport_connector_dropped_messages_total",
			Help: "Connector messages dropped, by reason (buffer_full: the broker was slower than the devices).",
		}, []string{"type", "reason"}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgeport_connector_buffered_messages",
			Help: "Connector messages waiting in the publish buffer.",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edgeport_connector_publish_latency_seconds",
			Help:    "From a message's oldest source timestamp to the broker's acknowledgement.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"type"}),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.reconnects, m.errors, m.samples, m.messages, m.dropped, m.buffered, m.latency)
	}
	return m
}
