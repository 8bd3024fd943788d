package jsstate

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
	"github.com/edgeport/edgeport/internal/testwait"
)

// syncIndex waits until every node's session index holds every session
// record written so far (a subscription acknowledged on one node is then
// matched by publishers on all).
func syncIndex(t testing.TB, nodes ...*node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	for _, nd := range nodes {
		if err := nd.st.syncIndex(ctx); err != nil {
			t.Fatalf("%s: %v", nd.name, err)
		}
	}
}

// redial connects cp to addr, again while the cluster refuses it with
// 0x88 (a node was lost: JetStream elects new leaders for what it led
// before claims succeed), as a client reconnecting would.
func redial(t testing.TB, addr string, cp *paho.Connect) (*mqttClient, *paho.Connack) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, ack, err := tryDial(t, addr, cp, false)
		if err == nil {
			return c, ack
		}
		if ack == nil || ack.ReasonCode != byte(packet.ServerUnavailable) || time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
}

// publishN publishes payloads prefix0..prefix<n-1> at qos on topic from c
// and fails unless each is acknowledged with success.
func publishN(t testing.TB, c *mqttClient, topic, prefix string, n int, qos byte) {
	t.Helper()
	for i := range n {
		c.publishQoS(t, topic, fmt.Sprintf("%s%d", prefix, i), qos, false)
	}
}

// publishThenEnd publishes m0..m<n-1> on data/x, then the end marker
// end0 on data/end, at qos.
func publishThenEnd(t testing.TB, c *mqttClient, n int, qos byte) {
	t.Helper()
	publishN(t, c, "data/x", "m", n, qos)
	publishN(t, c, "data/end", "end", 1, qos)
}

// expectThenEnd fails unless c receives m0..m<n-1> in order and then the
// end marker: nothing missing, out of order or twice.
func expectThenEnd(t testing.TB, c *mqttClient, n int) {
	t.Helper()
	expectInOrder(t, c, "m", n)
	if m := c.next(t); string(m.Payload) != "end0" {
		t.Fatalf("after the %d messages: %q, want the end marker (a duplicate?)", n, m.Payload)
	}
}

// expectInOrder reads n messages from c and fails unless they are
// prefix0..prefix<n-1> in that order.
func expectInOrder(t testing.TB, c *mqttClient, prefix string, n int) {
	t.Helper()
	for i := range n {
		want := fmt.Sprintf("%s%d", prefix, i)
		if m := c.next(t); string(m.Payload) != want {
			t.Fatalf("message %d: got %q, want %q", i, m.Payload, want)
		}
	}
}

// A QoS 1 message a publisher on node1 had acknowledged is durable for a
// persistent subscriber of node2 before the PUBACK, whatever node2 does:
// here node2's live routing is down (it receives nothing over core NATS,
// as when core NATS drops a message) and node2 dies right after the last
// acknowledgement; the client, resuming on node3, gets every message, in
// order.
func TestRoutedDurableBeforeAck(t *testing.T) {
	nodes := testCluster(t)
	dev := dial(t, nodes[1].addr, persistent("dev", true))
	dev.subscribe(t, "data/#")
	if err := dev.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	syncIndex(t, nodes[0])
	nodes[1].sync(t)
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	if err := nodes[1].r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	const n = 30
	publishN(t, pub, "data/x", "m", n, 1)
	nodes[1].kill(t)

	back, ack := redial(t, nodes[2].addr, persistent("dev", false))
	if !ack.SessionPresent {
		t.Fatal("CONNACK on node3: session not present")
	}
	expectInOrder(t, back, "m", n)
	t.Logf("%d QoS 1 messages acknowledged on node1 reached dev on node3 after node2 was killed", n)
}

// A persistent session whose node is gone (its NATS server and broker
// stopped abruptly) is not lost for what is published meanwhile: the
// publisher on node1 is acknowledged (two of three servers are a quorum)
// and the client, reconnecting to node3, gets it all in order.
func TestRoutedToSessionOfLostNode(t *testing.T) {
	nodes := testCluster(t)
	dev := dial(t, nodes[1].addr, persistent("dev", true))
	dev.subscribeQoS(t, "data/#", 2)
	if err := dev.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	syncIndex(t, nodes[0])
	nodes[1].kill(t)

	pub, _ := redial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	const n = 10
	publishN(t, pub, "data/a", "q1-", n, 1)
	publishN(t, pub, "data/b", "q2-", n, 2)

	back, ack := redial(t, nodes[2].addr, persistent("dev", false))
	if !ack.SessionPresent {
		t.Fatal("CONNACK on node3: session not present")
	}
	expectInOrder(t, back, "q1-", n)
	expectInOrder(t, back, "q2-", n)
	t.Logf("%d QoS 1 and %d QoS 2 messages published while dev's node was down reached it on node3", n, n)
}

