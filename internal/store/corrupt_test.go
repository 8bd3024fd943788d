package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFlushed fills a store with one session of 2000 entries, flushes it
// into an sstable and closes it.
func writeFlushed(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir, Options{Sync: SyncNone})
	if err != nil {
		t.Fatal(err)
	}
	txn := s.NewTxn()
	txn.PutSession(&Session{ClientID: "c", Version: 5})
	for i := range 2000 {
		txn.PutEntry("c", &Entry{Seq: uint64(i), Msg: Message{Topic: "t", Payload: make([]byte, 100)}})
	}
	if err := s.CommitSync(txn); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func onlyFile(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(m) != 1 {
		t.Fatalf("glob %s: %v %v", pattern, m, err)
	}
	return m[0]
}

func overwrite(t *testing.T, path string, off int64, data string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if off < 0 {
		fi, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		off += fi.Size()
	}
	if _, err := f.WriteAt([]byte(data), off); err != nil {
		t.Fatal(err)
	}
}

func truncateHalf(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
}

// openAndLoad returns the first error of Open or a full Load.
func openAndLoad(dir string) error {
	s, err := Open(dir, Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Load(LoadFuncs{
		Session:  func(*Session, []Entry, []uint16) error { return nil },
		Retained: func(*Message) error { return nil },
	})
}

func TestCorruptFiles(t *testing.T) {
	cases := []struct {
		name     string
		damage   func(t *testing.T, dir string)
		mentions string // the message must name the damaged file
	}{
		{"garbled MANIFEST", func(t *testing.T, dir string) {
			overwrite(t, onlyFile(t, dir, "MANIFEST-*"), 20, "GARBAGE-GARBAGE")
		}, "MANIFEST-"},
		{"empty MANIFEST", func(t *testing.T, dir string) {
			if err := os.Truncate(onlyFile(t, dir, "MANIFEST-*"), 0); err != nil {
				t.Fatal(err)
			}
		}, "MANIFEST-"},
		{"garbled sstable block", func(t *testing.T, dir string) {
			overwrite(t, onlyFile(t, dir, "*.sst"), 1000, "GARBAGE-GARBAGE")
		}, "0000"},
		{"garbled sstable footer", func(t *testing.T, dir string) {
			overwrite(t, onlyFile(t, dir, "*.sst"), -20, "GARBAGE-GARBAGE")
		}, "0000"},
		{"truncated sstable", func(t *testing.T, dir string) {
			truncateHalf(t, onlyFile(t, dir, "*.sst"))
		}, ".sst"},
		{"missing sstable", func(t *testing.T, dir string) {
			if err := os.Remove(onlyFile(t, dir, "*.sst")); err != nil {
				t.Fatal(err)
			}
		}, "0000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFlushed(t)
			tc.damage(t, dir)
			err := openAndLoad(dir)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), tc.mentions) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("error %q does not name the file", err)
			}
		})
	}
}

func TestCorruptRecords(t *testing.T) {
	cases := []struct {
		name     string
		key      []byte
		value    []byte
		mentions string
	}{
		{"garbage session", appendSessionKey(nil, "dev-7"), []byte("garbage"), `session client="dev-7"`},
		{"truncated entry", appendEntryKey(nil, "dev-7", 42), appendEntry(nil, &Entry{Msg: Message{Topic: "abc"}})[:4], `entry client="dev-7" seq=42`},
		{"inbound with a value", appendInboundKey(nil, "dev-7", 9), []byte{1}, `inbound client="dev-7" packet=9`},
		{"garbage retained", appendRetainedKey(nil, "a/b"), []byte{1, 0xff}, `retained topic="a/b"`},
		{"retained under another topic", appendRetainedKey(nil, "a/b"), appendMessage(nil, &Message{Topic: "a/c"}), `retained topic="a/b"`},
		{"unknown client record", []byte("c\x00dev-7\x00z"), []byte{}, `key "c\x00dev-7\x00z"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, Options{Sync: SyncNone})
			commit(t, s, func(txn *Txn) {
				txn.PutSession(&Session{ClientID: "dev-7"})
				txn.PutEntry("dev-7", &Entry{Seq: 1})
			})
			// Write behind the store's back, as disk rot or a buggy writer would.
			if err := s.db.Set(tc.key, tc.value, nil); err != nil {
				t.Fatal(err)
			}
			err := s.Load(LoadFuncs{
				Session:  func(*Session, []Entry, []uint16) error { return nil },
				Retained: func(*Message) error { return nil },
			})
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.mentions) {
				t.Fatalf("err = %v, want ErrCorrupt naming %s", err, tc.mentions)
			}
		})
	}
}

func TestFormatVersionChecked(t *testing.T) {
	cases := []struct {
		name    string
		value   []byte
		corrupt bool
	}{
		{"garbage", []byte("xx"), true},
		{"newer", []byte{formatVersion + 1}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.db.Set([]byte(metaFormatKey), tc.value, nil); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			_, err = Open(dir, Options{})
			if err == nil || errors.Is(err, ErrCorrupt) != tc.corrupt {
				t.Fatalf("err = %v, corrupt want %v", err, tc.corrupt)
			}
		})
	}
}
