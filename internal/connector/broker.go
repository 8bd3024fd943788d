package connector

import (
	"context"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// BrokerPublisher publishes straight into an in-process broker, without a
// client session and without authorization; the broker has routed (and,
// for persistent subscribers, stored) the message when Publish returns.
// Edgeport itself publishes through ClientPublisher; this one serves tests
// that need no client.
type BrokerPublisher struct {
	Broker *broker.Broker
	// ClientID is the origin the broker records for No Local.
	ClientID string
}

// Publish implements Publisher.
func (p BrokerPublisher) Publish(ctx context.Context, m *Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	bm := &broker.Message{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, Origin: p.ClientID}
	var props packet.Properties
	if m.ContentType != "" {
		props.ContentType = m.ContentType
		props.Set(packet.PropContentType)
	}
	if m.PayloadFormat != 0 {
		props.PayloadFormat = m.PayloadFormat
		props.Set(packet.PropPayloadFormat)
	}
	if m.MessageExpiry > 0 {
		props.MessageExpiry = m.MessageExpiry
		props.Set(packet.PropMessageExpiry)
		bm.Expiry = time.Now().Add(time.Duration(m.MessageExpiry) * time.Second).UnixNano()
	}
	if len(m.User) > 0 {
		props.User = m.User
		props.Set(packet.PropUserProperty)
	}
	if !props.Empty() || len(props.User) > 0 {
		bm.Props = &props
	}
	p.Broker.Publish(bm)
	return nil
}
