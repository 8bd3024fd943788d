package broker

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/clock"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// These tests drive the broker with the Eclipse Paho MQTT 5 client, one
// feature per test or subtest, asserting the behaviour the OASIS MQTT 5.0
// specification requires.

func TestPahoV5ConnAck(t *testing.T) {
	tests := []struct {
		name       string
		opts       Options
		clientID   string
		recvMax    uint16 // 0: the property must be absent
		maxPacket  uint32
		aliasMax   uint16 // 0: the property must be absent
		wantAssign bool
	}{
		{"defaults with assigned ID", Options{}, "", DefaultReceiveMaximum, DefaultMaxPacketSize, DefaultTopicAliasMaximum, true},
		{"configured limits", Options{ReceiveMaximum: 10, MaxPacketSize: 4096, TopicAliasMaximum: 5}, "limits", 10, 4096, 5, false},
		{"aliases disabled", Options{TopicAliasMaximum: -1}, "noalias", DefaultReceiveMaximum, DefaultMaxPacketSize, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := startBroker(t, tc.opts)
			c := dialP5(t, addr, v5conn(tc.clientID))
			ca := c.Connack
			if ca.ReasonCode != 0 || ca.SessionPresent {
				t.Fatalf("CONNACK reason 0x%02X session present %v, want success without session", ca.ReasonCode, ca.SessionPresent)
			}
			p := ca.Properties
			if p == nil {
				t.Fatal("CONNACK has no properties")
			}
			if tc.wantAssign {
				// MQTT-3.2.2-16: a server assigning an ID must return it.
				if p.AssignedClientID == "" || c.ClientID() != p.AssignedClientID {
					t.Fatalf("assigned client ID %q, client uses %q", p.AssignedClientID, c.ClientID())
				}
			} else if p.AssignedClientID != "" {
				t.Fatalf("assigned client ID %q for a client that sent %q", p.AssignedClientID, tc.clientID)
			}
			if got := derefOr(p.ReceiveMaximum, 0); got != tc.recvMax {
				t.Errorf("Receive Maximum %d, want %d", got, tc.recvMax)
			}
			if got := derefOr(p.MaximumPacketSize, 0); got != tc.maxPacket {
				t.Errorf("Maximum Packet Size %d, want %d", got, tc.maxPacket)
			}
			if got := derefOr(p.TopicAliasMaximum, 0); got != tc.aliasMax {
				t.Errorf("Topic Alias Maximum %d, want %d", got, tc.aliasMax)
			}
			// Absent availability properties mean available (3.2.2.3.11-14);
			// paho reports them true unless the broker sent 0.
			if !p.WildcardSubAvailable || !p.SubIDAvailable || !p.SharedSubAvailable || !p.RetainAvailable {
				t.Errorf("availability: wildcard %v, subscription ID %v, shared %v, retain %v; want all true",
					p.WildcardSubAvailable, p.SubIDAvailable, p.SharedSubAvailable, p.RetainAvailable)
			}
			if p.MaximumQoS != nil {
				t.Errorf("Maximum QoS %d sent; the broker supports QoS 2 and must omit it", *p.MaximumQoS)
			}
		})
	}
}

func derefOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func TestPahoV5QoSDelivery(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	pub := dialP5(t, addr, v5conn("qos-pub"))
	var subs [3]*p5
	for q := range subs {
		subs[q] = dialP5(t, addr, v5conn(fmt.Sprintf("qos-sub-%d", q)))
		subs[q].sub(t, paho.SubscribeOptions{Topic: fmt.Sprintf("qos/%d", q), QoS: byte(q)})
	}
	for pubQ := byte(0); pubQ <= 2; pubQ++ {
		for subQ := byte(0); subQ <= 2; subQ++ {
			t.Run(fmt.Sprintf("publish QoS %d to subscription QoS %d", pubQ, subQ), func(t *testing.T) {
				payload := fmt.Sprintf("p%d-s%d", pubQ, subQ)
				pub.pub(t, &paho.Publish{Topic: fmt.Sprintf("qos/%d", subQ), QoS: pubQ, Payload: []byte(payload)})
				got := subs[subQ].In.WaitFor(t, payload, 1, func(p *paho.Publish) bool { return string(p.Payload) == payload })
				// MQTT-3.8.4-8: delivered at the minimum of the two QoS.
				if want := min(pubQ, subQ); got[0].QoS != want {
					t.Fatalf("delivered at QoS %d, want %d", got[0].QoS, want)
				}
			})
		}
	}
}

func TestPahoV5Ordering(t *testing.T) {
	const n = 500
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("QoS %d", qos), func(t *testing.T) {
			addr, _ := startBroker(t, Options{})
			sub := dialP5(t, addr, v5conn("order-sub"))
			topic := fmt.Sprintf("order/%d", qos)
			sub.sub(t, paho.SubscribeOptions{Topic: topic, QoS: qos}, markerSub)
			pub := dialP5(t, addr, v5conn("order-pub"))
			ctx, cancel := context.WithTimeout(context.Background(), pahoWait)
			defer cancel()
			for i := range n {
				_, err := pub.PublishWithOptions(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(strconv.Itoa(i))},
					paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
				if err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
			}
			sub.waitTopic(t, topic, n)
			settle(t, pub, sub)
			got := sub.onTopic(topic)
			if len(got) != n {
				t.Fatalf("received %d messages, want %d", len(got), n)
			}
			// 4.6: ordered topic delivery for messages of one publisher and QoS.
			for i, m := range got {
				if string(m.Payload) != strconv.Itoa(i) || m.QoS != qos {
					t.Fatalf("message %d: payload %q QoS %d, want %d at QoS %d", i, m.Payload, m.QoS, i, qos)
				}
			}
		})
	}
}

