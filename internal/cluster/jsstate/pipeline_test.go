package jsstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/cluster/clustertest"

	"github.com/edgeport/edgeport/internal/testwait"
)

// TestCommitsThroughLostStreamLeader kills the node that leads one session
// shard's stream while commits to it and to another shard are in flight
// on a third node: the other shard's commits go on completing while the
// lost leader's wait for JetStream's election (done is ordered per
// stream, not node-wide); the lost leader's complete, none failed, once a
// new leader is elected (their writes are published again); and the
// stream holds each write once (the copies were dropped by their
// Nats-Msg-Id).
func TestCommitsThroughLostStreamLeader(t *testing.T) {
	// The victim is a process of its own, killed with SIGKILL: an
	// in-process server's shutdown steps its Raft leaders down, which
	// spares JetStream the election a crash costs.
	cfgs := clustertest.Configs(t, 3)
	victim := startChildNode(t, cfgs[2])
	cns := make([]*cluster.Node, 2)
	for i := range cns {
		cns[i] = clustertest.StartNode(t, cfgs[i])
	}
	clustertest.WaitFormedOf(t, 3, cns...)
	// The commits wait for the election, however long: after a crash the
	// survivors campaign after an election timeout (4-9 s), and again
	// after a split vote (both campaigning at once), which the default
	// AckTimeout (10 s) would not outlast. What is tested is that none
	// fails once a leader is elected, not how long JetStream takes.
	committer := startNodeWith(t, cns[0], func(o *Options) { o.AckTimeout = lostAckTimeout })
	startNode(t, cns[1])
	st := committer.st
	lost, other := 0, 1
	// The lost shard led by the victim, the other by the committer.
	moveLeader(t, committer, sessionStream(lost), cfgs[2].Name)
	moveLeader(t, committer, sessionStream(other), cns[0].Server().Name())
	lostID, otherID := clientInShard(st, lost), clientInShard(st, other)

	// One commit of one entry of id; done reports to res.
	type result struct {
		err     error
		done    atomic.Bool
		afterOf *result // for the other shard's: the lost shard's commit just before
	}
	var (
		mu          sync.Mutex
		lostRes     []*result
		otherRes    []*result
		overtook    atomic.Int64 // other-shard commits done before an earlier lost-shard one
		lostPending atomic.Int64
	)
	commit := func(id string, n int, r *result, finished chan<- struct{}) {
		tx := st.NewTxn().(*txn)
		tx.put(st.sessionSubject(id, "e."+strconv.Itoa(n)), []byte("entry "+strconv.Itoa(n)))
		st.Commit(tx, func(err error) {
			mu.Lock()
			r.err = err
			mu.Unlock()
			if r.afterOf != nil && !r.afterOf.done.Load() {
				overtook.Add(1)
			}
			r.done.Store(true)
			if finished != nil {
				close(finished)
			}
		})
	}
	commitLost := func() *result {
		r := &result{}
		mu.Lock()
		n := len(lostRes)
		lostRes = append(lostRes, r)
		mu.Unlock()
		lostPending.Add(1)
		commit(lostID, n, r, nil)
		return r
	}
	commitOther := func(after *result) {
		r := &result{afterOf: after}
		mu.Lock()
		n := len(otherRes)
		otherRes = append(otherRes, r)
		mu.Unlock()
		finished := make(chan struct{})
		commit(otherID, n, r, finished)
		select {
		case <-finished:
		case <-time.After(2 * lostAckTimeout):
			t.Fatalf("commit %d to the other shard: no result", n)
		}
	}

	// In flight when the leader goes: a burst to both shards.
	for range 20 {
		commitLost()
		commitOther(nil)
	}
	if err := victim.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Then one lost-shard commit per ten others, each other one committed
	// after the lost-shard one before it and waited for, until the first
	// lost-shard commit made after the kill completes (JetStream elected
	// a new leader and the retries reached it).
	first := commitLost()
	last := first
	for i := 0; !first.done.Load(); i++ {
		if i%10 == 0 && i < 2000 {
			last = commitLost()
		}
		commitOther(last)
	}
	elected := time.Since(killed)
	// Each fails lostAckTimeout after its commit at the latest.
	if !testwait.Within(2*lostAckTimeout, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range lostRes {
			if !r.done.Load() {
				return false
			}
		}
		return true
	}) {
		t.Fatal("commits to the lost leader's shard without a result")
	}
	mu.Lock()
	defer mu.Unlock()
	for i, r := range lostRes {
		if r.err != nil {
			t.Errorf("commit %d to the lost leader's shard failed: %v", i, r.err)
		}
	}
	for i, r := range otherRes {
		if r.err != nil {
			t.Errorf("commit %d to the other shard failed: %v", i, r.err)
		}
	}
	if overtook.Load() == 0 {
		t.Errorf("no commit to the other shard completed before an earlier one to the lost leader's (%d others)", len(otherRes))
	}
	if st.resent.Load() == 0 {
		t.Error("no write was published again")
	}
	t.Logf("the lost leader's shard took writes again %v after the kill; %d commits to it, %d to the other shard (%d done before an earlier one to the lost shard), %d writes published again",
		elected.Round(time.Millisecond), len(lostRes), len(otherRes), overtook.Load(), st.resent.Load())

	// Each write once and in commit order: as many messages as writes, no
	// sequence dropped (a copy stored again would replace its first,
	// leaving a gap), write n at sequence n+1 (a copy published again
	// lands before the writes committed after it).
	var s jetstream.Stream
	var info *jetstream.StreamInfo
	if err := untilAvailable(func(ctx context.Context) (err error) {
		if s, err = st.js.Stream(ctx, sessionStream(lost)); err != nil {
			return err
		}
		info, err = s.Info(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := info.State; got.Msgs != uint64(len(lostRes)) || got.NumDeleted != 0 || got.LastSeq != uint64(len(lostRes)) {
		t.Errorf("stream %s: %d messages, %d deleted, last sequence %d; want the %d writes once each",
			sessionStream(lost), got.Msgs, got.NumDeleted, got.LastSeq, len(lostRes))
	}
	for n := range lostRes {
		var m *jetstream.RawStreamMsg
		if err := untilAvailable(func(ctx context.Context) (err error) {
			m, err = s.GetLastMsgForSubject(ctx, st.sessionSubject(lostID, "e."+strconv.Itoa(n)))
			return err
		}); err != nil {
			t.Fatalf("write %d: %v", n, err)
		}
		if m.Sequence != uint64(n+1) {
			t.Errorf("write %d at stream sequence %d, want %d", n, m.Sequence, n+1)
		}
	}
}

// lostAckTimeout is the committer's AckTimeout in
// TestCommitsThroughLostStreamLeader: past two elections after a crash.
const lostAckTimeout = 2 * electionWait

// electionWait bounds a wait for JetStream to answer again after a
// crash: a server killed with SIGKILL steps nothing down, so each Raft
// group it led (the meta group too) elects a new leader only after an
// election timeout (nats-server's: 4-9 s, again after a split vote),
// slower on a loaded machine; a stream's new leader takes writes while
// the meta group may still be electing.
const electionWait = 30 * time.Second

// untilAvailable calls f (one JetStream request or a few) again while
// JetStream answers 503 "temporarily unavailable" (the meta group or the
// stream's group has no leader yet: seen after the stream's writes
// resumed), for electionWait at most, and returns f's last error.
func untilAvailable(f func(ctx context.Context) error) error {
	var err error
	testwait.Within(electionWait, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
		defer cancel()
		err = f(ctx)
		var apiErr *jetstream.APIError
		return !errors.As(err, &apiErr) || apiErr.Code != 503
	})
	return err
}

// clientInShard returns a client identifier of shard n.
func clientInShard(st *Store, n int) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("client-%d", i)
		if st.shard(id) == n {
			return id
		}
	}
}

