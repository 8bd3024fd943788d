package store

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	loadEntries  = flag.Int("store.loadn", 100_000, "entries written for BenchmarkLoad")
	loadSessions = flag.Int("store.loadsessions", 1000, "sessions the BenchmarkLoad entries are spread over")
)

// BenchmarkCommitBatch commits one 64-byte-payload entry per Txn from 64
// goroutines. "sync" waits for each Txn (CommitSync); "async" keeps up to
// 16 Txns per goroutine in flight, the way a broker acks QoS 1 publishes
// from the callback while it reads the next packet.
func BenchmarkCommitBatch(b *testing.B) {
	for _, pol := range []SyncPolicy{SyncBatch, SyncAlways, SyncNone} {
		for _, mode := range []string{"sync", "async"} {
			b.Run(fmt.Sprintf("%s/%s", pol, mode), func(b *testing.B) {
				benchCommit(b, Options{Sync: pol}, mode == "async")
			})
		}
	}
}

func benchCommit(b *testing.B, opts Options, async bool) {
	s := openStore(b, b.TempDir(), opts)
	payload := randomBytes(64)
	var ids atomic.Int64
	b.SetParallelism(32) // 64 goroutines on this 2-core machine
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		cid := fmt.Sprintf("client-%d", ids.Add(1))
		e := Entry{Msg: Message{Topic: "sensors/dev/temp", Payload: payload, QoS: 1, Origin: cid}, QoS: 1}
		var inflight sync.WaitGroup
		sem := make(chan struct{}, 16)
		done := func(err error) {
			if err != nil {
				b.Error(err)
			}
			<-sem
			inflight.Done()
		}
		for pb.Next() {
			e.Seq++
			txn := s.NewTxn()
			txn.PutEntry(cid, &e)
			if !async {
				if err := s.CommitSync(txn); err != nil {
					b.Error(err)
				}
				continue
			}
			sem <- struct{}{}
			inflight.Add(1)
			s.Commit(txn, done)
		}
		inflight.Wait()
	})
	b.StopTimer()
	m := s.Metrics()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(m.AvgBatchTxns, "txns/batch")
}

// BenchmarkLatency is one goroutine committing and waiting: the latency a
// lone publisher sees under each policy and linger setting.
func BenchmarkLatency(b *testing.B) {
	cases := []struct {
		name string
		opts Options
	}{
		{"batch", Options{Sync: SyncBatch}},
		{"batch-nolinger", Options{Sync: SyncBatch, BatchInterval: -1}},
		{"always", Options{Sync: SyncAlways}},
		{"none", Options{Sync: SyncNone}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			s := openStore(b, b.TempDir(), tc.opts)
			e := Entry{Msg: Message{Topic: "t", Payload: randomBytes(64)}}
			for b.Loop() {
				e.Seq++
				txn := s.NewTxn()
				txn.PutEntry("c", &e)
				if err := s.CommitSync(txn); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoad measures recovery: Open (WAL replay included) plus a full
// Load of -store.loadn entries spread over -store.loadsessions sessions.
// Run it by hand for big N, e.g. -store.loadn=1000000 -benchtime=1x.
func BenchmarkLoad(b *testing.B) {
	n, sessions := *loadEntries, *loadSessions
	dir := b.TempDir()
	s, err := Open(dir, Options{Sync: SyncNone})
	if err != nil {
		b.Fatal(err)
	}
	// A fresh random payload per entry: a repeated one would compress away
	// and flatter the bytes-per-entry figure.
	rng := rand.New(rand.NewPCG(1, 2))
	payload := make([]byte, 64)
	per := n / sessions
	const chunk = 10_000
	txn := s.NewTxn()
	for i := range sessions {
		cid := fmt.Sprintf("device-%06d", i)
		txn.PutSession(&Session{ClientID: cid, Version: 5, Expiry: time.Hour,
			Subs: []Subscription{{Filter: "cmd/" + cid + "/#", QoS: 1}}})
		for seq := range uint64(per) {
			for i := range payload {
				payload[i] = byte(rng.Uint32())
			}
			txn.PutEntry(cid, &Entry{Seq: seq + 1, QoS: 1, Msg: Message{
				Topic: "sensors/" + fmt.Sprint(seq%16) + "/temp", Payload: payload, QoS: 1, Origin: "gateway-1"}})
			if txn.Len() >= chunk {
				if err := s.CommitSync(txn); err != nil {
					b.Fatal(err)
				}
				txn = s.NewTxn()
			}
		}
	}
	if err := s.CommitSync(txn); err != nil {
		b.Fatal(err)
	}
	if err := s.Compact(context.Background()); err != nil {
		b.Fatal(err)
	}
	live := s.db.Metrics().Table.Local.LiveSize
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	total := per * sessions
	b.ResetTimer()
	for b.Loop() {
		s, err := Open(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		err = s.Load(LoadFuncs{Session: func(_ *Session, es []Entry, _ []uint16) error {
			got += len(es)
			return nil
		}})
		if err != nil {
			b.Fatal(err)
		}
		if got != total {
			b.Fatalf("loaded %d entries, want %d", got, total)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(total)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	// Disk cost of an entry after compaction: key, value, Pebble overhead.
	b.ReportMetric(float64(live)/float64(total), "sst-B/entry")
	b.ReportMetric(float64(len(appendEntry(nil, &Entry{QoS: 1, Msg: Message{Topic: "sensors/1/temp", Payload: payload, QoS: 1, Origin: "gateway-1"}}))), "value-B/entry")
}

// BenchmarkReserveCost compares commits with the free-space reserve (the
// default: a statfs per measurement) and without it.
func BenchmarkReserveCost(b *testing.B) {
	b.Run("reserve-off", func(b *testing.B) { benchCommit(b, Options{Sync: SyncNone, ReserveBytes: -1}, true) })
	b.Run("reserve-on", func(b *testing.B) { benchCommit(b, Options{Sync: SyncNone}, true) })
}
