package client

import (
	"context"
	"sync/atomic"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Message is an application message, published or received. MQTT 5
// properties have their own fields; a zero field is an absent property.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool

	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	// MessageExpiry in seconds; 0 means the message does not expire.
	MessageExpiry uint32
	// PayloadFormat 1 says the payload is UTF-8 text.
	PayloadFormat byte
	User          []packet.UserProperty

	// Set on received messages only.
	Dup             bool
	SubscriptionIDs []uint32

	ack *ackHandle // nil for QoS 0 and published messages
}

// ackHandle is one handler's share of a received message's acknowledgement.
type ackHandle struct {
	ref  *ackRef
	done atomic.Bool // Ack has been called
}

// UserValue returns the value of the first user property named key.
func (m *Message) UserValue(key string) (string, bool) {
	for _, u := range m.User {
		if u.Key == key {
			return u.Value, true
		}
	}
	return "", false
}

// Ack acknowledges a received QoS 1 or 2 message: the client sends its
// PUBACK (or PUBREC) once every message received before it on the same
// connection has been acknowledged too, since MQTT requires acknowledgements
// in order of receipt. Calling it again, on a QoS 0 message or on a message
// published by this client does nothing. When the connection the message
// came on has ended, Ack does nothing either: the server redelivers the
// message on the next connection if the session survived.
//
// A message delivered to several handlers (overlapping subscriptions) is
// acknowledged when each of them has acknowledged its copy.
func (m *Message) Ack() {
	if m.ack == nil || m.ack.done.Swap(true) {
		return
	}
	if m.ack.ref.remaining.Add(-1) == 0 {
		m.ack.ref.conn.ack(m.ack.ref.entry)
	}
}

// clone copies m's fields (not its acknowledgement state).
func (m *Message) clone() *Message {
	return &Message{
		Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain,
		ContentType: m.ContentType, ResponseTopic: m.ResponseTopic, CorrelationData: m.CorrelationData,
		MessageExpiry: m.MessageExpiry, PayloadFormat: m.PayloadFormat, User: m.User,
		Dup: m.Dup, SubscriptionIDs: m.SubscriptionIDs,
	}
}

// ackRef ties the copies of one received message to its place in its
// connection's acknowledgement order.
type ackRef struct {
	conn      *conn
	entry     *ackEntry
	remaining atomic.Int32 // copies not yet acknowledged
}

// A Handler processes the messages of a subscription. Handlers run one at
// a time, in order of receipt, on the client's dispatch goroutine; ctx ends
// when the client stops. A handler that blocks delays every later message
// (QoS 0 messages beyond Options.MaxQueuedQoS0 are then dropped), so work
// that takes long belongs on the handler's own goroutines, acknowledging
// with Message.Ack when done (Subscription.ManualAck).
type Handler func(ctx context.Context, m *Message)

// toPublish fills p from m for encoding.
func (m *Message) toPublish(p *packet.Publish) {
	*p = packet.Publish{QoS: m.QoS, Retain: m.Retain, Topic: m.Topic, Payload: m.Payload}
	pr := &p.Properties
	if m.ContentType != "" {
		pr.ContentType = m.ContentType
		pr.Set(packet.PropContentType)
	}
	if m.ResponseTopic != "" {
		pr.ResponseTopic = m.ResponseTopic
		pr.Set(packet.PropResponseTopic)
	}
	if len(m.CorrelationData) > 0 {
		pr.CorrelationData = m.CorrelationData
		pr.Set(packet.PropCorrelationData)
	}
	if m.MessageExpiry > 0 {
		pr.MessageExpiry = m.MessageExpiry
		pr.Set(packet.PropMessageExpiry)
	}
	if m.PayloadFormat != 0 {
		pr.PayloadFormat = m.PayloadFormat
		pr.Set(packet.PropPayloadFormat)
	}
	pr.User = m.User
}

// fromPublish builds a received message; it aliases p's topic, payload and
// properties.
func fromPublish(p *packet.Publish) *Message {
	pr := &p.Properties
	return &Message{
		Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Dup: p.Dup,
		ContentType: pr.ContentType, ResponseTopic: pr.ResponseTopic, CorrelationData: pr.CorrelationData,
		MessageExpiry: pr.MessageExpiry, PayloadFormat: pr.PayloadFormat, User: pr.User,
		SubscriptionIDs: pr.SubscriptionIDs,
	}
}
