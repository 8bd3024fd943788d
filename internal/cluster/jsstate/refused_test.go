package jsstate

import (
	"errors"
	"math"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// onCompleter runs f on st's commit completer, the goroutine that alone
// reads and writes st.landed, and returns once it ran: f is the done of a
// commit with nothing to write.
func onCompleter(t *testing.T, st *Store, f func()) {
	t.Helper()
	ran := make(chan struct{})
	st.Commit(st.NewTxn(), func(error) { f(); close(ran) })
	select {
	case <-ran:
	case <-time.After(testwait.Timeout):
		t.Fatal("the commit completer did not run")
	}
}

// rawConnect311 opens an MQTT 3.1.1 connection of id on addr with Clean
// Session 0, again while the cluster refuses it (a takeover under way),
// and returns it with whether the session was present.
func rawConnect311(t *testing.T, addr, id string) (*rawConn, bool) {
	t.Helper()
	deadline := time.Now().Add(testwait.Timeout)
	for {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c := &rawConn{conn: conn, r: packet.NewReader(conn, 0)}
		cp := packet.Connect{ProtocolName: "MQTT", Version: packet.V311, KeepAlive: 30, ClientID: id}
		c.send(t, cp.Append(nil, packet.V311))
		h, body := c.read(t)
		var ack packet.ConnAck
		if h.Type != packet.CONNACK {
			t.Fatalf("%s: got %s, want CONNACK", id, h.Type)
		}
		if err := ack.Decode(h.Flags, body, packet.V311); err != nil {
			t.Fatalf("%s: CONNACK: %v", id, err)
		}
		if ack.ReasonCode == packet.Success {
			return c, ack.SessionPresent
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s: CONNACK %v on %s", id, ack.ReasonCode, addr)
		}
	}
}

// ack311 is ack on an MQTT 3.1.1 connection.
func (c *rawConn) ack311(t *testing.T, want packet.Type, id uint16) {
	t.Helper()
	c.ackOf(t, want, id, packet.V311)
}

// countKept returns how many times c got "kept" before "marker"; every
// other message before it is one of the fill.
func countKept(t *testing.T, c *mqttClient) int {
	t.Helper()
	n := 0
	for {
		switch got := string(c.next(t).Payload); {
		case got == "marker":
			return n
		case got == "kept":
			n++
		case !strings.HasPrefix(got, "fill"):
			t.Fatalf("unexpected %q", got)
		}
	}
}

// A QoS 2 message whose second phase JetStream stored but whose commit
// was refused after (ErrOutOfOrder: one of its routed deliveries landed
// before one of an earlier commit, as around a stream leader's election
// at the thaw of a frozen node) keeps its local delivery, whose entry is
// in the stream under the delivery's message id: when the publisher's
// resend is routed again under that id by the node it moved to, the
// session's new delivery is dropped as a copy of that entry, so dropping
// the first one too lost the message (SIGSTOP run: frozen-sub-n1 never
// got frozen-pub-q2-n3:402–404, "a delivery's entry was written already
// by another node"). Each persistent subscriber gets it exactly once: the
// one on the publisher's node (a local delivery), the one on node2 (a
// routed delivery, stored by the refused commit and delivered as before).
func TestRefusedCommitKeepsStoredDelivery(t *testing.T) {
	nodes := testCluster(t)
	local := dial(t, nodes[0].addr, persistent("local", true))
	local.subscribeQoS(t, "q2/#", 2)
	remote := dial(t, nodes[1].addr, persistent("remote", true))
	remote.subscribeQoS(t, "q2/#", 2)
	syncIndex(t, nodes...)

	// Every commit of node1 with a routed delivery to remote's stream is
	// refused as out of order once all its writes are stored.
	st := nodes[0].st
	lane := sessionStream(st.shard("remote"))
	onCompleter(t, st, func() { st.landed[lane] = math.MaxUint64 })

	// An MQTT 3.1.1 publisher: a refused second phase closes its
	// connection without a PUBREC, and the identifier stays stored with
	// its message, so that its resend (DUP) is routed under the same id.
	p1, _ := rawConnect311(t, nodes[0].addr, "p")
	pub := packet.Publish{QoS: 2, Topic: "q2/x", PacketID: 7, Payload: []byte("kept")}
	p1.send(t, pub.Append(nil, packet.V311))
	_ = p1.conn.SetReadDeadline(time.Now().Add(testwait.Timeout))
	if h, _, err := p1.r.Next(1 << 20); err == nil {
		t.Fatalf("got %s, want the connection closed (the second phase refused)", h.Type)
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the refused second phase did not close the publisher's connection")
	}
	onCompleter(t, st, func() { st.landed[lane] = 0 })

	// More deliveries than a session remembers the ids of: only the
	// entry in JetStream's duplicate window still knows this one.
	fill := dial(t, nodes[1].addr, &paho.Connect{ClientID: "fill", CleanStart: true})
	publishN(t, fill, "q2/fill", "fill", 40, 2)

	// The publisher moves to node2, which takes its session with the
	// identifier and the message, and routes the resend again under the
	// message's id.
	p2, present := rawConnect311(t, nodes[1].addr, "p")
	if !present {
		t.Fatal("the publisher's session is not present on node2")
	}
	pub.Dup = true
	p2.send(t, pub.Append(nil, packet.V311))
	p2.ack311(t, packet.PUBREC, 7)
	p2.send(t, (&packet.Ack{Type: packet.PUBREL, PacketID: 7}).Append(nil, packet.V311))
	p2.ack311(t, packet.PUBCOMP, 7)

	m := dial(t, nodes[2].addr, &paho.Connect{ClientID: "marker", CleanStart: true})
	m.publishQoS(t, "q2/marker", "marker", 2, false)
	for name, c := range map[string]*mqttClient{"local": local, "remote": remote} {
		if n := countKept(t, c); n != 1 {
			t.Errorf("%s got the message %d times, want once", name, n)
		}
	}
}
