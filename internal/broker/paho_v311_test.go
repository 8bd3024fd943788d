package broker

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// These tests drive the broker with the Eclipse Paho MQTT 3.1.1 client and
// assert what the OASIS MQTT 3.1.1 specification requires.

func messagePayloads(msgs []mqtt.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Payload())
	}
	return out
}

func TestPahoV311QoS(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	pub := mustP3(t, addr, "v3-qos-pub", true)
	var subs [3]*p3
	for q := range subs {
		subs[q] = mustP3(t, addr, fmt.Sprintf("v3-qos-sub-%d", q), true)
		subs[q].sub(t, fmt.Sprintf("v3/qos/%d", q), byte(q))
	}
	for pubQ := byte(0); pubQ <= 2; pubQ++ {
		for subQ := byte(0); subQ <= 2; subQ++ {
			t.Run(fmt.Sprintf("publish QoS %d to subscription QoS %d", pubQ, subQ), func(t *testing.T) {
				payload := fmt.Sprintf("p%d-s%d", pubQ, subQ)
				pub.pub(t, fmt.Sprintf("v3/qos/%d", subQ), pubQ, false, payload)
				got := subs[subQ].in.WaitFor(t, payload, 1, func(m mqtt.Message) bool { return string(m.Payload()) == payload })
				// 3.8.4: delivered at the minimum of the two QoS.
				if want := min(pubQ, subQ); got[0].Qos() != want {
					t.Fatalf("delivered at QoS %d, want %d", got[0].Qos(), want)
				}
			})
		}
	}
}

func TestPahoV311Retained(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	pub := mustP3(t, addr, "v3-ret-pub", true)
	pub.pub(t, "v3/ret/a", 1, true, "one")
	pub.pub(t, "v3/ret/a", 1, true, "two")
	pub.pub(t, "v3/ret/gone", 1, true, "x")
	pub.pub(t, "v3/ret/gone", 1, true, "") // a zero-byte retained message clears

	o := mustP3(t, addr, "v3-ret-sub", true)
	o.sub(t, "v3/ret/#", 1)
	o.sub(t, markerTopic, 0)
	pub.pub(t, "v3/ret/a", 1, true, "live")
	settle3(t, pub, o)

	// MQTT-3.3.1-5/6: the latest retained message goes to new subscribers
	// with RETAIN 1; MQTT-3.3.1-10/11: a zero-byte one removes it;
	// MQTT-3.3.1-9: messages for established subscriptions carry RETAIN 0.
	got := o.onTopic("v3/ret/a")
	if want := []string{"two", "live"}; !slices.Equal(messagePayloads(got), want) {
		t.Fatalf("v3/ret/a received %q, want %q", messagePayloads(got), want)
	}
	if !got[0].Retained() || got[1].Retained() {
		t.Fatalf("RETAIN flags %v, %v; want true, false", got[0].Retained(), got[1].Retained())
	}
	if got[0].Qos() != 1 {
		t.Fatalf("retained message at QoS %d, want 1", got[0].Qos())
	}
	if gone := o.onTopic("v3/ret/gone"); len(gone) != 0 {
		t.Fatalf("cleared retained message delivered: %q", messagePayloads(gone))
	}
}

func TestPahoV311Will(t *testing.T) {
	addr, b := startBroker(t, Options{})
	watcher := mustP3(t, addr, "v3-will-watcher", true)
	watcher.sub(t, "v3/will/#", 1)
	watcher.sub(t, markerTopic, 0)
	pub := mustP3(t, addr, "v3-will-pub", true)
	withWill := func(topic string) func(*mqtt.ClientOptions) {
		return func(o *mqtt.ClientOptions) { o.SetWill(topic, "gone", 1, false) }
	}

	// MQTT-3.1.2-8: published when the connection closes without DISCONNECT.
	t.Run("abnormal close publishes", func(t *testing.T) {
		w := mustP3(t, addr, "v3-will-abnormal", true, withWill("v3/will/abnormal"))
		w.closeSocket()
		m := watcher.waitTopic(t, "v3/will/abnormal", 1)[0]
		if string(m.Payload()) != "gone" || m.Qos() != 1 {
			t.Fatalf("will %q at QoS %d", m.Payload(), m.Qos())
		}
	})
	// MQTT-3.1.2-10: DISCONNECT discards it.
	t.Run("disconnect discards", func(t *testing.T) {
		w := mustP3(t, addr, "v3-will-normal", true, withWill("v3/will/normal"))
		w.Disconnect(250)
		waitConnected(t, b, 2)
		waitWillsDone(t, b)
		settle3(t, pub, watcher)
		if got := watcher.onTopic("v3/will/normal"); len(got) != 0 {
			t.Fatalf("will published after DISCONNECT: %q", messagePayloads(got))
		}
	})
}

