package jsstate

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/cluster/clustertest"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// sent is a PUBLISH as a client got it: its QoS, packet identifier and
// DUP flag.
type sent struct {
	qos byte
	id  uint16
	dup bool
}

func (s sent) String() string { return fmt.Sprintf("QoS %d id %d dup %v", s.qos, s.id, s.dup) }

// TestFollowerBehindAdoptionGivesNoTwin: node 3 holds a session whose
// follower is stuck on its first routed delivery (as a follower waits
// after a pause until the node knows which sessions are still its own,
// broker.DeliverRouted), while node 1 publishes 40 QoS 2 and 40 QoS 1
// messages for it. The client then connects to node 1, whose claim takes
// the session from node 3 (node 3 hands it over, 0x8E) and then fails at
// its fence (as it did with 503 after a thaw); the client comes back to
// node 3, which adopts the session from the stream, all 80 messages
// included, and sends them. The follower then reads on, behind the
// adoption: it must give the session none of the routed deliveries the
// adoption read (it delivered them, or found them taken). Before, it gave
// them again, as new deliveries under new packet identifiers: the QoS 1
// ones reached the client twice, the QoS 2 ones were stopped only by
// JetStream's duplicate window, which a thawed node cannot count on (a
// write published again takes a duplicate answer for its own): seen in
// the SIGSTOP fault test, `frozen-paho-sub got QoS 2
// frozen-pub-q2-n1:981 2 times` (50 QoS 2 and 50 QoS 1 twice, Eclipse
// Paho taking a PUBLISH under a new identifier for a new message). Then
// the client resumes once more: everything it has not acknowledged comes
// again with DUP under the identifier it had, and nothing else.
func TestFollowerBehindAdoptionGivesNoTwin(t *testing.T) {
	const id, n = "rt", 40
	stuck, release := make(chan struct{}), make(chan struct{})
	var once, letGo sync.Once
	free := func() { letGo.Do(func() { close(release) }) }
	var fenceFails atomic.Bool
	fenceFails.Store(true)
	cns := clustertest.StartNodes(t, 3)
	nodes := []*node{
		startNodeOwned(t, cns[0], nil, func(o *Ownership) broker.Ownership {
			o.beforeFence = func(c string) error {
				if c == id && fenceFails.CompareAndSwap(true, false) {
					return errors.New("reading the fence: JetStream system temporarily unavailable (test)")
				}
				return nil
			}
			return o
		}),
		startNode(t, cns[1]),
		startNodeOwned(t, cns[2], nil, func(o *Ownership) broker.Ownership {
			o.sessions.beforeDeliver = func(c string) {
				if c != id {
					return
				}
				first := false
				once.Do(func() { first = true })
				if first {
					close(stuck)
					<-release
				}
			}
			return o
		}),
	}
	t.Cleanup(free) // before the nodes stop, should the test end early

	sub, _ := rawConnect(t, nodes[2].addr, id, true)
	sp := packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "rt/q2", QoS: 2}, {Filter: "rt/q1", QoS: 1}}}
	sub.send(t, sp.Append(nil, packet.V5))
	if h, _ := sub.read(t); h.Type != packet.SUBACK {
		t.Fatalf("got %s, want SUBACK", h.Type)
	}
	syncIndex(t, nodes[0])
	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "rt-pub", CleanStart: true})
	for i := range n {
		pub.publishQoS(t, "rt/q2", fmt.Sprintf("q2-%d", i), 2, false)
		pub.publishQoS(t, "rt/q1", fmt.Sprintf("q1-%d", i), 1, false)
	}
	select {
	case <-stuck:
	case <-time.After(testwait.Timeout):
		t.Fatal("node 3's follower never came to the session's first routed delivery")
	}

	// Node 1's claim takes the session from node 3, then fails.
	if _, _, err := tryRawConnect(t, nodes[0].addr, id, false); !errors.Is(err, errUnavailable) {
		t.Fatalf("node 1's claim: %v, want %v", err, errUnavailable)
	}
	if h, _ := sub.read(t); h.Type != packet.DISCONNECT {
		t.Fatalf("node 3's connection got %s, want DISCONNECT (session taken over)", h.Type)
	}

	// Back on node 3: the adopted session's 80 messages, each once.
	c := rawRedial(t, nodes[2].addr, id)
	got := make(map[string]sent)
	for len(got) < 2*n {
		p := c.publish(t)
		s := sent{p.QoS, p.PacketID, p.Dup}
		if was, ok := got[string(p.Payload)]; ok {
			t.Fatalf("got %s twice: %s, then %s", p.Payload, was, s)
		}
		if s.dup {
			t.Errorf("%s: first sent with DUP (%s)", p.Payload, s)
		}
		got[string(p.Payload)] = s
	}

	// The follower reads on; a marker published after shows it is past
	// the session's routed deliveries.
	free()
	pub.publishQoS(t, "rt/q1", "marker", 1, false)
	for {
		p := c.publish(t)
		if string(p.Payload) == "marker" {
			got["marker"] = sent{p.QoS, p.PacketID, p.Dup}
			break
		}
		t.Errorf("got %s again after the adoption: %s, first %s", p.Payload, sent{p.QoS, p.PacketID, p.Dup}, got[string(p.Payload)])
	}
	if cp := nodes[2].st.copies.Load(); cp != 0 {
		t.Errorf("node 3 made %d deliveries again that only JetStream's duplicate window dropped", cp)
	}

	// Nothing was acknowledged: resumed once more, the client gets each
	// again with DUP under its identifier, then a new message.
	c.conn.Close()
	c = rawRedial(t, nodes[2].addr, id)
	again := make(map[string]bool)
	for len(again) < len(got) {
		p := c.publish(t)
		was, ok := got[string(p.Payload)]
		switch {
		case !ok:
			t.Fatalf("resumed: got %s, never sent before", p.Payload)
		case again[string(p.Payload)]:
			t.Fatalf("resumed: got %s twice", p.Payload)
		case !p.Dup || p.PacketID != was.id || p.QoS != was.qos:
			t.Errorf("resumed: %s sent as %s, want DUP under %s", p.Payload, sent{p.QoS, p.PacketID, p.Dup}, was)
		}
		again[string(p.Payload)] = true
	}
	pub.publishQoS(t, "rt/q2", "after", 2, false)
	if p := c.publish(t); string(p.Payload) != "after" || p.Dup {
		t.Fatalf("got %s (dup %v), want the new message", p.Payload, p.Dup)
	}
}
