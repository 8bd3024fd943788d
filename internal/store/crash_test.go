package store

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var crashCycles = flag.Int("store.crashcycles", 5, "kill -9 cycles in TestKill9")

const (
	helperDirEnv   = "EDGEPORT_STORE_HELPER_DIR"
	helperStartEnv = "EDGEPORT_STORE_HELPER_START"
	crashClientA   = "crash-a"
	crashClientB   = "crash-b"
)

// crashPayload ties a payload to its seq so the parent can tell a durable
// entry from garbage.
func crashPayload(seq uint64) []byte {
	p := make([]byte, 64)
	for i := 0; i < len(p); i += 8 {
		binary.BigEndian.PutUint64(p[i:], seq*0x9e3779b97f4a7c15+uint64(i))
	}
	return p
}

// TestHelperWriter is the child of TestKill9: with the helper env var set it
// commits Txns forever under SyncBatch and prints the seq of each one whose
// callback reported success, until it is killed. Without the env var it
// does nothing.
func TestHelperWriter(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		return
	}
	start, err := strconv.ParseUint(os.Getenv(helperStartEnv), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	// Small groups, so that the kill lands at many different points of the
	// commit cycle rather than between two huge groups.
	s, err := Open(dir, Options{Sync: SyncBatch, BatchMaxOps: 128, QueueSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	txn := s.NewTxn()
	txn.PutSession(&Session{ClientID: crashClientA, Version: 5})
	txn.PutSession(&Session{ClientID: crashClientB, Version: 5})
	if err := s.CommitSync(txn); err != nil {
		t.Fatal(err)
	}
	out := os.Stdout // unbuffered: an ack line must leave at once
	var line []byte
	var next atomic.Uint64
	next.Store(start)
	// Safety net if the parent dies without killing us.
	deadline := time.Now().Add(2 * time.Minute)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				seq := next.Add(1)
				txn := s.NewTxn()
				// Two entries per Txn: the parent checks they appear together.
				txn.PutEntry(crashClientA, &Entry{Seq: seq, Msg: Message{Topic: "crash", Payload: crashPayload(seq), QoS: 1}, QoS: 1})
				txn.PutEntry(crashClientB, &Entry{Seq: seq, Msg: Message{Topic: "crash", Payload: crashPayload(seq), QoS: 1}, QoS: 1})
				if seq%7 == 0 {
					// Deletes of never-acked seqs exercise tombstones in the WAL too.
					txn.DeleteEntry(crashClientA, seq+1_000_000_000)
				}
				s.Commit(txn, func(err error) {
					if err != nil {
						return
					}
					// Callbacks run one at a time on the committer goroutine.
					line = strconv.AppendUint(line[:0], seq, 10)
					line = append(line, '\n')
					_, _ = out.Write(line)
				})
			}
		}()
	}
	wg.Wait()
	_ = s.Close()
}

func TestKill9(t *testing.T) {
	dir := t.TempDir()
	start := uint64(0)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for cycle := range *crashCycles {
		target := 50 + rng.IntN(2000)
		acked := runAndKill(t, dir, start, target)
		if len(acked) < target {
			t.Fatalf("cycle %d: child gave only %d acks before exiting", cycle, len(acked))
		}

		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("cycle %d: reopen after kill: %v", cycle, err)
		}
		seqs := map[string]map[uint64]bool{crashClientA: {}, crashClientB: {}}
		maxSeq := start
		err = s.Load(LoadFuncs{Session: func(ss *Session, es []Entry, _ []uint16) error {
			m := seqs[ss.ClientID]
			if m == nil {
				return fmt.Errorf("unexpected session %q", ss.ClientID)
			}
			for _, e := range es {
				if string(e.Msg.Payload) != string(crashPayload(e.Seq)) {
					return fmt.Errorf("entry %s/%d has a wrong payload", ss.ClientID, e.Seq)
				}
				m[e.Seq] = true
				maxSeq = max(maxSeq, e.Seq)
			}
			return nil
		}})
		if cerr := s.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("cycle %d: load: %v", cycle, err)
		}
		for _, seq := range acked {
			if !seqs[crashClientA][seq] || !seqs[crashClientB][seq] {
				t.Fatalf("cycle %d: acknowledged seq %d lost (a=%v b=%v)", cycle, seq, seqs[crashClientA][seq], seqs[crashClientB][seq])
			}
		}
		// Atomicity: a Txn's two entries are both there or both gone.
		if len(seqs[crashClientA]) != len(seqs[crashClientB]) {
			t.Fatalf("cycle %d: torn txn: %d vs %d entries", cycle, len(seqs[crashClientA]), len(seqs[crashClientB]))
		}
		for seq := range seqs[crashClientA] {
			if !seqs[crashClientB][seq] {
				t.Fatalf("cycle %d: torn txn at seq %d", cycle, seq)
			}
		}
		durable := 0
		for seq := range seqs[crashClientA] {
			if seq > start {
				durable++
			}
		}
		t.Logf("cycle %d: %d acked, %d durable (the rest was committed but killed before its callback)",
			cycle, len(acked), durable)
		start = maxSeq + 1_000_000
	}
}

// runAndKill starts the helper, reads acks until it has target of them,
// SIGKILLs it, and returns every ack it printed (including any that were
// already in the pipe when the signal landed).
func runAndKill(t *testing.T, dir string, start uint64, target int) []uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir, helperStartEnv+"="+strconv.FormatUint(start, 10))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []uint64
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		seq, err := strconv.ParseUint(sc.Text(), 10, 64)
		if err != nil {
			// Only a line cut by the kill can be malformed, and the kill
			// happens only after an ack. Anything else is the child failing.
			if killed {
				continue
			}
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("helper printed %q", sc.Text())
		}
		acked = append(acked, seq)
		if !killed && len(acked) >= target {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatalf("kill: %v", err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("helper exited before being killed: %v", err)
	}
	return acked
}