func TestPahoV5Retained(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	pub := dialP5(t, addr, v5conn("ret-pub"))
	retain := func(t *testing.T, topic, payload string) {
		pub.pub(t, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(payload)})
	}
	observe := func(t *testing.T, opts ...paho.SubscribeOptions) *p5 {
		o := dialP5(t, addr, v5conn("ret-"+strings.ReplaceAll(t.Name(), "/", "-")))
		o.sub(t, append(opts, markerSub)...)
		return o
	}
	expect := func(t *testing.T, o *p5, topic string, want ...string) {
		t.Helper()
		settle(t, pub, o)
		got := o.onTopic(topic)
		if !slices.Equal(payloads(got), want) {
			t.Fatalf("retained deliveries %q, want %q", payloads(got), want)
		}
		for _, m := range got {
			// MQTT-3.3.1-9: retained messages sent on subscribe carry RETAIN 1.
			if !m.Retain {
				t.Fatalf("retained delivery %q without the RETAIN flag", m.Payload)
			}
		}
	}

	t.Run("set", func(t *testing.T) {
		retain(t, "ret/set", "a")
		o := observe(t, paho.SubscribeOptions{Topic: "ret/set", QoS: 1})
		expect(t, o, "ret/set", "a")
		if m := o.onTopic("ret/set")[0]; m.QoS != 1 {
			t.Fatalf("retained delivered at QoS %d, want 1", m.QoS)
		}
	})
	t.Run("replace", func(t *testing.T) {
		retain(t, "ret/replace", "a")
		retain(t, "ret/replace", "b")
		expect(t, observe(t, paho.SubscribeOptions{Topic: "ret/replace", QoS: 1}), "ret/replace", "b")
	})
	t.Run("clear with empty payload", func(t *testing.T) {
		retain(t, "ret/clear", "a")
		retain(t, "ret/clear", "")
		expect(t, observe(t, paho.SubscribeOptions{Topic: "ret/+", QoS: 1}), "ret/clear")
	})

	// 3.8.3.1: 0 sends retained messages on every subscribe, 1 only when
	// the subscription is new, 2 never. Each case subscribes twice.
	for _, tc := range []struct {
		handling byte
		want     []string
	}{
		{0, []string{"x", "x"}},
		{1, []string{"x"}},
		{2, nil},
	} {
		t.Run(fmt.Sprintf("retain handling %d", tc.handling), func(t *testing.T) {
			topic := fmt.Sprintf("ret/handling/%d", tc.handling)
			retain(t, topic, "x")
			opt := paho.SubscribeOptions{Topic: topic, QoS: 1, RetainHandling: tc.handling}
			o := observe(t, opt)
			o.sub(t, opt)
			expect(t, o, topic, tc.want...)
		})
	}

	// 3.8.3.1: Retain As Published keeps the RETAIN flag of messages
	// forwarded to an established subscription; without it the flag is 0.
	for _, rap := range []bool{false, true} {
		t.Run(fmt.Sprintf("retain as published %v", rap), func(t *testing.T) {
			topic := fmt.Sprintf("ret/rap/%v", rap)
			o := observe(t, paho.SubscribeOptions{Topic: topic, QoS: 1, RetainAsPublished: rap})
			retain(t, topic, "live-retained")
			pub.pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("live-plain")})
			settle(t, pub, o)
			got := o.onTopic(topic)
			if len(got) != 2 {
				t.Fatalf("received %q, want the two live messages", payloads(got))
			}
			if got[0].Retain != rap || got[1].Retain {
				t.Fatalf("RETAIN flags %v, %v; want %v, false", got[0].Retain, got[1].Retain, rap)
			}
		})
	}
}

func TestPahoV5Wildcards(t *testing.T) {
	addr, _ := startBroker(t, Options{SysInterval: 50 * time.Millisecond})
	pub := dialP5(t, addr, v5conn("wc-pub"))
	tests := []struct {
		filter, topic string
		match         bool
	}{
		{"wc/+/c", "wc/b/c", true},
		{"wc/+/c", "wc/b/x/c", false},
		{"wc/+/c", "wc/c", false},
		{"wc/+", "wc/", true}, // + matches an empty level
		{"wc/+", "wc", false},
		{"wc/#", "wc", true}, // # includes the parent level
		{"wc/#", "wc/a/b/c", true},
		{"wc/#", "wcx/a", false},
		{"+/+", "/x", true},
		{"+", "wc/a", false},
		{"#", "wc/a/b", true},
	}
	for i, tc := range tests {
		t.Run(fmt.Sprintf("%s on %s", tc.filter, tc.topic), func(t *testing.T) {
			o := dialP5(t, addr, v5conn(fmt.Sprintf("wc-%d", i)))
			o.sub(t, paho.SubscribeOptions{Topic: tc.filter}, markerSub)
			pub.pub(t, &paho.Publish{Topic: tc.topic, Payload: []byte("w")})
			settle(t, pub, o)
			want := 0
			if tc.match {
				want = 1
			}
			if got := len(o.onTopic(tc.topic)); got != want {
				t.Fatalf("%d deliveries, want %d", got, want)
			}
		})
	}

	// 4.7.2: topics starting with $ are not matched by filters starting
	// with a wildcard, but are by filters naming them.
	t.Run("$SYS", func(t *testing.T) {
		o := dialP5(t, addr, v5conn("wc-sys-wild"))
		o.sub(t, paho.SubscribeOptions{Topic: "#"}, paho.SubscribeOptions{Topic: "+/broker/uptime"}, markerSub)
		sys := dialP5(t, addr, v5conn("wc-sys"))
		sys.sub(t, paho.SubscribeOptions{Topic: "$SYS/#"})
		const uptime = "$SYS/broker/uptime"
		sys.In.WaitFor(t, "retained "+uptime, 1, func(p *paho.Publish) bool { return p.Topic == uptime && p.Retain })
		// A live update reached $SYS/# after o subscribed: o had its chance.
		// The second one proves the first was routed to every subscriber
		// (the broker publishes them one after the other), o included.
		sys.In.WaitFor(t, "live "+uptime, 2, func(p *paho.Publish) bool { return p.Topic == uptime && !p.Retain })
		settle(t, pub, o)
		for _, m := range o.In.All() {
			if strings.HasPrefix(m.Topic, "$") {
				t.Fatalf("wildcard filter received %s", m.Topic)
			}
		}
	})
}

