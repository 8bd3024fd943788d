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

// Options are the broker's limits and behaviour.
//
// One rule for zero and "unlimited", in every source of these limits:
//
//   - In Options (the Go API), a zero field means its default, always: the
//     zero Options is the default broker. Where a limit can be lifted,
//     Unlimited (-1; any negative duration) lifts it: no limit, or the
//     feature off (TopicAliasMaximum, SysInterval). Some defaults are
//     themselves "no limit" (MaxQueuedBytes, MaxMessageExpiry, topic and
//     subscription limits): see the table in Bounds.
//   - In the Broker resource and the serve flags, where a value is always
//     written, an omitted field takes the default and 0 lifts the limit
//     where it can be lifted; elsewhere 0 is out of range. FromUser turns
//     such a value into the Options value.
//
// The defaults and bounds of every numeric limit are defined once, in
// Bounds; Validate, the Broker resource (internal/config) and the serve
// flags (internal/cli) all read them from there.
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
	// MaxQueuedBytes bounds the payload bytes waiting per session (default: no limit).
	MaxQueuedBytes int64
	QueuePolicy    QueuePolicy
	// MaxOutboundBytes bounds encoded bytes waiting for the socket per
	// connection; QoS 0 deliveries beyond it are dropped (slow consumer).
	MaxOutboundBytes int
	// TopicAliasMaximum is how many inbound topic aliases a client may use;
	// Unlimited disables aliases.
	TopicAliasMaximum int
	// MaxSessionExpiry caps the session expiry a client asks for (0xFFFFFFFF = never).
	MaxSessionExpiry time.Duration
	// MaxMessageExpiry caps message expiry intervals (default: no cap).
	MaxMessageExpiry time.Duration
	// MaxKeepAlive caps the keep alive; a client asking more (or 0) is told
	// the server keep alive in CONNACK (5.0).
	MaxKeepAlive time.Duration
	// ConnectTimeout is how long a new socket may take to send CONNECT.
	ConnectTimeout time.Duration
	// SysInterval is how often $SYS topics are refreshed; negative disables them.
	SysInterval time.Duration
	// MaxTopicLength and MaxTopicLevels bound topic names and filters (default: no limit).
	MaxTopicLength int
	MaxTopicLevels int
	// MaxSubscriptionsPerClient bounds subscriptions per session (default: no limit).
	MaxSubscriptionsPerClient int
	// Version is reported in $SYS/broker/version.
	Version string
	// Clock drives session expiry, will delay, message expiry and
	// credential expiry (nil: the system clock). New reads it once;
	// SetOptions cannot change it. Keep-alive and the CONNECT timeout are
	// socket deadlines, which only real time drives.
	Clock clock.Clock
}

// Defaults, in Options' units.
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

// Unlimited lifts a limit in Options (see Options).
const Unlimited = -1

// Bound is one numeric limit as users write it: its Broker resource field
// (relative to spec), its serve flag ("" when it has none), its default,
// the range of values that set it, and what 0 means. Durations are in
// whole seconds (Options take any positive duration up to Max seconds).
type Bound struct {
	Field    string
	Flag     string
	Default  int64 // 0 when the default is Zero
	Min, Max int64
	// Zero is what 0 means when it lifts the limit ("no limit", "off");
	// "" when 0 is out of range.
	Zero string
}

// Liftable reports whether 0 (users) or Unlimited (Options) lifts the limit.
func (b Bound) Liftable() bool { return b.Zero != "" }

const noLimit = "no limit"

// Ranges of the limits; the packet size allows a 4-byte remaining length
// plus the fixed header.
var (
	BoundMaxPacketSize     = Bound{"advanced.clients.maxPacketSizeBytes", "max-packet-size", DefaultMaxPacketSize, 16, 268435460, ""}
	BoundReceiveMaximum    = Bound{"advanced.clients.maxReceiveMaximum", "", DefaultReceiveMaximum, 1, 65535, ""}
	BoundMaxInflight       = Bound{"advanced.clients.maxInflight", "max-inflight", DefaultMaxInflight, 1, 65535, ""}
	BoundMaxQueuedMessages = Bound{"advanced.clients.subscriberQueueLimit.length", "max-queued-messages", DefaultMaxQueuedMessages, 1, 1 << 30, ""}
	BoundMaxQueuedBytes    = Bound{"advanced.clients.subscriberQueueLimit.maxBytes", "max-queued-bytes", 0, 1, 1 << 40, noLimit}
	BoundMaxOutboundBytes  = Bound{"advanced.clients.maxOutboundBytes", "", DefaultMaxOutboundBytes, 1024, 1 << 30, ""}
	BoundTopicAliasMaximum = Bound{"advanced.clients.topicAliasMaximum", "", DefaultTopicAliasMaximum, 1, 65535, "off"}
	BoundMaxSessionExpiry  = Bound{"advanced.clients.maxSessionExpirySeconds", "", int64(DefaultMaxSessionExpiry / time.Second), 1, 0xFFFFFFFF, ""}
	BoundMaxMessageExpiry  = Bound{"advanced.clients.maxMessageExpirySeconds", "", 0, 1, 0xFFFFFFFF, noLimit}
	BoundMaxKeepAlive      = Bound{"advanced.clients.maxKeepAliveSeconds", "", int64(DefaultMaxKeepAlive / time.Second), 1, 65535, ""}
	BoundConnectTimeout    = Bound{"advanced.clients.connectTimeoutSeconds", "", int64(DefaultConnectTimeout / time.Second), 1, 3600, ""}
	BoundSysInterval       = Bound{"diagnostics.sysIntervalSeconds", "sys-interval", int64(DefaultSysInterval / time.Second), 1, 86400, "off"}
	BoundMaxTopicLength    = Bound{"advanced.topics.maxLength", "", 0, 1, 65535, noLimit}
	BoundMaxTopicLevels    = Bound{"advanced.topics.maxLevels", "", 0, 1, 65535, noLimit}
	BoundMaxSubscriptions  = Bound{"advanced.clients.maxSubscriptionsPerClient", "", 0, 1, 1 << 30, noLimit}
)

