package broker

import (
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// TestService: a service receives what is published to its topic, straight
// from the router, and answers with Publish; the publisher's PUBACK counts
// it as a subscriber, the topic's subscribers still get the message, an
// expired message and another cluster node's are not handed over, and stop
// ends it.
func TestService(t *testing.T) {
	addr, b := startBroker(t, Options{})
	got := make(chan *Message, 4)
	stop := b.Serve("svc/in", func(m *Message) {
		got <- m
		reply := &Message{Topic: m.Props.ResponseTopic, Payload: append([]byte("re:"), m.Payload...), QoS: 1, Origin: "$edgeport/svc"}
		b.Publish(reply)
	})

	watcher := dialRaw(t, addr, packet.V5)
	watcher.connect(connV5("watcher"))
	watcher.subscribe(1, 1, "svc/in")

	c := dialRaw(t, addr, packet.V5)
	c.connect(connV5("caller"))
	c.subscribe(1, 1, "svc/reply")
	req := &packet.Publish{QoS: 1, PacketID: 7, Topic: "svc/in", Payload: []byte("ping")}
	req.Properties.ResponseTopic = "svc/reply"
	req.Properties.Set(packet.PropResponseTopic)
	c.send(req)
	// The service answers while the request is routed, before its PUBACK.
	c.expectPublish("svc/reply", "re:ping")
	c.expectAck(packet.PUBACK, 7, packet.Success)
	if m := <-got; m.Origin != "caller" || string(m.Payload) != "ping" {
		t.Errorf("service got origin %q payload %q", m.Origin, m.Payload)
	}
	watcher.expectPublish("svc/in", "ping")

	if n := b.Publish(&Message{Topic: "svc/in", Payload: []byte("late"), QoS: 1, Expiry: time.Now().Add(-time.Second).UnixNano()}); n != 2 {
		t.Errorf("Publish of an expired message reached %d, want 2 (the subscriber and the service)", n)
	}
	select {
	case m := <-got:
		t.Errorf("the service got an expired message %q", m.Payload)
	default:
	}

	// Another node's message is its node's services' business.
	if n := b.RouteFromPeer(&Message{Topic: "svc/in", Payload: []byte("peer"), QoS: 1, Origin: "elsewhere"}); n != 1 {
		t.Errorf("RouteFromPeer reached %d, want 1 (the subscriber only)", n)
	}
	watcher.expectPublish("svc/in", "peer")
	select {
	case m := <-got:
		t.Errorf("the service got another node's message %q", m.Payload)
	default:
	}

	stop()
	stop() // idempotent
	lone := dialRaw(t, addr, packet.V5)
	lone.connect(connV5("lone"))
	lone.send(&packet.Publish{QoS: 1, PacketID: 8, Topic: "svc/in", Payload: []byte("after")})
	lone.expectAck(packet.PUBACK, 8, packet.Success) // the watcher still subscribes
	watcher.expectPublish("svc/in", "after")
	if len(got) != 0 {
		t.Errorf("the service got a message after stop")
	}
	if n := b.Publish(&Message{Topic: "svc/none", QoS: 1}); n != 0 {
		t.Errorf("Publish to a topic nobody serves reached %d", n)
	}
}
