package broker

import (
	"fmt"
	"testing"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// connRecvMax is connPersist with a Receive Maximum, so that the broker
// queues whatever goes beyond recvMax unacknowledged deliveries.
func connRecvMax(id string, clean bool, recvMax uint16) *packet.Connect {
	cp := connPersist(id, clean, 3600)
	cp.Properties.ReceiveMaximum = recvMax
	cp.Properties.Set(packet.PropReceiveMaximum)
	return cp
}

// resumed is one packet a restored subscriber gets on reconnecting.
type resumed struct {
	payload string // "" for a PUBREL
	dup     bool
	id      uint16
}

// collectResumed reads n PUBLISHes (and any PUBRELs of exchanges that
// began before the restart), acknowledging each as a client does, and
// returns them in arrival order. QoS 2 exchanges of the PUBLISHes it reads
// are completed and left out.
func collectResumed(t *testing.T, c *rawClient, n int) []resumed {
	t.Helper()
	var got []resumed
	rel := make(map[uint16]bool)
	for pubs := 0; pubs < n || len(rel) > 0; {
		switch p := c.next().Pkt.(type) {
		case *packet.Publish:
			pubs++
			got = append(got, resumed{payload: string(p.Payload), dup: p.Dup, id: p.PacketID})
			switch p.QoS {
			case 1:
				c.send(&packet.Ack{Type: packet.PUBACK, PacketID: p.PacketID})
			case 2:
				rel[p.PacketID] = true
				c.send(&packet.Ack{Type: packet.PUBREC, PacketID: p.PacketID})
			}
		case *packet.Ack:
			switch p.Type {
			case packet.PUBREL:
				if !rel[p.PacketID] {
					got = append(got, resumed{id: p.PacketID})
				}
				delete(rel, p.PacketID)
				c.send(&packet.Ack{Type: packet.PUBCOMP, PacketID: p.PacketID})
			default:
				t.Fatalf("unexpected %s id %d", p.Type, p.PacketID)
			}
		default:
			t.Fatalf("unexpected %T", p)
		}
	}
	return got
}

// TestRestoreKeepsPublishOrderQoS1: a persistent QoS 1 session whose
// inflight window and queue were mixed when the broker stopped (some
// deliveries sent straight away and stored with their packet identifier,
// some sent from the queue, whose identifier is not stored, some still
// queued) gets them back in the order they were published: the leading
// deliveries that kept their identifier first, resent with DUP under it
// (MQTT 5 §4.4), then the rest in publish order.
func TestRestoreKeepsPublishOrderQoS1(t *testing.T) {
	t.Parallel()
	d := startDurableBroker(t, Options{}, t.TempDir())
	sub, _ := connectRaw(t, d.addr, packet.V5, connRecvMax("ro1-sub", true, 3))
	sub.subscribe(1, 1, "ro1/t")
	pub, _ := connectRaw(t, d.addr, packet.V5, connV5("ro1-pub"))
	send := func(i int) {
		publishAcked(pub, &packet.Publish{QoS: 1, PacketID: uint16(i), Topic: "ro1/t", Payload: fmt.Appendf(nil, "m%d", i)})
	}

	// m1..m3 fill the window of 3 and are stored with their identifiers.
	send(1)
	send(2)
	send(3)
	m1 := sub.expectPublish("ro1/t", "m1")
	m2 := sub.expectPublish("ro1/t", "m2")
	m3 := sub.expectPublish("ro1/t", "m3")
	send(4) // queued: the window is full
	sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: m3.PacketID})
	sub.expectPublish("ro1/t", "m4") // from the queue: its identifier is not stored
	sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: m2.PacketID})
	sub.ping() // the PUBACK is handled: the window has room, the queue is empty
	send(5)
	sub.expectPublish("ro1/t", "m5") // straight away: stored with its identifier
	send(6)                          // queued
	send(7)                          // queued
	sub.ping()

	d = d.restart()
	sub, ack := connectRaw(t, d.addr, packet.V5, connRecvMax("ro1-sub", false, 3))
	if !ack.SessionPresent {
		t.Fatal("session not present after restart")
	}
	got := collectResumed(t, sub, 5)
	want := []string{"m1", "m4", "m5", "m6", "m7"}
	for i, g := range got {
		if g.payload != want[i] {
			t.Fatalf("redelivered %v, want payloads in publish order %v", got, want)
		}
	}
	if !got[0].dup || got[0].id != m1.PacketID {
		t.Fatalf("m1 redelivered as %+v, want DUP with its packet identifier %d", got[0], m1.PacketID)
	}
	sub.ping() // nothing more
}

