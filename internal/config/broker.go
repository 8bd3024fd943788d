package config

import (
	"strconv"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
)

// BrokerSpec is the Broker kind: the broker's limits, persistence and
// diagnostics. Field names follow Azure IoT Operations' Broker resource
// (spec.advanced.clients) where the concept is the same; the rest is
// Edgeport's. There is one Broker, named "default"; without it the limits
// given to `edgeport serve` apply.
type BrokerSpec struct {
	Advanced    BrokerAdvanced    `json:"advanced"`
	Persistence BrokerPersistence `json:"persistence"`
	Diagnostics BrokerDiagnostics `json:"diagnostics"`
	StateStore  StateStoreLimits  `json:"stateStore"`
	// Cluster configures cluster mode (Edgeport); nil: the serve flags'.
	Cluster *BrokerCluster `json:"cluster,omitempty"`
}

// StateStoreLimits are the state store's quotas (Edgeport): a SET that would
// exceed them is answered with the protocol's quota-exceeded error. 0:
// unlimited. A change applies to the next request.
type StateStoreLimits struct {
	MaxKeys  int64 `json:"maxKeys"`
	MaxBytes int64 `json:"maxBytes"`
}

// BrokerAdvanced groups the client, topic and connection limits.
type BrokerAdvanced struct {
	Clients     ClientLimits     `json:"clients"`
	Topics      TopicLimits      `json:"topics"`
	Connections ConnectionLimits `json:"connections"`
}

// ConnectionLimits protect the broker from too many or too eager
// connections (Edgeport). They cover every listener port together, the
// built-in ones included, and are checked when a socket is accepted, before
// TLS or MQTT; a change applies to new connections. 0: unlimited.
type ConnectionLimits struct {
	// MaxConnections bounds open connections over all listeners.
	MaxConnections int `json:"maxConnections"`
	// MaxConnectionsPerAddress bounds open connections from one IP address.
	MaxConnectionsPerAddress int `json:"maxConnectionsPerAddress"`
	// ConnectRatePerSecond bounds new connections accepted per second over
	// all listeners; ConnectBurst is how many may arrive at once (0: the
	// rate).
	ConnectRatePerSecond int `json:"connectRatePerSecond"`
	ConnectBurst         int `json:"connectBurst"`
}

// ClientLimits bound what one client may do. A change applies to the next
// operation it governs; what a connection was told in CONNACK stays in
// force for that connection.
type ClientLimits struct {
	// MaxSessionExpirySeconds caps the session expiry a client asks for
	// (4294967295: sessions may live forever).
	MaxSessionExpirySeconds *int64 `json:"maxSessionExpirySeconds"`
	// MaxMessageExpirySeconds caps message expiry intervals; 0: no cap.
	MaxMessageExpirySeconds int64 `json:"maxMessageExpirySeconds"`
	// MaxPacketSizeBytes is the largest packet accepted from a client.
	MaxPacketSizeBytes *int `json:"maxPacketSizeBytes"`
	// MaxReceiveMaximum is the Receive Maximum the broker advertises: how
	// many QoS 1/2 publishes a client may have unacknowledged towards it.
	MaxReceiveMaximum *int `json:"maxReceiveMaximum"`
	// MaxKeepAliveSeconds caps the keep alive a client asks for.
	MaxKeepAliveSeconds *int `json:"maxKeepAliveSeconds"`
	// SubscriberQueueLimit bounds messages waiting per session.
	SubscriberQueueLimit QueueLimit `json:"subscriberQueueLimit"`
	// MaxInflight caps unacknowledged QoS 1/2 deliveries per session
	// (Edgeport).
	MaxInflight *int `json:"maxInflight"`
	// MaxOutboundBytes bounds encoded bytes waiting for one client's
	// socket; QoS 0 beyond it is dropped (Edgeport).
	MaxOutboundBytes *int `json:"maxOutboundBytes"`
	// TopicAliasMaximum is how many topic aliases a client may use towards
	// the broker; 0 disables them (Edgeport).
	TopicAliasMaximum *int `json:"topicAliasMaximum"`
	// MaxSubscriptionsPerClient bounds subscriptions per session; 0:
	// unlimited (Edgeport).
	MaxSubscriptionsPerClient int `json:"maxSubscriptionsPerClient"`
	// ConnectTimeoutSeconds is how long a new connection may take to send
	// CONNECT, and a TLS handshake to complete (Edgeport).
	ConnectTimeoutSeconds *int `json:"connectTimeoutSeconds"`
}

