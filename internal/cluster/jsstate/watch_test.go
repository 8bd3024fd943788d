package jsstate

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/testwait"
)

// stallWatch pauses the consumer of w for an hour: JetStream goes on
// sending its heartbeats and delivers nothing, as it does from a consumer
// on a replica that caught up out of band (see bucketWatch). It returns
// the consumer's name.
func stallWatch(t *testing.T, nd *node, w *bucketWatch) string {
	t.Helper()
	w.mu.Lock()
	consumer := w.consumer
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	if _, err := nd.st.js.PauseConsumer(ctx, "KV_"+w.bucket, consumer, time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("pausing %s's consumer %s: %v", w.bucket, consumer, err)
	}
	return consumer
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
