package statestore

import (
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// The state store is an in-process service of the broker (broker.Serve):
// the router hands it every message published to the invoke topic, on the
// publisher's goroutine, once the publisher was authorized to publish
// there and its subscribers got it. The broker acknowledges the request
// (QoS 1) as it would for any subscriber. A GET is answered right there,
// from the durable view (view.go); every other request goes to the
// executor. Answers and notifications are broker.Messages published with
// Publish, which routes them to whoever subscribed to the response topic
// (the requester) or, for notifications, to the registering client's
// session: each is encoded once, straight into the receiving connection's
// outbound buffer. There is no session of the state store, no pipe, no
// second PUBLISH through the broker and no acknowledgement between the two.

// chunk is what one executor batch publishes once it is durable: responses
// and notifications, in order.
type chunk struct {
	msgs []*broker.Message
	size int // bytes of payload and topics, to bound a batch
}

func (c *chunk) add(m *broker.Message) {
	c.msgs = append(c.msgs, m)
	c.size += len(m.Topic) + len(m.Payload)
}

func (c *chunk) reset() {
	clear(c.msgs)
	c.msgs = c.msgs[:0]
	c.size = 0
}

// publish hands a batch's answers to the broker, in order, and recycles
// the chunk. The executor holds no lock here: Publish takes the receiving
// sessions' locks, and may wait for the broker's store like any publisher.
func (s *Server) publish(c *chunk) {
	for _, m := range c.msgs {
		s.b.Publish(m)
	}
	s.putChunk(c)
}

// outMsg is one answer or notification with everything its Message points
// to, in one allocation: the Message lives until every receiver has
// acknowledged it, so it cannot come from a pool, but it costs one object
// rather than five.
type outMsg struct {
	m     broker.Message
	props packet.Properties
	user  [maxInlineUser]packet.UserProperty
	buf   [inlineBytes]byte // payload and correlation data when they fit
}

const (
	maxInlineUser = 4
	// inlineBytes holds a GET answer of a 64-byte value and 16 bytes of
	// correlation data (the SDKs send 16).
	inlineBytes = 96
)

// newMessage builds a QoS 1 message from the state store to topic. payload,
// correlation data and the user property slice are copied (the executor
// reuses its buffers); topic and the property strings are immutable and
// kept. A non-zero expiry (seconds) becomes the message's deadline from now.
func (s *Server) newMessage(topic string, payload, corr []byte, expiry uint32, user []packet.UserProperty, now time.Time) *broker.Message {
	o := new(outMsg)
	var buf []byte
	if n := len(payload) + len(corr); n <= inlineBytes {
		buf = o.buf[:0:inlineBytes]
	} else {
		buf = make([]byte, 0, n)
	}
	buf = append(buf, payload...)
	buf = append(buf, corr...)
	m := &o.m
	m.Topic, m.QoS, m.Origin = topic, 1, s.clientID
	m.Payload = buf[:len(payload):len(payload)]
	if len(corr) > 0 {
		o.props.CorrelationData = buf[len(payload):]
		o.props.Set(packet.PropCorrelationData)
	}
	if len(user) <= maxInlineUser {
		o.props.User = append(o.user[:0:maxInlineUser], user...)
	} else {
		o.props.User = append([]packet.UserProperty(nil), user...)
	}
	if expiry > 0 {
		m.Expiry = now.Add(time.Duration(expiry) * time.Second).UnixNano()
	}
	m.Props = &o.props
	return m
}

// serve takes one request from the router (see broker.Service). It runs on
// the publisher's goroutine, concurrently with other publishers' requests;
// while the executor's queue is full it waits, which slows the publisher
// to the state store's pace instead of dropping its requests.
func (s *Server) serve(m *broker.Message) {
	select {
	case <-s.stopping:
		return // unanswered: the client retries later or elsewhere
	default:
	}
	r := s.newRequest(m)
	if s.shared != nil {
		// Every request first waits for the shared backend's changes
		// (syncLoop), in arrival order.
		select {
		case s.syncReqs <- r:
		case <-s.stopping:
			s.putRequest(r)
		}
		return
	}
	s.dispatch(r)
}

// dispatch answers r on this goroutine when it is a GET the view can
// answer, and otherwise queues it for the executor.
func (s *Server) dispatch(r *request) {
	if s.route(r) {
		s.putRequest(r)
		return
	}
	select {
	case s.reqs <- r:
	case <-s.stopping:
		s.pending.forget(r)
		s.putRequest(r)
	}
}
