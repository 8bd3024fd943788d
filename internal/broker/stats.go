package broker

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a message was not delivered, as the drop metric labels them.
const (
	dropOfflineQoS0 = iota
	dropQueueFull
	dropSlowConsumer
	dropTooLarge
	dropExpired
	dropSessionEnded
	dropInvalidTopic
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{
	"offline_qos0", "queue_full", "slow_consumer", "packet_too_large", "expired", "session_ended", "invalid_topic",
}

// stats are broker-wide counters, updated with atomics on the hot path and
// read by the Prometheus collector and $SYS at their own pace.
type stats struct {
	connected      atomic.Int64
	sessions       atomic.Int64
	subscriptions  atomic.Int64
	retained       atomic.Int64
	publishesIn    atomic.Uint64
	payloadIn      atomic.Uint64
	noSubscribers  atomic.Uint64
	refused        atomic.Uint64
	protocolErrors atomic.Uint64
	willsPublished atomic.Uint64
	storeErrors    atomic.Uint64
	dropped        [numDropReasons]atomic.Uint64
}

// listenerStats accumulate the counters of a listener's closed connections;
// live connections keep their own and are added at read time, so the
// publish path never touches a counter shared between connections.
type listenerStats struct {
	name                               string
	open                               atomic.Int64
	connects                           atomic.Uint64
	msgsIn, msgsOut, bytesIn, bytesOut atomic.Uint64
}

// ListenerCounters are one listener's totals.
type ListenerCounters struct {
	Open                                       int64
	Connects                                   uint64
	MessagesIn, MessagesOut, BytesIn, BytesOut uint64
}

// Counters is a snapshot of the broker's statistics.
type Counters struct {
	Uptime                                     float64 // seconds
	Connected, Sessions, Subscriptions         int64
	Retained                                   int64
	PublishesIn, PayloadBytesIn                uint64
	NoSubscribers, Refused, ProtocolErrors     uint64
	WillsPublished                             uint64
	MessagesIn, MessagesOut, BytesIn, BytesOut uint64
	Dropped                                    map[string]uint64
	Listeners                                  map[string]ListenerCounters
}

// Counters returns a snapshot of the broker's statistics.
func (b *Broker) Counters() Counters {
	c := Counters{
		Connected:      b.stats.connected.Load(),
		Sessions:       b.stats.sessions.Load(),
		Subscriptions:  b.stats.subscriptions.Load(),
		Retained:       b.stats.retained.Load(),
		PublishesIn:    b.stats.publishesIn.Load(),
		PayloadBytesIn: b.stats.payloadIn.Load(),
		NoSubscribers:  b.stats.noSubscribers.Load(),
		Refused:        b.stats.refused.Load(),
		ProtocolErrors: b.stats.protocolErrors.Load(),
		WillsPublished: b.stats.willsPublished.Load(),
		Dropped:        make(map[string]uint64, numDropReasons),
		Listeners:      make(map[string]ListenerCounters),
	}
	c.Uptime = timeSince(b.started)
	for i := range b.stats.dropped {
		c.Dropped[dropReasonNames[i]] = b.stats.dropped[i].Load()
	}
	b.listenerMu.Lock()
	for name, ls := range b.listeners {
		c.Listeners[name] = ListenerCounters{
			Open: ls.open.Load(), Connects: ls.connects.Load(),
			MessagesIn: ls.msgsIn.Load(), MessagesOut: ls.msgsOut.Load(),
			BytesIn: ls.bytesIn.Load(), BytesOut: ls.bytesOut.Load(),
		}
	}
	b.listenerMu.Unlock()
	b.connMu.Lock()
	for cl := range b.conns {
		lc := c.Listeners[cl.ls.name]
		lc.MessagesIn += cl.stats.msgsIn.Load()
		lc.MessagesOut += cl.stats.msgsOut.Load()
		lc.BytesIn += cl.stats.bytesIn.Load()
		lc.BytesOut += cl.stats.bytesOut.Load()
		c.Listeners[cl.ls.name] = lc
	}
	b.connMu.Unlock()
	for _, lc := range c.Listeners {
		c.MessagesIn += lc.MessagesIn
		c.MessagesOut += lc.MessagesOut
		c.BytesIn += lc.BytesIn
		c.BytesOut += lc.BytesOut
	}
	return c
}

// Collector exposes the broker's statistics as Prometheus metrics.
func (b *Broker) Collector() prometheus.Collector { return collector{b} }

type collector struct{ b *Broker }

var (
	descConnections = prometheus.NewDesc("edgeport_broker_connections", "Open network connections.", []string{"listener"}, nil)
	descConnects    = prometheus.NewDesc("edgeport_broker_connects_total", "Accepted MQTT connections (CONNACK success).", []string{"listener"}, nil)
	descPubIn       = prometheus.NewDesc("edgeport_broker_publishes_received_total", "PUBLISH packets received from clients.", []string{"listener"}, nil)
	descPubOut      = prometheus.NewDesc("edgeport_broker_publishes_sent_total", "PUBLISH packets sent to clients.", []string{"listener"}, nil)
	descBytesIn     = prometheus.NewDesc("edgeport_broker_bytes_received_total", "Bytes read from client connections.", []string{"listener"}, nil)
	descBytesOut    = prometheus.NewDesc("edgeport_broker_bytes_sent_total", "Bytes written to client connections.", []string{"listener"}, nil)
	descConnected   = prometheus.NewDesc("edgeport_broker_connected_sessions", "Sessions with a live connection.", nil, nil)
	descSessions    = prometheus.NewDesc("edgeport_broker_sessions", "Sessions, connected or not.", nil, nil)
	descSubs        = prometheus.NewDesc("edgeport_broker_subscriptions", "Subscriptions of all sessions.", nil, nil)
	descRetained    = prometheus.NewDesc("edgeport_broker_retained_messages", "Retained messages stored.", nil, nil)
	descPayloadIn   = prometheus.NewDesc("edgeport_broker_payload_bytes_received_total", "Payload bytes of received PUBLISH packets.", nil, nil)
	descNoSubs      = prometheus.NewDesc("edgeport_broker_publishes_no_subscribers_total", "Publishes that matched no subscription.", nil, nil)
	descDropped     = prometheus.NewDesc("edgeport_broker_dropped_messages_total", "Deliveries dropped, by reason.", []string{"reason"}, nil)
	descRefused     = prometheus.NewDesc("edgeport_broker_connections_refused_total", "CONNECTs answered with a failure.", nil, nil)
	descProtoErrors = prometheus.NewDesc("edgeport_broker_protocol_errors_total", "Connections closed for a protocol error or malformed packet.", nil, nil)
	descWills       = prometheus.NewDesc("edgeport_broker_wills_published_total", "Will messages published.", nil, nil)
	descUptime      = prometheus.NewDesc("edgeport_broker_uptime_seconds", "Seconds since the broker started.", nil, nil)
)

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnections, descConnects, descPubIn, descPubOut, descBytesIn, descBytesOut,
		descConnected, descSessions, descSubs, descRetained, descPayloadIn, descNoSubs, descDropped, descRefused,
		descProtoErrors, descWills, descUptime} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.b.Counters()
	for name, l := range s.Listeners {
		ch <- prometheus.MustNewConstMetric(descConnections, prometheus.GaugeValue, float64(l.Open), name)
		ch <- prometheus.MustNewConstMetric(descConnects, prometheus.CounterValue, float64(l.Connects), name)
		ch <- prometheus.MustNewConstMetric(descPubIn, prometheus.CounterValue, float64(l.MessagesIn), name)
		ch <- prometheus.MustNewConstMetric(descPubOut, prometheus.CounterValue, float64(l.MessagesOut), name)
		ch <- prometheus.MustNewConstMetric(descBytesIn, prometheus.CounterValue, float64(l.BytesIn), name)
		ch <- prometheus.MustNewConstMetric(descBytesOut, prometheus.CounterValue, float64(l.BytesOut), name)
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(descConnected, s.Connected)
	gauge(descSessions, s.Sessions)
	gauge(descSubs, s.Subscriptions)
	gauge(descRetained, s.Retained)
	counter(descPayloadIn, s.PayloadBytesIn)
	counter(descNoSubs, s.NoSubscribers)
	counter(descRefused, s.Refused)
	counter(descProtoErrors, s.ProtocolErrors)
	counter(descWills, s.WillsPublished)
	ch <- prometheus.MustNewConstMetric(descUptime, prometheus.GaugeValue, s.Uptime)
	for reason, n := range s.Dropped {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(n), reason)
	}
}
