package e2e

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
	"github.com/edgeport/edgeport/internal/testwait"
)

// crashCyclesFlag sets how many kill -9 cycles TestCrashRecovery runs
// (EDGEPORT_CRASH_CYCLES too); the default suits CI, 100 is the soak.
var crashCyclesFlag = flag.Int("crash.cycles", 0, "kill -9 cycles of TestCrashRecovery (default 3, or EDGEPORT_CRASH_CYCLES)")

func crashCycles(t *testing.T) int {
	if *crashCyclesFlag > 0 {
		return *crashCyclesFlag
	}
	if v := os.Getenv("EDGEPORT_CRASH_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("EDGEPORT_CRASH_CYCLES=%q: want a positive number", v)
		}
		return n
	}
	return 3
}

// startEdgeportAt runs `edgeport serve` on the data directory dir, for
// tests that stop it with kill -9 and start it again on the same state.
// Only the MQTT listener is on; the cleanup kills a process still running.
func startEdgeportAt(t *testing.T, dir string, extraArgs ...string) *edgeport {
	t.Helper()
	return startEdgeportCmd(t, dir, nil, extraArgs...)
}

// startEdgeportCmd is startEdgeportAt with a hook that adjusts the command
// before it starts (the process's credentials, for one).
func startEdgeportCmd(t *testing.T, dir string, setup func(*exec.Cmd), extraArgs ...string) *edgeport {
	t.Helper()
	args := []string{"serve", "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off", "--http-addr", "off",
		"--selftest-interval", "0", "--sys-interval", "0", "--data-dir", dir, "--log-level", cmp.Or(os.Getenv(logLevelEnv), "info")}
	args = append(args, extraArgs...)
	return launchEdgeportWith(t, args, 30*time.Second, (*edgeport).kill, setup)
}

// kill ends the process with SIGKILL, as a crash or the OOM killer would,
// and waits for it; a process already stopped is left alone.
func (e *edgeport) kill() {
	e.stopOnce.Do(func() {
		_ = e.cmd.Process.Kill()
		<-e.done
	})
}

