package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/clock"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// malformedCase is one bad input and the reaction the specifications
// require: a DISCONNECT with a reason code and the close (5.0), a bare close
// (3.1.1, or before CONNACK), or a refusing CONNACK given byte for byte.
type malformedCase struct {
	name      string
	v         packet.Version // 0 means 5.0
	noConnect bool           // send the bytes instead of a valid CONNECT
	send      []byte
	want      packet.ReasonCode // DISCONNECT reason (5.0 after CONNACK)
	connack   []byte            // exact CONNACK expected before the close
	closeOnly bool              // closed without any packet
}

var bigPayload = bytes.Repeat([]byte{'x'}, 600)

func malformedCases() []malformedCase {
	pub := func(flags byte, topic string, rest ...[]byte) []byte {
		return rawFrame(0x30|flags, append([][]byte{rawStr(topic)}, rest...)...)
	}
	connect := func(name string, level, flags byte, rest ...[]byte) []byte {
		return rawFrame(0x10, append([][]byte{rawStr(name), {level, flags, 0, 0}}, rest...)...)
	}
	return []malformedCase{
		// Before CONNECT.
		{name: "first packet PINGREQ", noConnect: true, send: []byte{0xC0, 0}, closeOnly: true},
		{name: "first packet PUBLISH", noConnect: true, send: pub(0, "a", rawProps()), closeOnly: true},
		{name: "first packet garbage", noConnect: true, send: []byte{0x00, 0x00}, closeOnly: true},
		{name: "protocol level 6", noConnect: true, send: connect("MQTT", 6, 0x02, rawProps(), rawStr("x")),
			connack: []byte{0x20, 0x02, 0x00, 0x01}},
		{name: "protocol name MQTX", noConnect: true, send: connect("MQTX", 4, 0x02, rawStr("x")),
			connack: []byte{0x20, 0x02, 0x00, 0x01}},
		{name: "3.1.1 empty client id without clean session", v: packet.V311, noConnect: true,
			send: connect("MQTT", 4, 0x00, rawStr("")), connack: []byte{0x20, 0x02, 0x00, 0x02}},
		{name: "5.0 CONNECT reserved flag", noConnect: true, send: connect("MQTT", 5, 0x03, rawProps(), rawStr("x")),
			connack: []byte{0x20, 0x03, 0x00, 0x81, 0x00}},
		{name: "5.0 CONNECT will QoS 3", noConnect: true, send: connect("MQTT", 5, 0x1E, rawProps(), rawStr("x"), rawProps(), rawStr("w"), rawStr("p")),
			connack: []byte{0x20, 0x03, 0x00, 0x81, 0x00}},
		{name: "5.0 CONNECT unknown property", noConnect: true, send: connect("MQTT", 5, 0x02, rawProps(0x7F, 0), rawStr("x")),
			connack: []byte{0x20, 0x03, 0x00, 0x81, 0x00}},
		{name: "5.0 CONNECT duplicate property", noConnect: true, send: connect("MQTT", 5, 0x02, rawProps(0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2), rawStr("x")),
			connack: []byte{0x20, 0x03, 0x00, 0x82, 0x00}},
		{name: "5.0 CONNECT will topic with wildcard", noConnect: true, send: connect("MQTT", 5, 0x06, rawProps(), rawStr("x"), rawProps(), rawStr("w/#"), rawStr("p")),
			connack: []byte{0x20, 0x03, 0x00, 0x90, 0x00}},
		{name: "3.1.1 CONNECT reserved flag", v: packet.V311, noConnect: true, send: connect("MQTT", 4, 0x03, rawStr("x")), closeOnly: true},
		{name: "5.0 CONNECT truncated", noConnect: true, send: rawFrame(0x10, rawStr("MQTT"), []byte{5}),
			connack: []byte{0x20, 0x03, 0x00, 0x81, 0x00}},
		{name: "3.1.1 CONNECT truncated", noConnect: true, send: rawFrame(0x10, rawStr("MQTT"), []byte{4}), closeOnly: true},

		// 5.0 after CONNACK: DISCONNECT with the reason code, then close.
		{name: "second CONNECT", send: connV5("again").Append(nil, packet.V5), want: packet.ProtocolError},
		{name: "CONNACK from a client", send: []byte{0x20, 0x03, 0x00, 0x00, 0x00}, want: packet.ProtocolError},
		{name: "SUBACK from a client", send: rawFrame(0x90, rawU16(1), rawProps(), []byte{0}), want: packet.ProtocolError},
		{name: "reserved packet type 0", send: []byte{0x00, 0x00}, want: packet.MalformedPacket},
		{name: "SUBSCRIBE flags 0", send: rawFrame(0x80, rawU16(1), rawProps(), rawStr("a"), []byte{0}), want: packet.MalformedPacket},
		{name: "UNSUBSCRIBE flags 0", send: rawFrame(0xA0, rawU16(1), rawProps(), rawStr("a")), want: packet.MalformedPacket},
		{name: "PUBREL flags 0", send: rawFrame(0x60, rawU16(1)), want: packet.MalformedPacket},
		{name: "PUBACK flags 2", send: rawFrame(0x42, rawU16(1)), want: packet.MalformedPacket},
		{name: "PINGREQ flags 1", send: []byte{0xC1, 0}, want: packet.MalformedPacket},
		{name: "PINGREQ with a body", send: []byte{0xC0, 1, 0}, want: packet.MalformedPacket},
		{name: "PUBLISH QoS 3", send: pub(0x06, "a", rawU16(1), rawProps()), want: packet.MalformedPacket},
		{name: "PUBLISH DUP with QoS 0", send: pub(0x08, "a", rawProps()), want: packet.MalformedPacket},
		{name: "remaining length of 5 bytes", send: []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, want: packet.MalformedPacket},
		{name: "remaining length not minimal", send: []byte{0xC0, 0x80, 0x00}, want: packet.MalformedPacket},
		{name: "topic length beyond packet", send: rawFrame(0x30, []byte{0, 10, 'a'}), want: packet.MalformedPacket},
		{name: "topic invalid UTF-8", send: pub(0, "a/\xff", rawProps()), want: packet.MalformedPacket},
		{name: "topic with U+0000", send: pub(0, "a/\x00", rawProps()), want: packet.MalformedPacket},
		{name: "topic with surrogate", send: pub(0, "a/\xed\xa0\x80", rawProps()), want: packet.MalformedPacket},
		// MQTT-3.3.2-2: the codec answers a wildcard in a topic name with
		// 0x90 Topic Name Invalid, which 5.0 §3.14.2.1 lists for DISCONNECT.
		{name: "topic with +", send: pub(0, "a/+", rawProps()), want: packet.TopicNameInvalid},
		{name: "topic # at QoS 1", send: pub(0x02, "#", rawU16(1), rawProps()), want: packet.TopicNameInvalid},
		{name: "packet larger than maximum", send: pub(0, "a", rawProps(), bigPayload), want: packet.PacketTooLarge},
		{name: "topic alias 0", send: pub(0, "a", rawProps(0x23, 0, 0)), want: packet.TopicAliasInvalid},
		{name: "topic alias above maximum", send: pub(0, "a", rawProps(0x23, 0, 11)), want: packet.TopicAliasInvalid},
		{name: "topic alias never set", send: pub(0, "", rawProps(0x23, 0, 3)), want: packet.ProtocolError},
		{name: "empty topic without alias", send: pub(0, "", rawProps()), want: packet.ProtocolError},
		{name: "subscription identifier in PUBLISH", send: pub(0, "a", rawProps(0x0B, 5)), want: packet.ProtocolError},
		{name: "unknown property", send: pub(0, "a", rawProps(0x7F, 0)), want: packet.MalformedPacket},
		{name: "duplicate property", send: pub(0, "a", rawProps(0x02, 0, 0, 0, 5, 0x02, 0, 0, 0, 6)), want: packet.ProtocolError},
		{name: "property not allowed in PUBLISH", send: pub(0, "a", rawProps(0x11, 0, 0, 0, 1)), want: packet.ProtocolError},
		{name: "property length beyond packet", send: pub(0, "a", []byte{5}), want: packet.MalformedPacket},
		{name: "user property invalid UTF-8", send: pub(0, "a", rawProps(append(append([]byte{0x26}, rawStr("\xc0")...), rawStr("v")...)...)), want: packet.MalformedPacket},
		{name: "payload format indicator 2", send: pub(0, "a", rawProps(0x01, 2)), want: packet.ProtocolError},
		{name: "PUBLISH QoS 1 packet id 0", send: pub(0x02, "a", rawU16(0), rawProps()), want: packet.ProtocolError},
		{name: "SUBSCRIBE without topics", send: rawFrame(0x82, rawU16(1), rawProps()), want: packet.ProtocolError},
		{name: "SUBSCRIBE packet id 0", send: rawFrame(0x82, rawU16(0), rawProps(), rawStr("a"), []byte{0}), want: packet.ProtocolError},
		{name: "SUBSCRIBE reserved option bits", send: rawFrame(0x82, rawU16(1), rawProps(), rawStr("a"), []byte{0x40}), want: packet.MalformedPacket},
		{name: "SUBSCRIBE QoS 3", send: rawFrame(0x82, rawU16(1), rawProps(), rawStr("a"), []byte{0x03}), want: packet.MalformedPacket},
		{name: "SUBSCRIBE retain handling 3", send: rawFrame(0x82, rawU16(1), rawProps(), rawStr("a"), []byte{0x30}), want: packet.ProtocolError},
		{name: "SUBSCRIBE No Local on shared", send: rawFrame(0x82, rawU16(1), rawProps(), rawStr("$share/g/a"), []byte{0x04}), want: packet.ProtocolError},
		{name: "SUBSCRIBE two subscription identifiers", send: rawFrame(0x82, rawU16(1), rawProps(0x0B, 1, 0x0B, 2), rawStr("a"), []byte{0}), want: packet.ProtocolError},
		{name: "UNSUBSCRIBE without topics", send: rawFrame(0xA2, rawU16(1), rawProps()), want: packet.ProtocolError},
		{name: "DISCONNECT invalid reason", send: []byte{0xE0, 1, 0x03}, want: packet.ProtocolError},
		{name: "AUTH without a method", send: rawFrame(0xF0, []byte{0x19}, rawProps()), want: packet.ProtocolError},

		// 3.1.1: no DISCONNECT exists for the server, the connection just closes.
		{name: "3.1.1 second CONNECT", v: packet.V311, send: (&packet.Connect{ClientID: "again", CleanStart: true}).Append(nil, packet.V311), closeOnly: true},
		{name: "3.1.1 PUBLISH QoS 3", v: packet.V311, send: pub(0x06, "a", rawU16(1)), closeOnly: true},
		{name: "3.1.1 SUBSCRIBE flags 0", v: packet.V311, send: rawFrame(0x80, rawU16(1), rawStr("a"), []byte{0}), closeOnly: true},
		{name: "3.1.1 topic invalid UTF-8", v: packet.V311, send: pub(0, "\xff"), closeOnly: true},
		{name: "3.1.1 empty topic", v: packet.V311, send: pub(0, ""), closeOnly: true},
		{name: "3.1.1 AUTH", v: packet.V311, send: []byte{0xF0, 0x00}, closeOnly: true},
		{name: "3.1.1 packet larger than maximum", v: packet.V311, send: pub(0, "a", bigPayload), closeOnly: true},
	}
}