// TestRestoreKeepsPublishOrderQoS2: the same with QoS 2 deliveries mixed
// in. A released QoS 2 delivery (PUBREL pending) is resent as PUBREL; an
// unreleased one that was sent after a delivery whose identifier is not
// stored keeps its identifier (the receiver may hold it to deduplicate: a
// new one would deliver the message twice), so the earlier delivery is
// resent before it under a new identifier and publish order holds.
func TestRestoreKeepsPublishOrderQoS2(t *testing.T) {
	t.Parallel()
	d := startDurableBroker(t, Options{}, t.TempDir())
	sub, _ := connectRaw(t, d.addr, packet.V5, connRecvMax("ro2-sub", true, 3))
	sub.subscribe(1, 2, "ro2/t")
	pub, _ := connectRaw(t, d.addr, packet.V5, connV5("ro2-pub"))
	send := func(i int, qos byte) {
		publishAcked(pub, &packet.Publish{QoS: qos, PacketID: uint16(i), Topic: "ro2/t", Payload: fmt.Appendf(nil, "m%d", i)})
	}

	send(1, 2)
	m1 := sub.expectPublish("ro2/t", "m1")
	sub.send(&packet.Ack{Type: packet.PUBREC, PacketID: m1.PacketID})
	sub.expectAck(packet.PUBREL, m1.PacketID, packet.Success) // released; PUBCOMP never sent
	send(2, 1)
	m2 := sub.expectPublish("ro2/t", "m2")
	send(3, 1)
	m3 := sub.expectPublish("ro2/t", "m3")
	send(4, 1) // queued: m1, m2, m3 fill the window
	sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: m2.PacketID})
	sub.expectPublish("ro2/t", "m4") // from the queue: identifier not stored
	sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: m3.PacketID})
	sub.ping()
	send(5, 2)
	m5 := sub.expectPublish("ro2/t", "m5") // identifier stored before it was sent
	send(6, 1)                             // queued
	sub.ping()

	d = d.restart()
	sub, ack := connectRaw(t, d.addr, packet.V5, connRecvMax("ro2-sub", false, 3))
	if !ack.SessionPresent {
		t.Fatal("session not present after restart")
	}
	got := collectResumed(t, sub, 3)
	// The PUBREL of m1 first (its message was delivered before the
	// restart), then the messages in publish order.
	if len(got) != 4 || got[0].payload != "" || got[0].id != m1.PacketID {
		t.Fatalf("resumed %+v, want PUBREL %d first", got, m1.PacketID)
	}
	want := []string{"m4", "m5", "m6"}
	for i, g := range got[1:] {
		if g.payload != want[i] {
			t.Fatalf("redelivered %+v, want payloads in publish order %v", got, want)
		}
	}
	if g := got[2]; !g.dup || g.id != m5.PacketID {
		t.Fatalf("m5 redelivered as %+v, want DUP with its packet identifier %d", g, m5.PacketID)
	}
	if g := got[1]; g.dup || g.id == m1.PacketID || g.id == m5.PacketID {
		t.Fatalf("m4 redelivered as %+v, want a new delivery under an identifier not in use", g)
	}
	sub.ping() // nothing more
}
