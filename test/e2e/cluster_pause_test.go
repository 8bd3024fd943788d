package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// pausedPublisher is a raw QoS 1 publisher whose every connection's
// PUBACKs are noted by connection, so that the test tells what a frozen
// node answered on the connection its client had left.
type pausedPublisher struct {
	name string
	mu   sync.Mutex
	acks map[*crashConn][]uint16 // PUBACKs (success) by connection, by packet ID
	errs []string
}

func (p *pausedPublisher) handle(c *crashConn, h packet.FixedHeader, body []byte) error {
	if h.Type != packet.PUBACK {
		return nil
	}
	var a packet.Ack
	if err := a.Decode(h.Type, h.Flags, body, packet.V5); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if a.ReasonCode.IsError() {
		p.errs = append(p.errs, fmt.Sprintf("PUBACK %d: %s", a.PacketID, a.ReasonCode))
		return nil
	}
	p.acks[c] = append(p.acks[c], a.PacketID)
	return nil
}

// acked returns the packet IDs acknowledged on c.
func (p *pausedPublisher) acked(c *crashConn) []uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.acks[c])
}

// publish sends seqs from..to (packet ID seq+1) on c, DUP when dup.
func (p *pausedPublisher) publish(t *testing.T, c *crashConn, from, to int, dup bool) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		if err := c.send(&packet.Publish{QoS: 1, Dup: dup, Topic: "crash/q1", PacketID: uint16(seq + 1),
			Payload: []byte(p.name + ":" + strconv.Itoa(seq))}); err != nil {
			t.Fatalf("%s: PUBLISH %d: %v", p.name, seq, err)
		}
	}
}

