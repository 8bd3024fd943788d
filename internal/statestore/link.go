package statestore

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// link is the state store's MQTT 5 connection to the broker: an internal
// client (internal/mqtt/client) over an in-process pipe, which reconnects
// by itself. Requests are acknowledged by hand, once their answers are
// durable; answers and notifications are published without waiting, in
// the order the executor produced them.
type link struct {
	s    *Server
	c    *mqtt.Client
	fast fastScratch // the dispatch goroutine's, for fastGet
}

// chunk is what one executor batch sends once it is durable: responses,
// notifications and the acknowledgements of the requests, in order.
type chunk struct {
	items []item
	size  int // bytes of payload and topics, to bound a batch
}

// item is one publish, or one acknowledgement when ack is set.
type item struct {
	msg mqtt.Message
	ack *mqtt.Message
}

func (c *chunk) reset() {
	clear(c.items)
	c.items = c.items[:0]
	c.size = 0
}

// Connection parameters of the state store's own client.
const (
	// receiveMaximum bounds the requests the broker sends before we
	// acknowledge them, which bounds the request queue.
	receiveMaximum = 1024
	// resubscribeDelay spaces attempts to subscribe when the broker
	// refuses the subscription (it should not: the client is internal).
	resubscribeDelay = time.Second
	// readyTimeout bounds how long Start waits for the subscription; after
	// it the state store keeps trying in the background.
	readyTimeout = 5 * time.Second
)

// newLink starts the client; it connects in the background. failed is
// closed when the first attempt to connect fails.
func (s *Server) newLink(ctx context.Context, failed chan<- struct{}) (*link, error) {
	l := &link{s: s}
	var once sync.Once
	c, err := mqtt.New(mqtt.Options{
		Dialer:         mqtt.NewInProcess(s.serve),
		ClientID:       s.clientID,
		CleanStart:     true,
		ReceiveMaximum: receiveMaximum,
		MinBackoff:     50 * time.Millisecond,
		MaxBackoff:     5 * time.Second,
		Logger:         s.log,
		OnConnectError: func(error) { once.Do(func() { close(failed) }) },
		OnConnectionLost: func(err error) {
			var re *mqtt.ReasonError
			if errors.As(err, &re) && re.Code == packet.ServerShuttingDown {
				return
			}
			select {
			case <-s.stopping:
			default:
				s.log.Warn("connection to the broker lost; reconnecting", "err", err)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	l.c = c
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// subscribe subscribes to the invoke topic, retrying until it succeeds or
// the server stops, and closes ready when subscribed; the client makes the
// subscription again by itself after a reconnection.
func (l *link) subscribe(ctx context.Context, ready chan<- struct{}) {
	for {
		err := l.c.Subscribe(ctx, mqtt.Subscription{
			Filters:   []packet.Subscription{{Filter: InvokeTopic, QoS: 1, NoLocal: true}},
			Handler:   l.request,
			ManualAck: true,
		})
		if err == nil {
			close(ready)
			return
		}
		if ctx.Err() != nil {
			return
		}
		l.s.log.Warn("the broker refused the state store's subscription; retrying", "topic", InvokeTopic, "err", err)
		t := time.NewTimer(resubscribeDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// request answers a GET from the durable view (see fastGet) and hands
// every other request to the executor, which acknowledges it once its
// answer is durable.
func (l *link) request(_ context.Context, m *mqtt.Message) {
	req := l.s.newRequest(l, m)
	if l.route(req) {
		m.Ack()
		l.s.putRequest(req)
		return
	}
	select {
	case l.s.reqs <- req:
	case <-l.s.stopping:
		// Unanswered and unacknowledged: the client retries elsewhere or
		// later.
		l.s.pending.done([]*request{req})
		l.s.putRequest(req)
	}
}

// maxPacket is the broker's Maximum Packet Size; 0 means no limit.
func (l *link) maxPacket() int {
	if l == nil {
		return 0
	}
	return l.c.MaxPacketSize()
}

// enqueue sends a batch's answers; it never blocks, because it runs on the
// executor, which must keep draining requests. While the broker is
// unreachable the answers are dropped: clients time out and retry.
func (l *link) enqueue(c *chunk) {
	if !l.c.Connected() {
		l.s.putChunk(c)
		return
	}
	for i := range c.items {
		it := &c.items[i]
		if it.ack != nil {
			it.ack.Ack()
			continue
		}
		l.c.PublishAsync(&it.msg, l.published)
	}
	l.s.putChunk(c)
}

func (l *link) published(code packet.ReasonCode, err error) {
	var re *mqtt.ReasonError
	if errors.As(err, &re) {
		l.s.errLog.Log(slog.LevelWarn, "refused "+code.String(), "the broker refused a response or notification", "reason", code.String())
	}
}
