package statestore

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the state store's Prometheus series. Counters are bumped only
// for operations whose effects were made durable.
type metrics struct {
	insertions    prometheus.Counter
	modifications prometheus.Counter
	deletions     *prometheus.CounterVec // reason: command, expiry
	deleted       prometheus.Counter     // deletions{reason="command"}
	expired       prometheus.Counter     // deletions{reason="expiry"}
	retrievals    prometheus.Counter
	keyNotify     prometheus.Counter
	notifications prometheus.Counter
	requests      *prometheus.CounterVec // command
	errors        *prometheus.CounterVec // error
	requestsBy    [numCommands]prometheus.Counter
	errorsBy      [numErrKinds]prometheus.Counter
	keys          prometheus.Gauge
	bytes         prometheus.Gauge
}

// Error kinds, the labels of edgeport_statestore_errors_total: a fixed set,
// so that no client can create series.
const (
	errKindSyntax    = iota // syntax, unknown command, wrong arguments, empty key
	errKindTimestamp        // missing, malformed or future __ts or __ft
	errKindFencing          // fencing token missing or too low
	errKindQuota            // the state store's or the disk's quota
	errKindAuth             // not authorized
	errKindProtocol         // RPC conventions: version, correlation data, response topic, QoS
	errKindStorage          // the store failed
	numErrKinds
)

var errKindLabels = [numErrKinds]string{"syntax", "timestamp", "fencing", "quota", "not_authorized", "protocol", "storage"}

// Commands, the labels of edgeport_statestore_requests_total.
const (
	cmdSet = iota
	cmdGet
	cmdDel
	cmdVDel
	cmdKeyNotify
	cmdKeys
	cmdUnknown
	numCommands
)

var commandLabels = [numCommands]string{"SET", "GET", "DEL", "VDEL", "KEYNOTIFY", KeysCommand, "unknown"}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		insertions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeport_statestore_insertions_total",
			Help: "Keys created by SET.",
		}),
		modifications: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeport_statestore_modifications_total",
			Help: "Existing keys overwritten by SET.",
		}),
		deletions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeport_statestore_deletions_total",
			Help: "Keys deleted, by DEL or VDEL (reason=command) or by expiry (reason=expiry).",
		}, []string{"reason"}),
		retrievals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeport_statestore_retrievals_total",
			Help: "GET requests answered (found or not).",
		}),
		keyNotify: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeport_statestore_keynotify_requests_total",
			Help: "KEYNOTIFY requests answered (start and stop).",
		}),
		notifications: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeport_statestore_notifications_total",
			Help: "KEYNOTIFY notifications published.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeport_statestore_requests_total",
			Help: "State store requests executed, by command (answers from the command cache excluded).",
		}, []string{"command"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeport_statestore_errors_total",
			Help: "Requests answered with an error, by kind.",
		}, []string{"error"}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgeport_statestore_keys",
			Help: "Keys stored.",
		}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgeport_statestore_bytes",
			Help: "Bytes of keys and values stored (the quota's measure).",
		}),
	}
	m.deleted = m.deletions.WithLabelValues("command")
	m.expired = m.deletions.WithLabelValues("expiry")
	for i, c := range commandLabels {
		m.requestsBy[i] = m.requests.WithLabelValues(c)
	}
	for i, e := range errKindLabels {
		m.errorsBy[i] = m.errors.WithLabelValues(e)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.insertions, m.modifications, m.deletions, m.retrievals,
			m.keyNotify, m.notifications, m.requests, m.errors, m.keys, m.bytes} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("statestore: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}
