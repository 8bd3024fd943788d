package jsstate

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// stall pauses the consumer of r, a reader of stream, for an hour:
// JetStream goes on sending its heartbeats and delivers nothing, as it
// does from a consumer on a replica that catches up out of band (see
// streamReader). It returns the consumer's name.
func stall(t *testing.T, nd *node, r *streamReader, stream string) string {
	t.Helper()
	r.mu.Lock()
	consumer := r.consumer
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	if _, err := nd.st.js.PauseConsumer(ctx, stream, consumer, time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("pausing %s's consumer %s: %v", r.what, consumer, err)
	}
	return consumer
}

// stallWatch is stall for a bucket's watch.
func stallWatch(t *testing.T, nd *node, w *bucketWatch) string {
	t.Helper()
	return stall(t, nd, w.streamReader, "KV_"+w.bucket)
}

// A SUBSCRIBE on a node whose retained watch is stalled (alive, reading
// nothing) still gets the retained message another node had acknowledged
// before: Sync finds the watch behind the bucket's last revision, and a
// watch that reads nothing for watchStall gets a new consumer. With
// nats.go's watch the SUBSCRIBE got nothing (the isolation fault test's
// "n3 retains seq -1 on crash/ret/0 after the heal").
func TestRetainedAfterWatchStalled(t *testing.T) {
	nodes := testCluster(t)
	w := nodes[2].st.rwatch
	old := stallWatch(t, nodes[2], w)

	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	pub.publish(t, "plant/line1/temp", "20", true)
	sub := dial(t, nodes[2].addr, &paho.Connect{ClientID: "sub", CleanStart: true})
	sub.subscribe(t, "plant/#")
	if m := sub.next(t); m.Topic != "plant/line1/temp" || string(m.Payload) != "20" || !m.Retain {
		t.Fatalf("retained on node 3: %s %q retain=%v", m.Topic, m.Payload, m.Retain)
	}
	w.mu.Lock()
	restarts, consumer := w.restarts, w.consumer
	w.mu.Unlock()
	if restarts == 0 || consumer == old {
		t.Errorf("the watch read on from its paused consumer %s (restarts %d, now %s)", old, restarts, consumer)
	}
}

// A bucket watch that stalls while nobody asks it anything notices by
// itself: idle, it asks the stream's leader for the bucket's last
// revision, and gets a new consumer when it stays behind (the owners and
// state store buckets' watches work so, with no Sync to prompt them).
func TestBucketWatchStalledCatchesUp(t *testing.T) {
	nodes := testCluster(t)
	w := nodes[2].st.rwatch
	stallWatch(t, nodes[2], w)

	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	for _, v := range []string{"1", "2", "3"} {
		pub.publish(t, "stall/"+v, v, true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	st, err := nodes[0].st.retained.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq
	testwait.For(t, "node 3 to apply the retained bucket's last revision", func() bool {
		nodes[2].st.mu.Lock()
		defer nodes[2].st.mu.Unlock()
		return nodes[2].st.applied >= last
	})
}

// A node whose session followers stall (alive, reading nothing) reads on
// from new consumers: a persistent session there gets the QoS 1 messages
// published on another node, which reach it only through its follower
// (routed deliveries). So does a node healed from a partition whose
// followers' consumers sat on its own replicas while they caught up.
func TestFollowersStalledReadOn(t *testing.T) {
	nodes, dev := subscribedOnNode2(t)
	var old []string
	for n, f := range nodes[1].st.followers {
		old = append(old, stall(t, nodes[1], f, sessionStream(n)))
	}
	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	const n = 10
	publishThenEnd(t, pub, n, 1)
	expectThenEnd(t, dev, n)
	restarted := 0
	for i, f := range nodes[1].st.followers {
		f.mu.Lock()
		if f.restarts > 0 && f.consumer != old[i] {
			restarted++
		}
		f.mu.Unlock()
	}
	if restarted == 0 {
		t.Errorf("no follower of node 2 left its paused consumer")
	}
}

// A session another node claimed while its client was still connected
// here without asking this node (a survivor adopting it while this node
// was cut off from the others) ends here with 0x8E once this node's
// owners watch reads the claim, even when the watch's consumer stalled
// (on this node's replica, which catches up out of band after the heal).
// Had the connection stayed, it would have got nothing published on the
// other nodes (the adopter takes the session's routed deliveries) for as
// long as it stayed.
func TestClaimedElsewhereEndsAfterWatchStalled(t *testing.T) {
	nodes := testCluster(t)
	dev := dial(t, nodes[2].addr, persistent("dev", true))
	dev.subscribe(t, "data/#")
	stallWatch(t, nodes[2], nodes[2].owner.watcher)

	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	kv := nodes[0].owner.kv
	e, err := kv.Get(ctx, clientKey("dev"))
	if err != nil || string(e.Value()) != "node3" {
		t.Fatalf("owner entry: %v, %v; want node3", e, err)
	}
	// The adopter's claim (Ownership.adopt's first step), no handoff.
	if _, err := kv.Update(ctx, clientKey("dev"), []byte("node1"), e.Revision()); err != nil {
		t.Fatal(err)
	}
	if d := dev.disconnected(t); d.ReasonCode != byte(packet.SessionTakenOver) {
		t.Fatalf("node 3 told dev 0x%02X, want 0x8E", d.ReasonCode)
	}
}
