package jsstate

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/testwait"
)

// TestNoLeaderStallsStreamAtOnce: a write that JetStream answers with "no
// responders" (its stream has no leader) stalls the stream's lane at once,
// so a write committed after it is held until it is stored, and the
// stream gets them in commit order once it answers again. The stream
// without a leader is a real one: the shard's stream is deleted, and made
// again with its configuration after the first write was answered.
// Before, nats.go published such a write again on its own 250 ms later,
// and a write committed meanwhile, once the stream answered again, was
// stored first and its commit refused (ErrOutOfOrder).
func TestNoLeaderStallsStreamAtOnce(t *testing.T) {
	nodes := testCluster(t)
	st := nodes[0].st
	const shard = 0
	id := clientInShard(st, shard)
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	stream, err := st.js.Stream(ctx, sessionStream(shard))
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	if err := st.js.DeleteStream(ctx, cfg.Name); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	results := map[string]error{}
	done := make(chan string, 2)
	commit := func(key string) {
		tx := st.NewTxn().(*txn)
		tx.put(st.sessionSubject(id, key), []byte(key))
		st.Commit(tx, func(err error) {
			mu.Lock()
			results[key] = err
			mu.Unlock()
			done <- key
		})
	}
	lane := func() (stalled bool, held int) {
		st.pmu.Lock()
		defer st.pmu.Unlock()
		return st.lanes[shard].stalled, len(st.lanes[shard].held)
	}

	commit("e.first")
	testwait.For(t, "the no-leader answer to stall the lane", func() bool {
		stalled, _ := lane()
		return stalled && st.noLeader.Load() == 1
	})
	if _, err := st.js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	commit("e.second")
	if stalled, held := lane(); !stalled || held != 1 {
		t.Errorf("after the no-leader answer: lane stalled %v with %d writes held, want stalled with the second write held", stalled, held)
	}
	for range 2 {
		select {
		case <-done:
		case <-time.After(2 * st.opts.AckTimeout):
			t.Fatal("a commit had no result")
		}
	}
	mu.Lock()
	for key, err := range results {
		if err != nil {
			t.Errorf("commit of %s: %v", key, err)
		}
		if errors.Is(err, ErrOutOfOrder) {
			t.Errorf("the write committed after the no-leader answer was stored first")
		}
	}
	mu.Unlock()
	seqOf := func(key string) uint64 {
		m, err := stream.GetLastMsgForSubject(ctx, st.sessionSubject(id, key))
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		return m.Sequence
	}
	if first, second := seqOf("e.first"), seqOf("e.second"); first >= second {
		t.Errorf("stream sequences: first write %d, second %d; want the first before", first, second)
	}
}
