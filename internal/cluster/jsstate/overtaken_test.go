package jsstate

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/cluster/clustertest"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
	"github.com/edgeport/edgeport/internal/testwait"
)

// heldClaims is node's Ownership with each successful claim held, before
// the broker attaches the session, until the test lets it go: the moment
// a node that was frozen (or slow) spends between its claim and the
// CONNACK.
type heldClaims struct {
	*Ownership
	claimed chan struct{} // told once a claim returned
	release chan struct{} // closed to let it return
}

func (h *heldClaims) Claim(ctx context.Context, clientID string) (uint64, error) {
	token, err := h.Ownership.Claim(ctx, clientID)
	if err == nil {
		h.claimed <- struct{}{}
		<-h.release
	}
	return token, err
}

// TestClaimOvertakenRefused: a client's claim on node 1 succeeds, and
// before node 1 attaches the session the same client's claim on node 2
// takes it (node 1 answers node 2's handoff with nothing attached yet).
// Node 1 must then refuse the CONNECT (0x88) rather than serve the client
// a second copy of the session under its older claim: seen after a
// freeze, when both nodes held the session and the messages the older
// one's publishers gave its copy never reached the client. Node 2 keeps
// the session, which resumes with what was queued for it.
func TestClaimOvertakenRefused(t *testing.T) {
	h := heldClaims{claimed: make(chan struct{}, 1), release: make(chan struct{})}
	cns := clustertest.StartNodes(t, 3)
	nodes := []*node{startNodeOwned(t, cns[0], nil, func(o *Ownership) broker.Ownership {
		h.Ownership = o
		return &h
	}), startNode(t, cns[1]), startNode(t, cns[2])}
	// A session on node 3, offline, with a message queued.
	nodes[2].leaveOffline(t, "ov", "ov/t")
	pub := dial(t, nodes[2].addr, persistent("ov-pub", true))
	pub.publish(t, "ov/t", "queued", false)

	type result struct {
		ack *paho.Connack
		err error
	}
	first := make(chan result, 1)
	go func() {
		_, ack, err := tryDial(t, nodes[0].addr, persistent("ov", false), false)
		first <- result{ack, err}
	}()
	select {
	case <-h.claimed:
	case <-time.After(testwait.Timeout):
		t.Fatal("node 1 made no claim")
	}
	second, ack := dialWith(t, nodes[1].addr, persistent("ov", false), false)
	if !ack.SessionPresent {
		t.Fatal("node 2 did not find the session")
	}
	if got := second.next(t); string(got.Payload) != "queued" {
		t.Fatalf("node 2 delivered %q, want the queued message", got.Payload)
	}
	close(h.release)
	var r result
	select {
	case r = <-first:
	case <-time.After(testwait.Timeout):
		t.Fatal("node 1 did not answer the overtaken CONNECT")
	}
	if r.err == nil {
		t.Fatal("node 1 served the client under its overtaken claim")
	}
	if r.ack == nil || r.ack.ReasonCode != 0x88 {
		t.Fatalf("node 1 refused with %v, want CONNACK 0x88", r.err)
	}
	if _, ok := nodes[0].b.Session("ov"); ok {
		t.Error("node 1 holds a copy of the session")
	}
	// The session is node 2's alone: a message published on node 1
	// reaches the client there.
	p1 := dial(t, nodes[0].addr, persistent("ov-pub1", true))
	p1.publish(t, "ov/t", "after", false)
	if got := second.next(t); string(got.Payload) != "after" {
		t.Fatalf("node 2 delivered %q, want the message published on node 1", got.Payload)
	}
}

