package jsstate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// q2Subscribers are the persistent QoS 2 subscribers of q2/# of the
// two-phase tests: "off" subscribed on node1 and went offline there (its
// delivery is an entry node1 writes), "on2" and "on3" are connected to
// node2 and node3 (routed deliveries from node1), and "np3" is a
// non-persistent session on node3 (live routing).
func q2Subscribers(t *testing.T, nodes []*node) (on2, on3, np3 *mqttClient) {
	t.Helper()
	persistent := func(id string) *paho.Connect {
		exp := uint32(3600)
		return &paho.Connect{ClientID: id, CleanStart: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}}
	}
	off := dial(t, nodes[0].addr, persistent("off"))
	off.subscribeQoS(t, "q2/#", 2)
	if err := off.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	on2 = dial(t, nodes[1].addr, persistent("on2"))
	on2.subscribeQoS(t, "q2/#", 2)
	on3 = dial(t, nodes[2].addr, persistent("on3"))
	on3.subscribeQoS(t, "q2/#", 2)
	np3 = dial(t, nodes[2].addr, &paho.Connect{ClientID: "np3", CleanStart: true})
	np3.subscribeQoS(t, "q2/#", 2)
	nodes[2].sync(t)
	syncIndex(t, nodes...)
	return on2, on3, np3
}

// countUntilMarker publishes marker on q2/marker through a new client of
// addr and returns how many times c got payload before it (skipping
// earlier markers).
func countUntilMarker(t *testing.T, c *mqttClient, addr, payload, marker string) int {
	t.Helper()
	m := dial(t, addr, &paho.Connect{ClientID: marker, CleanStart: true})
	m.publishQoS(t, "q2/marker", marker, 2, false)
	_ = m.Disconnect(&paho.Disconnect{})
	n := 0
	for {
		msg := c.next(t)
		switch got := string(msg.Payload); {
		case got == marker:
			return n
		case got == payload:
			n++
		case !strings.HasPrefix(got, "marker"):
			t.Fatalf("unexpected %q", msg.Payload)
		}
	}
}

// resendAndRelease resends pub with DUP on c and completes the exchange:
// PUBREC success, PUBREL, PUBCOMP success.
func resendAndRelease(t *testing.T, c *rawConn, pub packet.Publish) {
	t.Helper()
	pub.Dup = true
	c.send(t, pub.Append(nil, packet.V5))
	if rc := c.ack(t, packet.PUBREC, pub.PacketID); rc.IsError() {
		t.Fatalf("PUBREC for the resent PUBLISH: %v", rc)
	}
	rel := packet.Ack{Type: packet.PUBREL, PacketID: pub.PacketID}
	c.send(t, rel.Append(nil, packet.V5))
	if rc := c.ack(t, packet.PUBCOMP, pub.PacketID); rc != packet.Success {
		t.Fatalf("PUBCOMP: %v, want success", rc)
	}
}

// A QoS 2 PUBLISH that node1 routed (every subscriber's delivery durable,
// the routed ones already delivered and deleted) but whose PUBREC the
// client never got, because node1 died: the client resends it with DUP to
// node2, which finds the identifier stored with the message and its id
// (phase 1) and routes it again under that id, and each subscriber gets it
// once: the routed deliveries and node1's own entry are dropped by
// JetStream as the same deliveries written again (within its duplicate
// window), and the non-persistent subscriber got the live copy only.
func TestQoS2ResendAfterKillRoutedOnce(t *testing.T) {
	nodes := testCluster(t)
	on2, on3, np3 := q2Subscribers(t, nodes)

	p1, _ := rawConnect(t, nodes[0].addr, "p", true)
	pub := packet.Publish{QoS: 2, Topic: "q2/x", PacketID: 7, Payload: []byte("once")}
	p1.send(t, pub.Append(nil, packet.V5))
	// Routed: the deliveries are durable and the routed ones delivered.
	for _, c := range []*mqttClient{on2, on3, np3} {
		if m := c.next(t); string(m.Payload) != "once" {
			t.Fatalf("got %q, want \"once\"", m.Payload)
		}
	}
	nodes[0].kill(t) // whether its PUBREC left or not, the client has not read it
	p1.conn.Close()
	// More routed deliveries than a session remembers: only JetStream's
	// duplicate window still knows the ones of the first routing.
	fill, _ := redial(t, nodes[1].addr, &paho.Connect{ClientID: "fill", CleanStart: true})
	publishN(t, fill, "q2/fill", "fill", 40, 2)
	for _, c := range []*mqttClient{on2, on3, np3} {
		expectInOrder(t, c, "fill", 40)
	}

	p2 := rawRedial(t, nodes[1].addr, "p")
	resendAndRelease(t, p2, pub)

	for i, c := range []*mqttClient{on2, on3, np3} {
		if n := countUntilMarker(t, c, nodes[1+i/2].addr, "once", fmt.Sprintf("marker%d", i)); n != 0 {
			t.Errorf("subscriber %d got the QoS 2 message %d more times after the resend", i, n)
		}
	}
	// The offline session node1 held, adopted by a survivor: its entry
	// (written by node1) arrives once, after it the fill.
	exp := uint32(3600)
	off, _ := redial(t, nodes[2].addr, &paho.Connect{ClientID: "off", Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}})
	if m := off.next(t); string(m.Payload) != "once" {
		t.Fatalf("the offline subscriber of node1 got %q first, want \"once\"", m.Payload)
	}
	expectInOrder(t, off, "fill", 40)
	if n := countUntilMarker(t, off, nodes[2].addr, "once", "marker-off"); n != 0 {
		t.Errorf("the offline subscriber of node1 got the QoS 2 message %d more times", n)
	}
}

