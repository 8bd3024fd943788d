package jsstate

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/topic"
	"github.com/edgeport/edgeport/internal/store"
	"github.com/edgeport/edgeport/internal/testwait"
)

type memberOf = topic.Member[string, indexSub]

// sharedGot reads messages from the members until n have arrived in all,
// and returns who got which payload; it fails on a payload received twice
// (by one member or two).
func sharedGot(t testing.TB, n int, members map[string]*mqttClient) map[string]string {
	t.Helper()
	return sharedGotWithin(t, testwait.Timeout, n, members)
}

// sharedGotWithin is sharedGot waiting up to d (a node's loss is detected
// in seconds, and JetStream elects new leaders for what it led).
func sharedGotWithin(t testing.TB, d time.Duration, n int, members map[string]*mqttClient) map[string]string {
	t.Helper()
	got := make(map[string]string, n)
	deadline := time.After(d)
	for len(got) < n {
		progressed := false
		for name, c := range members {
			select {
			case m := <-c.msgs:
				if prev, dup := got[string(m.Payload)]; dup {
					t.Fatalf("%s got %q, which %s had already", name, m.Payload, prev)
				}
				got[string(m.Payload)] = name
				progressed = true
			default:
			}
		}
		if progressed {
			continue
		}
		select {
		case <-deadline:
			t.Fatalf("the group got %d of %d messages", len(got), n)
		case <-time.After(5 * time.Millisecond):
			// Polled again: the members' channels are read in turn.
		}
	}
	return got
}

// noMore fails if a member has a message left once everything was routed.
func noMore(t testing.TB, members map[string]*mqttClient) {
	t.Helper()
	for name, c := range members {
		if len(c.msgs) > 0 {
			m := <-c.msgs
			t.Fatalf("%s got %q more", name, m.Payload)
		}
	}
}

// sharedDropped is how many messages the nodes' shared queue groups
// dropped because the publisher gave the group its delivery itself.
func sharedDropped(nodes ...*node) uint64 {
	var n uint64
	for _, nd := range nodes {
		n += nd.r.Stats().SharedDurable
	}
	return n
}

// A shared subscription group with persistent members on two nodes gets
// each QoS 1 and QoS 2 message published on a third exactly once: the
// publishing node picks the member and writes the delivery into its
// session stream before the PUBACK; the live queue group, which brings
// every message to one of the members' nodes too, drops them all.
func TestSharedPersistentAcrossNodes(t *testing.T) {
	nodes, w1, w2, pub := membersOnNodes23(t, 2, false)
	const n = 60
	publishN(t, pub, "jobs/a", "q1-", n, 1)
	publishN(t, pub, "jobs/b", "q2-", n, 2)
	members := map[string]*mqttClient{"w1": w1, "w2": w2}
	got := sharedGot(t, 2*n, members)
	nodes[0].sync(t)
	testwait.For(t, "the queue groups' copies dropped", func() bool { return sharedDropped(nodes...) == 2*n })
	noMore(t, members)
	per := map[string]int{}
	for _, who := range got {
		per[who]++
	}
	if per["w1"] == 0 || per["w2"] == 0 {
		t.Fatalf("one member got everything (%v): both are online", per)
	}
	t.Logf("%d messages, each once across the group: %v; %d live copies dropped", 2*n, per, sharedDropped(nodes...))
}

// The node of a member dies after the publisher's PUBACKs and before the
// member read its messages (its node's followers are stopped, so what was
// routed to it waits in its session stream), and the member reconnects to
// another node with its session at once: none is lost or given twice.
// Who gets them depends on a race: the member, when its claim comes
// before a survivor adopts its session; the other member, online, when
// the adoption comes first (as one node moves a leaving member's
// messages, TestSharedLostMemberMovedToOnline).
func TestSharedMemberNodeKilled(t *testing.T) {
	const n = 60
	nodes, w2 := killedBeforeRead(t, n)

	back, ack := redial(t, nodes[2].addr, persistent("w1", false))
	if !ack.SessionPresent {
		t.Fatal("CONNACK on node3: w1's session not present")
	}
	members := map[string]*mqttClient{"w1": back, "w2": w2}
	got := sharedGot(t, n, members)
	per := map[string]int{}
	for _, who := range got {
		per[who]++
	}
	nodes[0].sync(t)
	nodes[2].sync(t)
	noMore(t, members)
	t.Logf("%d QoS 1 messages acknowledged on node1; node2 killed before w1 read any; after w1 resumed on node3, each once: %v", n, per)
}

