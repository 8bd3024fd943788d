package jsstate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/testwait"
)

// Order (docs/cluster.md, "Order"): a publisher's acknowledged messages
// are first received by each subscriber in the order they were
// acknowledged, whichever nodes the two are on and however they move.

// firsts records the first receipt of each message a subscriber gets
// over its connections ("<prefix><n>" payloads), in order. One goroutine
// reads the subscriber's current connection.
type firsts struct {
	prefix string

	// stop ends the reader of the current connection, which closes done
	// once it has taken all that connection received. Only the test's
	// goroutine uses them.
	stop, done chan struct{}

	mu    sync.Mutex
	seen  map[string]bool // guarded by mu
	order []int           // n of each first receipt, in order; guarded by mu
}

// receive starts recording what c receives.
func receive(c *mqttClient, prefix string) *firsts {
	f := &firsts{prefix: prefix, seen: make(map[string]bool)}
	f.read(c)
	return f
}

func (f *firsts) read(c *mqttClient) {
	f.stop, f.done = make(chan struct{}), make(chan struct{})
	go f.take(c, f.stop, f.done)
}

// hangUp closes c's connection without DISCONNECT, as a client whose
// network failed, and returns once what c acknowledged is recorded.
func (f *firsts) hangUp(c *mqttClient) {
	c.conn.Close()
	close(f.stop)
	<-f.done
}

// take records what c receives until stop is closed, then what c had
// received by then. Close c's connection before stop: what the client
// acknowledged is then all in c.msgs.
func (f *firsts) take(c *mqttClient, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case m := <-c.msgs:
			f.add(string(m.Payload))
		case <-stop:
			for {
				select {
				case m := <-c.msgs:
					f.add(string(m.Payload))
				default:
					return
				}
			}
		}
	}
}

func (f *firsts) add(payload string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen[payload] {
		return
	}
	f.seen[payload] = true
	if n, err := strconv.Atoi(strings.TrimPrefix(payload, f.prefix)); err == nil && strings.HasPrefix(payload, f.prefix) {
		f.order = append(f.order, n)
	}
}

// finish waits (within testwait.Timeout) until acked messages are first
// received, stops recording and checks them.
func (f *firsts) finish(t testing.TB, acked int) {
	t.Helper()
	testwait.Within(testwait.Timeout, func() bool { return f.count() >= acked })
	close(f.stop)
	<-f.done
	f.check(t, acked) // says what is missing or out of order
}

func (f *firsts) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.order)
}

// check fails unless the first receipts are 0..acked-1 in order (with
// possibly more after: sent, not yet acknowledged when counted).
func (f *firsts) check(t testing.TB, acked int) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, n := range f.order {
		if n != i {
			t.Fatalf("first receipt %d is message %d, want %d (first receipts around it: %v)", i, n, i, f.order[max(0, i-5):min(len(f.order), i+5)])
		}
	}
	if len(f.order) < acked {
		t.Fatalf("%d messages first received, want the %d acknowledged (the last: %v)", len(f.order), acked, f.order[max(0, len(f.order)-5):])
	}
}

// publisher publishes "<prefix>0", "<prefix>1", ... at QoS 1 on topic,
// each once the previous one is acknowledged, until stopped; when its
// connection is replaced (c), it sends the unacknowledged one again on
// the new one, as a client resuming its session does.
type publisher struct {
	mu     sync.Mutex
	c      *mqttClient
	moving chan struct{} // closed once c is replaced; nil when not moving
	acked  int
	stop   chan struct{}
	done   chan struct{}
	err    error
}

func startPublisher(c *mqttClient, topic, prefix string) *publisher {
	p := &publisher{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			default:
			}
			p.mu.Lock()
			c := p.c
			p.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
			r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(prefix + strconv.Itoa(i))})
			cancel()
			if err == nil && r.ReasonCode >= 0x80 {
				err = fmt.Errorf("PUBACK 0x%02X", r.ReasonCode)
			}
			if err != nil {
				p.mu.Lock()
				moving := p.moving
				if p.c == c && moving == nil {
					p.err = fmt.Errorf("publishing %s%d: %w", prefix, i, err)
					p.mu.Unlock()
					return
				}
				p.mu.Unlock()
				if moving != nil {
					<-moving
				}
				i-- // the connection was taken over: sent again on the new one
				continue
			}
			p.mu.Lock()
			p.acked = i + 1
			p.mu.Unlock()
		}
	}()
	return p
}