func TestPahoV5OverlappingSubscriptions(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	pub := dialP5(t, addr, v5conn("ov-pub"))
	tests := []struct {
		name string
		subs []paho.SubscribeOptions
		want [3]byte // delivered QoS for a publish at QoS 0, 1, 2
	}{
		{"max is 2", []paho.SubscribeOptions{{Topic: "ov/#", QoS: 0}, {Topic: "ov/+", QoS: 2}, {Topic: "ov/x", QoS: 1}}, [3]byte{0, 1, 2}},
		{"max is 1", []paho.SubscribeOptions{{Topic: "ov/#", QoS: 1}, {Topic: "+/x", QoS: 0}}, [3]byte{0, 1, 1}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := dialP5(t, addr, v5conn(fmt.Sprintf("ov-%d", i)))
			o.sub(t, append(tc.subs, markerSub)...)
			for q := byte(0); q <= 2; q++ {
				pub.pub(t, &paho.Publish{Topic: "ov/x", QoS: q, Payload: []byte{'0' + q}})
			}
			settle(t, pub, o)
			got := o.onTopic("ov/x")
			// 3.3.4: one delivery per session, at the greatest granted QoS
			// (capped by the publish QoS).
			if len(got) != 3 {
				t.Fatalf("received %q, want exactly one delivery per publish", payloads(got))
			}
			for q, m := range got {
				if m.Payload[0] != '0'+byte(q) || m.QoS != tc.want[q] {
					t.Fatalf("delivery %d: payload %q QoS %d, want %c QoS %d", q, m.Payload, m.QoS, '0'+q, tc.want[q])
				}
			}
		})
	}
}

func TestPahoV5NoLocal(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	self := dialP5(t, addr, v5conn("nl-self"))
	self.sub(t, paho.SubscribeOptions{Topic: "nl/local", QoS: 1, NoLocal: true},
		paho.SubscribeOptions{Topic: "nl/plain", QoS: 1}, markerSub)
	other := dialP5(t, addr, v5conn("nl-other"))
	self.pub(t, &paho.Publish{Topic: "nl/local", QoS: 1, Payload: []byte("own")})
	other.pub(t, &paho.Publish{Topic: "nl/local", QoS: 1, Payload: []byte("other")})
	self.pub(t, &paho.Publish{Topic: "nl/plain", QoS: 1, Payload: []byte("own-plain")})
	settle(t, other, self)
	// MQTT-3.8.3-3: No Local keeps a client's own messages from it.
	if got := payloads(self.onTopic("nl/local")); !slices.Equal(got, []string{"other"}) {
		t.Errorf("No Local subscription received %q, want only the other client's", got)
	}
	if got := payloads(self.onTopic("nl/plain")); !slices.Equal(got, []string{"own-plain"}) {
		t.Errorf("plain subscription received %q, want the client's own message", got)
	}
}

func TestPahoV5SubscriptionIdentifier(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	pub := dialP5(t, addr, v5conn("sid-pub"))
	pub.pub(t, &paho.Publish{Topic: "sid/retained", QoS: 1, Retain: true, Payload: []byte("r")})
	o := dialP5(t, addr, v5conn("sid-sub"))
	id42, id7 := 42, 7
	o.subWith(t, &paho.SubscribeProperties{SubscriptionIdentifier: &id42}, paho.SubscribeOptions{Topic: "sid/+", QoS: 1})
	o.sub(t, paho.SubscribeOptions{Topic: "nosid/#", QoS: 1}, markerSub)
	for q := byte(0); q <= 1; q++ {
		pub.pub(t, &paho.Publish{Topic: "sid/live", QoS: q, Payload: []byte{'0' + q}})
		pub.pub(t, &paho.Publish{Topic: "nosid/live", QoS: q, Payload: []byte{'0' + q}})
	}
	settle(t, pub, o)
	check := func(topic string, n int, want *int) {
		t.Helper()
		got := o.onTopic(topic)
		if len(got) != n {
			t.Fatalf("%s: %d deliveries, want %d", topic, len(got), n)
		}
		for _, m := range got {
			id := m.Properties.SubscriptionIdentifier
			if (id == nil) != (want == nil) || id != nil && *id != *want {
				t.Fatalf("%s %q: subscription identifier %v, want %v", topic, m.Payload, fmtPtr(id), fmtPtr(want))
			}
		}
	}
	// 3.3.4: deliveries carry the identifier of the matching subscription,
	// retained ones included, and none when it has none.
	check("sid/retained", 1, &id42)
	check("sid/live", 2, &id42)
	check("nosid/live", 2, nil)

	// 3.8.4: subscribing again replaces the subscription and its identifier.
	o.subWith(t, &paho.SubscribeProperties{SubscriptionIdentifier: &id7}, paho.SubscribeOptions{Topic: "sid/+", QoS: 1, RetainHandling: 2})
	pub.pub(t, &paho.Publish{Topic: "sid/after", QoS: 1, Payload: []byte("a")})
	settle(t, pub, o)
	check("sid/after", 1, &id7)
}

func fmtPtr[T any](p *T) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}