func TestPahoV311PersistentSession(t *testing.T) {
	addr, b := startBroker(t, Options{})
	s, tok := dialP3(t, addr, "v3-persist", false)
	if err := tok.Error(); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if tok.SessionPresent() {
		t.Fatal("session present on first connect")
	}
	s.sub(t, "v3/persist", 1)
	s.Disconnect(250)
	pub := mustP3(t, addr, "v3-persist-pub", true)
	waitConnected(t, b, 1)
	for i := range 3 {
		pub.pub(t, "v3/persist", 1, false, fmt.Sprint(i))
	}
	s2, tok := dialP3(t, addr, "v3-persist", false)
	if err := tok.Error(); err != nil {
		t.Fatalf("reconnect: %v", err)
	}
	// MQTT-3.2.2-2: session present; MQTT-3.1.2-5: QoS 1 messages that
	// arrived while disconnected are part of the session and delivered.
	if !tok.SessionPresent() {
		t.Fatal("session not present on reconnect with CleanSession 0")
	}
	got := s2.waitTopic(t, "v3/persist", 3)
	if want := []string{"0", "1", "2"}; !slices.Equal(messagePayloads(got), want) {
		t.Fatalf("queued messages %q, want %q", messagePayloads(got), want)
	}
	for _, m := range got {
		if m.Qos() != 1 {
			t.Fatalf("queued message at QoS %d, want 1", m.Qos())
		}
	}
}

func TestPahoV311EmptyClientID(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	// MQTT-3.1.3-8: an empty ID with CleanSession 0 is refused with return
	// code 2, identifier rejected.
	_, tok := dialP3(t, addr, "", false)
	if tok.ReturnCode() != packets.ErrRefusedIDRejected || !errors.Is(tok.Error(), packets.ErrorRefusedIDRejected) {
		t.Fatalf("CONNACK return code %d (%v), want 2 identifier rejected", tok.ReturnCode(), tok.Error())
	}
	// MQTT-3.1.3-6: with CleanSession 1 the server assigns one.
	c := mustP3(t, addr, "", true)
	c.sub(t, markerTopic, 0)
	settle3(t, c, c)
}

func TestPahoV311OverlappingSubscriptions(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	o := mustP3(t, addr, "v3-ov-sub", true)
	o.sub(t, "v3/ov/#", 0)
	o.sub(t, "v3/ov/+", 2)
	o.sub(t, "+/ov/x", 1)
	o.sub(t, markerTopic, 0)
	pub := mustP3(t, addr, "v3-ov-pub", true)
	for q := byte(0); q <= 2; q++ {
		pub.pub(t, "v3/ov/x", q, false, fmt.Sprint(q))
	}
	settle3(t, pub, o)
	// 3.3.5: overlapping subscriptions give one delivery at the maximum QoS.
	got := o.onTopic("v3/ov/x")
	if want := []string{"0", "1", "2"}; !slices.Equal(messagePayloads(got), want) {
		t.Fatalf("received %q, want one delivery per publish %q", messagePayloads(got), want)
	}
	for q, m := range got {
		if m.Qos() != byte(q) {
			t.Fatalf("publish at QoS %d delivered at %d", q, m.Qos())
		}
	}
}

func TestPahoV311Unsubscribe(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	o := mustP3(t, addr, "v3-unsub-sub", true)
	o.sub(t, "v3/u", 1)
	o.sub(t, markerTopic, 0)
	pub := mustP3(t, addr, "v3-unsub-pub", true)
	pub.pub(t, "v3/u", 1, false, "before")
	o.waitTopic(t, "v3/u", 1)
	p3wait(t, "unsubscribe", o.Unsubscribe("v3/u"))
	pub.pub(t, "v3/u", 1, false, "after")
	settle3(t, pub, o)
	// MQTT-3.10.4-2: delivery stops once the subscription is removed.
	if got := messagePayloads(o.onTopic("v3/u")); !slices.Equal(got, []string{"before"}) {
		t.Fatalf("received %q, want only the message before UNSUBSCRIBE", got)
	}
}

// TestPahoV311TakeoverOfCleanSession: a clean session lasts as long as its
// network connection [MQTT-3.1.2-6], so a CleanSession 0 CONNECT that takes
// it over while it is still open starts a new session (session present 0
// [MQTT-3.2.2-2]) without the old subscriptions.
func TestPahoV311TakeoverOfCleanSession(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	first := mustP3(t, addr, "v3-take", true)
	first.sub(t, "v3/take", 1)
	second, tok := dialP3(t, addr, "v3-take", false)
	if err := tok.Error(); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if tok.SessionPresent() {
		t.Fatal("session present after taking over a clean session")
	}
	second.sub(t, markerTopic, 0)
	pub := mustP3(t, addr, "v3-take-pub", true)
	pub.pub(t, "v3/take", 1, false, "x")
	settle3(t, pub, second)
	if got := second.onTopic("v3/take"); len(got) != 0 {
		t.Fatalf("the clean session's subscription delivered %q", messagePayloads(got))
	}
}