func TestRawMalformed(t *testing.T) {
	addr, b := startBroker(t, Options{MaxPacketSize: 512, TopicAliasMaximum: 10})
	for _, tc := range malformedCases() {
		t.Run(tc.name, func(t *testing.T) {
			v := orV5(tc.v)
			var c *rawClient
			if tc.noConnect {
				c = dialRaw(t, addr, v)
			} else {
				c, _ = connectRaw(t, addr, v, &packet.Connect{ClientID: "bad", CleanStart: true})
			}
			before := b.Counters()
			c.tryWrite(tc.send)
			switch {
			case tc.connack != nil:
				// Compared as bytes: a 3.1.1-form CONNACK does not decode as 5.0.
				p := c.nextRaw()
				got := append([]byte{byte(p.Header.Type)<<4 | p.Header.Flags, byte(p.Header.Remaining)}, p.Body...)
				if !bytes.Equal(got, tc.connack) {
					t.Fatalf("got % X, want CONNACK % X", got, tc.connack)
				}
				c.expectClosed()
				if after := b.Counters(); after.Refused != before.Refused+1 {
					t.Errorf("refused connections %d, want %d", after.Refused, before.Refused+1)
				}
			case tc.closeOnly:
				c.expectClosed()
			default:
				c.expectDisconnect(tc.want)
				testwait.For(t, "protocol error counted", func() bool {
					return b.Counters().ProtocolErrors > before.ProtocolErrors
				})
			}
			checkHealthy(t, addr)
		})
	}
}

// orV5 reads a zero version in a table as 5.0.
func orV5(v packet.Version) packet.Version {
	if v == 0 {
		return packet.V5
	}
	return v
}

func TestRawInvalidFilterKeepsConnection(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	for _, tc := range []struct {
		v    packet.Version
		fail packet.ReasonCode
	}{{packet.V5, packet.TopicFilterInvalid}, {packet.V311, packet.UnspecifiedError}} {
		c, _ := connectRaw(t, addr, tc.v, &packet.Connect{ClientID: "filters", CleanStart: true})
		filters := []string{"a/#/b", "ok/+", "a+/b", "#/a", "$share/g", "$share//a", "$share/g+/a", "ok/#"}
		want := []packet.ReasonCode{tc.fail, 1, tc.fail, tc.fail, tc.fail, tc.fail, tc.fail, 1}
		sp := &packet.Subscribe{PacketID: 9}
		for _, f := range filters {
			sp.Subscriptions = append(sp.Subscriptions, packet.Subscription{Filter: f, QoS: 1})
		}
		c.send(sp)
		ack := rawRecv[packet.SubAck](c)
		if ack.PacketID != 9 || !slices.Equal(ack.ReasonCodes, want) {
			t.Fatalf("%d: SUBACK id %d %v, want %v", tc.v, ack.PacketID, ack.ReasonCodes, want)
		}
		c.ping()
		c.send(&packet.Publish{Topic: "ok/x", Payload: []byte("still up")})
		c.expectPublish("ok/x", "still up")
		c.send(&packet.Disconnect{})
		c.expectClosed()
	}
}

