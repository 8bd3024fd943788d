package broker

import (
	"errors"
	"fmt"
	"time"

	"github.com/edgeport/edgeport/internal/clock"
)

// QueuePolicy says what a full session queue does with one more message.
type QueuePolicy string

// Queue policies.
const (
	DropNew    QueuePolicy = "drop-new"    // refuse the arriving message
	DropOldest QueuePolicy = "drop-oldest" // evict the oldest queued message
)

// Options are the broker's limits and behaviour. The zero value of a field
// means its default (see withDefaults); limits of -1 mean unlimited where noted.
type Options struct {
	// MaxPacketSize is the largest packet accepted from a client, advertised
	// in CONNACK. Larger packets end the connection with 0x95.
	MaxPacketSize int
	// ReceiveMaximum is how many QoS 1/2 publishes a client may have
	// unacknowledged towards the broker (advertised in CONNACK).
	ReceiveMaximum int
	// MaxInflight caps unacknowledged QoS 1/2 deliveries per session, below the
	// client's own Receive Maximum.
	MaxInflight int
	// MaxQueuedMessages bounds messages waiting per session (offline or over
	// the inflight window); QueuePolicy decides what overflow drops.
	MaxQueuedMessages int
	// MaxQueuedBytes bounds the payload bytes waiting per session (0 = unlimited).
	MaxQueuedBytes int64
	QueuePolicy    QueuePolicy
	// MaxOutboundBytes bounds encoded bytes waiting for the socket per
	// connection; QoS 0 deliveries beyond it are dropped (slow consumer).
	MaxOutboundBytes int
	// TopicAliasMaximum is how many inbound topic aliases a client may use.
	TopicAliasMaximum int
	// MaxSessionExpiry caps the session expiry a client asks for (0xFFFFFFFF = never).
	MaxSessionExpiry time.Duration
	// MaxMessageExpiry caps message expiry intervals; 0 means no cap.
	MaxMessageExpiry time.Duration
	// MaxKeepAlive caps the keep alive; a client asking more (or 0) is told
	// the server keep alive in CONNACK (5.0).
	MaxKeepAlive time.Duration
	// ConnectTimeout is how long a new socket may take to send CONNECT.
	ConnectTimeout time.Duration
	// SysInterval is how often $SYS topics are refreshed; negative disables them.
	SysInterval time.Duration
	// MaxTopicLength and MaxTopicLevels bound topic names and filters (0 = unlimited).
	MaxTopicLength int
	MaxTopicLevels int
	// MaxSubscriptionsPerClient bounds subscriptions per session (0 = unlimited).
	MaxSubscriptionsPerClient int
	// Version is reported in $SYS/broker/version.
	Version string
	// Clock drives session expiry, will delay, message expiry and
	// credential expiry (nil: the system clock). New reads it once;
	// SetOptions cannot change it. Keep-alive and the CONNECT timeout are
	// socket deadlines, which only real time drives.
	Clock clock.Clock
}

// Defaults.
const (
	DefaultMaxPacketSize     = 1 << 20
	DefaultReceiveMaximum    = 1024
	DefaultMaxInflight       = 1024
	DefaultMaxQueuedMessages = 10000
	DefaultMaxOutboundBytes  = 8 << 20
	DefaultTopicAliasMaximum = 1024
	DefaultMaxSessionExpiry  = 0xFFFFFFFF * time.Second
	DefaultMaxKeepAlive      = 65535 * time.Second
	DefaultConnectTimeout    = 10 * time.Second
	DefaultSysInterval       = 10 * time.Second
)

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.MaxPacketSize, DefaultMaxPacketSize)
	def(&o.ReceiveMaximum, DefaultReceiveMaximum)
	def(&o.MaxInflight, DefaultMaxInflight)
	def(&o.MaxQueuedMessages, DefaultMaxQueuedMessages)
	def(&o.MaxOutboundBytes, DefaultMaxOutboundBytes)
	def(&o.TopicAliasMaximum, DefaultTopicAliasMaximum)
	if o.QueuePolicy == "" {
		o.QueuePolicy = DropNew
	}
	if o.MaxSessionExpiry == 0 {
		o.MaxSessionExpiry = DefaultMaxSessionExpiry
	}
	if o.MaxKeepAlive == 0 {
		o.MaxKeepAlive = DefaultMaxKeepAlive
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.SysInterval == 0 {
		o.SysInterval = DefaultSysInterval
	}
	return o
}

// Validate reports every option that is out of range, naming the field.
func (o Options) Validate() error {
	var errs []error
	check := func(ok bool, field, msg string) {
		if !ok {
			errs = append(errs, fmt.Errorf("%s: %s", field, msg))
		}
	}
	check(o.MaxPacketSize >= 0 && o.MaxPacketSize <= 268435460, "maxPacketSize", "must be between 0 and 268435460")
	check(o.ReceiveMaximum >= 0 && o.ReceiveMaximum <= 65535, "receiveMaximum", "must be between 1 and 65535")
	check(o.MaxInflight >= 0 && o.MaxInflight <= 65535, "maxInflight", "must be between 1 and 65535")
	check(o.MaxQueuedMessages >= -1, "maxQueuedMessages", "must be positive or -1 (unlimited)")
	check(o.MaxQueuedBytes >= 0, "maxQueuedBytes", "must not be negative")
	check(o.MaxOutboundBytes >= 0, "maxOutboundBytes", "must not be negative")
	check(o.TopicAliasMaximum >= -1 && o.TopicAliasMaximum <= 65535, "topicAliasMaximum", "must be between 0 and 65535 (-1 disables aliases)")
	check(o.QueuePolicy == "" || o.QueuePolicy == DropNew || o.QueuePolicy == DropOldest, "queuePolicy", "must be drop-new or drop-oldest")
	check(o.MaxKeepAlive >= 0 && o.MaxKeepAlive <= 65535*time.Second, "maxKeepAlive", "must be between 0 and 65535s")
	check(o.ConnectTimeout >= 0, "connectTimeout", "must not be negative")
	check(o.MaxTopicLength >= 0 && o.MaxTopicLevels >= 0, "maxTopicLength/maxTopicLevels", "must not be negative")
	check(o.MaxSubscriptionsPerClient >= 0, "maxSubscriptionsPerClient", "must not be negative")
	return errors.Join(errs...)
}
