package broker

import (
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// dialInternal connects an in-process client the way the self-test probe
// does: over net.Pipe, served under InternalListener.
func dialInternal(t *testing.T, b *Broker, id string) *rawClient {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.ServeConn(server, InternalListener)
	}()
	c := newRawClient(t, client, packet.V5)
	t.Cleanup(func() { client.Close(); <-done })
	if ack := c.connect(connV5(id)); ack.ReasonCode != packet.Success {
		t.Fatalf("internal CONNACK %v", ack.ReasonCode)
	}
	return c
}

func TestInternalClientMayPublishToDollarTopics(t *testing.T) {
	addr, b := startBroker(t, Options{})
	everything, _ := connectRaw(t, addr, packet.V5, connV5("everything"))
	everything.subscribe(1, 1, "#")
	watcher, _ := connectRaw(t, addr, packet.V5, connV5("watcher"))
	watcher.subscribe(1, 1, "$edgeport/#")

	in := dialInternal(t, b, "probe")
	in.subscribe(1, 1, "$edgeport/selftest/x")
	in.send(&packet.Publish{QoS: 1, PacketID: 7, Topic: "$edgeport/selftest/x", Payload: []byte("p")})
	// The PUBACK and the delivery to the probe's own subscription may
	// arrive in either order.
	var acked, delivered bool
	for !acked || !delivered {
		switch p := in.next().Pkt.(type) {
		case *packet.Ack:
			if p.Type != packet.PUBACK || p.PacketID != 7 || p.ReasonCode != packet.Success {
				t.Fatalf("ack %+v", p)
			}
			acked = true
		case *packet.Publish:
			if p.Topic != "$edgeport/selftest/x" || string(p.Payload) != "p" {
				t.Fatalf("delivery %q %q", p.Topic, p.Payload)
			}
			in.send(&packet.Ack{Type: packet.PUBACK, PacketID: p.PacketID})
			delivered = true
		default:
			t.Fatalf("unexpected %T", p)
		}
	}
	watcher.expectPublish("$edgeport/selftest/x", "p")
	everything.ping() // # never matches a $ topic

	// A network client may still not publish there.
	c, _ := connectRaw(t, addr, packet.V5, connV5("spoofer"))
	c.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "$edgeport/selftest/x", Payload: []byte("fake")})
	c.expectAck(packet.PUBACK, 1, packet.TopicNameInvalid)
	watcher.ping()
}

func TestInternalSessionsLeftOutOfGauges(t *testing.T) {
	addr, b := startBroker(t, Options{})
	in := dialInternal(t, b, "probe")
	in.subscribe(1, 1, "$edgeport/selftest/y")
	c := b.Counters()
	if c.Connected != 0 || c.Sessions != 0 || c.Subscriptions != 0 {
		t.Fatalf("with only an internal client: connected %d sessions %d subscriptions %d, want 0 0 0",
			c.Connected, c.Sessions, c.Subscriptions)
	}
	if c.Listeners[InternalListener].Open != 1 || c.Listeners[InternalListener].Connects != 1 {
		t.Fatalf("internal listener counters %+v", c.Listeners[InternalListener])
	}
	user, _ := connectRaw(t, addr, packet.V5, connV5("user"))
	user.subscribe(1, 0, "a")
	c = b.Counters()
	if c.Connected != 1 || c.Sessions != 1 || c.Subscriptions != 1 {
		t.Fatalf("with one user: connected %d sessions %d subscriptions %d, want 1 1 1", c.Connected, c.Sessions, c.Subscriptions)
	}
	in.send(&packet.Disconnect{})
	in.expectClosed()
	testwait.For(t, "internal connection gone", func() bool { return b.Counters().Listeners[InternalListener].Open == 0 })
	if c := b.Counters(); c.Connected != 1 || c.Sessions != 1 || c.Subscriptions != 1 {
		t.Fatalf("after the internal client left: connected %d sessions %d subscriptions %d, want 1 1 1",
			c.Connected, c.Sessions, c.Subscriptions)
	}
}