func TestRawKeepAliveTimeout(t *testing.T) {
	t.Parallel()
	addr, _ := startBroker(t, Options{})
	for _, v := range []packet.Version{packet.V5, packet.V311} {
		t.Run(fmt.Sprintf("idle version %d", v), func(t *testing.T) {
			t.Parallel()
			c, _ := connectRaw(t, addr, v, &packet.Connect{ClientID: fmt.Sprintf("idle-%d", v), CleanStart: true, KeepAlive: 1})
			start := time.Now()
			if v == packet.V5 {
				c.expectDisconnect(packet.KeepAliveTimeout)
			} else {
				c.expectClosed()
			}
			// MQTT-3.1.2-22: one and a half times the keep alive.
			if d := time.Since(start); d < 1300*time.Millisecond || d > 2500*time.Millisecond {
				t.Errorf("closed after %v, want about 1.5s", d)
			}
			checkHealthy(t, addr)
		})
	}
	t.Run("pinging", func(t *testing.T) {
		t.Parallel()
		// PINGREQ within the keep alive holds the connection open past the limit.
		c, _ := connectRaw(t, addr, packet.V5, &packet.Connect{ClientID: "pinger", CleanStart: true, KeepAlive: 1})
		// Keep-alive is a socket read deadline on real time (see
		// ARCHITECTURE.md), so real time must pass: each interval is
		// watched, and nothing (no DISCONNECT, no close) may arrive in it.
		for range 3 {
			c.expectSilenceFor(800 * time.Millisecond)
			c.ping()
		}
		c.expectDisconnect(packet.KeepAliveTimeout)
	})
}

func TestRawConnectTimeout(t *testing.T) {
	t.Parallel()
	addr, _ := startBroker(t, Options{ConnectTimeout: 300 * time.Millisecond})
	for _, prefix := range [][]byte{nil, {0x10, 0x20, 0x00}} {
		c := dialRaw(t, addr, packet.V5)
		start := time.Now()
		if prefix != nil {
			c.write(prefix)
		}
		c.expectClosed()
		if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
			t.Errorf("closed after %v, want about 300ms", d)
		}
	}
	checkHealthy(t, addr)
}

func TestRawOverlappingSubscriptions(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	sub, _ := connectRaw(t, addr, packet.V5, connV5("overlap"))
	for i, s := range []packet.Subscription{{Filter: "o/+", QoS: 1}, {Filter: "o/#", QoS: 2}, {Filter: "o/x", QoS: 0}} {
		sp := &packet.Subscribe{PacketID: uint16(i + 1), Subscriptions: []packet.Subscription{s}}
		if i < 2 { // the third has no identifier
			sp.Properties.SubscriptionIDs = []uint32{uint32(i + 1)}
		}
		sub.send(sp)
		if ack := rawRecv[packet.SubAck](sub); ack.ReasonCodes[0] != packet.ReasonCode(s.QoS) {
			t.Fatalf("SUBACK %v", ack.ReasonCodes)
		}
	}
	pub, _ := connectRaw(t, addr, packet.V5, connV5("overlap-pub"))
	for _, qos := range []byte{0, 1, 2} {
		pub.send(&packet.Publish{QoS: qos, Topic: "o/x", PacketID: 5, Payload: []byte{qos}})
		switch qos {
		case 1:
			pub.expectAck(packet.PUBACK, 5, packet.Success)
		case 2:
			pub.expectAck(packet.PUBREC, 5, packet.Success)
			pub.send(&packet.Ack{Type: packet.PUBREL, PacketID: 5})
			pub.expectAck(packet.PUBCOMP, 5, packet.Success)
		}
		p := sub.expectPublish("o/x", string([]byte{qos}))
		// One delivery at the highest granted QoS (capped by the publish)
		// carrying every matching identifier (MQTT-3.3.4-3, -4, -5).
		if p.QoS != qos {
			t.Errorf("qos %d publish delivered at %d", qos, p.QoS)
		}
		ids := slices.Sorted(slices.Values(p.Properties.SubscriptionIDs))
		if !slices.Equal(ids, []uint32{1, 2}) {
			t.Errorf("qos %d: subscription identifiers %v, want [1 2]", qos, p.Properties.SubscriptionIDs)
		}
		ackDelivery(sub, p)
		sub.ping() // no second copy
	}
}

// ackDelivery completes the subscriber's side of a QoS 1 or 2 delivery.
func ackDelivery(c *rawClient, p *packet.Publish) {
	c.t.Helper()
	switch p.QoS {
	case 1:
		c.send(&packet.Ack{Type: packet.PUBACK, PacketID: p.PacketID})
	case 2:
		c.send(&packet.Ack{Type: packet.PUBREC, PacketID: p.PacketID})
		c.expectAck(packet.PUBREL, p.PacketID, packet.Success)
		c.send(&packet.Ack{Type: packet.PUBCOMP, PacketID: p.PacketID})
	}
}

func TestRawTopicAliasToClient(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	cp := connV5("aliased")
	cp.Properties.TopicAliasMaximum = 2
	cp.Properties.Set(packet.PropTopicAliasMaximum)
	sub, _ := connectRaw(t, addr, packet.V5, cp)
	sub.subscribe(1, 0, "al/#")
	pub, _ := connectRaw(t, addr, packet.V5, connV5("alias-pub"))
	steps := []struct {
		topic     string
		wantTopic string
		wantAlias uint16 // 0: no alias
	}{
		{"al/x", "al/x", 1}, // new mapping: topic and alias
		{"al/x", "", 1},     // known: empty topic and alias only
		{"al/y", "al/y", 2},
		{"al/x", "", 1},
		{"al/z", "al/z", 0}, // the client's maximum is used up
		{"al/y", "", 2},
	}
	for i, st := range steps {
		payload := string(rune('a' + i))
		pub.send(&packet.Publish{Topic: st.topic, Payload: []byte(payload)})
		p := sub.expectPublish(st.wantTopic, payload)
		has := p.Properties.Has(packet.PropTopicAlias)
		if st.wantAlias == 0 && has || st.wantAlias != 0 && p.Properties.TopicAlias != st.wantAlias {
			t.Fatalf("step %d: alias %d (present %v), want %d", i, p.Properties.TopicAlias, has, st.wantAlias)
		}
	}
	// Without Topic Alias Maximum the client never gets an alias.
	plain, _ := connectRaw(t, addr, packet.V5, connV5("unaliased"))
	plain.subscribe(1, 0, "al/#")
	for range 2 {
		pub.send(&packet.Publish{Topic: "al/x", Payload: []byte("p")})
		sub.expectPublish("", "p")
		if p := plain.expectPublish("al/x", "p"); p.Properties.Has(packet.PropTopicAlias) {
			t.Fatal("alias sent to a client that allowed none")
		}
	}
}