// TestFenceChecksAtOnce: the owner's fence checks made at the same time
// (a publisher's phase 2 and its check after a pause) all pass: a check
// that loses the race to the owner's own is not taken for another
// node's claim.
func TestFenceChecksAtOnce(t *testing.T) {
	nodes := testCluster(t)
	dial(t, nodes[0].addr, persistent("fc", true))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make(chan error, 8)
	for range cap(errs) {
		go func() { errs <- nodes[0].st.Fence(ctx, "fc") }()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Errorf("a check of node 1's own fence: %v", err)
		}
	}
	// Another node's claim still fences it out.
	dial(t, nodes[1].addr, persistent("fc", false))
	if err := nodes[0].st.Fence(ctx, "fc"); !errors.Is(err, errFenced) {
		t.Fatalf("node 1's check after node 2's claim: %v, want %v", err, errFenced)
	}
}

// TestStaleTakeoverKeepsClaimedSession: node 3 claims a client's session
// from node 2 and adopts it, and before the client's connection attaches
// node 3 hears of node 2's older claim (what its owners watch does when
// it is behind, as after a freeze, or a handoff request that took long).
// That news is stale: node 3 keeps the session it has just taken, and the
// client resumes it with what was queued. Before, node 3 handed the
// adopted session over again (it carried no claim until the attach) and
// the client got a new, empty session: `frozen-sub-n3: session not
// present after reconnecting to n3` in the SIGSTOP fault test, n3's
// watch applying n2's claim 18 after n3's claim 19 had adopted the
// session from n2, the queued messages gone.
func TestStaleTakeoverKeepsClaimedSession(t *testing.T) {
	h := heldClaims{claimed: make(chan struct{}, 1), release: make(chan struct{})}
	cns := clustertest.StartNodes(t, 3)
	nodes := []*node{startNode(t, cns[0]), startNode(t, cns[1]), startNodeOwned(t, cns[2], nil, func(o *Ownership) broker.Ownership {
		h.Ownership = o
		return &h
	})}
	nodes[0].leaveOffline(t, "st", "st/t")
	pub := dial(t, nodes[0].addr, persistent("st-pub", true))
	pub.publish(t, "st/t", "queued", false)

	// The client moves to node 2 (node 1 hands the session over), does
	// not acknowledge the queued message, and leaves.
	c2, ack := dialWith(t, nodes[1].addr, persistent("st", false), true)
	if !ack.SessionPresent {
		t.Fatal("node 2 did not find the session")
	}
	if got := c2.next(t); string(got.Payload) != "queued" {
		t.Fatalf("node 2 delivered %q, want the queued message", got.Payload)
	}
	if err := c2.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "st offline on node 2", func() bool {
		info, ok := nodes[1].b.Session("st")
		return ok && !info.Online
	})
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	e, err := nodes[0].owner.kv.Get(ctx, clientKey("st"))
	if err != nil || string(e.Value()) != "node2" {
		t.Fatalf("owner entry: %v, %v; want node2", e, err)
	}
	stale := e.Revision() // node 2's claim

	// The client comes to node 3, which claims and adopts the session;
	// its connection waits while node 3 hears of node 2's claim.
	type result struct {
		c   *mqttClient
		ack *paho.Connack
		err error
	}
	third := make(chan result, 1)
	go func() {
		c, ack, err := tryDial(t, nodes[2].addr, persistent("st", false), false)
		third <- result{c, ack, err}
	}()
	select {
	case <-h.claimed:
	case <-time.After(testwait.Timeout):
		t.Fatal("node 3 made no claim")
	}
	if _, ok := nodes[2].b.Session("st"); !ok {
		t.Fatal("node 3 did not adopt the session it claimed")
	}
	if nodes[2].b.TakenOver(ctx, "st", stale) {
		t.Error("node 3 gave the session up on node 2's older claim")
	}
	close(h.release)
	var r result
	select {
	case r = <-third:
	case <-time.After(testwait.Timeout):
		t.Fatal("node 3 did not answer the CONNECT")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.ack.SessionPresent {
		t.Fatal("node 3 gave the client a new session")
	}
	if got := r.c.next(t); string(got.Payload) != "queued" {
		t.Fatalf("node 3 delivered %q, want the queued message again", got.Payload)
	}
}

