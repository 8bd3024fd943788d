package broker

import (
	"sync"
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
	dropQuota
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{
	"offline_qos0", "queue_full", "slow_consumer", "packet_too_large", "expired", "session_ended", "invalid_topic", "quota_exceeded",
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
	droppedQoS0    [numDropReasons]atomic.Uint64 // the QoS 0 part of dropped
}

// drop counts a message not delivered (or, for invalid_topic, not accepted).
func (s *stats) drop(reason int, qos byte) {
	s.dropped[reason].Add(1)
	if qos == 0 {
		s.droppedQoS0[reason].Add(1)
	}
}

// listenerStats accumulate the counters of a listener's closed connections;
// live connections keep their own and are added at read time, so the
// publish path never touches a counter shared between connections.
type listenerStats struct {
	name                               string
	open                               atomic.Int64
	connects                           atomic.Uint64
	msgsIn, msgsOut, bytesIn, bytesOut atomic.Uint64
	payloadIn, payloadOut              atomic.Uint64
	authzAllowed, authzDenied          atomic.Uint64

	authMu  sync.Mutex // guards auth and rejects
	auth    map[string]*authCounters
	rejects rejectCounts
}

// ListenerCounters are one listener's totals.
type ListenerCounters struct {
	Open                                       int64
	Connects                                   uint64
	MessagesIn, MessagesOut, BytesIn, BytesOut uint64
	PayloadBytesIn, PayloadBytesOut            uint64
	// Authentication outcomes by method ("anonymous" for connections
	// without credentials checked).
	Authentication map[string]AuthCounters
	// Authorization decisions on publishes and subscriptions.
	AuthorizationAllowed, AuthorizationDenied uint64
	// Rejected counts connections refused by reason: the listener's
	// limits and TLS handshakes (listener.Reject*), RejectConnectTimeout.
	Rejected map[string]uint64
}

// Counters is a snapshot of the broker's statistics. Sessions of internal
// clients (see InternalListener) are not in Connected, Sessions or
// Subscriptions; their traffic is in Listeners["internal"].
type Counters struct {
	Uptime                                     float64 // seconds
	Connected, Sessions, Subscriptions         int64
	Retained                                   int64
	PublishesIn, PayloadBytesIn                uint64
	NoSubscribers, Refused, ProtocolErrors     uint64
	WillsPublished, StoreErrors                uint64
	MessagesIn, MessagesOut, BytesIn, BytesOut uint64
	Dropped                                    map[string]uint64
	// DroppedQoS0 is the QoS 0 part of Dropped, by reason.
	DroppedQoS0 map[string]uint64
	Listeners   map[string]ListenerCounters
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
		StoreErrors:    b.stats.storeErrors.Load(),
		Dropped:        make(map[string]uint64, numDropReasons),
		DroppedQoS0:    make(map[string]uint64, numDropReasons),
		Listeners:      make(map[string]ListenerCounters),
	}
	c.Uptime = timeSince(b.started)
	for i := range b.stats.dropped {
		c.Dropped[dropReasonNames[i]] = b.stats.dropped[i].Load()
		c.DroppedQoS0[dropReasonNames[i]] = b.stats.droppedQoS0[i].Load()
	}
	b.listenerMu.Lock()
	for name, ls := range b.listeners {
		c.Listeners[name] = ListenerCounters{
			Open: ls.open.Load(), Connects: ls.connects.Load(),
			MessagesIn: ls.msgsIn.Load(), MessagesOut: ls.msgsOut.Load(),
			BytesIn: ls.bytesIn.Load(), BytesOut: ls.bytesOut.Load(),
			PayloadBytesIn: ls.payloadIn.Load(), PayloadBytesOut: ls.payloadOut.Load(),
			AuthorizationAllowed: ls.authzAllowed.Load(), AuthorizationDenied: ls.authzDenied.Load(),
			Authentication: ls.authSnapshot(),
			Rejected:       ls.rejectSnapshot(),
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
		lc.PayloadBytesIn += cl.stats.payloadIn.Load()
		lc.PayloadBytesOut += cl.stats.payloadOut.Load()
		lc.AuthorizationAllowed += cl.stats.authzAllowed.Load()
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

// Collector exposes the broker's statistics as Prometheus metrics. The
// families parallel Azure IoT Operations' aio_broker_* metrics where the
// concept is the same (docs/metrics.md lists them all).
func (b *Broker) Collector() prometheus.Collector { return collector{b} }

type collector struct{ b *Broker }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	// Per listener.
	descConnections = desc("edgeport_broker_connections", "Open network connections.", "listener")
	descConnects    = desc("edgeport_broker_connects_total", "Accepted MQTT connections (CONNACK success).", "listener")
	descPubIn       = desc("edgeport_broker_publishes_received_total", "PUBLISH packets received from clients.", "listener")
	descPubOut      = desc("edgeport_broker_publishes_sent_total", "PUBLISH packets sent to clients, one per delivery; acknowledgements are not counted.", "listener")
	descBytesIn     = desc("edgeport_broker_bytes_received_total", "Bytes read from client connections.", "listener")
	descBytesOut    = desc("edgeport_broker_bytes_sent_total", "Bytes written to client connections.", "listener")
	descPayloadIn   = desc("edgeport_broker_payload_bytes_received_total", "Payload bytes of PUBLISH packets accepted from clients, without packet overhead or properties.", "listener")
	descPayloadOut  = desc("edgeport_broker_payload_bytes_sent_total", "Payload bytes of PUBLISH packets sent, without packet overhead or properties.", "listener")
	descAuthnOK     = desc("edgeport_broker_authentication_successes_total", "Successful client authentications.", "listener", "method")
	descAuthnDeny   = desc("edgeport_broker_authentication_deny_total", "Client authentications refused (credentials checked and rejected).", "listener", "method")
	descAuthnFail   = desc("edgeport_broker_authentication_failures_total", "Client authentications that could not be performed (unsupported method, broken exchange).", "listener", "method")
	descAuthzAllow  = desc("edgeport_broker_authorization_allow_total", "Publishes and subscriptions authorized.", "listener")
	descAuthzDeny   = desc("edgeport_broker_authorization_deny_total", "Publishes and subscriptions denied by authorization.", "listener")
	descRejected    = desc("edgeport_broker_connections_rejected_total", "Connections refused before CONNECT, by reason: listener_limit, total_limit, address_limit, rate_limit, tls_handshake, connect_timeout.", "listener", "reason")

	// Broker-wide.
	descConnected    = desc("edgeport_broker_connected_sessions", "Sessions with a live connection.")
	descSessions     = desc("edgeport_broker_total_sessions", "Sessions, connected or not (persistent sessions of offline clients included).")
	descSubs         = desc("edgeport_broker_total_subscriptions", "Subscriptions of all sessions.")
	descRetained     = desc("edgeport_broker_store_retained_messages", "Retained messages stored.")
	descNoSubs       = desc("edgeport_broker_publishes_no_subscribers_total", "Publishes that matched no subscription.")
	descDropped      = desc("edgeport_broker_dropped_messages_total", "Messages not delivered (or, for invalid_topic, not accepted), by reason.", "reason")
	descQoS0Dropped  = desc("edgeport_broker_qos0_messages_dropped_total", "QoS 0 messages dropped for any reason; incoming: refused from a publisher, outgoing: not delivered to a subscriber.", "direction")
	descBackpressure = desc("edgeport_broker_backpressure_packets_rejected_total", "Deliveries rejected because a session queue was full or a connection's outbound buffer was (queue_full + slow_consumer drops).")
	descRefused      = desc("edgeport_broker_connections_refused_total", "CONNECTs answered with a failure.")
	descProtoErrors  = desc("edgeport_broker_protocol_errors_total", "Connections closed for a protocol error or malformed packet.")
	descWills        = desc("edgeport_broker_wills_published_total", "Will messages published.")
	descStoreErrors  = desc("edgeport_broker_store_errors_total", "Durable store commits that failed (quota exceeded included).")
	descUptime       = desc("edgeport_broker_uptime_seconds", "Seconds since the broker started.")
)

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnections, descConnects, descPubIn, descPubOut, descBytesIn, descBytesOut,
		descPayloadIn, descPayloadOut, descAuthnOK, descAuthnDeny, descAuthnFail, descAuthzAllow, descAuthzDeny, descRejected,
		descConnected, descSessions, descSubs, descRetained, descNoSubs, descDropped, descQoS0Dropped, descBackpressure,
		descRefused, descProtoErrors, descWills, descStoreErrors, descUptime} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.b.Counters()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for name, l := range s.Listeners {
		gauge(descConnections, float64(l.Open), name)
		counter(descConnects, l.Connects, name)
		counter(descPubIn, l.MessagesIn, name)
		counter(descPubOut, l.MessagesOut, name)
		counter(descBytesIn, l.BytesIn, name)
		counter(descBytesOut, l.BytesOut, name)
		counter(descPayloadIn, l.PayloadBytesIn, name)
		counter(descPayloadOut, l.PayloadBytesOut, name)
		counter(descAuthzAllow, l.AuthorizationAllowed, name)
		counter(descAuthzDeny, l.AuthorizationDenied, name)
		for reason, n := range l.Rejected {
			counter(descRejected, n, name, reason)
		}
		for method, a := range l.Authentication {
			counter(descAuthnOK, a.Successes, name, method)
			counter(descAuthnDeny, a.Deny, name, method)
			counter(descAuthnFail, a.Failures, name, method)
		}
	}
	gauge(descConnected, float64(s.Connected))
	gauge(descSessions, float64(s.Sessions))
	gauge(descSubs, float64(s.Subscriptions))
	gauge(descRetained, float64(s.Retained))
	counter(descNoSubs, s.NoSubscribers)
	counter(descRefused, s.Refused)
	counter(descProtoErrors, s.ProtocolErrors)
	counter(descWills, s.WillsPublished)
	counter(descStoreErrors, s.StoreErrors)
	gauge(descUptime, s.Uptime)
	var qos0In, qos0Out uint64
	for reason, n := range s.Dropped {
		counter(descDropped, n, reason)
	}
	for reason, n := range s.DroppedQoS0 {
		if reason == dropReasonNames[dropInvalidTopic] {
			qos0In += n
		} else {
			qos0Out += n
		}
	}
	counter(descQoS0Dropped, qos0In, "incoming")
	counter(descQoS0Dropped, qos0Out, "outgoing")
	counter(descBackpressure, s.Dropped[dropReasonNames[dropQueueFull]]+s.Dropped[dropReasonNames[dropSlowConsumer]])
}