func TestRawMaxPacketSizeToClient(t *testing.T) {
	for _, tc := range []struct {
		name  string
		qos   byte
		alias bool
	}{{"qos0", 0, false}, {"qos1", 1, false}, {"qos2", 2, false}, {"qos0 with alias", 0, true}, {"qos1 with alias", 1, true}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, b := startBroker(t, Options{MaxInflight: 1})
			cp := connV5("small")
			cp.Properties.MaximumPacketSize = 100
			cp.Properties.Set(packet.PropMaximumPacketSize)
			if tc.alias {
				cp.Properties.TopicAliasMaximum = 4
				cp.Properties.Set(packet.PropTopicAliasMaximum)
			}
			sub, _ := connectRaw(t, addr, packet.V5, cp)
			sub.subscribe(1, tc.qos, "mp/#")
			pub, _ := connectRaw(t, addr, packet.V5, connV5("big-pub"))
			pub.send(&packet.Publish{QoS: tc.qos, PacketID: 1, Topic: "mp/a", Payload: bytes.Repeat([]byte{'b'}, 200)})
			pub.send(&packet.Publish{QoS: tc.qos, PacketID: 2, Topic: "mp/a", Payload: []byte("small")})
			// MQTT-3.1.2-25: the large one is discarded, as if delivered;
			// the next one still arrives, with its topic since no alias
			// reached the client for the discarded one. With an inflight
			// window of one, a stuck slot would hold the small one back.
			p := sub.expectPublish("mp/a", "small")
			if tc.alias && p.Properties.TopicAlias == 0 {
				t.Error("small publish carries no alias")
			}
			ackDelivery(sub, p)
			sub.ping()
			if n := b.Counters().Dropped["packet_too_large"]; n != 1 {
				t.Errorf("packet_too_large drops %d, want 1", n)
			}
		})
	}
}

func TestRawReceiveMaximum(t *testing.T) {
	addr, _ := startBroker(t, Options{ReceiveMaximum: 2})
	c, ack := connectRaw(t, addr, packet.V5, connV5("flood"))
	if ack.Properties.ReceiveMaximum != 2 {
		t.Fatalf("CONNACK receive maximum %d, want 2", ack.Properties.ReceiveMaximum)
	}
	for id := uint16(1); id <= 2; id++ {
		c.send(&packet.Publish{QoS: 2, PacketID: id, Topic: "rm", Payload: []byte("x")})
		c.expectAck(packet.PUBREC, id, packet.NoMatchingSubscribers)
	}
	// Releasing one frees a slot.
	c.send(&packet.Ack{Type: packet.PUBREL, PacketID: 1})
	c.expectAck(packet.PUBCOMP, 1, packet.Success)
	c.send(&packet.Publish{QoS: 2, PacketID: 3, Topic: "rm", Payload: []byte("x")})
	c.expectAck(packet.PUBREC, 3, packet.NoMatchingSubscribers)
	// MQTT-3.3.4-7..9: a third unacknowledged QoS 2 publish is too many.
	c.send(&packet.Publish{QoS: 2, PacketID: 4, Topic: "rm", Payload: []byte("x")})
	c.expectDisconnect(packet.ReceiveMaximumExceeded)
	checkHealthy(t, addr)
}

func TestRawQoS2ExactlyOnce(t *testing.T) {
	for _, v := range []packet.Version{packet.V5, packet.V311} {
		addr, _ := startBroker(t, Options{})
		sub, _ := connectRaw(t, addr, packet.V5, connV5("eo-sub"))
		sub.subscribe(1, 2, "eo/#")
		pub, _ := connectRaw(t, addr, v, &packet.Connect{ClientID: "eo-pub", CleanStart: true})
		first := &packet.Publish{QoS: 2, PacketID: 7, Topic: "eo/a", Payload: []byte("once")}
		pub.send(first)
		pub.expectAck(packet.PUBREC, 7, packet.Success)
		// The PUBREC was lost, so the client resends with DUP.
		resend := *first
		resend.Dup = true
		pub.send(&resend)
		pub.expectAck(packet.PUBREC, 7, packet.Success)
		pub.send(&resend)
		pub.expectAck(packet.PUBREC, 7, packet.Success)
		pub.send(&packet.Ack{Type: packet.PUBREL, PacketID: 7})
		pub.expectAck(packet.PUBCOMP, 7, packet.Success)
		// A PUBREL for an identifier not awaiting release: 0x92 in 5.0.
		notFound := packet.PacketIdentifierNotFound
		if v != packet.V5 {
			notFound = packet.Success
		}
		pub.send(&packet.Ack{Type: packet.PUBREL, PacketID: 7})
		pub.expectAck(packet.PUBCOMP, 7, notFound)
		pub.send(&packet.Ack{Type: packet.PUBREL, PacketID: 99})
		pub.expectAck(packet.PUBCOMP, 99, notFound)
		// After release the identifier is free for a new message.
		pub.send(&packet.Publish{QoS: 2, PacketID: 7, Topic: "eo/a", Payload: []byte("twice")})
		pub.expectAck(packet.PUBREC, 7, packet.Success)

		once := sub.expectPublish("eo/a", "once")
		twice := sub.expectPublish("eo/a", "twice")
		ackDelivery(sub, once)
		ackDelivery(sub, twice)
		sub.ping()
	}
}

