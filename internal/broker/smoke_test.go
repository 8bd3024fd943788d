package broker

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

func TestSmokePahoV5(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	got := make(chan *paho.Publish, 10)
	dial := func(id string) *paho.Client {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { got <- pr.Packet; return true, nil },
		}})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		if ca.ReasonCode != 0 {
			t.Fatalf("connack %d", ca.ReasonCode)
		}
		t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
		return c
	}
	sub := dial("sub")
	pub := dial("pub")
	ctx := context.Background()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "a/+", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	for q := byte(0); q <= 2; q++ {
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "a/b", QoS: q, Payload: []byte{'x', q}}); err != nil {
			t.Fatalf("publish qos %d: %v", q, err)
		}
		select {
		case p := <-got:
			if p.QoS != q || string(p.Payload) != string([]byte{'x', q}) {
				t.Fatalf("got qos %d payload %q", p.QoS, p.Payload)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("qos %d not delivered", q)
		}
	}
}
