package jsstate

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// rawConn speaks MQTT 5 packet by packet over TCP, for the one exchange no
// real client lets a test stop in the middle of: a QoS 2 PUBLISH that got
// its PUBREC on one node and whose PUBREL goes to another.
type rawConn struct {
	conn net.Conn
	r    *packet.Reader
}

// rawConnect opens a persistent session of id on addr and returns the
// connection and whether the session was present.
func rawConnect(t *testing.T, addr, id string, cleanStart bool) (*rawConn, bool) {
	t.Helper()
	c, present, err := tryRawConnect(t, addr, id, cleanStart)
	if err != nil {
		t.Fatal(err)
	}
	return c, present
}

// q2SubscriberOnNode2 opens, on nodes[1], a persistent session id read
// packet by packet, subscribed to q2/# at QoS 2 (node1's index has read
// it), and on nodes[0] a publisher.
func q2SubscriberOnNode2(t *testing.T, nodes []*node, id string) (*rawConn, *mqttClient) {
	t.Helper()
	sub, _ := rawConnect(t, nodes[1].addr, id, true)
	sp := packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "q2/#", QoS: 2}}}
	sub.send(t, sp.Append(nil, packet.V5))
	if h, _ := sub.read(t); h.Type != packet.SUBACK {
		t.Fatalf("got %s, want SUBACK", h.Type)
	}
	syncIndex(t, nodes[0])
	return sub, dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
}

// errUnavailable is a CONNACK 0x88, Server unavailable.
var errUnavailable = errors.New("CONNACK 0x88, server unavailable")

// tryRawConnect is rawConnect returning why the connection failed.
func tryRawConnect(t *testing.T, addr, id string, cleanStart bool) (*rawConn, bool, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, false, err
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawConn{conn: conn, r: packet.NewReader(conn, 0)}
	cp := packet.Connect{ProtocolName: "MQTT", Version: packet.V5, CleanStart: cleanStart, KeepAlive: 30, ClientID: id}
	cp.Properties.SessionExpiry = 3600
	cp.Properties.Set(packet.PropSessionExpiry)
	c.send(t, cp.Append(nil, packet.V5))
	h, body := c.read(t)
	var ack packet.ConnAck
	if h.Type != packet.CONNACK {
		return nil, false, fmt.Errorf("%s: got %s, want CONNACK", id, h.Type)
	}
	if err := ack.Decode(h.Flags, body, packet.V5); err != nil {
		return nil, false, fmt.Errorf("%s: CONNACK: %w", id, err)
	}
	switch ack.ReasonCode {
	case packet.Success:
		return c, ack.SessionPresent, nil
	case packet.ServerUnavailable:
		conn.Close()
		return nil, false, fmt.Errorf("%s: %w", id, errUnavailable)
	}
	return nil, false, fmt.Errorf("%s: CONNACK %v", id, ack.ReasonCode)
}

func (c *rawConn) send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		t.Fatal(err)
	}
}

func (c *rawConn) read(t *testing.T) (packet.FixedHeader, []byte) {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(testwait.Timeout))
	h, body, err := c.r.Next(1 << 20)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	return h, body
}

// ack reads the next packet, which must be an acknowledgement of type
// want for packet identifier id, and returns its reason code.
func (c *rawConn) ack(t *testing.T, want packet.Type, id uint16) packet.ReasonCode {
	t.Helper()
	return c.ackOf(t, want, id, packet.V5)
}

// ackOf is ack on a connection of protocol version v.
func (c *rawConn) ackOf(t *testing.T, want packet.Type, id uint16, v packet.Version) packet.ReasonCode {
	t.Helper()
	h, body := c.read(t)
	var a packet.Ack
	if h.Type != want {
		t.Fatalf("got %s, want %s", h.Type, want)
	}
	if err := a.Decode(h.Type, h.Flags, body, v); err != nil || a.PacketID != id {
		t.Fatalf("%s: id %d, %v; want id %d", want, a.PacketID, err, id)
	}
	return a.ReasonCode
}

// A QoS 2 publisher that got its PUBREC on node1 and moves to node2
// finishes there: node2 knows the packet identifier from the handed-over
// session, so a resent PUBLISH (DUP) is not routed again and PUBREL is
// answered with a successful PUBCOMP. Each subscriber gets the message at
// most once, and the one on node1 exactly once.
func TestQoS2ExactlyOnceAcrossTakeover(t *testing.T) {
	nodes := testCluster(t)
	subs := []*mqttClient{
		dial(t, nodes[0].addr, &paho.Connect{ClientID: "sub1", CleanStart: true}),
		dial(t, nodes[1].addr, &paho.Connect{ClientID: "sub2", CleanStart: true}),
	}
	for _, s := range subs {
		s.subscribeQoS(t, "q2/#", 2)
	}
	pub := packet.Publish{QoS: 2, Topic: "q2/x", PacketID: 7, Payload: []byte("once")}

	p1, _ := rawConnect(t, nodes[0].addr, "p", true)
	p1.send(t, pub.Append(nil, packet.V5))
	if rc := p1.ack(t, packet.PUBREC, 7); rc != packet.Success && rc != packet.NoMatchingSubscribers {
		t.Fatalf("PUBREC on node1: %v", rc)
	}
	p1.conn.Close() // PUBREL not sent

	p2, present := rawConnect(t, nodes[1].addr, "p", false)
	if !present {
		t.Fatal("CONNACK on node2: session not present")
	}
	pub.Dup = true // the client could not know its PUBREC arrived
	p2.send(t, pub.Append(nil, packet.V5))
	if rc := p2.ack(t, packet.PUBREC, 7); rc.IsError() {
		t.Fatalf("PUBREC for the resent PUBLISH on node2: %v", rc)
	}
	rel := packet.Ack{Type: packet.PUBREL, PacketID: 7}
	p2.send(t, rel.Append(nil, packet.V5))
	if rc := p2.ack(t, packet.PUBCOMP, 7); rc != packet.Success {
		t.Fatalf("PUBCOMP on node2: %v, want success (node2 knows identifier 7)", rc)
	}

	// A marker published on each subscriber's node after PUBCOMP closes
	// the count.
	for i, s := range subs {
		m := dial(t, nodes[i].addr, &paho.Connect{ClientID: fmt.Sprintf("marker%d", i+1), CleanStart: true})
		m.publishQoS(t, "q2/marker", "marker", 2, false)
		once := 0
		for {
			msg := s.next(t)
			if string(msg.Payload) == "marker" {
				break
			}
			once++
		}
		if once > 1 || i == 0 && once != 1 {
			t.Errorf("subscriber on node%d got the QoS 2 message %d times", i+1, once)
		}
	}
}