// Bounds lists every numeric limit, for documentation and tests.
func Bounds() []Bound {
	return []Bound{BoundMaxPacketSize, BoundReceiveMaximum, BoundMaxInflight, BoundMaxQueuedMessages,
		BoundMaxQueuedBytes, BoundMaxOutboundBytes, BoundTopicAliasMaximum, BoundMaxSessionExpiry,
		BoundMaxMessageExpiry, BoundMaxKeepAlive, BoundConnectTimeout, BoundSysInterval,
		BoundMaxTopicLength, BoundMaxTopicLevels, BoundMaxSubscriptions}
}

// Check reports whether v, as a user wrote it (0 lifts a Liftable limit),
// is in range, as an error naming the range.
func (b Bound) Check(v int64) error {
	if v == 0 && b.Liftable() || v >= b.Min && v <= b.Max {
		return nil
	}
	if b.Liftable() {
		return fmt.Errorf("must be between %d and %d, or 0 (%s)", b.Min, b.Max, b.Zero)
	}
	return fmt.Errorf("must be between %d and %d", b.Min, b.Max)
}

// FromUser turns a value as users write it into its Options value: 0
// lifts a Liftable limit (Unlimited); any other value is itself.
func (b Bound) FromUser(v int64) int64 {
	if v == 0 && b.Liftable() {
		return Unlimited
	}
	return v
}

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
	// Limits whose default is none say so explicitly once defaulted.
	def(&o.MaxTopicLength, Unlimited)
	def(&o.MaxTopicLevels, Unlimited)
	def(&o.MaxSubscriptionsPerClient, Unlimited)
	if o.MaxQueuedBytes == 0 {
		o.MaxQueuedBytes = Unlimited
	}
	// Any negative duration lifts; one value says so.
	if o.MaxMessageExpiry <= 0 {
		o.MaxMessageExpiry = Unlimited
	}
	if o.SysInterval < 0 {
		o.SysInterval = Unlimited
	}
	return o
}

// Validate reports every option that is out of its Bound, naming the field
// as the Broker resource does. Zero is always valid (the default);
// Unlimited is valid where the limit can be lifted.
func (o Options) Validate() error {
	var errs []error
	check := func(b Bound, v int64) {
		switch {
		case v == 0:
		case v < 0 && b.Liftable():
		case v >= b.Min && v <= b.Max:
		default:
			msg := fmt.Sprintf("%d must be between %d and %d", v, b.Min, b.Max)
			if b.Liftable() {
				msg += fmt.Sprintf(", or %d (%s)", Unlimited, b.Zero)
			}
			errs = append(errs, fmt.Errorf("%s: %s", b.Field, msg))
		}
	}
	// Durations take any positive value up to the bound's seconds.
	dur := func(b Bound, d time.Duration) {
		switch {
		case d == 0:
		case d < 0 && b.Liftable():
		case d > 0 && d <= time.Duration(b.Max)*time.Second:
		default:
			msg := fmt.Sprintf("%v must be positive and at most %ds", d, b.Max)
			if b.Liftable() {
				msg += ", or negative (" + b.Zero + ")"
			}
			errs = append(errs, fmt.Errorf("%s: %s", b.Field, msg))
		}
	}
	check(BoundMaxPacketSize, int64(o.MaxPacketSize))
	check(BoundReceiveMaximum, int64(o.ReceiveMaximum))
	check(BoundMaxInflight, int64(o.MaxInflight))
	// MaxQueuedMessages has a finite default, and may still be lifted in
	// the Go API (a test or an embedding program), not by users.
	if o.MaxQueuedMessages != Unlimited {
		check(BoundMaxQueuedMessages, int64(o.MaxQueuedMessages))
	}
	check(BoundMaxQueuedBytes, o.MaxQueuedBytes)
	check(BoundMaxOutboundBytes, int64(o.MaxOutboundBytes))
	check(BoundTopicAliasMaximum, int64(o.TopicAliasMaximum))
	dur(BoundMaxSessionExpiry, o.MaxSessionExpiry)
	dur(BoundMaxMessageExpiry, o.MaxMessageExpiry)
	dur(BoundMaxKeepAlive, o.MaxKeepAlive)
	dur(BoundConnectTimeout, o.ConnectTimeout)
	dur(BoundSysInterval, o.SysInterval)
	check(BoundMaxTopicLength, int64(o.MaxTopicLength))
	check(BoundMaxTopicLevels, int64(o.MaxTopicLevels))
	check(BoundMaxSubscriptions, int64(o.MaxSubscriptionsPerClient))
	if o.QueuePolicy != "" && o.QueuePolicy != DropNew && o.QueuePolicy != DropOldest {
		errs = append(errs, fmt.Errorf("queuePolicy: %q must be drop-new or drop-oldest", o.QueuePolicy))
	}
	return errors.Join(errs...)
}