func TestPahoV5SharedSubscriptions(t *testing.T) {
	const filter = "$share/grp/sh/t"
	const topic = "sh/t"
	publishN := func(t *testing.T, pub *p5, from, n int) {
		for i := from; i < from+n; i++ {
			pub.pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(strconv.Itoa(i))})
		}
	}
	// exactlyOnce checks that the members together got messages from..to-1
	// once each.
	exactlyOnce := func(t *testing.T, from, to int, members ...*p5) {
		t.Helper()
		count := map[string]int{}
		for _, m := range members {
			for _, p := range m.onTopic(topic) {
				count[string(p.Payload)]++
			}
		}
		for i := from; i < to; i++ {
			if c := count[strconv.Itoa(i)]; c != 1 {
				t.Fatalf("message %d delivered %d times to the group", i, c)
			}
		}
		if len(count) != to-from {
			t.Fatalf("group received %d distinct messages, want %d", len(count), to-from)
		}
	}
	waitTotal := func(t *testing.T, n int, members ...*p5) {
		t.Helper()
		testwait.For(t, "group deliveries", func() bool {
			total := 0
			for _, m := range members {
				total += len(m.onTopic(topic))
			}
			return total >= n
		})
	}

	t.Run("members share the messages", func(t *testing.T) {
		addr, _ := startBroker(t, Options{})
		a := dialP5(t, addr, v5conn("sh-a"))
		b := dialP5(t, addr, v5conn("sh-b"))
		for _, m := range []*p5{a, b} {
			m.sub(t, paho.SubscribeOptions{Topic: filter, QoS: 1}, markerSub)
		}
		pub := dialP5(t, addr, v5conn("sh-pub"))
		publishN(t, pub, 0, 20)
		waitTotal(t, 20, a, b)
		settle(t, pub, a, b)
		// 4.8.2: each message goes to exactly one member of the group.
		exactlyOnce(t, 0, 20, a, b)
		if len(a.onTopic(topic)) == 0 || len(b.onTopic(topic)) == 0 {
			t.Fatalf("distribution %d/%d: both members should get some", len(a.onTopic(topic)), len(b.onTopic(topic)))
		}
	})

	t.Run("remaining member gets everything", func(t *testing.T) {
		addr, br := startBroker(t, Options{})
		a := dialP5(t, addr, v5conn("sh-a"))
		a.sub(t, paho.SubscribeOptions{Topic: filter, QoS: 1}, markerSub)
		// b keeps its session (and so its membership) while offline.
		b := dialP5(t, addr, v5persistent("sh-b", true, 60))
		b.sub(t, paho.SubscribeOptions{Topic: filter, QoS: 1}, markerSub)
		pub := dialP5(t, addr, v5conn("sh-pub"))
		publishN(t, pub, 0, 4)
		waitTotal(t, 4, a, b)
		before := len(a.onTopic(topic))
		_ = b.Disconnect(&paho.Disconnect{})
		waitConnected(t, br, 2)
		publishN(t, pub, 4, 10)
		a.In.WaitFor(t, "messages after b left", before+10, func(p *paho.Publish) bool { return p.Topic == topic })
		settle(t, pub, a)
		if got := len(a.onTopic(topic)); got != before+10 {
			t.Fatalf("a received %d after b left, want 10", got-before)
		}
		// Nothing was parked in b's offline session either.
		b2 := dialP5(t, addr, v5persistent("sh-b", false, 60))
		if !b2.Connack.SessionPresent {
			t.Fatal("b's session is gone")
		}
		settle(t, pub, b2)
		if got := len(b2.onTopic(topic)); got != 0 {
			t.Fatalf("offline member got %d messages on reconnect, want 0", got)
		}
		exactlyOnce(t, 0, 14, a, b, b2)
	})

	t.Run("unacknowledged messages move to another member", func(t *testing.T) {
		addr, _ := startBroker(t, Options{})
		slow := dialP5(t, addr, v5conn("sh-slow"), manualAck) // never acknowledges
		slow.sub(t, paho.SubscribeOptions{Topic: filter, QoS: 1})
		fast := dialP5(t, addr, v5conn("sh-fast"))
		fast.sub(t, paho.SubscribeOptions{Topic: filter, QoS: 1}, markerSub)
		pub := dialP5(t, addr, v5conn("sh-pub"))
		publishN(t, pub, 0, 10)
		waitTotal(t, 10, slow, fast)
		unacked := len(slow.onTopic(topic))
		if unacked == 0 {
			t.Fatal("the slow member got no messages; nothing to move")
		}
		_ = slow.Disconnect(&paho.Disconnect{})
		// 4.8.2: if a member's session ends with QoS 1 messages unacknowledged,
		// the server may send them to another member — Edgeport does.
		fast.In.WaitFor(t, "all messages", 10, func(p *paho.Publish) bool { return p.Topic == topic })
		settle(t, pub, fast)
		exactlyOnce(t, 0, 10, fast)
	})
}

func TestPahoV5Unsubscribe(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	pub := dialP5(t, addr, v5conn("unsub-pub"))
	o := dialP5(t, addr, v5conn("unsub-sub"))
	o.sub(t, paho.SubscribeOptions{Topic: "u/t", QoS: 1}, markerSub)
	pub.pub(t, &paho.Publish{Topic: "u/t", QoS: 1, Payload: []byte("before")})
	o.waitTopic(t, "u/t", 1)

	unsub := func(filters ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), pahoWait)
		defer cancel()
		ua, err := o.Unsubscribe(ctx, &paho.Unsubscribe{Topics: filters})
		if err != nil {
			t.Fatalf("unsubscribe %q: %v", filters, err)
		}
		return ua.Reasons
	}
	if got := unsub("u/t"); !bytes.Equal(got, []byte{0}) {
		t.Fatalf("UNSUBACK %x, want success", got)
	}
	pub.pub(t, &paho.Publish{Topic: "u/t", QoS: 1, Payload: []byte("after")})
	settle(t, pub, o)
	if got := payloads(o.onTopic("u/t")); !slices.Equal(got, []string{"before"}) {
		t.Fatalf("received %q, want delivery to stop after UNSUBSCRIBE", got)
	}
	// 3.11.2.2: 0x11 for a filter that had no subscription, per filter.
	if got := unsub("u/never", "u/t", markerTopic); !bytes.Equal(got, []byte{byte(packet.NoSubscriptionExisted), byte(packet.NoSubscriptionExisted), 0}) {
		t.Fatalf("UNSUBACK %x, want 11 11 00", got)
	}
}