func TestRawRedeliveryWithDup(t *testing.T) {
	addr, b := startBroker(t, Options{})
	persistent := func() *packet.Connect {
		cp := &packet.Connect{ClientID: "redeliver"}
		cp.Properties.SessionExpiry = 60
		cp.Properties.Set(packet.PropSessionExpiry)
		return cp
	}
	sub, ack := connectRaw(t, addr, packet.V5, persistent())
	if ack.SessionPresent {
		t.Fatal("session present on first connect")
	}
	sub.subscribe(1, 2, "rd/#")
	pub, _ := connectRaw(t, addr, packet.V5, connV5("rd-pub"))
	msgs := []struct {
		topic string
		qos   byte
	}{{"rd/1", 1}, {"rd/2", 2}, {"rd/3", 1}, {"rd/4", 2}}
	ids := make([]uint16, len(msgs))
	for i, m := range msgs {
		pub.send(&packet.Publish{QoS: m.qos, PacketID: uint16(i + 1), Topic: m.topic, Payload: []byte(m.topic)})
		if m.qos == 1 {
			pub.expectAck(packet.PUBACK, uint16(i+1), packet.Success)
		} else {
			pub.expectAck(packet.PUBREC, uint16(i+1), packet.Success)
			pub.send(&packet.Ack{Type: packet.PUBREL, PacketID: uint16(i + 1)})
			pub.expectAck(packet.PUBCOMP, uint16(i+1), packet.Success)
		}
		p := sub.expectPublish(m.topic, m.topic)
		if p.Dup || p.QoS != m.qos {
			t.Fatalf("%s: dup %v qos %d", m.topic, p.Dup, p.QoS)
		}
		ids[i] = p.PacketID
	}
	// rd/2 gets as far as PUBREL; nothing else is acknowledged.
	sub.send(&packet.Ack{Type: packet.PUBREC, PacketID: ids[1]})
	sub.expectAck(packet.PUBREL, ids[1], packet.Success)
	sub.send(&packet.Disconnect{})
	sub.expectClosed()
	testwait.For(t, "subscriber offline", func() bool { return b.Counters().Connected == 1 })
	// Queued while offline: sent after the redeliveries, without DUP.
	pub.send(&packet.Publish{QoS: 1, PacketID: 9, Topic: "rd/5", Payload: []byte("rd/5")})
	pub.expectAck(packet.PUBACK, 9, packet.Success)

	sub, ack = connectRaw(t, addr, packet.V5, persistent())
	if !ack.SessionPresent {
		t.Fatal("session not present on reconnect")
	}
	// MQTT-4.4.0-1: unacknowledged PUBLISH with their original identifiers
	// and DUP set, PUBREL for the released one, in the original order.
	for i, m := range msgs {
		if i == 1 {
			sub.expectAck(packet.PUBREL, ids[1], packet.Success)
			continue
		}
		p := sub.expectPublish(m.topic, m.topic)
		if !p.Dup || p.PacketID != ids[i] || p.QoS != m.qos {
			t.Fatalf("%s: dup %v id %d qos %d, want dup, id %d qos %d", m.topic, p.Dup, p.PacketID, p.QoS, ids[i], m.qos)
		}
	}
	p := sub.expectPublish("rd/5", "rd/5")
	if p.Dup {
		t.Error("queued message sent with DUP")
	}
	sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: ids[0]})
	sub.send(&packet.Ack{Type: packet.PUBCOMP, PacketID: ids[1]})
	sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: ids[2]})
	sub.send(&packet.Ack{Type: packet.PUBREC, PacketID: ids[3]})
	sub.expectAck(packet.PUBREL, ids[3], packet.Success)
	sub.send(&packet.Ack{Type: packet.PUBCOMP, PacketID: ids[3]})
	sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: p.PacketID})
	sub.ping()
	// Everything acknowledged: a third connection gets nothing again.
	sub.send(&packet.Disconnect{})
	sub.expectClosed()
	testwait.For(t, "subscriber offline", func() bool { return b.Counters().Connected == 1 })
	sub, _ = connectRaw(t, addr, packet.V5, persistent())
	sub.ping()
}

func TestRawPubAckNoSubscribers(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	c5, _ := connectRaw(t, addr, packet.V5, connV5("nosubs5"))
	c5.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "nobody/here", Payload: []byte("x")})
	c5.expectAck(packet.PUBACK, 1, packet.NoMatchingSubscribers)
	c5.send(&packet.Publish{QoS: 2, PacketID: 2, Topic: "nobody/here", Payload: []byte("x")})
	c5.expectAck(packet.PUBREC, 2, packet.NoMatchingSubscribers)
	// 3.1.1 has no reason codes: a plain two-byte PUBACK.
	c3, _ := connectRaw(t, addr, packet.V311, &packet.Connect{ClientID: "nosubs3", CleanStart: true})
	c3.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "nobody/here", Payload: []byte("x")})
	p := c3.next()
	if p.Header.Type != packet.PUBACK || !bytes.Equal(p.Body, []byte{0, 1}) {
		t.Fatalf("got %s body % X, want PUBACK 00 01", p, p.Body)
	}
	// With a subscriber, Success.
	c5.subscribe(3, 0, "nobody/here")
	c5.send(&packet.Publish{QoS: 1, PacketID: 4, Topic: "nobody/here", Payload: []byte("x")})
	for range 2 { // the PUBACK and the delivery to itself, in either order
		switch p := c5.next(); p.Header.Type {
		case packet.PUBACK:
			if a := p.Pkt.(*packet.Ack); a.ReasonCode != packet.Success {
				t.Fatalf("PUBACK 0x%02X with a subscriber", byte(a.ReasonCode))
			}
		case packet.PUBLISH:
		default:
			t.Fatalf("unexpected %s", p)
		}
	}
}

func TestRawProblemInformation(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	for _, tc := range []struct {
		name       string
		request    *byte // Request Problem Information, nil = absent (default 1)
		wantReason bool
	}{{"default", nil, true}, {"requested", new(byte(1)), true}, {"refused", new(byte(0)), false}} {
		t.Run(tc.name, func(t *testing.T) {
			cp := connV5("problem-" + tc.name)
			if tc.request != nil {
				cp.Properties.RequestProblemInfo = *tc.request
				cp.Properties.Set(packet.PropRequestProblemInfo)
			}
			c, _ := connectRaw(t, addr, packet.V5, cp)
			c.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "$forbidden", Payload: []byte("x")})
			a := c.expectAck(packet.PUBACK, 1, packet.TopicNameInvalid)
			// MQTT-3.1.2-29: with 0, no reason string or user property
			// except on CONNACK and DISCONNECT.
			if got := a.Properties.Has(packet.PropReasonString) || len(a.Properties.User) > 0; got != tc.wantReason {
				t.Errorf("PUBACK reason string present %v (%q), want %v", got, a.Properties.ReasonString, tc.wantReason)
			}
			c.send(&packet.Subscribe{PacketID: 2, Subscriptions: []packet.Subscription{{Filter: "a/#/b"}}})
			s := rawRecv[packet.SubAck](c)
			if !slices.Equal(s.ReasonCodes, []packet.ReasonCode{packet.TopicFilterInvalid}) {
				t.Fatalf("SUBACK %v", s.ReasonCodes)
			}
			if s.Properties.Has(packet.PropReasonString) && !tc.wantReason || len(s.Properties.User) > 0 && !tc.wantReason {
				t.Errorf("SUBACK carries problem information %q", s.Properties.ReasonString)
			}
			c.ping()
		})
	}
}

func TestRawDollarTopicsRefused(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	watcher, _ := connectRaw(t, addr, packet.V5, connV5("dollar-watch"))
	watcher.subscribe(1, 2, "#")
	watcher.subscribe(2, 2, "$x/#")
	c, _ := connectRaw(t, addr, packet.V5, connV5("dollar"))
	c.send(&packet.Publish{QoS: 0, Topic: "$x/a", Payload: []byte("0")})
	c.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "$x/a", Payload: []byte("1")})
	c.expectAck(packet.PUBACK, 1, packet.TopicNameInvalid)
	c.send(&packet.Publish{QoS: 2, PacketID: 2, Topic: "$SYS/broker/uptime", Payload: []byte("2")})
	c.expectAck(packet.PUBREC, 2, packet.TopicNameInvalid)
	// Refused, not held: releasing it finds nothing.
	c.send(&packet.Ack{Type: packet.PUBREL, PacketID: 2})
	c.expectAck(packet.PUBCOMP, 2, packet.PacketIdentifierNotFound)
	c.ping()
	watcher.ping() // nothing reached either subscription
	c3, _ := connectRaw(t, addr, packet.V311, &packet.Connect{ClientID: "dollar3", CleanStart: true})
	c3.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "$x/a", Payload: []byte("1")})
	// MQTT-3.3.5-2: 3.1.1 cannot say no, so the refusal is a plain PUBACK.
	c3.expectAck(packet.PUBACK, 1, packet.Success)
	c3.ping()
	watcher.ping()
}