// Subscriber queue strategies, as in Azure IoT Operations.
const (
	QueueStrategyNone       = "None"       // a full queue refuses the arriving message
	QueueStrategyDropOldest = "DropOldest" // a full queue evicts its oldest message
)

// QueueLimit bounds a session's queue.
type QueueLimit struct {
	Length   *int64 `json:"length"`
	Strategy string `json:"strategy"`
	// MaxBytes bounds the payload bytes queued per session; 0: unlimited
	// (Edgeport).
	MaxBytes int64 `json:"maxBytes"`
}

// TopicLimits bound topic names and filters; 0: unlimited.
type TopicLimits struct {
	MaxLength int `json:"maxLength"`
	MaxLevels int `json:"maxLevels"`
}

// Sync policies of the store (persistence.syncPolicy).
const (
	SyncAlways = "always" // fsync every commit
	SyncBatch  = "batch"  // group commit: fsync batched every few milliseconds
	SyncNone   = "none"   // leave flushing to the operating system
)

// BrokerPersistence configures durable storage.
type BrokerPersistence struct {
	SyncPolicy string `json:"syncPolicy"`
}

// BrokerDiagnostics configures the broker's self-reporting.
type BrokerDiagnostics struct {
	// SysIntervalSeconds is how often $SYS topics are refreshed; 0
	// disables them.
	SysIntervalSeconds *int `json:"sysIntervalSeconds"`
	// OTLP pushes metrics and logs to a collector (Edgeport).
	OTLP *BrokerOTLP `json:"otlp,omitempty"`
}

// Broker defaults, in the resource's units: the broker package's, which
// defines every limit's default and range once (broker.Bounds).
const (
	DefaultMaxSessionExpirySeconds = int64(broker.DefaultMaxSessionExpiry / time.Second)
	DefaultMaxPacketSizeBytes      = broker.DefaultMaxPacketSize
	DefaultMaxReceiveMaximum       = broker.DefaultReceiveMaximum
	DefaultMaxKeepAliveSeconds     = int(broker.DefaultMaxKeepAlive / time.Second)
	DefaultQueueLength             = int64(broker.DefaultMaxQueuedMessages)
	DefaultMaxInflight             = broker.DefaultMaxInflight
	DefaultMaxOutboundBytes        = broker.DefaultMaxOutboundBytes
	DefaultTopicAliasMaximum       = broker.DefaultTopicAliasMaximum
	DefaultConnectTimeoutSeconds   = int(broker.DefaultConnectTimeout / time.Second)
	DefaultSysIntervalSeconds      = int(broker.DefaultSysInterval / time.Second)
)

func brokerKind() KindDef {
	d := Define("Broker", "brokers", []string{"bk"}, defaultBroker, validateBroker)
	d.Singleton = "default"
	d.Columns = []Column{
		{"MAX-PACKET", func(o *Object) string {
			return itoa(o.Spec.(*BrokerSpec).Advanced.Clients.MaxPacketSizeBytes)
		}},
		{"RECEIVE-MAX", func(o *Object) string {
			return itoa(o.Spec.(*BrokerSpec).Advanced.Clients.MaxReceiveMaximum)
		}},
		{"QUEUE", func(o *Object) string {
			q := o.Spec.(*BrokerSpec).Advanced.Clients.SubscriberQueueLimit
			return itoa(q.Length) + "/" + q.Strategy
		}},
	}
	return d
}

func defaultBroker(s *BrokerSpec) {
	c := &s.Advanced.Clients
	setDefault(&c.MaxSessionExpirySeconds, DefaultMaxSessionExpirySeconds)
	setDefault(&c.MaxPacketSizeBytes, DefaultMaxPacketSizeBytes)
	setDefault(&c.MaxReceiveMaximum, DefaultMaxReceiveMaximum)
	setDefault(&c.MaxKeepAliveSeconds, DefaultMaxKeepAliveSeconds)
	setDefault(&c.SubscriberQueueLimit.Length, DefaultQueueLength)
	if c.SubscriberQueueLimit.Strategy == "" {
		c.SubscriberQueueLimit.Strategy = QueueStrategyNone
	}
	setDefault(&c.MaxInflight, DefaultMaxInflight)
	setDefault(&c.MaxOutboundBytes, DefaultMaxOutboundBytes)
	setDefault(&c.TopicAliasMaximum, DefaultTopicAliasMaximum)
	setDefault(&c.ConnectTimeoutSeconds, DefaultConnectTimeoutSeconds)
	if s.Persistence.SyncPolicy == "" {
		s.Persistence.SyncPolicy = SyncBatch
	}
	setDefault(&s.Diagnostics.SysIntervalSeconds, DefaultSysIntervalSeconds)
	defaultBrokerOTLP(s.Diagnostics.OTLP)
	defaultBrokerCluster(s.Cluster)
}