// metricValue gathers the broker's metrics and returns the value of the
// series of family name whose labels include want.
func metricValue(t *testing.T, b *Broker, name string, want map[string]string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(b.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				if !hasLabel(m, k, v) {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
		t.Fatalf("%s has no series with %v", name, want)
	}
	t.Fatalf("no metric family %s", name)
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

func TestMetricFamilies(t *testing.T) {
	b, err := New(Options{SysInterval: -1, MaxQueuedMessages: 1}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	b.SetListenerSecurity("test", challengeAuth{}, nil, true)
	addr := serveBroker(t, b)

	// Traffic: a QoS 1 publish of 5 payload bytes to one subscriber.
	sub, _ := connectRaw(t, addr, packet.V5, connV5("sub"))
	sub.subscribe(1, 1, "m/1")
	pub, _ := connectRaw(t, addr, packet.V5, connV5("pub"))
	pub.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "m/1", Payload: []byte("hello")})
	pub.expectAck(packet.PUBACK, 1, packet.Success)
	sub.expectPublish("m/1", "hello")

	// Drops: QoS 0 to an offline persistent session (outgoing), QoS 0 to a
	// $ topic (incoming), and QoS 1 over the offline queue limit of 1
	// (backpressure).
	cp := connV5("offline")
	cp.Properties.SessionExpiry = 600
	cp.Properties.Set(packet.PropSessionExpiry)
	off, _ := connectRaw(t, addr, packet.V5, cp)
	off.subscribe(1, 1, "o/#")
	off.send(&packet.Disconnect{})
	off.expectClosed()
	testwait.For(t, "offline session", func() bool { return b.Counters().Connected == 2 })
	pub.send(&packet.Publish{Topic: "o/0", Payload: []byte("q0")})
	pub.send(&packet.Publish{Topic: "$nope", Payload: []byte("q0")})
	for id := uint16(2); id <= 3; id++ {
		pub.send(&packet.Publish{QoS: 1, PacketID: id, Topic: "o/1", Payload: []byte("q1")})
		pub.expectAck(packet.PUBACK, id, packet.Success)
	}

	// Authentication: an unsupported method fails, a wrong challenge
	// answer is denied.
	bad := connV5("bad-method")
	bad.Properties.AuthMethod = "NOPE-" + strings.Repeat("x", 8)
	bad.Properties.Set(packet.PropAuthMethod)
	if ack := dialRaw(t, addr, packet.V5).connect(bad); ack.ReasonCode != packet.BadAuthenticationMethod {
		t.Fatalf("unsupported method: CONNACK %v", ack.ReasonCode)
	}
	wrong := connV5("wrong")
	wrong.Properties.AuthMethod = "TEST-CHALLENGE"
	wrong.Properties.Set(packet.PropAuthMethod)
	wc := dialRaw(t, addr, packet.V5)
	wc.write(wrong.Append(nil, packet.V5))
	rawRecv[packet.Auth](wc)
	wc.send(authPacket(packet.ContinueAuthentication, "TEST-CHALLENGE", "guess"))
	if ack := rawRecv[packet.ConnAck](wc); ack.ReasonCode != packet.NotAuthorized {
		t.Fatalf("wrong answer: CONNACK %v", ack.ReasonCode)
	}
	pub.ping()
	sub.ping()
	// A refused connection is counted closed once the broker has finished
	// with its socket, which may be just after the client read its CONNACK.
	testwait.For(t, "refused connections closed", func() bool { return b.Counters().Listeners["test"].Open == 2 })

	l := map[string]string{"listener": "test"}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"edgeport_broker_publishes_received_total", l, 5},
		{"edgeport_broker_publishes_sent_total", l, 1},
		{"edgeport_broker_payload_bytes_received_total", l, 5 + 2 + 2 + 2}, // the refused $ publish carries none
		{"edgeport_broker_payload_bytes_sent_total", l, 5},
		{"edgeport_broker_connections", l, 2},
		{"edgeport_broker_authentication_successes_total", map[string]string{"listener": "test", "method": "anonymous"}, 3},
		{"edgeport_broker_authentication_failures_total", map[string]string{"listener": "test", "method": "unsupported"}, 1},
		{"edgeport_broker_authentication_deny_total", map[string]string{"listener": "test", "method": "TEST-CHALLENGE"}, 1},
		// Four valid publishes and two subscriptions; the $ publish is refused as invalid.
		{"edgeport_broker_authorization_allow_total", l, 6},
		{"edgeport_broker_authorization_deny_total", l, 0},
		{"edgeport_broker_connected_sessions", nil, 2},
		{"edgeport_broker_total_sessions", nil, 3},
		{"edgeport_broker_total_subscriptions", nil, 2},
		{"edgeport_broker_store_retained_messages", nil, 0},
		{"edgeport_broker_qos0_messages_dropped_total", map[string]string{"direction": "outgoing"}, 1},
		{"edgeport_broker_qos0_messages_dropped_total", map[string]string{"direction": "incoming"}, 1},
		{"edgeport_broker_dropped_messages_total", map[string]string{"reason": "queue_full"}, 1},
		{"edgeport_broker_dropped_messages_total", map[string]string{"reason": "offline_qos0"}, 1},
		{"edgeport_broker_backpressure_packets_rejected_total", nil, 1},
		{"edgeport_broker_connections_refused_total", nil, 2},
	} {
		if got := metricValue(t, b, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}