// Online members first: while a member's session is offline the group's
// messages go to the online one, as on one node; with every member
// offline they are kept for one of them, whose client gets them when it
// comes back on any node.
func TestSharedOfflineMembers(t *testing.T) {
	nodes := testCluster(t)
	nodes[1].leaveOffline(t, "w1", "$share/workers/jobs/#")
	w2 := dial(t, nodes[2].addr, persistent("w2", true))
	w2.subscribe(t, "$share/workers/jobs/#")
	nodes[2].sync(t)
	syncIndex(t, nodes[0])

	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	const n = 20
	publishN(t, pub, "jobs/a", "on", n, 1)
	got := sharedGot(t, n, map[string]*mqttClient{"w2": w2})
	if len(got) != n {
		t.Fatalf("w2 got %d of %d", len(got), n)
	}

	if err := w2.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "w2 offline in node1's index", func() bool {
		var online bool
		nodes[0].st.index.trie.Match("jobs/a", nil, func(group, filter string, members []memberOf) {
			for _, mb := range members {
				online = online || mb.Value.online
			}
		})
		return !online
	})
	publishN(t, pub, "jobs/a", "off", n, 1)
	w1 := dial(t, nodes[0].addr, persistent("w1", false))
	back := dial(t, nodes[1].addr, persistent("w2", false))
	members := map[string]*mqttClient{"w1": w1, "w2": back}
	got = sharedGot(t, n, members)
	nodes[0].sync(t)
	noMore(t, members)
	t.Logf("%d to the online member while the other was offline; %d kept for the offline members, w1 %d, w2 %d", n, n, countOf(got, "w1"), countOf(got, "w2"))
}

// Members all on the publisher's node are given the message there, as on
// one node: each message once, none written as a routed delivery.
func TestSharedMembersOnPublisherNode(t *testing.T) {
	nodes := testCluster(t)
	w1 := dial(t, nodes[0].addr, persistent("w1", true))
	w1.subscribe(t, "$share/workers/jobs/#")
	w2 := dial(t, nodes[0].addr, persistent("w2", true))
	w2.subscribe(t, "$share/workers/jobs/#")
	nodes[0].sync(t)
	syncIndex(t, nodes...)

	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	const n = 40
	before := nodes[0].r.Stats().SharedDurable
	publishN(t, pub, "jobs/a", "m", n, 1)
	members := map[string]*mqttClient{"w1": w1, "w2": w2}
	got := sharedGot(t, n, members)
	nodes[0].sync(t)
	testwait.For(t, "node1's own queue group copies dropped", func() bool { return nodes[0].r.Stats().SharedDurable-before == n })
	noMore(t, members)
	if routed := nodes[0].st.routedWrites.Load(); routed != 0 {
		t.Fatalf("%d routed deliveries written for members of the publisher's node", routed)
	}
	t.Logf("%d messages, each once, to members of the publisher's node: %d to w1", n, countOf(got, "w1"))
}

func countOf(got map[string]string, who string) int {
	n := 0
	for _, w := range got {
		if w == who {
			n++
		}
	}
	return n
}

// membersOnNodes23 starts a cluster with persistent members of
// $share/workers/jobs/# at qos on node2 (w1, acknowledging nothing when
// w1Holds) and node3 (w2), which node1's index has read, and a publisher
// on node1.
func membersOnNodes23(t *testing.T, qos byte, w1Holds bool) (nodes []*node, w1, w2, pub *mqttClient) {
	t.Helper()
	nodes = testCluster(t)
	w1, _ = dialWith(t, nodes[1].addr, persistent("w1", true), w1Holds)
	w1.subscribeQoS(t, "$share/workers/jobs/#", qos)
	w2 = dial(t, nodes[2].addr, persistent("w2", true))
	w2.subscribeQoS(t, "$share/workers/jobs/#", qos)
	nodes[1].sync(t)
	nodes[2].sync(t)
	syncIndex(t, nodes[0])
	return nodes, w1, w2, dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
}

// killedBeforeRead publishes m0..m<n-1> on jobs/a to the members of
// membersOnNodes23 with node2's followers stopped (node2 reads none of
// w1's routed deliveries), then kills node2 before w1 read any.
func killedBeforeRead(t *testing.T, n int) ([]*node, *mqttClient) {
	t.Helper()
	nodes, w1, w2, pub := membersOnNodes23(t, 1, false)
	nodes[1].st.stopFollowers()
	publishN(t, pub, "jobs/a", "m", n, 1)
	nodes[0].sync(t)
	if len(w1.msgs) > 0 {
		t.Fatalf("w1 read %q before its node was killed", (<-w1.msgs).Payload)
	}
	nodes[1].kill(t)
	return nodes, w2
}