func validateBroker(s *BrokerSpec, errs *Errors) {
	c := &s.Advanced.Clients
	bound := func(b broker.Bound, v int64) {
		if err := b.Check(v); err != nil {
			errs.Add("spec."+b.Field, "%s", err.Error())
		}
	}
	bound(broker.BoundMaxSessionExpiry, *c.MaxSessionExpirySeconds)
	bound(broker.BoundMaxMessageExpiry, c.MaxMessageExpirySeconds)
	bound(broker.BoundMaxPacketSize, int64(*c.MaxPacketSizeBytes))
	bound(broker.BoundReceiveMaximum, int64(*c.MaxReceiveMaximum))
	bound(broker.BoundMaxKeepAlive, int64(*c.MaxKeepAliveSeconds))
	bound(broker.BoundMaxQueuedMessages, *c.SubscriberQueueLimit.Length)
	bound(broker.BoundMaxQueuedBytes, c.SubscriberQueueLimit.MaxBytes)
	oneOf(errs, "spec.advanced.clients.subscriberQueueLimit.strategy", c.SubscriberQueueLimit.Strategy, QueueStrategyNone, QueueStrategyDropOldest)
	bound(broker.BoundMaxInflight, int64(*c.MaxInflight))
	bound(broker.BoundMaxOutboundBytes, int64(*c.MaxOutboundBytes))
	bound(broker.BoundTopicAliasMaximum, int64(*c.TopicAliasMaximum))
	bound(broker.BoundMaxSubscriptions, int64(c.MaxSubscriptionsPerClient))
	bound(broker.BoundConnectTimeout, int64(*c.ConnectTimeoutSeconds))
	bound(broker.BoundMaxTopicLength, int64(s.Advanced.Topics.MaxLength))
	bound(broker.BoundMaxTopicLevels, int64(s.Advanced.Topics.MaxLevels))
	cl := &s.Advanced.Connections
	between(errs, "spec.advanced.connections.maxConnections", cl.MaxConnections, 0, 1<<30)
	between(errs, "spec.advanced.connections.maxConnectionsPerAddress", cl.MaxConnectionsPerAddress, 0, 1<<30)
	between(errs, "spec.advanced.connections.connectRatePerSecond", cl.ConnectRatePerSecond, 0, 1<<30)
	between(errs, "spec.advanced.connections.connectBurst", cl.ConnectBurst, 0, 1<<30)
	oneOf(errs, "spec.persistence.syncPolicy", s.Persistence.SyncPolicy, SyncAlways, SyncBatch, SyncNone)
	bound(broker.BoundSysInterval, int64(*s.Diagnostics.SysIntervalSeconds))
	validateBrokerOTLP(s.Diagnostics.OTLP, errs)
	validateBrokerCluster(s.Cluster, errs)
	between(errs, "spec.stateStore.maxKeys", s.StateStore.MaxKeys, 0, 1<<40)
	between(errs, "spec.stateStore.maxBytes", s.StateStore.MaxBytes, 0, 1<<50)
}

func itoa[T int | int64](v *T) string {
	if v == nil {
		return ""
	}
	return strconv.FormatInt(int64(*v), 10)
}

// setDefault fills an unset field. Fields with a non-zero default are
// pointers so that an explicit 0 is validated rather than replaced.
func setDefault[T any](v **T, d T) {
	if *v == nil {
		*v = &d
	}
}

func between[T int | int64](errs *Errors, path string, v, lo, hi T) {
	if v < lo || v > hi {
		errs.Add(path, "must be between %d and %d", lo, hi)
	}
}

func oneOf(errs *Errors, path, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	errs.Add(path, "must be one of %s (got %q)", joinOr(allowed), v)
}

func joinOr(s []string) string {
	out := ""
	for i, v := range s {
		switch {
		case i == 0:
		case i == len(s)-1:
			out += " or "
		default:
			out += ", "
		}
		out += v
	}
	return out
}
