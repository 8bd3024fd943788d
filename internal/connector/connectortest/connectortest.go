// Package connectortest helps test connectors against a real broker: an
// in-process broker on a loopback port, MQTT 5 subscribers and a registry.
package connectortest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/broker/listener"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/client/clienttest"
)

// Broker starts a broker with a TCP listener on 127.0.0.1:0 and returns it
// with the listener's address; both stop when the test ends.
func Broker(t testing.TB) (*broker.Broker, string) {
	t.Helper()
	b, err := broker.New(broker.Options{SysInterval: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Start(context.Background())
	ln, err := listener.New(listener.Config{Name: "mqtt", Addr: "127.0.0.1:0", Protocol: listener.ProtocolTCP}, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ln.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = ln.Stop(ctx)
		_ = b.Stop(ctx)
	})
	return b, ln.Addr().String()
}

// Client starts an internal MQTT client of b (in process, on the internal
// listener, as Edgeport's components connect) and waits until it is
// connected; it stops when the test ends.
func Client(t testing.TB, b *broker.Broker, id string) *client.Client {
	t.Helper()
	return clienttest.Connect(t, client.Options{
		Dialer:     client.NewInProcess(func(c net.Conn) { b.ServeConn(c, broker.InternalListener) }),
		ClientID:   id,
		CleanStart: true,
	})
}

// Subscribe connects a Paho MQTT 5 client to addr, subscribes to filter
// with QoS 1 and returns the messages it receives.
func Subscribe(t testing.TB, addr, filter string) <-chan *paho.Publish {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *paho.Publish, 10000)
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				select {
				case ch <- pr.Packet:
				default:
					t.Errorf("subscriber %s: more than %d messages unread", filter, cap(ch))
				}
				return true, nil
			},
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "sub-" + filter, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return ch
}

// Next returns the next message from ch, failing the test after timeout.
func Next(t testing.TB, ch <-chan *paho.Publish, timeout time.Duration) *paho.Publish {
	t.Helper()
	select {
	case p := <-ch:
		return p
	case <-time.After(timeout):
		t.Fatalf("no message within %v", timeout)
		return nil
	}
}

// Store returns an in-memory registry of the built-in kinds.
func Store(t testing.TB) *config.Store {
	return config.NewStore(config.Builtin(), "", nil)
}

// Apply decodes YAML documents and applies them to s.
func Apply(t testing.TB, s *config.Store, yaml string) {
	t.Helper()
	docs, err := s.Kinds().DecodeAll([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if d.Err != nil {
			t.Fatalf("%s %s: %v", d.Kind, d.Name, d.Err)
		}
		if _, _, err := s.Apply(d.Object, config.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// Eventually polls cond every few milliseconds until it holds, failing the
// test with what after timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// Status returns a resource's status (nil when it has none).
func Status(s *config.Store, kind, name string) *config.Status {
	o, ok := s.Get(config.Key{Kind: kind, Name: name})
	if !ok {
		return nil
	}
	return o.Status
}