// A member's node dies before the member read what the group gave it, and
// its client does not come back: the survivor that adopts the session
// (offline: its connection ended with its node) gives those messages to
// the online member, as one node does when a member's connection ends;
// the client, when it comes back, has none of them again.
func TestSharedLostMemberMovedToOnline(t *testing.T) {
	const n = 40
	nodes, w2 := killedBeforeRead(t, n)
	got := sharedGotWithin(t, 60*time.Second, n, map[string]*mqttClient{"w2": w2})
	back, ack := redial(t, nodes[0].addr, persistent("w1", false))
	if !ack.SessionPresent {
		t.Fatal("w1's session not present after the adoption")
	}
	nodes[0].sync(t)
	nodes[2].sync(t)
	noMore(t, map[string]*mqttClient{"w1": back, "w2": w2})
	t.Logf("all %d acknowledged messages reached w2 after w1's node was killed and its session adopted: %d", n, len(got))
}

// A member that leaves with messages it has not acknowledged (received,
// not acknowledged, then its connection closes) has them given to the
// online member of another node, as one node gives them to another
// online member: the group gets each message, and the member, back with
// its session, is not sent them again.
func TestSharedLeavingMemberMovedToOtherNode(t *testing.T) {
	nodes, w1, w2, pub := membersOnNodes23(t, 1, true) // w1 acknowledges nothing
	const n = 40
	publishN(t, pub, "jobs/a", "m", n, 1)
	first := sharedGot(t, n, map[string]*mqttClient{"w1": w1, "w2": w2})
	held := countOf(first, "w1")
	if held == 0 {
		t.Fatal("w1 got nothing to leave unacknowledged")
	}
	w1.conn.Close() // gone without acknowledging
	testwait.For(t, "w1's unacknowledged messages at w2", func() bool { return len(w2.msgs) >= held })
	moved := sharedGot(t, held, map[string]*mqttClient{"w2": w2})
	for payload := range moved {
		if first[payload] != "w1" {
			t.Fatalf("w2 got %q again, which %s had", payload, first[payload])
		}
	}
	back, ack := dialWith(t, nodes[1].addr, persistent("w1", false), false)
	if !ack.SessionPresent {
		t.Fatal("w1's session not present")
	}
	nodes[0].sync(t)
	nodes[1].sync(t)
	noMore(t, map[string]*mqttClient{"w1": back, "w2": w2})
	t.Logf("%d messages w1 left unacknowledged went to w2 on another node", held)
}

// A routed delivery for the member a shared group chose names the groups
// before the message record; a plain one is the message record alone.
func TestSharedRoutedRecordRoundTrip(t *testing.T) {
	groups := []broker.SharedPick{{ClientID: "w1", SharedGroup: broker.SharedGroup{Group: "workers", Filter: "jobs/#"}, QoS: 1},
		{ClientID: "w1", SharedGroup: broker.SharedGroup{Group: "g2", Filter: "jobs/+"}, QoS: 2}}
	msg := store.AppendMessage(nil, &store.Message{Topic: "jobs/1", Payload: []byte("x"), QoS: 2})
	data := append(appendSharedRouted(nil, groups), msg...)
	got, rest, err := decodeRouted("w1", data)
	if err != nil || !slices.Equal(got, groups) || !bytes.Equal(rest, msg) {
		t.Fatalf("decoded %v, rest %x, %v; want %v, %x", got, rest, err, groups, msg)
	}
	if got, rest, err := decodeRouted("w1", msg); err != nil || got != nil || !bytes.Equal(rest, msg) {
		t.Fatalf("a plain record decoded as %v, %x, %v", got, rest, err)
	}
	for _, bad := range [][]byte{{routedShared}, {routedShared, 0}, {routedShared, 1, 3, 1, 'g', 0}, data[:8]} {
		if _, _, err := decodeRouted("w1", bad); err == nil {
			t.Errorf("%x decoded", bad)
		}
	}
}

func FuzzDecodeRouted(f *testing.F) {
	msg := store.AppendMessage(nil, &store.Message{Topic: "a", QoS: 1})
	f.Add(msg)
	f.Add(append(appendSharedRouted(nil, []broker.SharedPick{{SharedGroup: broker.SharedGroup{Group: "g", Filter: "a/#"}, QoS: 1}}), msg...))
	f.Fuzz(func(t *testing.T, b []byte) {
		groups, rest, err := decodeRouted("c", b)
		if err != nil {
			return
		}
		if len(groups) > 0 {
			// What decodes encodes to a record that decodes the same.
			again := append(appendSharedRouted(nil, groups), rest...)
			groups2, rest2, err := decodeRouted("c", again)
			if err != nil || !slices.Equal(groups2, groups) || !bytes.Equal(rest2, rest) {
				t.Fatalf("%x decoded to %v and %x; encoded again, to %v and %x (%v)", b, groups, rest, groups2, rest2, err)
			}
		}
	})
}
