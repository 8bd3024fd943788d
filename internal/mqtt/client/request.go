package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Request publishes req and waits for the response: the MQTT 5
// request/response pattern. req.ResponseTopic defaults to
// "clients/<client id>/responses" (the client subscribes to a response
// topic, at QoS 1, the first time it is used); req.CorrelationData defaults
// to 16 random bytes, and the response is the first message on the response
// topic that carries the same correlation data. When ctx has a deadline and
// req no MessageExpiry, the request expires with the deadline (rounded up
// to a second), so a responder does not work on a request nobody waits for.
// A request nobody is subscribed to fails at once with ErrNoResponder when
// its QoS is 1 or 2. req is not modified.
func (c *Client) Request(ctx context.Context, req *Message) (*Message, error) {
	if c.opts.Version != packet.V5 {
		return nil, errors.New("mqtt client: request/response needs MQTT 5")
	}
	m := req.clone()
	m.Retain = false
	if m.ResponseTopic == "" {
		m.ResponseTopic = "clients/" + c.ClientID() + "/responses"
	}
	if len(m.CorrelationData) == 0 {
		m.CorrelationData = make([]byte, 16)
		_, _ = rand.Read(m.CorrelationData)
	}
	if dl, ok := ctx.Deadline(); ok && m.MessageExpiry == 0 {
		secs := (time.Until(dl) + time.Second - 1) / time.Second
		m.MessageExpiry = uint32(max(secs, 1))
	}
	if err := c.listen(ctx, m.ResponseTopic); err != nil {
		return nil, err
	}
	key := string(m.CorrelationData)
	ch := make(chan *Message, 1)
	c.reqMu.Lock()
	if _, dup := c.waiting[key]; dup {
		c.reqMu.Unlock()
		return nil, errors.New("mqtt client: a request with this correlation data is already waiting")
	}
	c.waiting[key] = ch
	c.reqMu.Unlock()
	defer func() {
		c.reqMu.Lock()
		delete(c.waiting, key)
		c.reqMu.Unlock()
	}()
	code, err := c.PublishCode(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("sending the request: %w", err)
	}
	if code == packet.NoMatchingSubscribers {
		return nil, fmt.Errorf("%w %s", ErrNoResponder, m.Topic)
	}
	select {
	case resp := <-ch:
		return resp, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the response on %s: %w", m.ResponseTopic, ctx.Err())
	}
}

// listen subscribes to a response topic once.
func (c *Client) listen(ctx context.Context, respTopic string) error {
	c.reqMu.Lock()
	done := c.respTopic[respTopic]
	c.reqMu.Unlock()
	if done {
		return nil
	}
	err := c.Subscribe(ctx, Subscription{
		Filters: []packet.Subscription{{Filter: respTopic, QoS: 1}},
		Handler: c.response,
	})
	if err != nil {
		return fmt.Errorf("subscribing to the response topic: %w", err)
	}
	c.reqMu.Lock()
	c.respTopic[respTopic] = true
	c.reqMu.Unlock()
	return nil
}

// response hands a message on a response topic to the request it answers;
// one nobody waits for (any more) is dropped.
func (c *Client) response(_ context.Context, m *Message) {
	c.reqMu.Lock()
	ch := c.waiting[string(m.CorrelationData)]
	delete(c.waiting, string(m.CorrelationData))
	c.reqMu.Unlock()
	if ch != nil {
		ch <- m
	}
}

// Respond publishes resp as the answer to req: to req's response topic,
// with req's correlation data, at req's QoS unless resp sets one. It is an
// error when req has no response topic.
func (c *Client) Respond(ctx context.Context, req, resp *Message) error {
	if req.ResponseTopic == "" {
		return errors.New("mqtt client: the request has no response topic")
	}
	m := resp.clone()
	m.Topic = req.ResponseTopic
	m.CorrelationData = req.CorrelationData
	if m.QoS == 0 {
		m.QoS = req.QoS
	}
	return c.Publish(ctx, m)
}
