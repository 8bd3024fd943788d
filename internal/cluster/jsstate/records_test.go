package jsstate

import (
	"context"
	"testing"
	"time"

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
		_, err := st.readRecords(ctx, st.shard("dev"), st.sessionSubject("dev", ">"), func(string) bool {
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
