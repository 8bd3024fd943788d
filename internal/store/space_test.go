package store

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/testwait"
)

// smallFS mounts a tmpfs of size bytes for the test: a file system that
// really fills. Mounting needs root, which the test suite has in CI
// (scripts/test.sh runs as root).
func smallFS(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a small tmpfs and needs root (CI runs scripts/test.sh as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mounting a tmpfs on %s: %v\n%s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("unmounting %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// fill grows the file at path until the file system has at most leave
// bytes free, as another program filling the disk would.
func fill(t *testing.T, path string, leave int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	grow := freeBytes(filepath.Dir(path)) - leave
	if grow <= 0 {
		return
	}
	if err := syscall.Fallocate(int(f.Fd()), 0, fi.Size(), grow); err != nil {
		t.Fatalf("filling the file system: %v", err)
	}
}

func addTxn(s *Store, n int) error {
	txn := s.NewTxn()
	txn.PutRetained(&Message{Topic: "t/" + string(rune('a'+n%26)), Payload: make([]byte, 64<<10)})
	return s.CommitSync(txn)
}

// TestDiskFull: a store on a file system that another program fills keeps
// working (issue 10, item 4): data is refused with ErrDiskFull (a kind of
// ErrQuotaExceeded) before the disk is full, deletions still commit when
// it is entirely full (the reserve file makes room), the store takes data
// again by itself once space is freed, and opening on a full disk either
// works (the reserve file is released) or fails at once with ErrNoSpace.
// Before the fix, Pebble panicked on the write that hit ENOSPC, and a
// restart on the full disk retried a failing flush for ever, logging each
// attempt.
func TestDiskFull(t *testing.T) {
	mnt := smallFS(t, "48m")
	dir, filler := filepath.Join(mnt, "store"), filepath.Join(mnt, "filler")
	opts := Options{ReserveBytes: 8 << 20, MemTableBytes: 1 << 20}
	var s *Store
	t.Cleanup(func() { // before the unmount
		if s != nil {
			_ = s.Close()
		}
	})
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, ballastName)); err != nil || fi.Size() != 4<<20 {
		t.Fatalf("reserve file: %v %v", fi, err)
	}
	for i := range 8 {
		if err := addTxn(s, i); err != nil {
			t.Fatalf("adding with room: %v", err)
		}
	}

	// Another program leaves less than the reserve free.
	// The store notices at its next measurement (every 100 ms or 64 KiB).
	fill(t, filler, 2<<20)
	err = nil
	for i := 0; i < 16 && err == nil; i++ {
		err = addTxn(s, i)
	}
	if !errors.Is(err, ErrDiskFull) || !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("adding on a nearly full disk: %v, want ErrDiskFull", err)
	}
	if !s.Full() {
		t.Fatal("Full() is false on a nearly full disk")
	}
	// Then fills it entirely: what does not add data still commits.
	fill(t, filler, 0)
	for i := range 8 {
		txn := s.NewTxn()
		txn.DeleteRetained("t/" + string(rune('a'+i)))
		if err := s.CommitSync(txn); err != nil {
			t.Fatalf("deleting on a full disk: %v", err)
		}
	}
	if err := s.Compact(t.Context()); err != nil {
		t.Logf("compacting on a full disk: %v", err) // may fail: no room for the output
	}

	// Space is freed: the store takes data again by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the store to take data after space was freed", func() bool { return !s.Full() })
	if err := addTxn(s, 1); err != nil {
		t.Fatalf("adding after space was freed: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, ballastName)); err != nil || fi.Size() != 4<<20 {
		t.Fatalf("reserve file not recreated: %v %v", fi, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = nil

	// A restart on a full disk: the reserve file is released, the store
	// opens and refuses new data until space is freed.
	fill(t, filler, 0)
	s, err = Open(dir, opts)
	if err != nil {
		t.Fatalf("opening on a full disk with the reserve file: %v", err)
	}
	if err := addTxn(s, 2); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("adding after opening on a full disk: %v, want ErrDiskFull", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = nil

	// Without the reserve file Open fails at once, saying why.
	_ = os.Remove(filepath.Join(dir, ballastName))
	fill(t, filler, 0)
	done := make(chan error, 1)
	go func() {
		st, err := Open(dir, opts)
		if err == nil {
			st.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("opening on a full disk without the reserve file: %v, want ErrNoSpace", err)
		}
		t.Logf("open on a full disk: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Open on a full disk did not return within 30 s")
	}
}
