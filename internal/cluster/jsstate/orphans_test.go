package jsstate

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/cluster/clustertest"
	"github.com/edgeport/edgeport/internal/testwait"
)

func TestRank(t *testing.T) {
	live := []string{"node1", "node2", "node3"}
	for _, id := range []string{"a", "b", "dev/1", "sensor-42"} {
		seen := make(map[int]string)
		for _, n := range live {
			r := rank(id, n, live)
			if other, dup := seen[r]; dup || r < 0 || r >= len(live) {
				t.Fatalf("client %q: %s has rank %d (also %q)", id, n, r, other)
			}
			seen[r] = n
		}
	}
	// Spread: over many clients, each node is first for some.
	first := make(map[string]int)
	for i := range 300 {
		id := fmt.Sprintf("client-%d", i)
		for _, n := range live {
			if rank(id, n, live) == 0 {
				first[n]++
			}
		}
	}
	for _, n := range live {
		if first[n] < 50 {
			t.Errorf("%s first for %d of 300 clients: %v", n, first[n], first)
		}
	}
}

// ownerOf reads the node named by clientID's owner entry ("" when none),
// through nd.
func (nd *node) ownerOf(t testing.TB, clientID string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	e, err := nd.owner.kv.Get(ctx, clientKey(clientID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ""
	}
	if err != nil {
		return "?" + err.Error()
	}
	return string(e.Value())
}

// withWill is the CONNECT (clean start) of clientID with a session expiry
// and a will on wills/<clientID> delayed by delay seconds.
func withWill(clientID string, expiry, delay uint32, payload string) *paho.Connect {
	return &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30,
		Properties:     &paho.ConnectProperties{SessionExpiryInterval: &expiry},
		WillMessage:    &paho.WillMessage{Topic: "wills/" + clientID, Payload: []byte(payload), QoS: 1},
		WillProperties: &paho.WillProperties{WillDelayInterval: &delay}}
}

// watchWills subscribes a client of nd to wills/# and returns once every
// node routes them to it.
func (nd *node) watchWills(t testing.TB) *mqttClient {
	t.Helper()
	w := dial(t, nd.addr, &paho.Connect{ClientID: "watcher", CleanStart: true})
	w.subscribe(t, "wills/#")
	nd.sync(t)
	return w
}

// willsPublished sums the wills the nodes' brokers published.
func willsPublished(nodes ...*node) uint64 {
	var n uint64
	for _, nd := range nodes {
		n += nd.b.Counters().WillsPublished
	}
	return n
}

// markers publishes a marker through each node and waits until c has
// received them all, returning what c received before and with them: a
// sender's messages reach a node in order, so whatever each node had
// published to c before is among them.
func markers(t testing.TB, c *mqttClient, topic string, nodes ...*node) []*paho.Publish {
	t.Helper()
	var got []*paho.Publish
	for _, nd := range nodes {
		p := dial(t, nd.addr, &paho.Connect{ClientID: "marker-" + nd.name, CleanStart: true})
		p.publish(t, topic, "marker "+nd.name, false)
	}
	for n := 0; n < len(nodes); {
		m := c.next(t)
		got = append(got, m)
		if m.Topic == topic {
			n++
		}
	}
	return got
}

// The will of a client connected to a node that dies is published by the
// node that adopts its session, once in the whole cluster.
func TestWillOfLostNodeOnce(t *testing.T) {
	nodes := testCluster(t)
	watcher := nodes[1].watchWills(t)
	dial(t, nodes[0].addr, withWill("dev", 0, 0, "dev is gone"))
	if got := nodes[1].ownerOf(t, "dev"); got != "node1" {
		t.Fatalf("owner of dev: %q, want node1", got)
	}

	nodes[0].kill(t)
	if m := watcher.next(t); m.Topic != "wills/dev" || string(m.Payload) != "dev is gone" {
		t.Fatalf("watcher got %s %q, want the will", m.Topic, m.Payload)
	}
	// The session ended on its adopter, which released its entry: no node
	// can claim it any more.
	testwait.For(t, "dev's owner entry released", func() bool { return nodes[1].ownerOf(t, "dev") == "" })
	if n := willsPublished(nodes[1:]...); n != 1 {
		t.Fatalf("survivors published %d wills, want 1", n)
	}
	if a := nodes[1].owner.Adopted() + nodes[2].owner.Adopted(); a != 1 {
		t.Fatalf("survivors adopted %d sessions, want 1", a)
	}
	for _, m := range markers(t, watcher, "wills/marker", nodes[1:]...) {
		if m.Topic == "wills/dev" {
			t.Fatal("the will arrived twice")
		}
	}
}

