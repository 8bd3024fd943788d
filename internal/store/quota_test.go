package store

import (
	"context"
	"errors"
	"flag"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeport/edgeport/internal/testwait"
)

var steadyEntries = flag.Int("store.steady", 200_000, "entries written and deleted in TestSteadyStateDisk")

func TestQuota(t *testing.T) {
	const quota = 12 << 20
	dir := t.TempDir()
	s := openStore(t, dir, Options{Sync: SyncNone, QuotaBytes: quota, MemTableBytes: 1 << 20})
	payload := randomBytes(4096)
	var seq uint64
	for {
		seq++
		if seq > 10_000 {
			t.Fatalf("quota of %d never hit; usage %d", quota, s.Usage())
		}
		txn := s.NewTxn()
		txn.PutEntry("c", &Entry{Seq: seq, Msg: Message{Topic: "t", Payload: payload}})
		err := s.CommitSync(txn)
		if errors.Is(err, ErrQuotaExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	full := s.Usage()
	t.Logf("quota hit after %d entries, usage %d", seq-1, full)
	// The quota is checked against committed bytes; a memtable flush then
	// holds the same data in the WAL and an sstable for a moment, so usage
	// may pass the quota by a few memtables.
	if full > quota+4<<20 {
		t.Fatalf("usage %d overshoots the quota %d", full, quota)
	}
	// Still full for adds, including a Txn that mixes adds and deletes.
	txn := s.NewTxn()
	txn.DeleteEntry("c", 1)
	txn.PutEntry("c", &Entry{Seq: seq, Msg: Message{Topic: "t", Payload: payload}})
	if err := s.CommitSync(txn); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("mixed txn at quota: %v", err)
	}
	if m := s.Metrics(); m.Rejected != 2 {
		t.Fatalf("rejected = %d, want 2", m.Rejected)
	}

	// Deletions are always accepted.
	txn = s.NewTxn()
	for i := uint64(1); i < seq; i++ {
		txn.DeleteEntry("c", i)
	}
	if err := s.CommitSync(txn); err != nil {
		t.Fatalf("delete at quota: %v", err)
	}
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Pebble deletes the compacted-away files in the background.
	var after int64
	testwait.Within(testwait.Timeout, func() bool {
		after = s.Usage()
		return after < full/2
	})
	t.Logf("usage after deleting everything and compacting: %d (dir %d)", after, dirSize(t, dir))
	if after >= full/2 {
		breakdown(t, s)
		t.Fatalf("usage %d did not go down from %d", after, full)
	}
	txn = s.NewTxn()
	txn.PutEntry("c", &Entry{Seq: seq, Msg: Message{Topic: "t", Payload: payload}})
	if err := s.CommitSync(txn); err != nil {
		t.Fatalf("put after freeing space: %v", err)
	}
}

// randomBytes returns incompressible bytes, so that disk numbers are not
// flattered by Pebble's block compression.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, uint64(n)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// dirSize is the space the files of dir take, independent of Pebble's own
// accounting, without the reserve file (it holds space, not data).
func dirSize(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // Pebble deleted an obsolete file under our feet
		}
		if err != nil || d.IsDir() || d.Name() == ballastName {
			return err // the reserve file holds space, not data
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSteadyStateDisk runs a queue with a backlog: each round appends
// perRound entries and deletes the round written backlog rounds earlier.
// Pebble's automatic compactions alone must keep the disk flat even though
// most writes end up as tombstones.
func TestSteadyStateDisk(t *testing.T) {
	const (
		perRound = 1000
		backlog  = 10
		bound    = 12 << 20
	)
	dir := t.TempDir()
	s := openStore(t, dir, Options{Sync: SyncNone, MemTableBytes: 1 << 20})
	payload := randomBytes(64)
	var peak, peakDir int64
	rounds := *steadyEntries / perRound
	for r := range rounds + backlog {
		txn := s.NewTxn()
		if r < rounds {
			for i := range uint64(perRound) {
				seq := uint64(r*perRound) + i
				txn.PutEntry("consumer", &Entry{Seq: seq, Msg: Message{Topic: "sensors/t", Payload: payload, QoS: 1}, QoS: 1})
			}
		}
		if old := r - backlog; old >= 0 {
			for i := range uint64(perRound) {
				txn.DeleteEntry("consumer", uint64(old*perRound)+i)
			}
		}
		if err := s.CommitSync(txn); err != nil {
			t.Fatal(err)
		}
		if r%10 == 9 {
			peak = max(peak, s.Usage())
			peakDir = max(peakDir, dirSize(t, dir))
		}
	}
	t.Logf("%d entries through a %d-entry backlog: peak usage %d, peak dir %d, final %d",
		rounds*perRound, backlog*perRound, peak, peakDir, s.Usage())
	if peak > bound || peakDir > bound {
		t.Fatalf("disk grew to %d (dir %d), bound %d", peak, peakDir, bound)
	}
	l := loadAll(t, s)
	if len(l.entries) != 0 {
		t.Fatalf("entries left: %d", len(l.entries))
	}
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	pm := s.db.Metrics()
	if live := pm.Table.Local.LiveSize; live > 64<<10 {
		t.Fatalf("%d bytes of sstables left after compacting an empty store", live)
	}
}

func breakdown(t *testing.T, s *Store) {
	pm := s.db.Metrics()
	t.Logf("usage %d: wal phys %d obsolete %d tables live %d obsolete %d zombie %d inprog %d", pm.DiskSpaceUsage(), pm.WAL.PhysicalSize, pm.WAL.ObsoletePhysicalSize, pm.Table.Local.LiveSize, pm.Table.Local.ObsoleteSize, pm.Table.Local.ZombieSize, pm.Compact.InProgressBytes)
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		fi, _ := e.Info()
		t.Logf("%s %d", e.Name(), fi.Size())
	}
}