// TestCrashRecovery proves what Edgeport acknowledges survives kill -9.
// Publishers (persistent MQTT 5 sessions) drive QoS 1, QoS 2 and retained
// QoS 1 messages, each numbered, into two persistent subscribers, one
// online and one offline, for a random 100-500 ms; then the broker is
// killed, restarted on the same data directory, and everybody reconnects
// and resends what was unacknowledged, as MQTT requires. Then:
//   - every QoS 1 message reached both subscribers at least once, every
//     QoS 2 message exactly once, counting deliveries before the kill;
//   - each retained topic holds, right after the restart, the last value
//     acknowledged or a later one sent, and after the resends the last sent;
//   - both subscribers' and publishers' sessions were present.
//
// Messages acknowledged before the kill are the point: nobody resends them.
// Resent ones also prove the publisher side of QoS 2 (a PUBLISH the broker
// stored before the crash must not be routed again when it comes back).
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	cycles := crashCycles(t)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("%d cycles, seed %d", cycles, seed)

	dir := t.TempDir()
	// Every third start uses --sync-policy always; the others the default,
	// batch. Both must be safe against kill -9.
	args := func(cycle int) []string {
		policy := "batch"
		if cycle%3 == 2 {
			policy = "always"
		}
		return []string{"--max-queued-messages", "1000000", "--sync-policy", policy}
	}
	e := startEdgeportAt(t, dir, args(0)...)
	addr := e.addr(t, "mqtt")

	subs := []*crashSub{newCrashSub("crash-sub-a"), newCrashSub("crash-sub-b")}
	pubs := []*crashPub{newCrashPub("crash-pub-q1", 1, false), newCrashPub("crash-pub-q2", 2, false), newCrashPub("crash-pub-ret", 1, true)}
	for _, s := range subs {
		if _, err := s.connect(addr, true); err != nil {
			t.Fatal(err)
		}
		if err := s.subscribe(packet.Subscription{Filter: "crash/q1", QoS: 1}, packet.Subscription{Filter: "crash/q2", QoS: 2}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.disconnect(false) })
	}
	for _, p := range pubs {
		if _, err := p.connect(addr, true); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.halt)
	}

	for cycle := range cycles {
		start := time.Now()
		online, offline := subs[cycle%2], subs[1-cycle%2]
		offline.disconnect(true)

		// Load, then kill -9 in the middle of it.
		firstSeq := make([]int, len(pubs))
		for i, p := range pubs {
			state, _, _, _ := p.snapshot()
			firstSeq[i] = len(state)
		}
		// The kill comes once a random number of this cycle's messages
		// were acknowledged: mid-flow, at a point that differs per cycle.
		load := 200 + rng.IntN(3000)
		sent := make(chan int, len(pubs))
		for _, p := range pubs {
			go func() { sent <- p.run(50000) }()
		}
		testwait.For(t, fmt.Sprintf("%d messages acknowledged under load", load), func() bool {
			acked := 0
			for i, p := range pubs {
				state, _, _, err := p.snapshot()
				if err != nil {
					return true // the publisher failed: reported by the checks below
				}
				for _, st := range state[firstSeq[i]:] {
					if st != msgSent {
						acked++
					}
				}
			}
			return acked >= load
		})
		e.kill()
		total := 0
		for _, p := range pubs {
			p.halt()
			total += <-sent
		}
		online.disconnect(false)
		acked := 0
		for i, p := range pubs {
			state, _, _, err := p.snapshot()
			if err != nil {
				t.Fatalf("cycle %d: %v", cycle, err)
			}
			for _, st := range state[firstSeq[i]:] {
				if st != msgSent {
					acked++
				}
			}
		}

		restartAt := time.Now()
		e = startEdgeportAt(t, dir, args(cycle+1)...)
		addr = e.addr(t, "mqtt")
		restart := time.Since(restartAt)

		// Retained topics: at least the last acknowledged value, right
		// after the restart and before anybody resends.
		ret := pubs[2]
		_, lastAcked, lastSent, _ := ret.snapshot()
		got, err := readRetained(addr)
		if err != nil {
			t.Fatalf("cycle %d: %v", cycle, err)
		}
		for i := range crashRetainedTopics {
			if got[i] < lastAcked[i] || got[i] > lastSent[i] || got[i] >= 0 && got[i]%crashRetainedTopics != i {
				t.Fatalf("cycle %d: retained crash/ret/%d holds seq %d after the crash; last acknowledged %d, last sent %d",
					cycle, i, got[i], lastAcked[i], lastSent[i])
			}
		}

		for _, s := range subs {
			present, err := s.connect(addr, false)
			if err != nil {
				t.Fatalf("cycle %d: %v", cycle, err)
			}
			if !present {
				t.Fatalf("cycle %d: %s: session not present after the crash", cycle, s.name)
			}
		}
		for _, p := range pubs {
			present, err := p.connect(addr, false)
			if err != nil {
				t.Fatalf("cycle %d: %v", cycle, err)
			}
			if !present {
				t.Fatalf("cycle %d: %s: session not present after the crash", cycle, p.name)
			}
		}
		for _, p := range pubs {
			if err := p.settled(20 * time.Second); err != nil {
				t.Fatalf("cycle %d: %v", cycle, err)
			}
		}
		// One more message each through the recovered broker: on the
		// ordered topics it arrives after every redelivery.
		for _, p := range pubs {
			p.run(1)
			if err := p.settled(20 * time.Second); err != nil {
				t.Fatalf("cycle %d: %v", cycle, err)
			}
		}
		for _, s := range subs {
			if err := awaitAll(s, pubs[:2], 30*time.Second); err != nil {
				t.Fatalf("cycle %d: %v", cycle, err)
			}
		}
		checkCounts(t, cycle, subs, pubs[:2])
		_, _, lastSent, _ = ret.snapshot()
		got, err = readRetained(addr)
		if err != nil {
			t.Fatalf("cycle %d: %v", cycle, err)
		}
		for i := range crashRetainedTopics {
			if got[i] != lastSent[i] {
				t.Fatalf("cycle %d: retained crash/ret/%d holds seq %d after the resends, want the last sent %d", cycle, i, got[i], lastSent[i])
			}
		}
		t.Logf("cycle %d: killed after %v: %d sent, %d of them acknowledged before the kill; restart %v; cycle %v",
			cycle, load, total, acked, restart.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}

	// A last, graceful stop must find the store in order.
	for _, p := range pubs {
		p.halt()
	}
	for _, s := range subs {
		s.disconnect(true)
	}
	if err := e.stop(); err != nil {
		t.Fatalf("graceful stop after %d crashes: %v", cycles, err)
	}
	checkCounts(t, cycles, subs, pubs[:2])
}