// A QoS 2 PUBLISH whose identifier node1 stored with the message (phase
// 1) and which node1 never routed (it died first): the client resends it
// with DUP to node2, which routes the stored message under its stored id
// and acknowledges it; every persistent subscriber gets it once, and the
// resent copy is not routed as a new message. Node1's phase 1 is made here
// through its store as its broker makes it, then node1 is killed.
func TestQoS2PhaseOneOnlyRoutedOnResend(t *testing.T) {
	nodes := testCluster(t)
	on2, on3, _ := q2Subscribers(t, nodes)

	p1, _ := rawConnect(t, nodes[0].addr, "p", true)
	stored := &broker.Message{Topic: "q2/x", Payload: []byte("stored"), QoS: 2, Origin: "p"}
	id := broker.MessageID{0xab, 15: 1}
	tx := nodes[0].st.NewTxn()
	nodes[0].st.Received(tx, "p", 9, id, stored)
	done := make(chan error, 1)
	nodes[0].st.Commit(tx, func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatalf("phase 1: %v", err)
	}
	nodes[0].kill(t)
	p1.conn.Close()

	p2 := rawRedial(t, nodes[1].addr, "p")
	resendAndRelease(t, p2, packet.Publish{QoS: 2, Topic: "q2/x", PacketID: 9, Payload: []byte("resent")})
	for i, c := range []*mqttClient{on2, on3} {
		if m := c.next(t); string(m.Payload) != "stored" {
			t.Fatalf("subscriber on node%d got %q, want the stored message", i+2, m.Payload)
		}
		if n := countUntilMarker(t, c, nodes[1+i].addr, "stored", fmt.Sprintf("marker%d", i)); n != 0 {
			t.Errorf("subscriber on node%d got the QoS 2 message %d more times", i+2, n)
		}
	}
	exp := uint32(3600)
	off, _ := redial(t, nodes[2].addr, &paho.Connect{ClientID: "off", Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}})
	if n := countUntilMarker(t, off, nodes[2].addr, "stored", "marker-off"); n != 1 {
		t.Errorf("the offline subscriber of node1 got the QoS 2 message %d times, want 1", n)
	}
	// The identifier is released: a new message under it is routed.
	p2.send(t, (&packet.Publish{QoS: 2, Topic: "q2/x", PacketID: 9, Payload: []byte("next")}).Append(nil, packet.V5))
	if rc := p2.ack(t, packet.PUBREC, 9); rc.IsError() {
		t.Fatalf("PUBREC for a new message under the released identifier: %v", rc)
	}
	if n := countUntilMarker(t, on2, nodes[1].addr, "next", "marker-last"); n != 1 {
		t.Fatalf("a new message under the released identifier arrived %d times, want 1", n)
	}
}

