package store

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// checkPrivate fails unless dir is 0700 and every file under it 0600.
func checkPrivate(t *testing.T, dir string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := filePerm
		if d.IsDir() {
			want = dirPerm
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %#o, want %#o", path, fi.Mode().Perm(), want)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 4 {
		t.Fatalf("only %d entries under %s", n, dir)
	}
}

// TestFilesArePrivate: retained payloads, queues and state store values
// are readable by the broker's user only (issue 10, item 6), whatever the
// umask; a store left world-readable by an earlier version is tightened.
func TestFilesArePrivate(t *testing.T) {
	old := syscall.Umask(0o002) // the most permissive common umask
	t.Cleanup(func() { syscall.Umask(old) })

	dir := filepath.Join(t.TempDir(), "store")
	s := openStore(t, dir, Options{})
	commit(t, s, func(txn *Txn) {
		txn.PutRetained(&Message{Topic: "secret", Payload: []byte("payload")})
		txn.PutKV("state", []byte("k"), []byte("value"))
	})
	if err := s.Compact(t.Context()); err != nil { // writes sstables too
		t.Fatal(err)
	}
	checkPrivate(t, dir)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// What an earlier version left: a 0755 directory of 0644 files.
	if err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if d.IsDir() {
			mode = 0o755
		}
		return os.Chmod(path, mode)
	}); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{})
	commit(t, s, func(txn *Txn) { txn.PutRetained(&Message{Topic: "more", Payload: []byte("x")}) })
	checkPrivate(t, dir)
}