// challengeAuth is the TEST-CHALLENGE enhanced authentication method: the
// server sends a nonce and the client must answer with it reversed.
// It is an EnhancedAuthenticator: clients without an Authentication Method
// present no credentials it knows, so a listener allowing anonymous access
// admits them.
type challengeAuth struct{}

func (challengeAuth) Authenticate(context.Context, *ConnectInfo) (*Principal, error) {
	return nil, ErrNoCredentials
}

func (challengeAuth) StartAuth(_ context.Context, ci *ConnectInfo) (AuthStepper, error) {
	if ci.AuthMethod != "TEST-CHALLENGE" {
		return nil, &AuthError{Code: packet.BadAuthenticationMethod}
	}
	return &challengeStep{nonce: "nonce-" + ci.ClientID}, nil
}

type challengeStep struct {
	nonce string
	asked bool
}

// errChallenge is a failure without a reason code: the broker must use 0x87.
var errChallenge = errors.New("wrong answer")

func (s *challengeStep) Step(data []byte) ([]byte, bool, error) {
	if !s.asked {
		s.asked = true
		return []byte(s.nonce), false, nil
	}
	switch string(data) {
	case reverse(s.nonce):
		return []byte("welcome"), true, nil
	case "ban me":
		return nil, false, packet.Banned
	}
	return nil, false, errChallenge
}

func reverse(s string) string {
	b := []byte(s)
	slices.Reverse(b)
	return string(b)
}

func startAuthBroker(t *testing.T) string {
	t.Helper()
	b, err := New(Options{SysInterval: -1}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	b.SetListenerSecurity("test", challengeAuth{}, nil, true)
	return serveBroker(t, b)
}

// serveBroker serves an already built broker on a real TCP socket, like
// startBroker does for one it builds itself.
func serveBroker(t *testing.T, b *Broker) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b.Start(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go b.ServeConn(conn, "test")
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-served
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := b.Stop(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		cancel()
	})
	return ln.Addr().String()
}

func authPacket(code packet.ReasonCode, method, data string) *packet.Auth {
	a := &packet.Auth{ReasonCode: code}
	a.Properties.AuthMethod = method
	a.Properties.Set(packet.PropAuthMethod)
	if data != "" {
		a.Properties.AuthData = []byte(data)
		a.Properties.Set(packet.PropAuthData)
	}
	return a
}

func TestRawEnhancedAuth(t *testing.T) {
	addr := startAuthBroker(t)
	const method = "TEST-CHALLENGE"
	for _, tc := range []struct {
		name   string
		method string
		answer func(nonce string) packet.Packet // nil: no AUTH round
		want   packet.ReasonCode
	}{
		{"correct answer", method, func(n string) packet.Packet {
			return authPacket(packet.ContinueAuthentication, method, reverse(n))
		}, packet.Success},
		{"wrong answer", method, func(string) packet.Packet {
			return authPacket(packet.ContinueAuthentication, method, "guess")
		}, packet.NotAuthorized},
		{"code from the method", method, func(string) packet.Packet {
			return authPacket(packet.ContinueAuthentication, method, "ban me")
		}, packet.Banned},
		{"other method in AUTH", method, func(n string) packet.Packet {
			return authPacket(packet.ContinueAuthentication, "OTHER", reverse(n))
		}, packet.ProtocolError},
		{"AUTH success from client", method, func(n string) packet.Packet {
			return authPacket(packet.Success, method, reverse(n))
		}, packet.ProtocolError},
		{"PUBLISH instead of AUTH", method, func(string) packet.Packet {
			return &packet.Publish{Topic: "a", Payload: []byte("x")}
		}, packet.ProtocolError},
		{"unknown method", "NOPE", nil, packet.BadAuthenticationMethod},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := connV5("auth-client")
			cp.Properties.AuthMethod = tc.method
			cp.Properties.Set(packet.PropAuthMethod)
			c := dialRaw(t, addr, packet.V5)
			c.write(cp.Append(nil, packet.V5))
			if tc.answer != nil {
				a := rawRecv[packet.Auth](c)
				if a.ReasonCode != packet.ContinueAuthentication || a.Properties.AuthMethod != method ||
					string(a.Properties.AuthData) != "nonce-auth-client" {
					t.Fatalf("AUTH 0x%02X %q %q", byte(a.ReasonCode), a.Properties.AuthMethod, a.Properties.AuthData)
				}
				c.send(tc.answer(string(a.Properties.AuthData)))
			}
			ack := rawRecv[packet.ConnAck](c)
			if ack.ReasonCode != tc.want {
				t.Fatalf("CONNACK 0x%02X, want 0x%02X", byte(ack.ReasonCode), byte(tc.want))
			}
			if tc.want != packet.Success {
				c.expectClosed()
				return
			}
			if ack.Properties.AuthMethod != method || string(ack.Properties.AuthData) != "welcome" {
				t.Fatalf("CONNACK method %q data %q", ack.Properties.AuthMethod, ack.Properties.AuthData)
			}
			c.ping()
		})
	}
	checkHealthy(t, addr)
}

func TestRawReauthentication(t *testing.T) {
	addr := startAuthBroker(t)
	const method = "TEST-CHALLENGE"
	login := func(t *testing.T, id string) *rawClient {
		cp := connV5(id)
		cp.Properties.AuthMethod = method
		cp.Properties.Set(packet.PropAuthMethod)
		c := dialRaw(t, addr, packet.V5)
		c.write(cp.Append(nil, packet.V5))
		a := rawRecv[packet.Auth](c)
		c.send(authPacket(packet.ContinueAuthentication, method, reverse(string(a.Properties.AuthData))))
		if ack := rawRecv[packet.ConnAck](c); ack.ReasonCode != packet.Success {
			t.Fatalf("CONNACK 0x%02X", byte(ack.ReasonCode))
		}
		return c
	}
	t.Run("success", func(t *testing.T) {
		c := login(t, "reauth")
		for range 2 { // twice: the exchange can be repeated
			c.send(authPacket(packet.ReAuthenticate, method, ""))
			a := rawRecv[packet.Auth](c)
			if a.ReasonCode != packet.ContinueAuthentication || string(a.Properties.AuthData) != "nonce-reauth" {
				t.Fatalf("AUTH 0x%02X %q", byte(a.ReasonCode), a.Properties.AuthData)
			}
			c.send(authPacket(packet.ContinueAuthentication, method, reverse("nonce-reauth")))
			a = rawRecv[packet.Auth](c)
			if a.ReasonCode != packet.Success || a.Properties.AuthMethod != method {
				t.Fatalf("AUTH 0x%02X method %q, want success", byte(a.ReasonCode), a.Properties.AuthMethod)
			}
			c.ping()
		}
	})
	t.Run("wrong answer", func(t *testing.T) {
		c := login(t, "reauth-bad")
		c.send(authPacket(packet.ReAuthenticate, method, ""))
		rawRecv[packet.Auth](c)
		c.send(authPacket(packet.ContinueAuthentication, method, "guess"))
		c.expectDisconnect(packet.NotAuthorized)
	})
	t.Run("other method", func(t *testing.T) {
		c := login(t, "reauth-other")
		c.send(authPacket(packet.ReAuthenticate, "OTHER", ""))
		c.expectDisconnect(packet.ProtocolError)
	})
	t.Run("continue without reauthenticate", func(t *testing.T) {
		c := login(t, "reauth-continue")
		c.send(authPacket(packet.ContinueAuthentication, method, "x"))
		c.expectDisconnect(packet.ProtocolError)
	})
	t.Run("client without method", func(t *testing.T) {
		// MQTT-4.12.0-6/-7: AUTH from a client that did not use enhanced
		// authentication at CONNECT is a protocol error.
		c, _ := connectRaw(t, addr, packet.V5, connV5("plain"))
		c.send(authPacket(packet.ReAuthenticate, method, ""))
		c.expectDisconnect(packet.ProtocolError)
	})
	checkHealthy(t, addr)
}