// TestClaimReplacesStaleCopy: a client connects to node 3, which still
// holds a copy of its session from before, under an older claim than the
// one its claim replaces (the owner entry names node 3, written by a
// claim of node 3 that failed after the previous owner had handed the
// session over: a node that has just thawed). The copy knows nothing of
// what the session became meanwhile; node 3 adopts the stored session
// instead. Here the stored session has a subscription the copy lacks: a
// message for it reaches the client. Before, node 3 served its copy:
// `frozen-paho-sub` given n3's copy from before a freeze, after n1 had
// held the session and handed it over; the QoS 2 messages n1 had stored
// for it were dropped as copies and never sent.
func TestClaimReplacesStaleCopy(t *testing.T) {
	nodes := testCluster(t)
	nodes[2].leaveOffline(t, "sc", "sc/t")
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	nodes[2].b.Settle(ctx)
	st, err := nodes[2].st.loadSession(ctx, "sc", 0)
	if err != nil || st == nil {
		t.Fatalf("reading sc's session: %v, %v", st, err)
	}
	// What another node that held the session meanwhile stored (a
	// subscription more) ...
	rec := st.rec
	rec.Subs = append(rec.Subs, store.Subscription{Filter: "sc/extra", QoS: 1})
	tx := nodes[0].st.NewTxn()
	tx.PutSession(rec)
	written := make(chan error, 1)
	nodes[0].st.Commit(tx, func(err error) { written <- err })
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	// ... and node 3's claim of it that failed after that node had
	// handed it over: the owner entry names node 3 again, under a newer
	// revision than its copy's claim.
	kv := nodes[0].owner.kv
	e, err := kv.Get(ctx, clientKey("sc"))
	if err != nil || string(e.Value()) != "node3" {
		t.Fatalf("owner entry: %v, %v; want node3", e, err)
	}
	if _, err := kv.Update(ctx, clientKey("sc"), []byte("node3"), e.Revision()); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].st.syncIndex(ctx); err != nil { // node 1's index has the stored subscriptions
		t.Fatal(err)
	}

	c, ack := dialWith(t, nodes[2].addr, persistent("sc", false), false)
	if !ack.SessionPresent {
		t.Fatal("node 3 did not resume the session")
	}
	pub := dial(t, nodes[0].addr, persistent("sc-pub", true))
	pub.publish(t, "sc/extra", "stored subscription", false)
	if got := c.next(t); string(got.Payload) != "stored subscription" {
		t.Fatalf("got %q, want the message of the stored subscription", got.Payload)
	}
}

