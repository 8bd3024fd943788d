package jsstate

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/testwait"
)

// A read of session records whose caller gives up (Ownership.Stop cancels
// an adoption under way; a CONNECT's claim runs out of ClaimTimeout)
// returns without asking JetStream for anything more, however JetStream
// is: the server removes its consumer after InactiveThreshold. Seen
// before: a node left alone stopped in 5 s, its ownership's Stop waiting
// for the deletion of an adoption's consumer that JetStream, without a
// quorum, never answered (its own 5 s bound), over the 5 s the app's
// tests give a stop.
func TestReadRecordsGivenUpReturns(t *testing.T) {
	nodes := testCluster(t)
	nodes[0].leaveOffline(t, "dev", "cmd/#") // a record to read
	st := nodes[0].st
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reading, goOn := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		first := true
		_, err := st.readRecords(ctx, st.shard("dev"), []string{st.sessionSubject("dev", ">")}, 0, func(string) bool {
			if first {
				// The consumer is made: the test takes the quorum away
				// and gives up before the read ends.
				first = false
				close(reading)
				<-goOn
			}
			return true
		})
		done <- err
	}()
	select {
	case <-reading:
	case err := <-done:
		t.Fatalf("read ended before a record: %v", err)
	case <-time.After(testwait.Timeout):
		t.Fatal("no record read")
	}
	nodes[1].kill(t)
	nodes[2].kill(t)
	cancel()
	close(goOn)
	// A bound well under the deletion's own (consumerDeleteTimeout), which
	// the read waited out before: the read has nothing left to wait for.
	select {
	case <-done:
	case <-time.After(consumerDeleteTimeout / 2):
		t.Fatalf("a read given up still running %v later (waiting for JetStream)", consumerDeleteTimeout/2)
	}
}

// TestReadRecordsThroughFence: a read of a session's records covers the
// stream at least through the sequence it is given (the fence its node
// wrote just before), however far behind the replica its consumer is on:
// one that has not reached it yet is read again. Here the stream itself
// is behind the sequence asked for, until a message routed to the
// session lands there: the read returns only then, with that routed
// delivery. Without it, a node that adopted a session through a consumer
// JetStream placed on a replica that had just thawed (seconds behind,
// catching up) read the session without the routed deliveries written
// during the freeze, and nobody ever delivered them:
// `frozen-paho-sub never got acknowledged frozen-pub-q1-n1:749` and
// 1,480 more in the SIGSTOP fault test.
func TestReadRecordsThroughFence(t *testing.T) {
	nodes := testCluster(t)
	nodes[0].leaveOffline(t, "rt", "rt/t")
	st := nodes[1].st
	n := st.shard("rt")
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	nodes[0].b.Settle(ctx) // rt's record, written as it left, is in the stream
	info, err := st.streams[n].Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	through := info.State.LastSeq + 1 // the next write to the shard

	type result struct {
		recs *stored
		err  error
	}
	read := make(chan result, 1)
	go func() {
		recs, err := st.readRecords(ctx, n, []string{st.fenceSubject("rt"), st.sessionSubject("rt", ">")}, through,
			func(id string) bool { return id == "rt" })
		read <- result{recs["rt"], err}
	}()
	testwait.For(t, "the read to find the stream behind the sequence asked for", func() bool {
		select {
		case r := <-read:
			t.Fatalf("the read returned before the stream reached sequence %d: %+v", through, r)
		default:
		}
		return st.readsBehind.Load() > 0
	})
	pub := dial(t, nodes[1].addr, &paho.Connect{ClientID: "rt-pub", CleanStart: true})
	pub.publish(t, "rt/t", "routed", false) // a routed delivery for rt, at sequence through
	var r result
	select {
	case r = <-read:
	case <-time.After(testwait.Timeout):
		t.Fatal("the read never returned")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.recs == nil || r.recs.rec == nil {
		t.Fatal("the read found no session record")
	}
	if len(r.recs.routed) != 1 {
		t.Fatalf("the read found %d routed deliveries, want the one written at sequence %d", len(r.recs.routed), through)
	}
}