// move replaces the publisher's connection by the one dial makes (which
// takes the session over from the old one), then closes the old one.
func (p *publisher) move(dial func() *mqttClient) {
	moved := make(chan struct{})
	p.mu.Lock()
	p.moving = moved
	p.mu.Unlock()
	next := dial()
	p.mu.Lock()
	old := p.c
	p.c, p.moving = next, nil
	p.mu.Unlock()
	close(moved)
	old.conn.Close()
}

func (p *publisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acked
}

// halt stops publishing and returns how many messages were acknowledged.
func (p *publisher) halt(t testing.TB) int {
	t.Helper()
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		t.Fatal(p.err)
	}
	return p.acked
}

// waitFor waits until cond holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !testwait.Within(testwait.Timeout, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// A session that moves to another node writes its record again, with the
// same subscriptions. A publisher whose index has not read that record
// has routed its messages to the session all the same (its index had
// the subscriptions): the session's node counts them covered (Covers)
// and takes them from the stream, not from live routing as well, where
// they would come ahead of routed ones still on their way. A new
// subscription is not covered until the publisher has read it. Here
// node1's index stops before dev moves from node2 to node3.
func TestOrderNoLiveCopyAfterMove(t *testing.T) {
	nodes := testCluster(t)
	dev := dial(t, nodes[1].addr, persistent("dev", true))
	dev.subscribeQoS(t, "data/#", 2)
	syncIndex(t, nodes[0])
	nodes[0].st.stopFollowers() // node1's index stays at dev's record on node2
	stale := &broker.Message{Topic: "data/x", QoS: 2, DurablyRouted: true, RoutedIndex: nodes[0].st.Position()}
	if err := dev.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	back, ack := dialWith(t, nodes[2].addr, persistent("dev", false), false)
	if !ack.SessionPresent {
		t.Fatal("CONNACK on node3: session not present")
	}
	if !nodes[2].st.Covers(stale, "dev") {
		t.Fatal("node3 takes live copies from node1, whose index read dev's subscriptions before the move")
	}
	nodes[2].sync(t) // node1 routes dev's filter live to node3
	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	const n = 40
	publishThenEnd(t, pub, n, 2)
	expectThenEnd(t, back, n)
	// A new subscription: node1's stale index has not read it.
	back.subscribeQoS(t, "other/#", 1)
	if nodes[2].st.Covers(stale, "dev") {
		t.Fatal("node3 counts on routed deliveries from node1 for a subscription node1 has not read")
	}
}

// A persistent subscriber that moves, back and forth, between its node
// and the node of a publisher that keeps publishing gets the publisher's
// acknowledged messages first in order: what the publisher's node routed
// to it through the stream while it was elsewhere comes before what that
// node gives it directly once it is there (Deferred), and an adopted
// session's stored and routed deliveries come before anything published
// after (AdoptSession).
func TestOrderSubscriberMovesToPublisherNode(t *testing.T) {
	nodes, dev := subscribedOnNode2(t)
	pub := startPublisher(dial(t, nodes[0].addr, persistent("pub", true)), "data/x", "m")
	got := receive(dev, "m")
	cur := dev
	for move := range 6 {
		want := pub.count() + 20
		waitFor(t, fmt.Sprintf("20 more messages before move %d", move), func() bool { return got.count() >= want })
		// Then on node1 (the publisher's) and node2 in turn.
		got.hangUp(cur)
		next, ack := dialWith(t, nodes[move%2].addr, persistent("dev", false), false)
		if !ack.SessionPresent {
			t.Fatalf("move %d: session not present", move)
		}
		cur = next
		got.read(cur)
	}
	acked := pub.halt(t)
	got.finish(t, acked)
	t.Logf("%d messages, first received in order over 7 connections", acked)
}

// subscribedOnNode2 starts a cluster and, on its second node, a
// persistent session "dev" subscribed to data/# that every node's index
// has read.
func subscribedOnNode2(t *testing.T) ([]*node, *mqttClient) {
	nodes := testCluster(t)
	dev := dial(t, nodes[1].addr, persistent("dev", true))
	dev.subscribe(t, "data/#")
	syncIndex(t, nodes...)
	return nodes, dev
}