func TestRawSessionExpiryOnDisconnect(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	disc := func(expiry uint32) *packet.Disconnect {
		d := &packet.Disconnect{}
		d.Properties.SessionExpiry = expiry
		d.Properties.Set(packet.PropSessionExpiry)
		return d
	}
	// MQTT-3.14.2-2: 0 at CONNECT, non-zero at DISCONNECT is a protocol error.
	c, _ := connectRaw(t, addr, packet.V5, connV5("se-zero"))
	c.send(disc(30))
	c.expectDisconnect(packet.ProtocolError)
	// Non-zero at CONNECT may be changed, including to 0.
	cp := connV5("se-some")
	cp.Properties.SessionExpiry = 10
	cp.Properties.Set(packet.PropSessionExpiry)
	c, _ = connectRaw(t, addr, packet.V5, cp)
	c.send(disc(0))
	c.expectClosed()
	cp.CleanStart = false
	c, ack := connectRaw(t, addr, packet.V5, cp)
	if ack.SessionPresent {
		t.Error("session survived a DISCONNECT with session expiry 0")
	}
	c.send(disc(0))
	c.expectClosed()
	checkHealthy(t, addr)
}

func TestRawMessageExpiry(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Now())
	addr, _ := startBroker(t, Options{Clock: clk})
	pub, _ := connectRaw(t, addr, packet.V5, connV5("me-pub"))
	expiring := func(topic string, qos byte, retain bool) *packet.Publish {
		p := &packet.Publish{QoS: qos, PacketID: 1, Retain: retain, Topic: topic, Payload: []byte(topic)}
		p.Properties.MessageExpiry = 1
		p.Properties.Set(packet.PropMessageExpiry)
		return p
	}
	// An offline persistent session queues a message that expires.
	cp := &packet.Connect{ClientID: "me-offline"}
	cp.Properties.SessionExpiry = 60
	cp.Properties.Set(packet.PropSessionExpiry)
	off, _ := connectRaw(t, addr, packet.V5, cp)
	off.subscribe(1, 1, "me/queued")
	off.send(&packet.Disconnect{})
	off.expectClosed()

	pub.send(&packet.Publish{Retain: true, Topic: "me/keep", Payload: []byte("me/keep")})
	pub.send(expiring("me/gone", 0, true))
	pub.send(expiring("me/queued", 1, false))
	pub.expectAck(packet.PUBACK, 1, packet.Success)
	// Right away the retained message is there, with its remaining expiry.
	now, _ := connectRaw(t, addr, packet.V5, connV5("me-now"))
	now.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "me/gone"}}})
	rawRecv[packet.SubAck](now)
	if p := now.expectPublish("me/gone", "me/gone"); p.Properties.MessageExpiry != 1 || !p.Retain {
		t.Errorf("retained expiry %d retain %v", p.Properties.MessageExpiry, p.Retain)
	}

	clk.Advance(1500 * time.Millisecond)
	late, _ := connectRaw(t, addr, packet.V5, connV5("me-late"))
	late.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "me/#"}}})
	rawRecv[packet.SubAck](late)
	late.expectPublish("me/keep", "me/keep")
	late.ping() // me/gone has expired
	cp.CleanStart = false
	off, ack := connectRaw(t, addr, packet.V5, cp)
	if !ack.SessionPresent {
		t.Fatal("offline session lost")
	}
	off.ping() // me/queued has expired
}

func TestRawMQTT31(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	c := dialRaw(t, addr, packet.V31)
	raw := (&packet.Connect{ClientID: "old-timer", CleanStart: true, KeepAlive: 30}).Append(nil, packet.V31)
	if !bytes.HasPrefix(raw[2:], []byte("\x00\x06MQIsdp\x03")) {
		t.Fatalf("not a 3.1 CONNECT: % X", raw)
	}
	c.write(raw)
	p := c.next()
	if got := append([]byte{0x20, byte(p.Header.Remaining)}, p.Body...); p.Header.Type != packet.CONNACK || !bytes.Equal(got, []byte{0x20, 2, 0, 0}) {
		t.Fatalf("got %s % X, want CONNACK 20 02 00 00", p, got)
	}
	c.subscribe(1, 1, "old/#")
	c.send(&packet.Publish{QoS: 1, PacketID: 3, Topic: "old/x", Payload: []byte("hi")})
	for range 2 {
		switch p := c.next(); p.Header.Type {
		case packet.PUBACK:
		case packet.PUBLISH:
			if pp := p.Pkt.(*packet.Publish); string(pp.Payload) != "hi" || pp.QoS != 1 {
				t.Fatalf("got %s", p)
			}
		default:
			t.Fatalf("unexpected %s", p)
		}
	}
}

// FuzzServeConn writes arbitrary bytes to a fresh connection, after a valid
// CONNECT when mode asks for one: the broker must not panic or hang, and a
// well-behaved client must still work afterwards.
func FuzzServeConn(f *testing.F) {
	for _, tc := range malformedCases() {
		mode := byte(1)
		if tc.noConnect {
			mode = 0
		} else if tc.v == packet.V311 {
			mode = 2
		}
		f.Add(mode, tc.send)
	}
	sub := (&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a/#", QoS: 2}}}).Append(nil, packet.V5)
	pub := (&packet.Publish{QoS: 2, PacketID: 2, Topic: "a/b", Payload: []byte("x")}).Append(nil, packet.V5)
	f.Add(byte(1), slices.Concat(sub, pub, []byte{0x62, 0x02, 0x00, 0x02}))
	f.Add(byte(1), authPacket(packet.ReAuthenticate, "TEST-CHALLENGE", "").Append(nil, packet.V5))
	f.Add(byte(0), slices.Concat(connV5("x").Append(nil, packet.V5), sub))
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		b, err := New(Options{SysInterval: -1, ConnectTimeout: 500 * time.Millisecond, MaxSessionExpiry: time.Second,
			MaxPacketSize: 4096, MaxKeepAlive: 10 * time.Second}, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		b.SetListenerSecurity("fuzz", challengeAuth{}, nil, true)
		b.Start(context.Background())
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := b.Stop(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		}()

		var prefix []byte
		switch mode % 3 {
		case 1:
			prefix = connV5("fuzz").Append(nil, packet.V5)
		case 2:
			prefix = (&packet.Connect{ClientID: "fuzz", CleanStart: true}).Append(nil, packet.V311)
		}
		srv, cli := net.Pipe()
		served := make(chan struct{})
		go func() {
			defer close(served)
			b.ServeConn(srv, "fuzz")
		}()
		go func() { _, _ = io.Copy(io.Discard, cli) }()
		_ = cli.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err = cli.Write(slices.Concat(prefix, data))
		if isTimeout(err) {
			t.Fatal("broker stopped reading without closing the connection")
		}
		cli.Close()
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatal("ServeConn still running 5s after the client closed")
		}

		srv2, cli2 := net.Pipe()
		go b.ServeConn(srv2, "fuzz")
		c := newRawClient(t, cli2, packet.V5)
		if ack := c.connect(connV5("after-fuzz")); ack.ReasonCode != packet.Success {
			t.Fatalf("CONNACK 0x%02X after fuzz input", byte(ack.ReasonCode))
		}
		c.subscribe(1, 1, "check")
		c.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "check", Payload: []byte("ok")})
		for range 2 {
			if p := c.next(); p.Header.Type != packet.PUBACK && p.Header.Type != packet.PUBLISH {
				t.Fatalf("unexpected %s", p)
			}
		}
	})
}