func TestPahoV5Session(t *testing.T) {
	t.Run("resumed with messages queued while offline", func(t *testing.T) {
		addr, b := startBroker(t, Options{})
		s := dialP5(t, addr, v5persistent("sess", true, 60))
		if s.Connack.SessionPresent {
			t.Fatal("session present on clean start")
		}
		s.sub(t, paho.SubscribeOptions{Topic: "sess/t", QoS: 1})
		_ = s.Disconnect(&paho.Disconnect{})
		pub := dialP5(t, addr, v5conn("sess-pub"))
		waitConnected(t, b, 1)
		for i := range 5 {
			r := pub.pub(t, &paho.Publish{Topic: "sess/t", QoS: 1, Payload: []byte(strconv.Itoa(i))})
			if r.ReasonCode != 0 {
				t.Fatalf("PUBACK 0x%02X: the offline session's subscription should match", r.ReasonCode)
			}
		}
		s2 := dialP5(t, addr, v5persistent("sess", false, 60))
		// MQTT-3.2.2-3: the resumed session is reported...
		if !s2.Connack.SessionPresent {
			t.Fatal("session not present on resume")
		}
		// ...and delivers what was queued for it, in order.
		got := s2.waitTopic(t, "sess/t", 5)
		if want := []string{"0", "1", "2", "3", "4"}; !slices.Equal(payloads(got), want) {
			t.Fatalf("queued messages %q, want %q", payloads(got), want)
		}
		for _, m := range got {
			if m.QoS != 1 {
				t.Fatalf("queued message at QoS %d, want 1", m.QoS)
			}
		}
	})

	t.Run("expired session is gone", func(t *testing.T) {
		addr, b := startBroker(t, Options{})
		s := dialP5(t, addr, v5persistent("sess-exp", true, 1))
		s.sub(t, paho.SubscribeOptions{Topic: "sess/t", QoS: 1})
		left := time.Now() // the expiry timer cannot start before this
		_ = s.Disconnect(&paho.Disconnect{})
		pub := dialP5(t, addr, v5conn("sess-pub"))
		waitConnected(t, b, 1)
		pub.pub(t, &paho.Publish{Topic: "sess/t", QoS: 1, Payload: []byte("lost")})
		if n := b.Counters().Sessions; n != 2 {
			t.Fatalf("%d sessions right after disconnect, want the offline one kept", n)
		}
		testwait.For(t, "session expiry", func() bool { return b.Counters().Sessions == 1 })
		if d := time.Since(left); d < time.Second {
			t.Fatalf("session expired after %v, before its 1 s interval", d)
		}
		s2 := dialP5(t, addr, v5persistent("sess-exp", false, 60))
		if s2.Connack.SessionPresent {
			t.Fatal("session present after its expiry interval")
		}
		s2.sub(t, markerSub)
		settle(t, pub, s2)
		if got := s2.onTopic("sess/t"); len(got) != 0 {
			t.Fatalf("expired session delivered %q", payloads(got))
		}
	})

	t.Run("clean start discards the old session", func(t *testing.T) {
		addr, b := startBroker(t, Options{})
		s := dialP5(t, addr, v5persistent("sess-clean", true, 60))
		s.sub(t, paho.SubscribeOptions{Topic: "sess/t", QoS: 1})
		_ = s.Disconnect(&paho.Disconnect{})
		pub := dialP5(t, addr, v5conn("sess-pub"))
		waitConnected(t, b, 1)
		pub.pub(t, &paho.Publish{Topic: "sess/t", QoS: 1, Payload: []byte("queued")})
		// MQTT-3.1.2-4: Clean Start 1 discards the existing session.
		s2 := dialP5(t, addr, v5persistent("sess-clean", true, 60))
		if s2.Connack.SessionPresent {
			t.Fatal("session present on clean start")
		}
		s2.sub(t, markerSub)
		pub.pub(t, &paho.Publish{Topic: "sess/t", QoS: 1, Payload: []byte("after")})
		settle(t, pub, s2)
		if got := s2.onTopic("sess/t"); len(got) != 0 {
			t.Fatalf("discarded session delivered %q", payloads(got))
		}
	})

	t.Run("takeover", func(t *testing.T) {
		addr, _ := startBroker(t, Options{})
		first := dialP5(t, addr, v5conn("dup"))
		second := dialP5(t, addr, v5conn("dup"))
		// MQTT-3.1.4-3: the existing connection gets DISCONNECT 0x8E.
		d := first.Discs.WaitFor(t, "DISCONNECT", 1, func(*paho.Disconnect) bool { return true })[0]
		if d.ReasonCode != byte(packet.SessionTakenOver) {
			t.Fatalf("DISCONNECT 0x%02X, want 0x8E", d.ReasonCode)
		}
		second.sub(t, markerSub)
		settle(t, second, second)
	})

	// A session with expiry 0 ends with its connection [MQTT-3.1.2-23], and
	// taking it over ends that connection: a Clean Start 0 CONNECT that
	// arrives while it is still open (Paho's interoperability test
	// reconnects right after DISCONNECT, before the broker may have read
	// it) must not resume it, nor get what it subscribed to.
	t.Run("takeover of a session with expiry 0 does not resume it", func(t *testing.T) {
		addr, _ := startBroker(t, Options{})
		first := dialP5(t, addr, v5persistent("dup0", true, 0))
		first.sub(t, paho.SubscribeOptions{Topic: "dup0/t", QoS: 1})
		second := dialP5(t, addr, v5persistent("dup0", false, 60))
		if second.Connack.SessionPresent {
			t.Fatal("session present after taking over a session with expiry 0")
		}
		first.Discs.WaitFor(t, "DISCONNECT", 1, func(*paho.Disconnect) bool { return true })
		second.sub(t, markerSub)
		pub := dialP5(t, addr, v5conn("dup0-pub"))
		pub.pub(t, &paho.Publish{Topic: "dup0/t", QoS: 1, Payload: []byte("x")})
		settle(t, pub, second)
		if got := second.onTopic("dup0/t"); len(got) != 0 {
			t.Fatalf("the ended session's subscription delivered %q", payloads(got))
		}
	})
}