// TestClusterFaultPausedPublisher: a QoS 1 publisher's node is frozen
// (SIGSTOP) with five of its PUBLISHes unread in its socket; the client
// moves to another node with Clean Start 0, resends them there (DUP) and
// publishes five more, all acknowledged and received; then the frozen
// node resumes and reads the five old PUBLISHes. It must not route them
// (the other node claimed the session meanwhile: its fence tells so) nor
// acknowledge them on the connection the client left: the subscriber gets
// each message once and in order, and nothing after the resumed node's
// next message. A second subscriber, whose session n3 held and which
// moved to n2 meanwhile, gets everything published through n1 right
// after n3 resumed: n3 does not take its routed deliveries. Before the check (docs/cluster.md, "A node that resumes
// after a freeze") the resumed node acknowledged and delivered them again
// after later ones.
func TestClusterFaultPausedPublisher(t *testing.T) {
	c := newFaultCluster(t)
	// subscribe connects a persistent subscriber of crash/q1 to addr.
	subscribe := func(name, addr string) *crashSub {
		s := newCrashSub(name)
		var err error
		testwait.Within(time.Minute, func() bool { // a node refuses clients until its cluster state is ready
			_, err = s.connect(addr, true)
			return err == nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.disconnect(false) })
		if err := s.subscribe(packet.Subscription{Filter: "crash/q1", QoS: 1}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	sub := subscribe("paused-sub", c.mqtt[0])
	// A second subscriber whose session n3 holds at the freeze: it moves
	// to n2 while n3 is frozen, and n3 resumes still holding it.
	sub3 := subscribe("paused-sub3", c.mqtt[2])
	pub := &pausedPublisher{name: "paused-pub", acks: map[*crashConn][]uint16{}}
	var old *crashConn
	var err error
	testwait.Within(time.Minute, func() bool {
		old, _, err = dialCrash(c.mqtt[2], persistentConnect(pub.name, true), pub.handle)
		return err == nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { old.close(false) })
	has := func(s *crashSub, name string, seqs ...int) func() bool {
		return func() bool {
			got := s.counts(name)
			for _, seq := range seqs {
				if seq >= len(got) || got[seq] == 0 {
					return false
				}
			}
			return true
		}
	}
	received := func(name string, seqs ...int) func() bool { return has(sub, name, seqs...) }
	// Routing from n3 to the subscriber on n1 is up.
	pub.publish(t, old, 0, 0, false)
	testwait.For(t, "paused-pub:0 acknowledged by n3 and received on n1 and n3", func() bool {
		return len(pub.acked(old)) == 1 && received(pub.name, 0)() && has(sub3, pub.name, 0)()
	})

	c.signal(2, syscall.SIGSTOP)
	t.Cleanup(func() { _ = c.node(2).cmd.Process.Signal(syscall.SIGCONT) })
	frozen := time.Now()
	pub.publish(t, old, 1, 5, false) // unread in n3's socket
	var moved *crashConn
	var ack *packet.ConnAck
	var tries []string
	if !testwait.Within(90*time.Second, func() bool {
		moved, ack, err = dialCrash(c.mqtt[0], persistentConnect(pub.name, false), pub.handle)
		if err != nil {
			tries = append(tries, err.Error())
		}
		return err == nil
	}) {
		t.Fatalf("the publisher could not move to n1 while n3 is frozen: %v", tries)
	}
	t.Cleanup(func() { moved.close(false) })
	if !ack.SessionPresent {
		t.Fatal("the publisher's session was not present on n1")
	}
	t.Logf("the publisher moved to n1 %v after n3 froze (%d refusals)", time.Since(frozen).Round(time.Millisecond), len(tries))
	sub3.disconnect(false)
	var present bool
	if !testwait.Within(90*time.Second, func() bool {
		present, err = sub3.connect(c.mqtt[1], false)
		return err == nil
	}) {
		t.Fatalf("paused-sub3 could not move to n2 while n3 is frozen: %v", err)
	}
	if !present {
		t.Fatal("paused-sub3's session was not present on n2")
	}
	pub.publish(t, moved, 1, 5, true)
	pub.publish(t, moved, 6, 10, false)
	testwait.For(t, "paused-pub:1-10 acknowledged by n1 and received", func() bool {
		return len(pub.acked(moved)) == 10 && received(pub.name, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)() &&
			has(sub3, pub.name, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)()
	})

	c.signal(2, syscall.SIGCONT)
	t.Logf("n3 resumed after %v", time.Since(frozen).Round(time.Millisecond))
	// At once, published through n1: routed deliveries for paused-sub3,
	// which n3 still believes it holds until its watch catches up. n2
	// holds it: n3 must leave them to n2 (or the subscriber, staying on
	// n2, never gets those n3 took).
	pub.publish(t, moved, 11, 20, false)
	// n3 reads paused-pub:1-5 and then learns that n1 claimed the
	// session: it ends the old connection (0x8E).
	select {
	case <-old.done:
	case <-time.After(90 * time.Second):
		t.Fatal("n3 did not end the connection its client left within 90s of resuming")
	}
	// A message published through n3 after that: n3's routed deliveries
	// to the subscriber's session are stored in its stream in n3's
	// commit order, so any copy of paused-pub:1-5 n3 routed arrives
	// before it.
	marker := &pausedPublisher{name: "paused-marker", acks: map[*crashConn][]uint16{}}
	var mc *crashConn
	testwait.Within(90*time.Second, func() bool { // n3 may refuse while it catches up
		mc, _, err = dialCrash(c.mqtt[2], persistentConnect(marker.name, true), marker.handle)
		return err == nil
	})
	if err != nil {
		t.Fatalf("connecting to n3 after it resumed: %v", err)
	}
	t.Cleanup(func() { mc.close(false) })
	// n3 refuses publishes (0x80) until it has learnt which sessions
	// moved while it was frozen: a new marker until one is acknowledged.
	seq := -1
	if !testwait.Within(90*time.Second, func() bool {
		seq++
		marker.publish(t, mc, seq, seq, false)
		return testwait.Within(15*time.Second, func() bool {
			marker.mu.Lock()
			refused := len(marker.errs) > seq
			marker.mu.Unlock()
			return refused || slices.Contains(marker.acked(mc), uint16(seq+1))
		}) && slices.Contains(marker.acked(mc), uint16(seq+1))
	}) {
		t.Fatalf("n3 acknowledged none of %d markers within 90s of resuming", seq+1)
	}
	t.Logf("n3 acknowledged paused-marker:%d (%d refused before)", seq, seq)
	testwait.For(t, "the marker published through n3 after it resumed received on n1", received(marker.name, seq))
	all := make([]int, 21)
	for i := range all {
		all[i] = i
	}
	if !testwait.Within(time.Minute, func() bool { return len(pub.acked(moved)) == 20 && has(sub3, pub.name, all...)() }) {
		t.Errorf("paused-sub3 (moved from n3 to n2 while n3 was frozen) got paused-pub:0-20 %v times, want each at least once (n3 took routed deliveries of the session it no longer held)",
			sub3.counts(pub.name))
	}

	if got := pub.acked(old); !slices.Equal(got, []uint16{1}) {
		t.Errorf("n3 acknowledged packet IDs %v on the connection its client had left, want only 1 (paused-pub:0, before the freeze)", got)
	}
	got := sub.counts(pub.name)
	for seq := 1; seq <= 5; seq++ {
		if got[seq] != 1 {
			t.Errorf("the subscriber got paused-pub:%d %d times, want once (n3 routed the PUBLISH it read after its client had moved)", seq, got[seq])
		}
	}
	for _, s := range []*crashSub{sub, sub3} {
		if r := s.outOfOrder(pub.name, func(int) bool { return true }); len(r) > 0 {
			t.Errorf("%s: out of order: %v", s.name, r)
		}
	}
	pub.mu.Lock()
	v := append(append(sub.violations(), sub3.violations()...), pub.errs...)
	pub.mu.Unlock()
	if len(v) > 0 {
		t.Errorf("protocol: %v", v)
	}
	t.Logf("paused-sub got paused-pub:0-20 %v times, paused-sub3 %v", sub.counts(pub.name), sub3.counts(pub.name))
}