// A publisher that moves to the node of a persistent subscriber (from
// the node that routed its messages through the stream) has what it
// publishes there first received after what it published before: it is
// routed through the stream too until that node's follower has read
// what the publisher's earlier messages left there (arrived, Deferred).
func TestOrderPublisherMovesToSubscriberNode(t *testing.T) {
	nodes, dev := subscribedOnNode2(t)
	got := receive(dev, "m")
	pub := startPublisher(dial(t, nodes[0].addr, persistent("pub", true)), "data/x", "m")
	for move := range 6 {
		want := pub.count() + 20
		waitFor(t, fmt.Sprintf("20 more acknowledged before move %d", move), func() bool { return pub.count() >= want })
		// The publisher's connection fails; it reconnects to node2
		// (dev's) and node1 in turn and goes on where it was.
		pub.move(func() *mqttClient {
			next, ack := dialWith(t, nodes[(move+1)%2].addr, persistent("pub", false), false)
			if !ack.SessionPresent {
				t.Errorf("move %d: publisher's session not present", move)
			}
			return next
		})
	}
	acked := pub.halt(t)
	got.finish(t, acked)
	t.Logf("%d messages from a publisher moving between node1 and node2, first received in order on node2", acked)
}

// What a publisher publishes on the node it has just moved to goes
// through the stream (Deferred) until that node's follower has read the
// routed deliveries it published before through its old node, for every
// session; then straight again. Here node2's followers are stopped
// before the publisher moves from node1 to node2, dev's node: its
// messages to dev are deferred, another client's are not.
func TestOrderMovedPublisherDeferred(t *testing.T) {
	nodes, dev := subscribedOnNode2(t)
	pub := dial(t, nodes[0].addr, persistent("pub", true))
	publishN(t, pub, "data/x", "m", 5, 1)
	expectInOrder(t, dev, "m", 5)
	if nodes[1].st.Deferred("dev", "pub") {
		t.Fatal("deferred before the publisher moved")
	}
	nodes[1].st.stopFollowers() // node2 reads no more of the streams
	publishN(t, pub, "data/x", "n", 5, 1)
	_, ack := dialWith(t, nodes[1].addr, persistent("pub", false), false)
	if !ack.SessionPresent {
		t.Fatal("publisher's session not present on node2")
	}
	if !nodes[1].st.Deferred("dev", "pub") {
		t.Fatal("pub's messages to dev on node2 go straight, before those it published through node1 that node2 has not read")
	}
	if nodes[1].st.Deferred("dev", "another") {
		t.Fatal("another client's messages deferred")
	}
}

// A publisher that moves to a subscriber's node while the stream of the
// subscriber's shard does not answer (no leader: right after a node
// thaws the leaders are elected again) still has what it publishes there
// deferred, until the shard answers and the node's follower has read that
// far; then its messages go straight again. Before, the silent shard was
// skipped, and the publisher's next message went straight into the
// subscriber ahead of those it had published through its last node and
// the follower had not read yet (`frozen-sub-n3 got
// frozen-pub-q2-n3:1155 after frozen-pub-q2-n3:1187`, a window of 32).
// The shard's silence is played by the arrivalFault hook (JetStream
// answers 503 then; a stream without a leader cannot be had on demand);
// everything else is real.
func TestOrderMovedPublisherDeferredWhileShardSilent(t *testing.T) {
	var silent atomic.Bool
	var asked atomic.Int32
	var devShard atomic.Int32
	nodes := testClusterWith(t, func(o *Options) {
		o.arrivalFault = func(n int) error {
			if silent.Load() && n == int(devShard.Load()) {
				asked.Add(1)
				return errors.New("nats: API error: code=503 err_code=10008 description=JetStream system temporarily unavailable")
			}
			return nil
		}
	})
	devShard.Store(int32(nodes[1].st.shard("dev")))
	dev := dial(t, nodes[1].addr, persistent("dev", true))
	dev.subscribe(t, "data/#")
	syncIndex(t, nodes...)
	pub := dial(t, nodes[0].addr, persistent("pub", true))
	publishN(t, pub, "data/x", "m", 5, 1)
	expectInOrder(t, dev, "m", 5)

	silent.Store(true)
	_, ack := dialWith(t, nodes[1].addr, persistent("pub", false), false)
	if !ack.SessionPresent {
		t.Fatal("publisher's session not present on node2")
	}
	if asked.Load() == 0 {
		t.Fatal("node2 did not ask dev's shard where the publisher's routed deliveries end")
	}
	if !nodes[1].st.Deferred("dev", "pub") {
		t.Fatal("pub's messages to dev on node2 go straight while dev's shard has not said where pub's earlier ones end")
	}
	if nodes[1].st.Deferred("dev", "another") {
		t.Fatal("another client's messages deferred")
	}
	silent.Store(false)
	waitFor(t, "pub's messages to dev to go straight once the shard answered and node2 read that far", func() bool {
		return !nodes[1].st.Deferred("dev", "pub")
	})
}