// moveLeader makes server want the leader of stream name (asking through
// via's connection) and waits until via sees it.
func moveLeader(t *testing.T, via *node, name string, want string) {
	t.Helper()
	leader := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
		defer cancel()
		s, err := via.st.js.Stream(ctx, name)
		if err != nil || s.CachedInfo().Cluster == nil {
			return ""
		}
		return s.CachedInfo().Cluster.Leader
	}
	if leader() == want {
		return
	}
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": want}})
	// Each move is an election, and a leader hands over to the preferred
	// server only if it heard from it lately (else to another, asked
	// again): on a loaded machine that can take several rounds, so the
	// bound is an election's (electionWait), not testwait.For's. A leader
	// is asked once, again only if it still leads a second later.
	var asked string
	var askedAt time.Time
	if !testwait.Within(electionWait, func() bool {
		l := leader()
		if l == want {
			return true
		}
		if l != "" && (l != asked || time.Since(askedAt) > time.Second) {
			_, _ = via.st.nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+name, req, testwait.Timeout)
			asked, askedAt = l, time.Now()
		}
		return false
	}) {
		t.Fatalf("stream %s not led by %s after %v (leader %q)", name, want, electionWait, leader())
	}
}

// childNodeEnv holds the JSON configuration of the cluster node
// TestHelperClusterNode runs in a child process.
const childNodeEnv = "JSSTATE_CHILD_NODE"

// TestHelperClusterNode runs a cluster node (an embedded NATS server with
// JetStream) until it is killed, when started by startChildNode; alone it
// does nothing.
func TestHelperClusterNode(t *testing.T) {
	raw := os.Getenv(childNodeEnv)
	if raw == "" {
		return
	}
	var cfg cluster.Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	nd, err := cluster.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := nd.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {} // until SIGKILL
}

// startChildNode starts cluster node cfg in a child process (this test
// binary running TestHelperClusterNode), killed at the test's end if the
// test did not kill it.
func startChildNode(t *testing.T, cfg cluster.Config) *exec.Cmd {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperClusterNode$", "-test.count=1", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), childNodeEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// Options.AckTimeout bounds the commits of the sessions' state too: on a
// node left without a quorum a commit fails after it, not after the
// default AckTimeout. One as long as DuplicateWindow is refused (a write
// published again past the window would be stored twice).
func TestCommitAckTimeoutOption(t *testing.T) {
	if _, err := (&Options{Node: "n", AckTimeout: DuplicateWindow}).withDefaults(); err == nil {
		t.Error("an ack timeout as long as the duplicate window was accepted")
	}
	const ackTimeout = 500 * time.Millisecond
	nodes := testClusterWith(t, func(o *Options) { o.AckTimeout = ackTimeout })
	nodes[1].kill(t)
	nodes[2].kill(t)
	st := nodes[0].st
	tx := st.NewTxn().(*txn)
	tx.put(st.sessionSubject("dev", "e.0"), []byte("entry"))
	done := make(chan error, 1)
	st.Commit(tx, func(err error) { done <- err })
	select {
	case err := <-done:
		if want := fmt.Sprintf("no acknowledgement within %v", ackTimeout); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("commit without a quorum: %v, want %q", err, want)
		}
	case <-time.After(2 * AckTimeout):
		t.Fatal("commit without a quorum: no result")
	}
}
