package jsstate

import (
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// persistent is the CONNECT of a client with a session that outlives its
// connection by an hour.
func persistent(id string, cleanStart bool) *paho.Connect {
	expiry := uint32(3600)
	return &paho.Connect{ClientID: id, CleanStart: cleanStart, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
}

// leaveOffline connects clientID to nd with a persistent session, subscribes
// it to filter and disconnects it, returning once the session is offline.
func (nd *node) leaveOffline(t testing.TB, clientID, filter string) {
	t.Helper()
	c := dial(t, nd.addr, persistent(clientID, true))
	c.subscribe(t, filter)
	if err := c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, clientID+" offline on "+nd.name, func() bool {
		info, ok := nd.b.Session(clientID)
		return ok && !info.Online
	})
}

// A persistent session left on one node resumes on another: the messages
// queued while it was offline (published on its node and on a third one)
// arrive in order, and its subscription routes on the new node.
func TestResumeOnAnotherNodeWithQueued(t *testing.T) {
	nodes := testCluster(t)
	nodes[0].leaveOffline(t, "dev", "cmd/#")
	nodes[0].sync(t)
	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	for i := range 3 {
		pub.publish(t, "cmd/x", fmt.Sprintf("m%d", i), false) // acknowledged once JetStream has it
	}
	// Through node2: routed to node1, which queues them for dev.
	pub2 := dial(t, nodes[1].addr, &paho.Connect{ClientID: "pub2", CleanStart: true})
	for i := 3; i < 5; i++ {
		pub2.publish(t, "cmd/x", fmt.Sprintf("m%d", i), false)
	}
	nodes[1].sync(t)

	back, ack := dialWith(t, nodes[2].addr, persistent("dev", false), false)
	if !ack.SessionPresent {
		t.Fatal("CONNACK on node3: session not present")
	}
	for i := range 5 {
		if m := back.next(t); string(m.Payload) != fmt.Sprintf("m%d", i) || m.Topic != "cmd/x" {
			t.Fatalf("message %d on node3: %s %q", i, m.Topic, m.Payload)
		}
	}
	if _, ok := nodes[0].b.Session("dev"); ok {
		t.Error("node1 still holds the session it handed over")
	}
	// The subscription came along: messages published on node3 and on
	// node1 reach it.
	pub3 := dial(t, nodes[2].addr, &paho.Connect{ClientID: "pub3", CleanStart: true})
	pub3.publish(t, "cmd/y", "after", false)
	if m := back.next(t); string(m.Payload) != "after" {
		t.Fatalf("after the move: %q", m.Payload)
	}
	nodes[2].sync(t)
	pub.publish(t, "cmd/z", "from node1", false)
	if m := back.next(t); string(m.Payload) != "from node1" {
		t.Fatalf("after the move, from node1: %q", m.Payload)
	}
}

// A connection taken over by a connection to another node is told 0x8E,
// and what it had received without acknowledging is resent to the new
// connection with DUP, under the same packet identifiers (QoS 1 and QoS 2:
// the QoS 2 message is delivered once, by identifier).
func TestTakeoverResumesInFlight(t *testing.T) {
	nodes := testCluster(t)
	old, _ := dialWith(t, nodes[0].addr, persistent("dev", true), true)
	old.subscribeQoS(t, "cmd/1", 1)
	old.subscribeQoS(t, "cmd/2", 2)
	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	pub.publishQoS(t, "cmd/1", "one", 1, false)
	pub.publishQoS(t, "cmd/2", "two", 2, false)
	first := []*paho.Publish{old.next(t), old.next(t)} // neither acknowledged

	now, ack := dialWith(t, nodes[1].addr, persistent("dev", false), false)
	if d := old.disconnected(t); d.ReasonCode != byte(packet.SessionTakenOver) {
		t.Fatalf("old connection told 0x%02X, want 0x8E", d.ReasonCode)
	}
	if !ack.SessionPresent {
		t.Fatal("CONNACK on node2: session not present")
	}
	for _, was := range first {
		m := now.next(t)
		if m.Topic != was.Topic || string(m.Payload) != string(was.Payload) || m.PacketID != was.PacketID || m.QoS != was.QoS {
			t.Fatalf("resent %s %q id %d QoS %d; first sent %s %q id %d QoS %d",
				m.Topic, m.Payload, m.PacketID, m.QoS, was.Topic, was.Payload, was.PacketID, was.QoS)
		}
		if !m.Duplicate() {
			t.Errorf("resent %s without DUP", m.Topic)
		}
	}
}