// A delivery's entry is written once cluster-wide: a node that lost a
// session and writes the entry of a routed delivery the new owner has
// made already (a frozen node whose follower thaws, a stopping one whose
// writes land late) has its write dropped by JetStream and is told so,
// and the delivery does not come back when the session returns there.
func TestRoutedEntryOnceAcrossNodes(t *testing.T) {
	nodes := testCluster(t)
	sub, pub := q2SubscriberOnNode2(t, nodes, "s")
	pub.publishQoS(t, "q2/x", "m", 2, false)
	first := sub.publish(t) // not acknowledged: its entry stays
	// The entry node2 made, with the message's id.
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	st, err := nodes[2].st.loadSession(ctx, "s", 0)
	if err != nil || st == nil || len(st.entries) != 1 {
		t.Fatalf("records of s: %+v, %v; want one entry", st, err)
	}
	e := st.entries[0]

	// The session moves to node3, which resends it; it completes there
	// and its entry is deleted.
	sub.conn.Close()
	s3 := rawRedial(t, nodes[2].addr, "s")
	again := s3.publish(t)
	if !again.Dup || again.PacketID != first.PacketID {
		t.Fatalf("node3 resent id %d DUP %v, want id %d DUP", again.PacketID, again.Dup, first.PacketID)
	}
	s3.send(t, (&packet.Ack{Type: packet.PUBREC, PacketID: again.PacketID}).Append(nil, packet.V5))
	if rc := s3.ack(t, packet.PUBREL, again.PacketID); rc != packet.Success {
		t.Fatalf("PUBREL: %v", rc)
	}
	s3.send(t, (&packet.Ack{Type: packet.PUBCOMP, PacketID: again.PacketID}).Append(nil, packet.V5))

	// Node2 writes the same delivery again under an entry number of its
	// own, as its broker does (PutEntryOnce).
	e.Seq, e.PacketID = 99, 0
	answer := make(chan bool, 1)
	tx := nodes[1].st.NewTxn()
	tx.(broker.OnceTxn).PutEntryOnce("s", &e, func(copied bool) { answer <- copied })
	done := make(chan error, 1)
	nodes[1].st.Commit(tx, func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case copied := <-answer:
		if !copied {
			t.Fatal("node2's copy of the delivery's entry was reported stored, not as a copy")
		}
	default:
		t.Fatal("node2's copy of the delivery's entry was not answered before its commit's done")
	}

	// Back on node2: the message does not come again; a new one does.
	s3.conn.Close()
	s2 := rawRedial(t, nodes[1].addr, "s")
	pub.publishQoS(t, "q2/x", "after", 2, false)
	if p := s2.publish(t); string(p.Payload) != "after" {
		t.Fatalf("back on node2: PUBLISH %q (DUP %v), want \"after\"", p.Payload, p.Dup)
	}
}

// A node that lost a publisher's session cannot pass the check made
// between the two phases: node2's claim fenced the session before it read
// the records, so node1's check (a write expecting its own fence) fails,
// and its broker refuses what it had stored instead of routing it; node2's
// passes, again and again. A claim older than the fence does not replace
// it.
func TestFenceAfterTakeover(t *testing.T) {
	nodes := testCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	rawConnect(t, nodes[0].addr, "p", true)
	for range 2 {
		if err := nodes[0].st.Fence(ctx, "p"); err != nil {
			t.Fatalf("node1 holds the session: %v", err)
		}
	}
	nodes[0].st.fenceMu.Lock()
	old := nodes[0].st.fences["p"].token
	nodes[0].st.fenceMu.Unlock()

	rawRedial(t, nodes[1].addr, "p") // takes the session over
	if err := nodes[0].st.Fence(ctx, "p"); !errors.Is(err, errFenced) {
		t.Fatalf("node1's check after node2's takeover: %v, want %v", err, errFenced)
	}
	for range 2 {
		if err := nodes[1].st.Fence(ctx, "p"); err != nil {
			t.Fatalf("node2 holds the session: %v", err)
		}
	}
	if _, err := nodes[2].st.fence(ctx, "p", old); !errors.Is(err, errFenced) {
		t.Fatalf("fencing under node1's older claim: %v, want %v", err, errFenced)
	}
	if err := nodes[1].st.Fence(ctx, "p"); err != nil {
		t.Fatalf("node2 after an older claim's attempt: %v", err)
	}
}

