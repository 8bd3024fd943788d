package broker

// Conformance checks on the wire for what the MQTT client libraries cannot
// express, each citing the normative statements of the OASIS MQTT 5.0
// specification it proves. The scenarios real clients can drive are in
// test/e2e (Paho Python, MQTT.js) and the paho_*_test.go files here.

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// TestRawReasonStringWithinMaxPacketSize: a Reason String (or User
// Property) that would take an acknowledgement or a DISCONNECT beyond the
// client's Maximum Packet Size is left out, the packet itself is still sent
// ([MQTT-3.1.2-24], [MQTT-3.4.2-2], [MQTT-3.14.2-3]).
func TestRawReasonStringWithinMaxPacketSize(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	for _, tc := range []struct {
		name   string
		max    uint32 // 0: none given
		reason bool   // the reason string is expected
	}{{"no maximum", 0, true}, {"room for the reason", 1024, true}, {"no room", 16, false}} {
		t.Run(tc.name, func(t *testing.T) {
			cp := connV5("rs-" + tc.name)
			if tc.max > 0 {
				cp.Properties.MaximumPacketSize = tc.max
				cp.Properties.Set(packet.PropMaximumPacketSize)
			}
			c, _ := connectRaw(t, addr, packet.V5, cp)
			// Topics beginning with $ are refused with 0x90 and a reason.
			c.send(&packet.Publish{QoS: 1, PacketID: 7, Topic: "$not/yours", Payload: []byte("x")})
			a := c.expectAck(packet.PUBACK, 7, packet.TopicNameInvalid)
			if got := a.Properties.Has(packet.PropReasonString); got != tc.reason {
				t.Errorf("PUBACK reason string present %v, want %v (%q)", got, tc.reason, a.Properties.ReasonString)
			}
			// A subscription identifier in a client's PUBLISH is a protocol
			// error, answered with DISCONNECT 0x82 and a reason.
			c.write(rawFrame(0x30, rawStr("a"), rawProps(0x0B, 5)))
			d := c.expectDisconnect(packet.ProtocolError)
			if got := d.Properties.Has(packet.PropReasonString); got != tc.reason {
				t.Errorf("DISCONNECT reason string present %v, want %v (%q)", got, tc.reason, d.Properties.ReasonString)
			}
		})
	}
}

// TestRawDisconnectThenReconnectAtOnce: a client that sends DISCONNECT,
// closes and reconnects at once (Paho's interoperability tests do, between
// every step) gets what its DISCONNECT asked for, even when the broker reads
// the new CONNECT first: no will after a normal DISCONNECT [MQTT-3.1.2-10],
// and the session expiry it set [MQTT-3.1.2-23] (0 ends the session, so
// the new CONNACK has Session Present 0 [MQTT-3.2.2-2]). Without waiting for the
// old connection, about half of these reconnects took the session over
// before its DISCONNECT was read.
func TestRawDisconnectThenReconnectAtOnce(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	watcher, _ := connectRaw(t, addr, packet.V5, connV5("dr-watch"))
	watcher.subscribe(1, 1, "dr/#")
	const rounds = 40
	for i := range rounds {
		cp := connV5("dr")
		cp.CleanStart = i == 0
		cp.Properties.SessionExpiry = 60
		cp.Properties.Set(packet.PropSessionExpiry)
		cp.Will = &packet.Will{Topic: "dr/will", QoS: 1, Payload: []byte("will")}
		c, ack := connectRaw(t, addr, packet.V5, cp)
		// Even rounds end the session on DISCONNECT, odd rounds keep it.
		if want := i%2 == 0 && i > 0; ack.SessionPresent != want {
			t.Fatalf("round %d: session present %v, want %v", i, ack.SessionPresent, want)
		}
		d := &packet.Disconnect{}
		if i%2 == 0 {
			d.Properties.SessionExpiry = 0
			d.Properties.Set(packet.PropSessionExpiry)
		}
		c.send(d)
		c.conn.Close()
	}
	// Barrier: the watcher's messages are in routing order.
	pub, _ := connectRaw(t, addr, packet.V5, connV5("dr-pub"))
	pub.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "dr/end", Payload: []byte("end")})
	pub.expectAck(packet.PUBACK, 1, packet.Success)
	p := rawRecv[packet.Publish](watcher)
	if p.Topic != "dr/end" {
		t.Fatalf("watcher got %q %q before the barrier: a will after a normal DISCONNECT", p.Topic, p.Payload)
	}
}