func TestRawTopicAliasFromClient(t *testing.T) {
	addr, _ := startBroker(t, Options{TopicAliasMaximum: 2})
	sub, _ := connectRaw(t, addr, packet.V5, connV5("ta-sub"))
	sub.subscribe(1, 0, "ta/#")
	pub, ack := connectRaw(t, addr, packet.V5, connV5("ta-pub"))
	if ack.Properties.TopicAliasMaximum != 2 {
		t.Fatalf("CONNACK topic alias maximum %d, want 2", ack.Properties.TopicAliasMaximum)
	}
	aliased := func(topic string, alias uint16, payload string) *packet.Publish {
		p := &packet.Publish{Topic: topic, Payload: []byte(payload)}
		p.Properties.TopicAlias = alias
		p.Properties.Set(packet.PropTopicAlias)
		return p
	}
	for _, st := range []struct {
		topic     string
		alias     uint16
		wantTopic string
	}{
		{"ta/x", 1, "ta/x"}, // sets alias 1
		{"", 1, "ta/x"},     // uses it
		{"ta/y", 2, "ta/y"},
		{"ta/z", 1, "ta/z"}, // remaps alias 1
		{"", 1, "ta/z"},
		{"", 2, "ta/y"},
	} {
		pub.send(aliased(st.topic, st.alias, st.topic+"!"))
		if p := sub.expectPublish(st.wantTopic, st.topic+"!"); p.Properties.Has(packet.PropTopicAlias) {
			t.Fatal("the publisher's alias leaked to the subscriber")
		}
	}
	// Aliases belong to one connection: a new one starts without any.
	pub.send(&packet.Disconnect{})
	pub.expectClosed()
	pub, _ = connectRaw(t, addr, packet.V5, connV5("ta-pub"))
	pub.send(aliased("", 1, "x"))
	pub.expectDisconnect(packet.ProtocolError)
	sub.ping()
}

func TestRawRedeliveryTooLargeForNewConnection(t *testing.T) {
	addr, b := startBroker(t, Options{MaxInflight: 1})
	conn := func(maxPacket uint32) *packet.Connect {
		cp := &packet.Connect{ClientID: "shrinking"}
		cp.Properties.SessionExpiry = 60
		cp.Properties.Set(packet.PropSessionExpiry)
		cp.Properties.MaximumPacketSize = maxPacket
		cp.Properties.Set(packet.PropMaximumPacketSize)
		return cp
	}
	sub, _ := connectRaw(t, addr, packet.V5, conn(1000))
	sub.subscribe(1, 1, "big/#")
	pub, _ := connectRaw(t, addr, packet.V5, connV5("big-pub"))
	pub.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "big/a", Payload: bytes.Repeat([]byte{'b'}, 300)})
	pub.expectAck(packet.PUBACK, 1, packet.Success)
	sub.expectPublish("big/a", string(bytes.Repeat([]byte{'b'}, 300)))
	sub.send(&packet.Disconnect{})
	sub.expectClosed()
	testwait.For(t, "subscriber offline", func() bool { return b.Counters().Connected == 1 })
	pub.send(&packet.Publish{QoS: 1, PacketID: 2, Topic: "big/b", Payload: []byte("small")})
	pub.expectAck(packet.PUBACK, 2, packet.Success)
	// The unacknowledged delivery no longer fits: it is discarded as if
	// delivered (MQTT-3.1.2-25) and must not hold the one-slot window.
	sub, _ = connectRaw(t, addr, packet.V5, conn(100))
	p := sub.expectPublish("big/b", "small")
	if p.Dup {
		t.Error("queued message sent with DUP")
	}
	sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: p.PacketID})
	sub.ping()
	if n := b.Counters().Dropped["packet_too_large"]; n != 1 {
		t.Errorf("packet_too_large drops %d, want 1", n)
	}
}

// TestRawSuccessAcksShortForm: an acknowledgement with reason Success and
// no properties leaves out both (remaining length 2, MQTT 5 §3.4.2.1).
// Strict clients written for 3.1.1-sized acks depend on it, and it is what
// Azure IoT Operations' broker sends.
func TestRawSuccessAcksShortForm(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	sub, _ := connectRaw(t, addr, packet.V5, connV5("short-sub"))
	sub.subscribe(1, 2, "short/#")
	pub, _ := connectRaw(t, addr, packet.V5, connV5("short-pub"))
	short := func(p rawPacket, typ packet.Type, id uint16) {
		t.Helper()
		if p.Header.Type != typ || len(p.Body) != 2 || p.Body[0] != byte(id>>8) || p.Body[1] != byte(id) {
			t.Fatalf("got %s with body % X, want %s with the 2-byte body of packet id %d", p.Header.Type, p.Body, typ, id)
		}
	}
	pub.send(&packet.Publish{QoS: 1, PacketID: 7, Topic: "short/1", Payload: []byte("a")})
	short(pub.next(), packet.PUBACK, 7)
	pub.send(&packet.Publish{QoS: 2, PacketID: 8, Topic: "short/2", Payload: []byte("b")})
	short(pub.next(), packet.PUBREC, 8)
	pub.send(&packet.Ack{Type: packet.PUBREL, PacketID: 8})
	short(pub.next(), packet.PUBCOMP, 8)

	// The subscriber's side: the broker's PUBREL after the subscriber's
	// PUBREC of a QoS 2 delivery.
	d1 := sub.expectPublish("short/1", "a")
	sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: d1.PacketID})
	d2 := sub.expectPublish("short/2", "b")
	sub.send(&packet.Ack{Type: packet.PUBREC, PacketID: d2.PacketID})
	short(sub.next(), packet.PUBREL, d2.PacketID)
	sub.send(&packet.Ack{Type: packet.PUBCOMP, PacketID: d2.PacketID})
	sub.ping()
}