// A persistent session online on node2 gets each message published on
// node1 once, although node2 receives it twice: live over core NATS (which
// its non-persistent subscriber takes) and from the session stream.
func TestRoutedOnceWithLiveCopy(t *testing.T) {
	nodes := testCluster(t)
	dev := dial(t, nodes[1].addr, persistent("dev", true))
	dev.subscribe(t, "data/#")
	live := dial(t, nodes[1].addr, &paho.Connect{ClientID: "live", CleanStart: true})
	live.subscribe(t, "data/#")
	nodes[1].sync(t)
	syncIndex(t, nodes[0])
	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	const n = 20
	publishThenEnd(t, pub, n, 1)
	expectThenEnd(t, live, n)
	expectThenEnd(t, dev, n)
	if got := nodes[1].r.Stats().Received; got < n+1 {
		t.Errorf("node2 routed %d live messages, want at least %d (the live copies)", got, n+1)
	}
}

// QoS 2 exactly once across the loss of the subscriber's node: deliveries
// node2 made from routed records (some completed, some released, some
// unanswered) are carried to node3 as they stood: completed ones are not
// sent again, released ones get their PUBREL, unanswered ones are resent
// with DUP under their packet identifiers, and nothing arrives twice.
func TestRoutedQoS2ExactlyOnceAcrossKill(t *testing.T) {
	nodes := testCluster(t)
	sub, pub := q2SubscriberOnNode2(t, nodes, "dev")
	const n = 6
	publishN(t, pub, "q2/x", "m", n, 2)
	ids := make(map[string]uint16) // payload → packet identifier on node2
	for range n {
		p := sub.publish(t)
		if p.QoS != 2 {
			t.Fatalf("%q at QoS %d, want 2", p.Payload, p.QoS)
		}
		ids[string(p.Payload)] = p.PacketID
	}
	// m0, m1 completed; m2, m3 released (PUBREL received, no PUBCOMP);
	// m4, m5 unanswered.
	for i := range 4 {
		id := ids[fmt.Sprintf("m%d", i)]
		rec := packet.Ack{Type: packet.PUBREC, PacketID: id}
		sub.send(t, rec.Append(nil, packet.V5))
		if rc := sub.ack(t, packet.PUBREL, id); rc != packet.Success {
			t.Fatalf("PUBREL %d: %v", id, rc)
		}
		if i < 2 {
			comp := packet.Ack{Type: packet.PUBCOMP, PacketID: id}
			sub.send(t, comp.Append(nil, packet.V5))
		}
	}
	// Node2 may die before it has processed the last PUBCOMPs: then node3
	// sends their PUBREL again, which MQTT allows (the client answers
	// PUBCOMP); the message itself never comes again.
	nodes[1].kill(t)
	sub.conn.Close()

	back := rawRedial(t, nodes[2].addr, "dev")
	released := map[uint16]bool{}
	resent := map[string]bool{}
	for len(resent) < 2 || !released[ids["m2"]] || !released[ids["m3"]] {
		h, body := back.read(t)
		switch h.Type {
		case packet.PUBREL:
			var a packet.Ack
			if err := a.Decode(h.Type, h.Flags, body, packet.V5); err != nil {
				t.Fatal(err)
			}
			released[a.PacketID] = true
			comp := packet.Ack{Type: packet.PUBCOMP, PacketID: a.PacketID}
			back.send(t, comp.Append(nil, packet.V5))
		case packet.PUBLISH:
			var p packet.Publish
			if err := p.Decode(h.Flags, body, packet.V5); err != nil {
				t.Fatal(err)
			}
			pl := string(p.Payload)
			if pl != "m4" && pl != "m5" || resent[pl] {
				t.Fatalf("node3 sent PUBLISH %q again (DUP %v): delivered twice", pl, p.Dup)
			}
			if !p.Dup || p.PacketID != ids[pl] {
				t.Errorf("%q resent with DUP %v id %d; want DUP and id %d", pl, p.Dup, p.PacketID, ids[pl])
			}
			resent[pl] = true
			rec := packet.Ack{Type: packet.PUBREC, PacketID: p.PacketID}
			back.send(t, rec.Append(nil, packet.V5))
		default:
			t.Fatalf("unexpected %s", h.Type)
		}
	}
	for _, pl := range []string{"m0", "m1"} {
		if released[ids[pl]] {
			t.Logf("PUBREL for completed %s again (allowed: the client answers PUBCOMP)", pl)
		}
	}
	// A message published now arrives once, after the resumed ones.
	pub.publishQoS(t, "q2/x", "after", 2, false)
	for {
		p := back.publish(t)
		if string(p.Payload) == "after" {
			break
		}
		t.Fatalf("after the resumption: PUBLISH %q (DUP %v), want \"after\"", p.Payload, p.Dup)
	}
}