// TestRawServerKeepAlive: with a keep-alive cap, a client asking for more
// (or for none) is told the Server Keep Alive in CONNACK [MQTT-3.2.2-21]
// and held to it: one and a half times it without a packet ends the
// connection with 0x8D [MQTT-3.1.2-22]. A client asking less keeps its own
// value and gets no Server Keep Alive.
func TestRawServerKeepAlive(t *testing.T) {
	t.Parallel()
	addr, _ := startBroker(t, Options{MaxKeepAlive: 2 * time.Second})
	for _, tc := range []struct {
		asked, told uint16 // told 0: no Server Keep Alive
	}{{0, 2}, {60, 2}, {1, 0}} {
		t.Run(fmt.Sprintf("asked %d", tc.asked), func(t *testing.T) {
			t.Parallel()
			c, ack := connectRaw(t, addr, packet.V5, &packet.Connect{ClientID: fmt.Sprintf("ska-%d", tc.asked), CleanStart: true, KeepAlive: tc.asked})
			if got := ack.Properties.Has(packet.PropServerKeepAlive); got != (tc.told != 0) || ack.Properties.ServerKeepAlive != tc.told {
				t.Fatalf("CONNACK Server Keep Alive present %v value %d, want %d", got, ack.Properties.ServerKeepAlive, tc.told)
			}
			// Keep-alive is a socket read deadline on real time: the idle
			// client is disconnected within rawWait only if it is enforced.
			c.expectDisconnect(packet.KeepAliveTimeout)
		})
	}
}

// TestRawReceiveMaximumOnResume: the Receive Maximum of the connection
// that resumes a session bounds the resent PUBLISHes too [MQTT-3.3.4-9]:
// they keep their packet identifiers and DUP [MQTT-4.4.0-1], but beyond
// the new maximum they wait for acknowledgements.
func TestRawReceiveMaximumOnResume(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	conn := func(clean bool, recvMax uint16) *packet.Connect {
		cp := connV5("rmr")
		cp.CleanStart = clean
		cp.Properties.SessionExpiry = 60
		cp.Properties.Set(packet.PropSessionExpiry)
		cp.Properties.ReceiveMaximum = recvMax
		cp.Properties.Set(packet.PropReceiveMaximum)
		return cp
	}
	sub, _ := connectRaw(t, addr, packet.V5, conn(true, 10))
	sub.subscribe(1, 1, "rmr/#")
	pub, _ := connectRaw(t, addr, packet.V5, connV5("rmr-pub"))
	for i := range 5 {
		pub.send(&packet.Publish{QoS: 1, PacketID: uint16(i + 1), Topic: "rmr/t", Payload: []byte{byte('0' + i)}})
		pub.expectAck(packet.PUBACK, uint16(i+1), packet.Success)
	}
	var ids []uint16
	for i := range 5 {
		ids = append(ids, sub.expectPublish("rmr/t", string(rune('0'+i))).PacketID)
	}
	sub.conn.Close() // nothing acknowledged
	sub, ack := connectRaw(t, addr, packet.V5, conn(false, 2))
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	// Two resent, then one more per PUBACK, in order, with DUP and the
	// original identifiers; the barrier shows nothing else was sent early.
	next := 0
	expect := func(n int) {
		t.Helper()
		for range n {
			p := sub.expectPublish("rmr/t", string(rune('0'+next)))
			if !p.Dup || p.PacketID != ids[next] {
				t.Fatalf("resent PUBLISH %d: DUP %v id %d, want DUP and id %d", next, p.Dup, p.PacketID, ids[next])
			}
			next++
		}
	}
	expect(2)
	sub.send(&packet.Subscribe{PacketID: 9, Subscriptions: []packet.Subscription{{Filter: "rmr-bar", QoS: 0}}})
	rawRecv[packet.SubAck](sub)
	pub.send(&packet.Publish{Topic: "rmr-bar", Payload: []byte("bar")})
	sub.expectPublish("rmr-bar", "bar")
	for next < 5 {
		sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: ids[next-2]})
		expect(1)
	}
}

