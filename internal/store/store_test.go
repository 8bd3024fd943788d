package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"
)

// openStore opens a store in dir and closes it when the test ends unless
// the test closed it first.
func openStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func commit(t testing.TB, s *Store, build func(*Txn)) {
	t.Helper()
	txn := s.NewTxn()
	build(txn)
	if err := s.CommitSync(txn); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

type loaded struct {
	sessions map[string]*Session
	entries  map[string][]Entry
	inbound  map[string][]uint16
	retained map[string]*Message
}

func loadAll(t testing.TB, s *Store) loaded {
	t.Helper()
	l := loaded{map[string]*Session{}, map[string][]Entry{}, map[string][]uint16{}, map[string]*Message{}}
	err := s.Load(LoadFuncs{
		Session: func(ss *Session, es []Entry, in []uint16) error {
			if _, dup := l.sessions[ss.ClientID]; dup {
				return fmt.Errorf("session %q twice", ss.ClientID)
			}
			l.sessions[ss.ClientID] = ss
			l.entries[ss.ClientID] = es
			l.inbound[ss.ClientID] = in
			return nil
		},
		Retained: func(m *Message) error { l.retained[m.Topic] = m; return nil },
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return l
}

func TestPersistAndLoad(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	will := Message{Topic: "dev/1/status", Payload: []byte("offline"), QoS: 1, Retain: true}
	sessions := []*Session{
		{ClientID: "dev-1", Version: 5, Expiry: time.Hour, DisconnectedAt: 42,
			Subs: []Subscription{{Filter: "cmd/dev-1/#", QoS: 1, ID: 7}}, Will: &will, WillDelay: time.Second},
		{ClientID: "dev-10", Version: 4},
		{ClientID: "dev", Version: 4, Expiry: time.Minute},
	}
	entries := map[string][]Entry{
		"dev-1": {
			{Seq: 1, Msg: Message{Topic: "cmd/dev-1/reboot", Payload: []byte("now"), QoS: 1, Origin: "ops"}, QoS: 1, PacketID: 11, SubIDs: []uint32{7}},
			{Seq: 2, Msg: Message{Topic: "cmd/dev-1/x", QoS: 2}, QoS: 2, PacketID: 12, Released: true},
			{Seq: 300, Msg: Message{Topic: "cmd/dev-1/y", Payload: []byte{0, 1, 2}, QoS: 1, Expiry: 99}, QoS: 1},
		},
		"dev": {{Seq: 1 << 40, Msg: Message{Topic: "t", QoS: 1}, QoS: 1, SharedGroup: "g", SharedFilter: "t"}},
	}
	commit(t, s, func(txn *Txn) {
		for _, ss := range sessions {
			txn.PutSession(ss)
		}
		// Insert out of order: the key, not the write order, sets Seq order.
		for cid, es := range entries {
			for i := len(es) - 1; i >= 0; i-- {
				txn.PutEntry(cid, &es[i])
			}
		}
		txn.PutInbound("dev-10", 9)
		txn.PutInbound("dev-10", 1)
		txn.PutInbound("dev-10", 65535)
		txn.PutRetained(&Message{Topic: "dev/1/status", Payload: []byte("online"), QoS: 1, Retain: true})
		txn.PutRetained(&Message{Topic: "b", Payload: []byte("x")})
		txn.PutKV("state", []byte("k1"), []byte("v1"))
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{})
	l := loadAll(t, s)
	if len(l.sessions) != len(sessions) {
		t.Fatalf("loaded %d sessions, want %d", len(l.sessions), len(sessions))
	}
	for _, want := range sessions {
		got := l.sessions[want.ClientID]
		w := *want
		if w.Will != nil {
			nw := normMsg(*w.Will)
			w.Will = &nw
		}
		if !reflect.DeepEqual(got, &w) {
			t.Errorf("session %q = %+v, want %+v", want.ClientID, got, w)
		}
		wantEntries := entries[want.ClientID]
		if len(l.entries[want.ClientID]) != len(wantEntries) {
			t.Fatalf("session %q: %d entries, want %d", want.ClientID, len(l.entries[want.ClientID]), len(wantEntries))
		}
		for i, e := range l.entries[want.ClientID] {
			we := wantEntries[i]
			we.Msg = normMsg(we.Msg)
			if !reflect.DeepEqual(e, we) {
				t.Errorf("entry %d of %q = %+v, want %+v", i, want.ClientID, e, we)
			}
		}
	}
	if got := l.inbound["dev-10"]; !reflect.DeepEqual(got, []uint16{1, 9, 65535}) {
		t.Errorf("inbound = %v", got)
	}
	if len(l.retained) != 2 || string(l.retained["dev/1/status"].Payload) != "online" {
		t.Errorf("retained = %+v", l.retained)
	}
	if v, ok, err := s.GetKV("state", []byte("k1")); err != nil || !ok || string(v) != "v1" {
		t.Errorf("GetKV = %q %v %v", v, ok, err)
	}
}

func TestDeleteSession(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Sync: SyncNone})
	for _, cid := range []string{"a", "ab", "a\x01"} {
		commit(t, s, func(txn *Txn) {
			txn.PutSession(&Session{ClientID: cid, Version: 5})
			for seq := uint64(1); seq <= 50; seq++ {
				txn.PutEntry(cid, &Entry{Seq: seq, Msg: Message{Topic: "t"}})
			}
			txn.PutInbound(cid, 3)
		})
	}
	commit(t, s, func(txn *Txn) { txn.DeleteSession("a") })
	l := loadAll(t, s)
	if _, ok := l.sessions["a"]; ok {
		t.Fatal("session a survived DeleteSession")
	}
	for _, cid := range []string{"ab", "a\x01"} {
		if len(l.entries[cid]) != 50 || len(l.inbound[cid]) != 1 {
			t.Fatalf("neighbour %q lost data: %d entries %d inbound", cid, len(l.entries[cid]), len(l.inbound[cid]))
		}
	}

	// Clean start in one Txn: the later PutSession and PutEntry survive the
	// range deletion before them.
	commit(t, s, func(txn *Txn) {
		txn.DeleteSession("ab")
		txn.PutSession(&Session{ClientID: "ab", Version: 4})
		txn.PutEntry("ab", &Entry{Seq: 1000, Msg: Message{Topic: "new"}})
	})
	l = loadAll(t, s)
	if ss := l.sessions["ab"]; ss == nil || ss.Version != 4 || len(l.entries["ab"]) != 1 || l.entries["ab"][0].Seq != 1000 || len(l.inbound["ab"]) != 0 {
		t.Fatalf("clean start: session %+v entries %+v inbound %v", ss, l.entries["ab"], l.inbound["ab"])
	}
}

func TestDeletesAndOrphans(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Sync: SyncNone})
	commit(t, s, func(txn *Txn) {
		txn.PutSession(&Session{ClientID: "c"})
		txn.PutEntry("c", &Entry{Seq: 1, Msg: Message{Topic: "x"}})
		txn.PutEntry("c", &Entry{Seq: 2, Msg: Message{Topic: "y"}})
		txn.PutInbound("c", 5)
		txn.PutRetained(&Message{Topic: "r1"})
		txn.PutRetained(&Message{Topic: "r2"})
		// Orphans: no session record for "ghost".
		txn.PutEntry("ghost", &Entry{Seq: 1, Msg: Message{Topic: "x"}})
		txn.PutInbound("ghost", 1)
	})
	commit(t, s, func(txn *Txn) {
		txn.DeleteEntry("c", 1)
		txn.DeleteInbound("c", 5)
		txn.DeleteRetained("r1")
		txn.DeleteRetained("never-there")
	})
	l := loadAll(t, s)
	if len(l.sessions) != 1 || len(l.entries["c"]) != 1 || l.entries["c"][0].Seq != 2 || len(l.inbound["c"]) != 0 {
		t.Fatalf("after deletes: %+v", l)
	}
	if len(l.retained) != 1 || l.retained["r2"] == nil {
		t.Fatalf("retained after delete: %+v", l.retained)
	}
}