// publish reads packets until a PUBLISH and returns it, answering PUBRELs
// of earlier exchanges with PUBCOMP.
func (c *rawConn) publish(t *testing.T) *packet.Publish {
	t.Helper()
	for {
		h, body := c.read(t)
		switch h.Type {
		case packet.PUBLISH:
			p := new(packet.Publish)
			if err := p.Decode(h.Flags, body, packet.V5); err != nil {
				t.Fatal(err)
			}
			return p
		case packet.PUBREL:
			var a packet.Ack
			if err := a.Decode(h.Type, h.Flags, body, packet.V5); err != nil {
				t.Fatal(err)
			}
			comp := packet.Ack{Type: packet.PUBCOMP, PacketID: a.PacketID}
			c.send(t, comp.Append(nil, packet.V5))
		default:
			t.Fatalf("got %s, want PUBLISH", h.Type)
		}
	}
}

// rawRedial resumes id's session on addr, again while the cluster refuses
// it with 0x88 (see redial).
func rawRedial(t *testing.T, addr, id string) *rawConn {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, present, err := tryRawConnect(t, addr, id, false)
		if err == nil {
			if !present {
				t.Fatalf("%s: session not present on %s", id, addr)
			}
			return c
		}
		if !errors.Is(err, errUnavailable) || time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
}

// A routed delivery whose twin entry is already in the session (its owner
// made the entry and died before the record's deletion was durable) is
// dropped by the node that adopts the session; one without is delivered,
// after the session's entries. The records are written as such a node
// would have left them, for a session owned by a node that is gone.
func TestAdoptDropsRoutedTwin(t *testing.T) {
	nodes := testCluster(t)
	// A real session record to copy: its owner principal is the one an
	// anonymous client of the listener resumes under.
	tmpl := dial(t, nodes[1].addr, persistent("tmpl", true))
	tmpl.subscribe(t, "data/#")
	if err := tmpl.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	st := nodes[0].st
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	raw, err := st.streams[st.shard("tmpl")].GetLastMsgForSubject(ctx, st.sessionSubject("tmpl", "s"))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := store.DecodeSession(raw.Data, "ghost")
	if err != nil {
		t.Fatal(err)
	}
	msg := func(payload string) store.Message {
		return store.Message{Topic: "data/x", Payload: []byte(payload), QoS: 1, Origin: "pub"}
	}
	twin, other := broker.MessageID{1, 15: 1}, broker.MessageID{1, 15: 2}
	tx := st.NewTxn().(*txn)
	tx.PutSession(rec)
	tx.PutEntry("ghost", &store.Entry{Seq: 7, Msg: msg("twin"), QoS: 1, Routed: twin})
	for _, r := range []struct {
		id      broker.MessageID
		payload string
	}{{twin, "twin"}, {other, "other"}} {
		m := msg(r.payload)
		tx.put(st.sessionSubject("ghost", "r."+routedToken(r.id)), store.AppendMessage(nil, &m))
	}
	done := make(chan error, 1)
	st.Commit(tx, func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Owned by a node that is gone: a survivor adopts it, or the client's
	// claim does, whichever comes first.
	if _, err := nodes[0].owner.kv.Put(ctx, clientKey("ghost"), []byte("gone")); err != nil {
		t.Fatal(err)
	}

	back, ack := redial(t, nodes[2].addr, persistent("ghost", false))
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	pub := dial(t, nodes[2].addr, &paho.Connect{ClientID: "pub3", CleanStart: true})
	pub.publish(t, "data/x", "marker", false)
	for _, want := range []string{"twin", "other", "marker"} {
		if m := back.next(t); string(m.Payload) != want {
			t.Fatalf("got %q, want %q (the twin delivered twice?)", m.Payload, want)
		}
	}
}

// A publishing node whose session index has not read a new subscription
// yet stores nothing for it, and says how far its index had read: the
// subscriber's node sees that its session's record is newer and gives the
// session the live copy instead, once.
func TestRoutedLiveCopyWhenIndexBehind(t *testing.T) {
	nodes := testCluster(t)
	nodes[0].st.stopFollowers() // node1's index stops here
	dev := dial(t, nodes[1].addr, persistent("dev", true))
	dev.subscribe(t, "data/#")
	nodes[1].sync(t)
	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	const n = 10
	publishThenEnd(t, pub, n, 1)
	expectThenEnd(t, dev, n)
}