// A persistent session left offline on a node that dies is adopted by a
// survivor: its subscription routes there, messages published meanwhile
// are queued, and its client, reconnecting to the third node, gets them.
func TestOfflineSessionOfLostNode(t *testing.T) {
	nodes := testCluster(t)
	nodes[0].leaveOffline(t, "dev", "cmd/#")

	nodes[0].kill(t)
	var adopter *node
	testwait.For(t, "dev's session adopted by a survivor", func() bool {
		for _, nd := range nodes[1:] {
			if info, ok := nd.b.Session("dev"); ok && !info.Online && len(info.Subscriptions) == 1 {
				adopter = nd
				return true
			}
		}
		return false
	})
	if got := nodes[1].ownerOf(t, "dev"); got != adopter.name {
		t.Fatalf("owner of dev: %q, want its adopter %s", got, adopter.name)
	}
	adopter.sync(t) // the other survivor routes cmd/# to the adopter
	pub := dial(t, nodes[1].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	for i := range 3 {
		pub.publish(t, "cmd/x", fmt.Sprintf("m%d", i), false)
	}
	nodes[1].sync(t)

	back, ack := dialWith(t, nodes[2].addr, persistent("dev", false), false)
	if !ack.SessionPresent {
		t.Fatal("CONNACK on node3: session not present")
	}
	for i := range 3 {
		if m := back.next(t); string(m.Payload) != fmt.Sprintf("m%d", i) || m.Topic != "cmd/x" {
			t.Fatalf("message %d on node3: %s %q", i, m.Topic, m.Payload)
		}
	}
	if got := nodes[1].ownerOf(t, "dev"); got != "node3" {
		t.Fatalf("owner of dev after reconnecting: %q, want node3", got)
	}
}

// The expiry of an offline session of a lost node runs on its adopter:
// the session ends there (its will, delayed past the expiry, goes out
// then), its records and owner entry are deleted, and its client finds
// no session.
func TestExpiryOfLostNodeSession(t *testing.T) {
	nodes := testCluster(t)
	watcher := nodes[1].watchWills(t)
	dev := dial(t, nodes[0].addr, withWill("dev", 3, 3600, "expired"))
	dev.subscribe(t, "cmd/#")
	// Without DISCONNECT: the will stays pending with the session.
	dev.conn.Close()
	testwait.For(t, "dev offline on node1 with its will", func() bool {
		info, ok := nodes[0].b.Session("dev")
		return ok && !info.Online && info.HasWill
	})

	nodes[0].kill(t)
	if m := watcher.next(t); m.Topic != "wills/dev" || string(m.Payload) != "expired" {
		t.Fatalf("watcher got %s %q, want the will", m.Topic, m.Payload)
	}
	testwait.For(t, "dev's owner entry released", func() bool { return nodes[1].ownerOf(t, "dev") == "" })
	for _, nd := range nodes[1:] {
		if _, ok := nd.b.Session("dev"); ok {
			t.Fatalf("%s still holds the expired session", nd.name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	if st, err := nodes[2].st.loadSession(ctx, "dev", 0); err != nil || st != nil {
		t.Fatalf("records of the expired session: %+v, %v", st, err)
	}
	_, ack := dialWith(t, nodes[2].addr, persistent("dev", false), false)
	if ack.SessionPresent {
		t.Fatal("CONNACK: session present after it expired")
	}
	if n := willsPublished(nodes[1:]...); n != 1 {
		t.Fatalf("survivors published %d wills, want 1", n)
	}
}

// A client whose node died comes back within its will delay: the session
// adopted meanwhile resumes, and its will is never published.
func TestWillDelayCancelledByReconnect(t *testing.T) {
	nodes := testCluster(t)
	dial(t, nodes[0].addr, withWill("dev", 3600, 3600, "gone"))

	nodes[0].kill(t)
	testwait.For(t, "dev's session adopted with its pending will", func() bool {
		for _, nd := range nodes[1:] {
			if info, ok := nd.b.Session("dev"); ok && !info.Online && info.HasWill {
				return true
			}
		}
		return false
	})
	_, ack := dialWith(t, nodes[2].addr, persistent("dev", false), false)
	if !ack.SessionPresent {
		t.Fatal("CONNACK on node3: session not present")
	}
	info, ok := nodes[2].b.Session("dev")
	if !ok || !info.Online || info.HasWill {
		t.Fatalf("dev on node3: %+v, %v; want online without the old will", info, ok)
	}
	if _, ok := nodes[1].b.Session("dev"); ok {
		t.Fatal("node2 still holds dev's session")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	st, err := nodes[2].st.loadSession(ctx, "dev", 0)
	if err != nil || st == nil || st.rec.Will != nil || st.rec.DisconnectedAt != 0 {
		t.Fatalf("dev's record after reconnecting: %+v, %v; want connected, no will", st, err)
	}
	if n := willsPublished(nodes[1:]...); n != 0 {
		t.Fatalf("survivors published %d wills, want none", n)
	}
}

// A node killed and started again restores only what the owners bucket
// still gives it: the sessions the survivors adopted stay with them, and
// the will they published is not published again.
func TestRestartedNodeRestoresOnlyItsOwn(t *testing.T) {
	nodes := testCluster(t)
	watcher := nodes[1].watchWills(t)
	nodes[0].leaveOffline(t, "dev", "cmd/#")
	dial(t, nodes[0].addr, withWill("live", 0, 0, "gone"))

	nodes[0].kill(t)
	if m := watcher.next(t); m.Topic != "wills/live" {
		t.Fatalf("watcher got %s %q, want the will", m.Topic, m.Payload)
	}
	testwait.For(t, "dev adopted by a survivor", func() bool {
		o := nodes[1].ownerOf(t, "dev")
		return o == "node2" || o == "node3"
	})
	adopter := nodes[1].ownerOf(t, "dev")

	cn, err := cluster.New(nodes[0].cn.Config(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cn.Start(ctx); err != nil {
		t.Fatalf("restarting node1: %v", err)
	}
	t.Cleanup(func() { _ = cn.Stop(context.Background()) })
	clustertest.WaitFormed(t, cn, nodes[1].cn, nodes[2].cn)
	again := startNode(t, cn) // returns once its sessions are restored

	for _, id := range []string{"dev", "live"} {
		if _, ok := again.b.Session(id); ok {
			t.Errorf("restarted node1 resurrected %s's session", id)
		}
	}
	if got := again.ownerOf(t, "dev"); got != adopter {
		t.Fatalf("owner of dev after node1's restart: %q, want %s", got, adopter)
	}
	if n := willsPublished(again, nodes[1], nodes[2]); n != 1 {
		t.Fatalf("%d wills published, want 1", n)
	}
	for _, m := range markers(t, watcher, "wills/marker", again, nodes[1], nodes[2]) {
		if m.Topic == "wills/live" {
			t.Fatal("the will arrived twice")
		}
	}
	// dev's session, on its adopter, still works from any node.
	back, ack := dialWith(t, again.addr, persistent("dev", false), false)
	if !ack.SessionPresent {
		t.Fatal("CONNACK on the restarted node1: session not present")
	}
	again.sync(t)
	nodes[2].sync(t)
	pub := dial(t, nodes[2].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	pub.publish(t, "cmd/x", "after", false)
	if m := back.next(t); m.Topic != "cmd/x" || string(m.Payload) != "after" {
		t.Fatalf("dev got %s %q", m.Topic, m.Payload)
	}
}

// A session whose first survivor in rendezvous order does not adopt it
// (here its ownership stopped, while the node stays a live member) is
// adopted by the next one, three heartbeat intervals later.
func TestAdoptionFallsBack(t *testing.T) {
	nodes := testCluster(t)
	live := []string{"node2", "node3"}
	id := ""
	for i := 0; id == ""; i++ {
		if c := fmt.Sprintf("dev%d", i); rank(c, "node2", live) == 0 {
			id = c
		}
	}
	nodes[0].leaveOffline(t, id, "cmd/#")
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	if err := nodes[1].owner.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	nodes[0].kill(t)
	testwait.For(t, id+" adopted by node3", func() bool {
		info, ok := nodes[2].b.Session(id)
		return ok && !info.Online && len(info.Subscriptions) == 1
	})
	if got := nodes[2].ownerOf(t, id); got != "node3" {
		t.Fatalf("owner of %s: %q, want node3", id, got)
	}
	if _, ok := nodes[1].b.Session(id); ok {
		t.Fatal("node2 adopted it too")
	}
}

// noAdoption leaves a lost node's sessions to their clients' claims: the
// tests of that path do not race the survivors' adoption.
func noAdoption(o *Options) { o.noAdoption = true }

// A client whose node dies under it reconnects to another node at once
// (before the survivors have noticed): the dead node answers no handoff,
// the new node reads what it had stored, and the unacknowledged QoS 1 and
// QoS 2 deliveries are resent with DUP and their packet identifiers.
func TestResumeAfterKill(t *testing.T) {
	nodes := testClusterWith(t, noAdoption)
	old, _ := dialWith(t, nodes[0].addr, persistent("dev", true), true)
	old.subscribeQoS(t, "cmd/1", 1)
	old.subscribeQoS(t, "cmd/2", 2)
	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	pub.publishQoS(t, "cmd/1", "one", 1, false) // acknowledged: stored for dev
	pub.publishQoS(t, "cmd/2", "two", 2, false)
	first := []*paho.Publish{old.next(t), old.next(t)} // neither acknowledged

	nodes[0].kill(t)
	now, ack := redial(t, nodes[1].addr, persistent("dev", false))
	if !ack.SessionPresent {
		t.Fatal("CONNACK on node2: session not present")
	}
	for _, was := range first {
		m := now.next(t)
		if m.Topic != was.Topic || string(m.Payload) != string(was.Payload) || m.PacketID != was.PacketID || !m.Duplicate() {
			t.Fatalf("resent %s %q id %d dup %v; first sent %s %q id %d",
				m.Topic, m.Payload, m.PacketID, m.Duplicate(), was.Topic, was.Payload, was.PacketID)
		}
	}
	if got := nodes[1].ownerOf(t, "dev"); got != "node2" {
		t.Fatalf("owner of dev: %q, want node2", got)
	}
}

// A clean-session client with a will, whose node dies, reconnects to
// another node at once: the new node ends the old session, publishes its
// will once, and keeps the client's claim.
func TestReconnectAfterKillPublishesTheOldWill(t *testing.T) {
	nodes := testClusterWith(t, noAdoption)
	watcher := nodes[1].watchWills(t)
	dial(t, nodes[0].addr, withWill("dev", 0, 0, "old connection"))

	nodes[0].kill(t)
	c, _ := redial(t, nodes[2].addr, &paho.Connect{ClientID: "dev", CleanStart: true, KeepAlive: 30})
	if m := watcher.next(t); m.Topic != "wills/dev" || string(m.Payload) != "old connection" {
		t.Fatalf("watcher got %s %q, want the old will", m.Topic, m.Payload)
	}
	if got := nodes[1].ownerOf(t, "dev"); got != "node3" {
		t.Fatalf("owner of dev: %q, want node3", got)
	}
	for _, m := range markers(t, watcher, "wills/marker", nodes[1:]...) {
		if m.Topic == "wills/dev" {
			t.Fatal("the will arrived twice")
		}
	}
	if n := willsPublished(nodes[1:]...); n != 1 {
		t.Fatalf("survivors published %d wills, want 1", n)
	}
	c.subscribe(t, "still/here") // the new connection is served
	if got := nodes[1].ownerOf(t, "dev"); got != "node3" {
		t.Fatalf("owner of dev: %q, want node3", got)
	}
}