func TestInvalidTxnRefused(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Sync: SyncNone})
	cases := []struct {
		name  string
		build func(*Txn)
	}{
		{"nul client id", func(txn *Txn) { txn.PutSession(&Session{ClientID: "a\x00b"}) }},
		{"nul in entry client", func(txn *Txn) { txn.PutEntry("\x00", &Entry{Seq: 1}) }},
		{"nul in delete", func(txn *Txn) { txn.DeleteSession("x\x00") }},
		{"nul bucket", func(txn *Txn) { txn.PutKV("b\x00", []byte("k"), nil) }},
		{"qos 3 entry", func(txn *Txn) { txn.PutEntry("c", &Entry{Seq: 1, QoS: 3}) }},
		{"qos 3 message", func(txn *Txn) { txn.PutRetained(&Message{Topic: "t", QoS: 3}) }},
		{"retain handling 3", func(txn *Txn) {
			txn.PutSession(&Session{ClientID: "c", Subs: []Subscription{{Filter: "f", RetainHandling: 3}}})
		}},
		{"qos 3 will", func(txn *Txn) { txn.PutSession(&Session{ClientID: "c", Will: &Message{QoS: 3}}) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			txn := s.NewTxn()
			txn.PutRetained(&Message{Topic: "must-not-appear"})
			tc.build(txn)
			if err := s.CommitSync(txn); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	if l := loadAll(t, s); len(l.retained) != 0 || len(l.sessions) != 0 {
		t.Fatalf("refused txns wrote data: %+v", l)
	}
	if m := s.Metrics(); m.Rejected != uint64(len(cases)) {
		t.Fatalf("rejected = %d, want %d", m.Rejected, len(cases))
	}
}

func TestClosed(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Commits queued before Close are completed by it.
	var wg sync.WaitGroup
	results := make([]error, 100)
	for i := range results {
		wg.Add(1)
		txn := s.NewTxn()
		txn.PutKV("b", []byte{byte(i)}, []byte("v"))
		s.Commit(txn, func(err error) { results[i] = err; wg.Done() })
	}
	txn := s.NewTxn()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range results {
		if err != nil {
			t.Fatalf("commit %d before close: %v", i, err)
		}
	}
	txn.PutKV("b", []byte("late"), nil)
	if err := s.CommitSync(txn); !errors.Is(err, ErrClosed) {
		t.Fatalf("commit after close: %v", err)
	}
	txn = s.NewTxn()
	txn.PutKV("b", []byte("later"), nil)
	got := make(chan error, 1)
	s.Commit(txn, func(err error) { got <- err })
	if err := <-got; !errors.Is(err, ErrClosed) {
		t.Fatalf("async commit after close: %v", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	if err := s.Load(LoadFuncs{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("load after close: %v", err)
	}
	if _, _, err := s.GetKV("b", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetKV after close: %v", err)
	}
	if err := s.ScanKV("b", nil, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("ScanKV after close: %v", err)
	}
	if err := s.Compact(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Compact after close: %v", err)
	}
	if s.Usage() <= 0 {
		t.Fatal("Usage after close")
	}
}

// TestConcurrentCommitOrder checks that callbacks of one goroutine's
// Commits run in the order of the calls and that all land, under every
// sync policy.
func TestConcurrentCommitOrder(t *testing.T) {
	for _, pol := range []SyncPolicy{SyncAlways, SyncBatch, SyncNone} {
		t.Run(string(pol), func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, Options{Sync: pol, QueueSize: 64})
			const writers, per = 8, 200
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cid := fmt.Sprintf("w%d", w)
					next := uint64(1)
					var mu sync.Mutex
					var cbs sync.WaitGroup
					for seq := uint64(1); seq <= per; seq++ {
						txn := s.NewTxn()
						if seq == 1 {
							txn.PutSession(&Session{ClientID: cid})
						}
						txn.PutEntry(cid, &Entry{Seq: seq, Msg: Message{Topic: "t", Payload: []byte(cid)}})
						cbs.Add(1)
						s.Commit(txn, func(err error) {
							defer cbs.Done()
							mu.Lock()
							defer mu.Unlock()
							if err != nil || next != seq {
								errs <- fmt.Errorf("%s: callback for %d with %v, expected %d", cid, seq, err, next)
							}
							next++
						})
					}
					cbs.Wait()
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			m := s.Metrics()
			if m.Commits != writers*per || m.Batches == 0 || m.Batches > m.Commits {
				t.Fatalf("metrics %+v", m)
			}
			if (pol == SyncNone) != (m.Syncs == 0) {
				t.Fatalf("policy %s: %d syncs", pol, m.Syncs)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, dir, Options{Sync: pol})
			l := loadAll(t, s)
			for w := range writers {
				if n := len(l.entries[fmt.Sprintf("w%d", w)]); n != per {
					t.Fatalf("writer %d: %d entries after reopen", w, n)
				}
			}
		})
	}
}

func TestKV(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Sync: SyncNone})
	commit(t, s, func(txn *Txn) {
		txn.PutKV("b", []byte("a1"), []byte("1"))
		txn.PutKV("b", []byte("a2"), []byte("2"))
		txn.PutKV("b", []byte("b1"), nil)
		txn.PutKV("b", []byte("\xff\xff"), []byte("ff"))
		txn.PutKV("bb", []byte("a1"), []byte("other bucket"))
		txn.PutKV("", []byte("k"), []byte("empty bucket"))
	})
	scan := func(bucket, prefix string) string {
		var out bytes.Buffer
		err := s.ScanKV(bucket, []byte(prefix), func(k, v []byte) bool {
			fmt.Fprintf(&out, "%s=%s;", k, v)
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	cases := []struct{ bucket, prefix, want string }{
		{"b", "", "a1=1;a2=2;b1=;\xff\xff=ff;"},
		{"b", "a", "a1=1;a2=2;"},
		{"b", "\xff", "\xff\xff=ff;"},
		{"bb", "", "a1=other bucket;"},
		{"", "", "k=empty bucket;"},
		{"none", "", ""},
	}
	for _, tc := range cases {
		if got := scan(tc.bucket, tc.prefix); got != tc.want {
			t.Errorf("scan(%q, %q) = %q, want %q", tc.bucket, tc.prefix, got, tc.want)
		}
	}
	n := 0
	_ = s.ScanKV("b", nil, func(k, v []byte) bool { n++; return n < 2 })
	if n != 2 {
		t.Errorf("scan did not stop: %d calls", n)
	}
	if v, ok, err := s.GetKV("b", []byte("b1")); err != nil || !ok || v == nil || len(v) != 0 {
		t.Errorf("GetKV(empty value) = %q %v %v", v, ok, err)
	}
	commit(t, s, func(txn *Txn) { txn.DeleteKV("b", []byte("a1")) })
	if _, ok, err := s.GetKV("b", []byte("a1")); ok || err != nil {
		t.Errorf("GetKV after delete = %v %v", ok, err)
	}
	if _, _, err := s.GetKV("b\x00", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("GetKV with NUL bucket: %v", err)
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{{Sync: "sometimes"}, {QuotaBytes: -1}} {
		if _, err := Open(t.TempDir(), o); err == nil {
			t.Errorf("Open(%+v) succeeded", o)
		}
	}
}

func TestCommitAllocations(t *testing.T) {
	if raceEnabled {
		t.Log("allocation counts are not meaningful under the race detector")
		return
	}
	s := openStore(t, t.TempDir(), Options{Sync: SyncNone})
	e := &Entry{Seq: 1, Msg: Message{Topic: "a/b", Payload: make([]byte, 64), QoS: 1}, QoS: 1}
	// Warm the pools.
	for range 10 {
		txn := s.NewTxn()
		txn.PutEntry("c", e)
		_ = s.CommitSync(txn)
	}
	allocs := testing.AllocsPerRun(200, func() {
		e.Seq++
		txn := s.NewTxn()
		txn.PutEntry("c", e)
		if err := s.CommitSync(txn); err != nil {
			t.Fatal(err)
		}
	})
	// Pebble may allocate inside its commit pipeline now and then; the store
	// itself adds nothing per operation.
	if allocs > 1 {
		t.Fatalf("%.1f allocations per committed txn", allocs)
	}
}