// A fence check that the node gave up on but that landed all the same (a
// write held in a route's socket while the node was cut off, delivered at
// the heal) leaves the fence one sequence past what the node remembers.
// The node still holds the session: its client's next QoS 2 PUBLISH is
// acknowledged, not refused with 0x80 as if another node had fenced it
// (without the reread every later one was, for as long as the client
// stayed; seen in the isolation fault test). A real takeover still fences
// it out.
func TestFenceCheckLandedLate(t *testing.T) {
	nodes := testCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	st := nodes[0].st
	p, _ := rawConnect(t, nodes[0].addr, "p", true)
	publish := func(id uint16) packet.ReasonCode {
		t.Helper()
		pub := packet.Publish{QoS: 2, Topic: "q2/x", PacketID: id, Payload: []byte("m")}
		p.send(t, pub.Append(nil, packet.V5))
		rc := p.ack(t, packet.PUBREC, id)
		rel := packet.Ack{Type: packet.PUBREL, PacketID: id}
		p.send(t, rel.Append(nil, packet.V5))
		p.ack(t, packet.PUBCOMP, id)
		return rc
	}
	if rc := publish(1); rc.IsError() {
		t.Fatalf("PUBREC before the late check: %v", rc)
	}

	// The check node1 sent and never heard back about: its token,
	// expecting the sequence node1 remembers, written behind its back.
	st.fenceMu.Lock()
	f := st.fences["p"]
	st.fenceMu.Unlock()
	late := nats.NewMsg(st.fenceSubject("p"))
	late.Data = binary.BigEndian.AppendUint64(nil, f.token)
	if _, err := st.js.PublishMsg(ctx, late, jetstream.WithExpectLastSequencePerSubject(f.seq)); err != nil {
		t.Fatal(err)
	}

	if rc := publish(2); rc.IsError() {
		t.Fatalf("PUBREC after node1's own check landed late: %v, want success (node1 still holds the session)", rc)
	}
	if err := st.Fence(ctx, "p"); err != nil {
		t.Fatalf("node1's check after the late one: %v", err)
	}

	rawRedial(t, nodes[1].addr, "p") // takes the session over
	if err := st.Fence(ctx, "p"); !errors.Is(err, errFenced) {
		t.Fatalf("node1's check after node2's takeover: %v, want %v", err, errFenced)
	}
}

// A QoS 2 publisher whose node died with the first of two PUBLISHes not
// stored and the second stored (phase 1 only) resends both, in order, to
// node2: the first is new there (both phases), the second is routed again
// under its stored id; the second waits for the first, so every
// subscriber gets them in the order they were sent and the PUBRECs leave
// in that order. A resend routed at once overtook the first while it was
// in its phase 1 (a rolling restart's fault test: 578 before 577 at every
// subscriber).
func TestQoS2RedoKeepsArrivalOrder(t *testing.T) {
	nodes := testCluster(t)
	on2, on3, _ := q2Subscribers(t, nodes)

	p1, _ := rawConnect(t, nodes[0].addr, "p", true)
	stored := &broker.Message{Topic: "q2/x", Payload: []byte("second"), QoS: 2, Origin: "p"}
	tx := nodes[0].st.NewTxn()
	nodes[0].st.Received(tx, "p", 10, broker.MessageID{0xcd, 15: 2}, stored)
	done := make(chan error, 1)
	nodes[0].st.Commit(tx, func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatalf("phase 1 of the second: %v", err)
	}
	nodes[0].kill(t)
	p1.conn.Close()

	p2 := rawRedial(t, nodes[1].addr, "p")
	first := packet.Publish{QoS: 2, Dup: true, Topic: "q2/x", PacketID: 9, Payload: []byte("first")}
	second := packet.Publish{QoS: 2, Dup: true, Topic: "q2/x", PacketID: 10, Payload: []byte("second")}
	p2.send(t, append(first.Append(nil, packet.V5), second.Append(nil, packet.V5)...))
	for _, pid := range []uint16{9, 10} {
		if rc := p2.ack(t, packet.PUBREC, pid); rc.IsError() {
			t.Fatalf("PUBREC %d: %v", pid, rc)
		}
	}
	for i, c := range []*mqttClient{on2, on3} {
		for _, want := range []string{"first", "second"} {
			if m := c.next(t); string(m.Payload) != want {
				t.Fatalf("subscriber on node%d got %q, want %q", i+2, m.Payload, want)
			}
		}
	}
}
