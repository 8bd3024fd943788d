package client

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// netPipeDialer is the in-process transport before Pipe: net.Pipe, whose
// writes wait for the reader. Kept to measure the difference.
type netPipeDialer struct {
	b  *broker.Broker
	wg sync.WaitGroup
}

func (d *netPipeDialer) Dial(context.Context) (net.Conn, error) {
	c, s := net.Pipe()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.b.ServeConn(s, broker.InternalListener)
	}()
	return c, nil
}

func (d *netPipeDialer) Wait() { d.wg.Wait() }

func benchTransports(b *testing.B) map[string]func() Dialer {
	// A deep subscriber queue: a benchmark that outruns its subscriber
	// must not lose messages to the queue limit.
	tb := startBroker(b, broker.Options{MaxQueuedMessages: 1 << 20})
	return map[string]func() Dialer{
		"pipe":     func() Dialer { return tb.inProcess() },
		"net.Pipe": func() Dialer { return &netPipeDialer{b: tb.b} },
	}
}

// BenchmarkRoundTrip is the self-test probe's measurement: one QoS 1
// publish, waited for until its delivery comes back.
func BenchmarkRoundTrip(b *testing.B) {
	for name, dial := range benchTransports(b) {
		b.Run(name, func(b *testing.B) {
			c := connect(b, Options{Dialer: dial(), ClientID: "$edgeport/bench-rt"})
			got := make(chan struct{}, 1)
			ctx := context.Background()
			if err := c.Subscribe(ctx, Subscription{Filters: filters("bench/rt", 1), Handler: func(context.Context, *Message) { got <- struct{}{} }}); err != nil {
				b.Fatal(err)
			}
			m := &Message{Topic: "bench/rt", QoS: 1, Payload: make([]byte, 8)}
			b.ResetTimer()
			for range b.N {
				if err := c.Publish(ctx, m); err != nil {
					b.Fatal(err)
				}
				<-got
			}
		})
	}
}

// BenchmarkThroughput publishes QoS 1 and 2 messages asynchronously to a
// subscriber on another in-process connection: messages per second through
// the broker.
func BenchmarkThroughput(b *testing.B) {
	for name, dial := range benchTransports(b) {
		// QoS 1 only: QoS 0 would be dropped by a lagging subscriber,
		// which measures nothing.
		for _, qos := range []byte{1, 2} {
			b.Run(name+"/qos"+string('0'+qos), func(b *testing.B) {
				ctx := context.Background()
				sub := connect(b, Options{Dialer: dial(), ClientID: "$edgeport/bench-sub"})
				pub := connect(b, Options{Dialer: dial(), ClientID: "$edgeport/bench-pub"})
				var wg sync.WaitGroup
				wg.Add(b.N)
				if err := sub.Subscribe(ctx, Subscription{Filters: filters("bench/tp", qos), Handler: func(context.Context, *Message) { wg.Done() }}); err != nil {
					b.Fatal(err)
				}
				m := &Message{Topic: "bench/tp", QoS: qos, Payload: make([]byte, 64)}
				window := make(chan struct{}, 1000) // outstanding publishes
				b.ResetTimer()
				for range b.N {
					window <- struct{}{}
					pub.PublishAsync(m, func(_ packet.ReasonCode, err error) {
						if err != nil {
							b.Error(err)
						}
						<-window
					})
				}
				wg.Wait()
			})
		}
	}
}