// TestClaimsOfOneClientTakeTurns: two CONNECTs of one client reach node 3
// together (a node that thaws reads the retries its client queued in its
// sockets). The later claim waits until the earlier one, which takes the
// session from node 1, has adopted it, and then finds it here, held under
// the claim it replaces: it does not read the session's records while
// node 1 may still change them. Before, it read them as soon as it had
// replaced the earlier claim's entry, and node 1 handed the session over
// to the earlier claim after that read: QoS 2 messages delivered twice in
// the SIGSTOP fault test (`frozen-sub-n3 got QoS 2
// frozen-pub-q2-n1:1155 2 times`).
func TestClaimsOfOneClientTakeTurns(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var released atomic.Bool
	letGo := func() {
		if released.CompareAndSwap(false, true) {
			close(release)
		}
	}
	later := make(chan struct{}, 8)
	var calls atomic.Int32
	var owner *Ownership
	cns := clustertest.StartNodes(t, 3)
	nodes := []*node{startNode(t, cns[0]), startNode(t, cns[1]), startNodeOwned(t, cns[2], nil, func(o *Ownership) broker.Ownership {
		owner = o
		o.beforeLoad = func(string) {
			if calls.Add(1) == 1 {
				close(entered)
				<-release
				return
			}
			later <- struct{}{}
		}
		return o
	})}
	t.Cleanup(letGo) // before the nodes stop, should the test end early
	nodes[0].leaveOffline(t, "tw", "tw/t")
	pub := dial(t, nodes[0].addr, persistent("tw-pub", true))
	pub.publish(t, "tw/t", "queued", false)

	type result struct {
		c   *mqttClient
		ack *paho.Connack
		err error
	}
	connect := func() chan result {
		ch := make(chan result, 1)
		go func() {
			c, ack, err := tryDial(t, nodes[2].addr, persistent("tw", false), true)
			ch <- result{c, ack, err}
		}()
		return ch
	}
	a := connect()
	select {
	case <-entered:
	case <-time.After(testwait.Timeout):
		t.Fatal("node 3's first claim never read the session")
	}
	b := connect()
	testwait.For(t, "node 3's second claim to wait, or to read the session", func() bool {
		return owner.claimWaits.Load() > 0 || len(later) > 0
	})
	if len(later) > 0 {
		t.Fatal("node 3's second claim read the session while the first was taking it from node 1")
	}
	letGo()
	got := func(ch chan result, which string) result {
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("%s connection: %v", which, r.err)
			}
			if !r.ack.SessionPresent {
				t.Fatalf("%s connection: no session present", which)
			}
			return r
		case <-time.After(testwait.Timeout):
			t.Fatalf("%s connection: no CONNACK", which)
		}
		return result{}
	}
	got(a, "first")
	rb := got(b, "second")
	if m := rb.c.next(t); string(m.Payload) != "queued" {
		t.Fatalf("the second connection got %q, want the queued message", m.Payload)
	}
}

// TestConnectOfGoneClientNotClaimed: a CONNECT whose client closed its
// connection before the node got to it claims nothing. A node that thaws
// after a freeze reads, from its sockets, the CONNECTs of the attempts a
// client made on it during the freeze and gave up on; their claims took
// the client's session from the connection it had made meanwhile on
// another node (0x8E, with the acknowledgements of its PUBLISHes still
// pending lost: refusals it never saw, of messages it then resent and had
// acknowledged elsewhere, reaching the subscribers first out of order).
// Here the client holds its session on node 2, and a CONNECT of it is
// written to node 1 with the connection closed at once: node 1 refuses it
// without a claim, and the client keeps its connection and its messages.
func TestConnectOfGoneClientNotClaimed(t *testing.T) {
	nodes := testCluster(t)
	live := dial(t, nodes[1].addr, persistent("gone", true))
	live.subscribe(t, "gone/t")

	refused := nodes[0].b.Counters().Refused
	conn, err := net.Dial("tcp", nodes[0].addr)
	if err != nil {
		t.Fatal(err)
	}
	cp := packet.Connect{ProtocolName: "MQTT", Version: packet.V5, KeepAlive: 30, ClientID: "gone"}
	cp.Properties.SessionExpiry = 3600
	cp.Properties.Set(packet.PropSessionExpiry)
	if _, err := conn.Write(cp.Append(nil, packet.V5)); err != nil {
		t.Fatal(err)
	}
	conn.Close() // on loopback, the FIN is behind the CONNECT in node 1's socket now
	testwait.For(t, "node 1 to refuse the CONNECT, or to take the session", func() bool {
		return nodes[0].b.Counters().Refused > refused || len(live.discs) > 0
	})
	select {
	case d := <-live.discs:
		t.Fatalf("the live connection was told DISCONNECT %#x: a closed connection's CONNECT took its session", d.ReasonCode)
	default:
	}

	pub := dial(t, nodes[2].addr, persistent("gone-pub", true))
	pub.publish(t, "gone/t", "still here", false)
	if got := live.next(t); string(got.Payload) != "still here" {
		t.Fatalf("the live connection got %q, want the message published after", got.Payload)
	}
	if held, ok := nodes[1].b.HeldUnder("gone"); !ok || held == 0 {
		t.Fatalf("node 2 no longer holds the session (claim %d, %v)", held, ok)
	}
}