func TestPahoV5Will(t *testing.T) {
	clk := clock.NewFake(time.Now())
	addr, b := startBroker(t, Options{Clock: clk})
	watcher := dialP5(t, addr, v5conn("will-watcher"))
	watcher.sub(t, paho.SubscribeOptions{Topic: "will/#", QoS: 1}, markerSub)
	pub := dialP5(t, addr, v5conn("will-pub"))
	const base = 2 // watcher and pub

	withWill := func(id string, delay, expiry uint32) *paho.Connect {
		cp := v5persistent(id, true, expiry)
		cp.WillMessage = &paho.WillMessage{Topic: "will/" + id, QoS: 1, Payload: []byte("gone:" + id)}
		if delay > 0 {
			cp.WillProperties = &paho.WillProperties{WillDelayInterval: &delay}
		}
		return cp
	}
	expectWill := func(t *testing.T, id string) {
		t.Helper()
		m := watcher.waitTopic(t, "will/"+id, 1)[0]
		if string(m.Payload) != "gone:"+id || m.QoS != 1 {
			t.Fatalf("will %q at QoS %d", m.Payload, m.QoS)
		}
	}
	expectNoWill := func(t *testing.T, id string) {
		t.Helper()
		waitWillsDone(t, b)
		settle(t, pub, watcher)
		if got := watcher.onTopic("will/" + id); len(got) != 0 {
			t.Fatalf("will published: %q", payloads(got))
		}
	}

	// MQTT-3.1.2-8: the will is published when the connection closes
	// without DISCONNECT.
	t.Run("abnormal close publishes", func(t *testing.T) {
		w := dialP5(t, addr, withWill("abnormal", 0, 0))
		w.Conn.Close()
		expectWill(t, "abnormal")
	})
	// MQTT-3.1.2-10: a normal DISCONNECT discards it.
	t.Run("normal disconnect discards", func(t *testing.T) {
		w := dialP5(t, addr, withWill("normal", 0, 0))
		_ = w.Disconnect(&paho.Disconnect{ReasonCode: 0})
		waitConnected(t, b, base)
		expectNoWill(t, "normal")
	})
	// 3.14.2.1: reason 0x04 asks for the will anyway.
	t.Run("disconnect with will message", func(t *testing.T) {
		w := dialP5(t, addr, withWill("with-will", 0, 0))
		_ = w.Disconnect(&paho.Disconnect{ReasonCode: byte(packet.DisconnectWithWill)})
		expectWill(t, "with-will")
	})
	// The clock stands still unless the test advances it: a will due at
	// the delay is not published a millisecond before it, and is at it.
	// 3.1.3.2.2: the will waits for its delay interval...
	t.Run("delayed", func(t *testing.T) {
		w := dialP5(t, addr, withWill("delayed", 1, 10))
		w.Conn.Close()
		waitWillArmed(t, b, "delayed")
		clk.Advance(time.Second - time.Millisecond)
		expectNoWill(t, "delayed")
		clk.Advance(time.Millisecond)
		expectWill(t, "delayed")
	})
	// ...or until the session ends, whichever comes first.
	t.Run("session end before delay", func(t *testing.T) {
		w := dialP5(t, addr, withWill("session-end", 30, 1))
		w.Conn.Close()
		waitWillArmed(t, b, "session-end")
		clk.Advance(time.Second - time.Millisecond)
		expectNoWill(t, "session-end")
		clk.Advance(time.Millisecond)
		expectWill(t, "session-end")
	})
	// MQTT-3.1.3-9: reconnecting within the delay cancels the will.
	t.Run("reconnect cancels delayed will", func(t *testing.T) {
		w := dialP5(t, addr, withWill("cancelled", 1, 10))
		w.Conn.Close()
		waitWillArmed(t, b, "cancelled")
		clk.Advance(time.Second - time.Millisecond)
		dialP5(t, addr, v5persistent("cancelled", false, 10))
		clk.Advance(time.Second) // past the delay
		expectNoWill(t, "cancelled")
	})
	// 3.1.3.2.2: a takeover with Clean Start 1 ends the session, so a
	// delayed will goes out at once (the clock does not move); with Clean
	// Start 0 it is cancelled.
	t.Run("takeover with clean start publishes delayed will", func(t *testing.T) {
		dialP5(t, addr, withWill("takeover-clean", 30, 60))
		dialP5(t, addr, v5persistent("takeover-clean", true, 0))
		expectWill(t, "takeover-clean")
	})
	t.Run("takeover resuming the session cancels delayed will", func(t *testing.T) {
		dialP5(t, addr, withWill("takeover-resume", 1, 60))
		dialP5(t, addr, v5persistent("takeover-resume", false, 60))
		clk.Advance(2 * time.Second) // past the delay
		expectNoWill(t, "takeover-resume")
	})
}

