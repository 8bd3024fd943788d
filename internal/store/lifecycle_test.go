package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewTouchesNothingUntilStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := New(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("New created %s: %v", dir, err)
	}
	if _, _, err := s.GetKV("b", []byte("k")); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetKV before Start: %v", err)
	}
	var got error
	s.Commit(&Txn{s: s, keep: true}, func(err error) { got = err }) // NewTxn needs an open store
	if !errors.Is(got, ErrClosed) {
		t.Fatalf("commit before Start: %v", got)
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	if _, err := New(dir, Options{Sync: "sometimes"}); err == nil {
		t.Fatal("New accepted an unknown sync policy")
	}
}

// A second store on the same directory fails to start (Pebble's lock), and
// leaves the first one working; after Stop the directory can be opened again.
func TestStartFailsOnLockedDirAndStopReleasesIt(t *testing.T) {
	dir := t.TempDir()
	first, err := New(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	second, _ := New(dir, Options{})
	if err := second.Start(t.Context()); err == nil {
		t.Fatal("a second store started on a locked directory")
	}
	if err := second.Stop(t.Context()); err != nil {
		t.Fatalf("Stop after a failed Start: %v", err)
	}
	commit(t, first, func(tx *Txn) { tx.PutKV("b", []byte("k"), []byte("v")) })
	if err := first.Start(t.Context()); err == nil {
		t.Fatal("a store started twice")
	}
	if err := first.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	again := openStore(t, dir, Options{})
	if v, ok, err := again.GetKV("b", []byte("k")); err != nil || !ok || string(v) != "v" {
		t.Fatalf("after reopening: %q %v %v", v, ok, err)
	}
}

func TestSetSync(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Sync: SyncNone})
	commit(t, s, func(tx *Txn) { tx.PutKV("b", []byte("1"), []byte("v")) })
	if m := s.Metrics(); m.Syncs != 0 {
		t.Fatalf("SyncNone fsynced: %+v", m)
	}
	if err := s.SetSync("sometimes"); err == nil {
		t.Fatal("SetSync accepted an unknown policy")
	}
	if err := s.SetSync(SyncAlways); err != nil {
		t.Fatal(err)
	}
	if s.Sync() != SyncAlways {
		t.Fatalf("Sync() = %s", s.Sync())
	}
	commit(t, s, func(tx *Txn) { tx.PutKV("b", []byte("2"), []byte("v")) })
	if m := s.Metrics(); m.Syncs != 1 {
		t.Fatalf("SyncAlways did not fsync: %+v", m)
	}
}