// denySubscribe is an Authorizer refusing subscriptions under a prefix.
type denySubscribe string

func (d denySubscribe) Allow(_ *Principal, op Op, topic string) bool {
	return op != OpSubscribe || !strings.HasPrefix(topic, string(d))
}

// TestRawSubAckReasonCodes: SUBACK answers every filter of a SUBSCRIBE on
// its own [MQTT-3.8.4-6] [MQTT-3.9.3-1]: granted QoS, 0x8F for a malformed
// filter, 0x87 for one not authorized, 0x97 beyond the subscription quota
// (a replaced subscription does not count again [MQTT-3.8.4-3]); 3.1.1
// has 0x80 for all of them [MQTT-3.9.3-2]. The connection goes on.
func TestRawSubAckReasonCodes(t *testing.T) {
	addr, b := startBroker(t, Options{MaxSubscriptionsPerClient: 3})
	b.SetListenerSecurity("test", nil, denySubscribe("deny/"), true)
	for _, v := range []packet.Version{packet.V5, packet.V311} {
		t.Run(fmt.Sprintf("version %d", v), func(t *testing.T) {
			c, _ := connectRaw(t, addr, v, &packet.Connect{ClientID: fmt.Sprintf("suback-%d", v), CleanStart: true})
			fail := func(code packet.ReasonCode) packet.ReasonCode {
				if v == packet.V5 {
					return code
				}
				return packet.UnspecifiedError
			}
			subs := []packet.Subscription{
				{Filter: "ok/a", QoS: 1}, {Filter: "a/#/b", QoS: 1}, {Filter: "deny/x", QoS: 1},
				{Filter: "ok/b", QoS: 2}, {Filter: "ok/c", QoS: 0}, {Filter: "ok/d", QoS: 1}, {Filter: "ok/a", QoS: 2},
			}
			want := []packet.ReasonCode{1, fail(packet.TopicFilterInvalid), fail(packet.NotAuthorized), 2, 0, fail(packet.QuotaExceeded), 2}
			c.send(&packet.Subscribe{PacketID: 5, Subscriptions: subs})
			ack := rawRecv[packet.SubAck](c)
			if ack.PacketID != 5 || !slices.Equal(ack.ReasonCodes, want) {
				t.Fatalf("SUBACK id %d codes % X, want id 5 codes % X", ack.PacketID, ack.ReasonCodes, want)
			}
			c.ping()
		})
	}
}

// TestRawSharedUnackedKeptWithoutAnotherMember: a shared subscription's
// unacknowledged QoS 1 messages move to another member when their session's
// connection ends (allowed by 4.8.2), but when no other member is online
// they stay in the session, which outlives its connection, and are sent
// again when it resumes [MQTT-4.4.0-1]: at least once.
func TestRawSharedUnackedKeptWithoutAnotherMember(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	conn := func(clean bool) *packet.Connect {
		cp := connV5("sh-only")
		cp.CleanStart = clean
		cp.Properties.SessionExpiry = 60
		cp.Properties.Set(packet.PropSessionExpiry)
		return cp
	}
	sub, _ := connectRaw(t, addr, packet.V5, conn(true))
	sub.subscribe(1, 1, "$share/g/sho/#")
	pub, _ := connectRaw(t, addr, packet.V5, connV5("sh-only-pub"))
	pub.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "sho/a", Payload: []byte("inflight")})
	pub.expectAck(packet.PUBACK, 1, packet.Success)
	sub.expectPublish("sho/a", "inflight") // not acknowledged
	sub.conn.Close()
	sub, ack := connectRaw(t, addr, packet.V5, conn(false))
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	p := sub.expectPublish("sho/a", "inflight")
	sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: p.PacketID})
}