// waitWillArmed waits until the session of id is offline with its delayed
// will scheduled, so that advancing a fake clock reaches the will's timer.
func waitWillArmed(t *testing.T, b *Broker, id string) {
	t.Helper()
	testwait.For(t, "delayed will of "+id+" scheduled", func() bool {
		b.sessMu.Lock()
		defer b.sessMu.Unlock()
		s := b.sessions[id]
		if s == nil {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.client == nil && s.willTimer != nil
	})
}

func TestPahoV5MessageExpiry(t *testing.T) {
	clk := clock.NewFake(time.Now())
	addr, b := startBroker(t, Options{Clock: clk})
	live := dialP5(t, addr, v5conn("exp-live"))
	live.sub(t, paho.SubscribeOptions{Topic: "exp/t", QoS: 1})
	s := dialP5(t, addr, v5persistent("exp-sub", true, 60))
	s.sub(t, paho.SubscribeOptions{Topic: "exp/t", QoS: 1})
	_ = s.Disconnect(&paho.Disconnect{})
	pub := dialP5(t, addr, v5conn("exp-pub"))
	waitConnected(t, b, 2)
	one, ten := uint32(1), uint32(10)
	pub.pub(t, &paho.Publish{Topic: "exp/t", QoS: 1, Payload: []byte("short"), Properties: &paho.PublishProperties{MessageExpiry: &one}})
	pub.pub(t, &paho.Publish{Topic: "exp/t", QoS: 1, Payload: []byte("long"), Properties: &paho.PublishProperties{MessageExpiry: &ten}})
	pub.pub(t, &paho.Publish{Topic: "exp/t", QoS: 1, Payload: []byte("forever")})
	clk.Advance(1100 * time.Millisecond) // outlive the short message
	s2 := dialP5(t, addr, v5persistent("exp-sub", false, 60))
	if !s2.Connack.SessionPresent {
		t.Fatal("session not present")
	}
	s2.sub(t, markerSub)
	settle(t, pub, s2)
	got := s2.onTopic("exp/t")

	t.Run("expired message not delivered", func(t *testing.T) {
		// MQTT-3.3.2-5: an expired message is not delivered.
		if want := []string{"long", "forever"}; !slices.Equal(payloads(got), want) {
			t.Fatalf("queued messages %q, want %q", payloads(got), want)
		}
	})
	t.Run("forwarded interval is decremented", func(t *testing.T) {
		if len(got) != 2 {
			t.Fatalf("queued messages %q, want two to examine", payloads(got))
		}
		// MQTT-3.3.2-6: the interval sent is what remains of the original.
		if e := got[0].Properties.MessageExpiry; e == nil || *e > 9 || *e < 1 {
			t.Fatalf("Message Expiry Interval %s after 1.1 s of 10 s, want 1..9", fmtPtr(e))
		}
		if e := got[1].Properties.MessageExpiry; e != nil {
			t.Fatalf("Message Expiry Interval %d on a message sent without one", *e)
		}
		lv := live.onTopic("exp/t")
		if len(lv) != 3 {
			t.Fatalf("live subscriber got %q", payloads(lv))
		}
		if e := lv[1].Properties.MessageExpiry; e == nil || *e > 10 || *e < 9 {
			t.Fatalf("live Message Expiry Interval %s for 10 s, want 9..10", fmtPtr(e))
		}
	})
}

func TestPahoV5RetainedExpiry(t *testing.T) {
	clk := clock.NewFake(time.Now())
	addr, _ := startBroker(t, Options{Clock: clk})
	pub := dialP5(t, addr, v5conn("rexp-pub"))
	one, ten := uint32(1), uint32(10)
	pub.pub(t, &paho.Publish{Topic: "rexp/short", QoS: 1, Retain: true, Payload: []byte("s"), Properties: &paho.PublishProperties{MessageExpiry: &one}})
	pub.pub(t, &paho.Publish{Topic: "rexp/long", QoS: 1, Retain: true, Payload: []byte("l"), Properties: &paho.PublishProperties{MessageExpiry: &ten}})
	clk.Advance(1100 * time.Millisecond) // outlive the short message
	o := dialP5(t, addr, v5conn("rexp-sub"))
	o.sub(t, paho.SubscribeOptions{Topic: "rexp/+", QoS: 1}, markerSub)
	settle(t, pub, o)
	// 3.3.2.3.3: an expired retained message is no longer sent; a live one
	// carries what remains of its interval.
	if got := o.onTopic("rexp/short"); len(got) != 0 {
		t.Fatalf("expired retained message delivered: %q", payloads(got))
	}
	got := o.onTopic("rexp/long")
	if len(got) != 1 {
		t.Fatalf("retained rexp/long delivered %d times, want once", len(got))
	}
	if e := got[0].Properties.MessageExpiry; e == nil || *e > 9 || *e < 1 {
		t.Fatalf("retained Message Expiry Interval %s after 1.1 s of 10 s, want 1..9", fmtPtr(e))
	}
}

func TestPahoV5PropertiesPassThrough(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	pub := dialP5(t, addr, v5conn("props-pub"))
	plain := dialP5(t, addr, v5conn("props-plain"))
	plain.sub(t, paho.SubscribeOptions{Topic: "props/#", QoS: 2})
	// A subscription identifier makes the broker encode per subscriber.
	withID := dialP5(t, addr, v5conn("props-id"))
	id := 9
	withID.subWith(t, &paho.SubscribeProperties{SubscriptionIdentifier: &id}, paho.SubscribeOptions{Topic: "props/#", QoS: 2})

	format := byte(1)
	user := paho.UserProperties{{Key: "k", Value: "v1"}, {Key: "a", Value: "b"}, {Key: "k", Value: "v2"}, {Key: "k", Value: "v1"}}
	for q := byte(0); q <= 2; q++ {
		t.Run(fmt.Sprintf("QoS %d", q), func(t *testing.T) {
			topic := fmt.Sprintf("props/%d", q)
			pub.pub(t, &paho.Publish{Topic: topic, QoS: q, Payload: []byte("{}"), Properties: &paho.PublishProperties{
				PayloadFormat: &format, ContentType: "application/json", ResponseTopic: "reply/to",
				CorrelationData: []byte{0, 1, 2, 0xff}, User: user,
			}})
			for _, o := range []*p5{plain, withID} {
				m := o.waitTopic(t, topic, 1)[0]
				p := m.Properties
				// 3.3.2.3: these travel unaltered, user properties in order.
				if derefOr(p.PayloadFormat, 0) != 1 || p.ContentType != "application/json" || p.ResponseTopic != "reply/to" ||
					!bytes.Equal(p.CorrelationData, []byte{0, 1, 2, 0xff}) {
					t.Fatalf("properties changed: format %s content type %q response topic %q correlation %x",
						fmtPtr(p.PayloadFormat), p.ContentType, p.ResponseTopic, p.CorrelationData)
				}
				if !slices.Equal(p.User, user) {
					t.Fatalf("user properties %v, want %v", p.User, user)
				}
				if p.TopicAlias != nil || p.MessageExpiry != nil {
					t.Fatalf("unexpected topic alias %s or expiry %s", fmtPtr(p.TopicAlias), fmtPtr(p.MessageExpiry))
				}
			}
		})
	}
}

func TestPahoV5ResponseInformation(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	for _, req := range []bool{false, true} {
		t.Run(fmt.Sprintf("requested %v", req), func(t *testing.T) {
			cp := v5conn(fmt.Sprintf("resp-%v", req))
			cp.Properties = &paho.ConnectProperties{RequestResponseInfo: req, RequestProblemInfo: true}
			c := dialP5(t, addr, cp)
			// 3.1.2.11.6: Response Information only when requested.
			if got := c.Connack.Properties.ResponseInfo; (got != "") != req {
				t.Fatalf("Response Information %q", got)
			}
		})
	}
}

func TestPahoV5TopicAliasFromClient(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	o := dialP5(t, addr, v5conn("alias-sub"))
	o.sub(t, paho.SubscribeOptions{Topic: "alias/#", QoS: 1}, markerSub)
	pub := dialP5(t, addr, v5conn("alias-pub"))
	alias := uint16(3)
	send := func(topic, payload string) {
		pub.pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload), Properties: &paho.PublishProperties{TopicAlias: &alias}})
	}
	// 3.3.2.3.4: topic + alias sets the mapping, an empty topic uses it,
	// and a new topic with the same alias replaces it.
	send("alias/x", "1")
	send("", "2")
	send("alias/y", "3")
	send("", "4")
	settle(t, pub, o)
	if got := payloads(o.onTopic("alias/x")); !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("alias/x received %q, want 1 2", got)
	}
	if got := payloads(o.onTopic("alias/y")); !slices.Equal(got, []string{"3", "4"}) {
		t.Fatalf("alias/y received %q, want 3 4", got)
	}
	for _, m := range o.In.All() {
		// The subscriber allowed no aliases: it must get full topics only.
		if m.Properties.TopicAlias != nil {
			t.Fatalf("delivery with topic alias %d to a client that allows none", *m.Properties.TopicAlias)
		}
	}
}

