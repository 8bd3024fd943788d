// Package stage holds what every dataflow source and destination shares:
// the message that travels a flow, the Source and Destination contracts,
// and the error classes that decide between retrying and dead-lettering.
package stage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/edgeport/edgeport/internal/config"
)

// UserProperty is one MQTT 5 user property (or Kafka header); order and
// repeated keys are kept.
type UserProperty struct {
	Key, Value string
}

// Message is one message in a flow. Sources fill it; the transformation
// replaces Payload (and may set Topic and properties); destinations read it
// and must not keep it past Send.
type Message struct {
	// Topic is the MQTT topic or Kafka topic the message came from; after
	// the transformation it may be changed by $metadata.topic.
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// MQTT 5 properties carried end to end.
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	PayloadFormat   byte // 1: UTF-8 text
	UserProperties  []UserProperty
	// Key is the Kafka record key (from a Kafka source).
	Key []byte
	// Expiry is when the message stops being worth delivering; zero: never.
	Expiry time.Time
	// Received is when the flow received the message, for the end-to-end
	// latency and for file timestamps.
	Received time.Time
	// SourceTopic is the topic as received, kept for ${inputTopic} even
	// when the transformation changed Topic.
	SourceTopic string
}

// Property returns the first user property named k.
func (m *Message) Property(k string) (string, bool) {
	for _, p := range m.UserProperties {
		if p.Key == k {
			return p.Value, true
		}
	}
	return "", false
}

// Clone returns a copy that shares nothing mutable with m.
func (m *Message) Clone() *Message {
	c := *m
	c.Payload = append([]byte(nil), m.Payload...)
	c.UserProperties = append([]UserProperty(nil), m.UserProperties...)
	c.CorrelationData = append([]byte(nil), m.CorrelationData...)
	c.Key = append([]byte(nil), m.Key...)
	return &c
}

// Delivery is a message from a source with its acknowledgement. Ack tells
// the source the message is done with (delivered, filtered, expired or
// dead-lettered); until then the source keeps it and redelivers it if the
// flow restarts. Ack is called at most once, from any goroutine.
type Delivery struct {
	Msg *Message
	Ack func()
}

// Source produces deliveries. Run calls deliver for every message, in the
// order received per topic, until ctx ends or the source fails for good;
// deliver blocks while the flow is busy, which is the backpressure that
// leaves messages in the source's buffer (the broker session, the Kafka
// log). Run returns nil when ctx ended. Messages not acknowledged when Run
// returns are redelivered by the next Run.
type Source interface {
	Run(ctx context.Context, deliver func(context.Context, Delivery) error) error
}

// Subscriber is implemented by a source that receives only what is
// published after a step Run takes first (an MQTT subscription in a new
// session). Subscribed is closed once that step is done; the flow reports
// Ready only then, so that a message published after Ready is never
// missed. A source without it is taken as receiving from the start of Run.
type Subscriber interface {
	Subscribed() <-chan struct{}
}

// Destination accepts messages. Send returns nil once the destination
// accepted every message of the batch (durably, as far as it can say);
// an error means none may be assumed delivered, and the flow resends the
// batch (at least once). Errors wrapped with Permanent are not retried.
// Send is called from one goroutine at a time; Close releases the
// destination's resources, flushing what it buffered.
type Destination interface {
	Send(ctx context.Context, batch []*Message) error
	Close(ctx context.Context) error
}

// Batching is how much a destination wants per Send.
type Batching struct {
	MaxMessages int
	MaxBytes    int
	Latency     time.Duration // how long to wait for more after the first
}

// BatchingOf is how a destination batches under an endpoint's batching
// settings (defaults applied): one message at a time when batching is
// Disabled or allows only one message.
func BatchingOf(b config.Batching) Batching {
	if b.Mode == "Disabled" || *b.MaxMessages <= 1 {
		return Batching{MaxMessages: 1}
	}
	return Batching{MaxMessages: *b.MaxMessages, MaxBytes: *b.MaxBytes, Latency: time.Duration(*b.LatencyMs) * time.Millisecond}
}

// Batcher is implemented by destinations that take batches; others get one
// message per Send.
type Batcher interface {
	Batching() Batching
}

// ErrPermanent marks an error that retrying cannot cure (a record too
// large, a 400 Bad Request, an invalid topic): the message is dead-lettered.
var ErrPermanent = errors.New("rejected permanently")

type permanent struct{ err error }

func (p permanent) Error() string        { return p.err.Error() }
func (p permanent) Unwrap() []error      { return []error{p.err, ErrPermanent} }
func (p permanent) Is(target error) bool { return target == ErrPermanent }

// Permanent wraps err so that errors.Is(err, ErrPermanent) holds.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// Permanentf formats a permanent error.
func Permanentf(format string, args ...any) error { return Permanent(fmt.Errorf(format, args...)) }

// ErrorKind classifies an error for the metrics' kind label.
type ErrorKind string

// Error kinds.
const (
	KindTransform   ErrorKind = "transform"   // the mapping failed on the message
	KindDestination ErrorKind = "destination" // the destination did not accept it
	KindRejected    ErrorKind = "rejected"    // the destination rejected it permanently
	KindSource      ErrorKind = "source"      // the source failed
	KindSchema      ErrorKind = "schema"      // the message does not match the flow's schema
)