// awaitAll waits until s has received every message the publishers sent.
func awaitAll(s *crashSub, pubs []*crashPub, timeout time.Duration) error {
	missing := ""
	testwait.Within(timeout, func() bool {
		missing = ""
		for _, p := range pubs {
			state, _, _, _ := p.snapshot()
			counts := s.counts(p.name)
			for seq := range state {
				if seq >= len(counts) || counts[seq] == 0 {
					missing = fmt.Sprintf("%s:%d (state %d)", p.name, seq, state[seq])
					return false
				}
			}
		}
		return true
	})
	if missing != "" {
		return fmt.Errorf("%s never received %s (and maybe more)", s.name, missing)
	}
	return nil
}

// checkCounts requires every QoS 1 message at least once and every QoS 2
// message exactly once at every subscriber, and no protocol violations.
func checkCounts(t *testing.T, cycle int, subs []*crashSub, pubs []*crashPub) {
	t.Helper()
	for _, s := range subs {
		if v := s.violations(); len(v) > 0 {
			t.Fatalf("cycle %d: %s: %d violations, first: %s", cycle, s.name, len(v), strings.Join(v[:min(5, len(v))], "; "))
		}
		for _, p := range pubs {
			state, _, _, _ := p.snapshot()
			counts := s.counts(p.name)
			if len(counts) > len(state) {
				t.Fatalf("cycle %d: %s got %s:%d, which was never sent", cycle, s.name, p.name, len(counts)-1)
			}
			for seq := range state {
				n := 0
				if seq < len(counts) {
					n = int(counts[seq])
				}
				if n == 0 || p.qos == 2 && n != 1 {
					t.Fatalf("cycle %d: %s got %s:%d %d times (QoS %d)", cycle, s.name, p.name, seq, n, p.qos)
				}
			}
		}
	}
}

// TestCorruptStoreRefusesToStart: edgeport serve on a damaged store exits
// with an error naming the corruption instead of starting without the
// state it lost.
func TestCorruptStoreRefusesToStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	txn := st.NewTxn()
	txn.PutSession(&store.Session{ClientID: "dev", Version: 5, Expiry: time.Hour})
	for i := range 2000 {
		txn.PutEntry("dev", &store.Entry{Seq: uint64(i + 1), QoS: 1, Msg: store.Message{Topic: "t", QoS: 1, Payload: make([]byte, 100)}})
	}
	if err := st.CommitSync(txn); err != nil {
		t.Fatal(err)
	}
	if err := st.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	tables, err := filepath.Glob(filepath.Join(dir, "store", "*.sst"))
	if err != nil || len(tables) == 0 {
		t.Fatalf("no table to damage: %v %v", tables, err)
	}
	f, err := os.OpenFile(tables[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("\xde\xad\xbe\xef GARBAGE \xde\xad\xbe\xef"), 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, edgeportBin, "serve", "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off",
		"--http-addr", "off", "--selftest-interval", "0", "--data-dir", dir).CombinedOutput()
	if err == nil {
		t.Fatalf("edgeport started on a damaged store:\n%s", out)
	}
	if !strings.Contains(string(out), "corrupt") || !strings.Contains(string(out), filepath.Join(dir, "store")) {
		t.Fatalf("exit %v without naming the corruption and the store:\n%s", err, out)
	}
	if strings.Contains(string(out), "edgeport started") {
		t.Fatalf("edgeport reported starting:\n%s", out)
	}
}