func TestPahoV5ReceiveMaximum(t *testing.T) {
	const n = 8
	addr, _ := startBroker(t, Options{})
	recvMax := uint16(2)
	cp := v5conn("recvmax")
	cp.Properties = &paho.ConnectProperties{ReceiveMaximum: &recvMax, RequestProblemInfo: true}
	o := dialP5(t, addr, cp, manualAck)
	o.sub(t, paho.SubscribeOptions{Topic: "rm/t", QoS: 1}, markerSub)
	pub := dialP5(t, addr, v5conn("recvmax-pub"))
	for i := range n {
		pub.pub(t, &paho.Publish{Topic: "rm/t", QoS: 1, Payload: []byte(strconv.Itoa(i))})
	}
	// MQTT-3.3.4-9: never more unacknowledged QoS 1 deliveries than the
	// client's Receive Maximum; the rest follow as acknowledgements free slots.
	for acked := 0; acked < n; acked += int(recvMax) {
		want := min(acked+int(recvMax), n)
		o.waitTopic(t, "rm/t", want)
		settle(t, pub, o)
		got := o.onTopic("rm/t")
		if len(got) != want {
			t.Fatalf("%d deliveries with %d acknowledged, want %d", len(got), acked, want)
		}
		for i := acked; i < want; i++ {
			if string(got[i].Payload) != strconv.Itoa(i) {
				t.Fatalf("delivery %d is %q", i, got[i].Payload)
			}
			if err := o.Ack(got[i]); err != nil {
				t.Fatalf("ack: %v", err)
			}
		}
	}
}

func TestPahoV5ServerShutdown(t *testing.T) {
	addr, b := startBroker(t, Options{})
	c := dialP5(t, addr, v5conn("shutdown"))
	ctx, cancel := context.WithTimeout(context.Background(), pahoWait)
	defer cancel()
	if err := b.Stop(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	d := c.Discs.WaitFor(t, "DISCONNECT", 1, func(*paho.Disconnect) bool { return true })[0]
	if d.ReasonCode != byte(packet.ServerShuttingDown) {
		t.Fatalf("DISCONNECT 0x%02X, want 0x8B", d.ReasonCode)
	}
}
