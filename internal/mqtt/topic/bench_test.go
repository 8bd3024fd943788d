package topic

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
)

const benchSubs = 10000

// exactTrie has one literal filter per device.
func exactTrie() *Trie[int, int] {
	tr := NewTrie[int, int]()
	for i := range benchSubs {
		tr.Subscribe(fmt.Sprintf("dev/%d/temp", i), "", i, i)
	}
	return tr
}

// wildcardTrie mixes literal, '+' and '#' filters plus a few broad ones, so
// a publish walks several branches.
func wildcardTrie() *Trie[int, int] {
	tr := NewTrie[int, int]()
	for i := range benchSubs {
		var f string
		switch i % 4 {
		case 0:
			f = fmt.Sprintf("dev/%d/temp", i/4)
		case 1:
			f = fmt.Sprintf("dev/%d/+", i/4)
		case 2:
			f = fmt.Sprintf("dev/%d/#", i/4)
		case 3:
			f = fmt.Sprintf("+/%d/temp", i/4)
		}
		tr.Subscribe(f, "", i, i)
	}
	tr.Subscribe("dev/+/temp", "", -1, 0)
	tr.Subscribe("#", "", -2, 0)
	tr.Subscribe("dev/+/+", "workers", -3, 0)
	tr.Subscribe("dev/+/+", "workers", -4, 0)
	return tr
}

func BenchmarkTrieMatch(b *testing.B) {
	fanout := NewTrie[int, int]()
	for i := range 1000 {
		fanout.Subscribe("cmd/all", "", i, i)
	}
	cases := []struct {
		name  string
		tr    *Trie[int, int]
		topic string
		hits  int
	}{
		{"exact", exactTrie(), "dev/1234/temp", 1},
		{"exact-miss", exactTrie(), "dev/1234/humidity", 0},
		{"wildcard", wildcardTrie(), "dev/1234/temp", 7},
		{"fanout1000", fanout, "cmd/all", 1000},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var n int
			fn := func(int, int) { n++ }
			fs := func(_, _ string, ms []Member[int, int]) { n++ }
			b.ReportAllocs()
			for b.Loop() {
				n = 0
				c.tr.Match(c.topic, fn, fs)
			}
			if n != c.hits {
				b.Fatalf("%d hits, want %d", n, c.hits)
			}
		})
	}
}

func BenchmarkTrieMatchParallel(b *testing.B) {
	tr := wildcardTrie()
	names := make([]string, 256)
	for i := range names {
		names[i] = fmt.Sprintf("dev/%d/temp", i*7%(benchSubs/4))
	}
	var total atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var n int64
		fn := func(int, int) { n++ }
		fs := func(_, _ string, ms []Member[int, int]) { n++ }
		for i := 0; pb.Next(); i++ {
			tr.Match(names[i%len(names)], fn, fs)
		}
		total.Add(n)
	})
	if total.Load() == 0 {
		b.Fatal("nothing matched")
	}
}

func BenchmarkSubscribe(b *testing.B) {
	filters := make([]string, 1024)
	for i := range filters {
		filters[i] = fmt.Sprintf("client/%d/cmd/+", i)
	}
	b.Run("subscribe-unsubscribe", func(b *testing.B) {
		// Each iteration creates two nodes under a populated trie and prunes
		// them again.
		tr := exactTrie()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			f := filters[i%len(filters)]
			tr.Subscribe(f, "", i, i)
			tr.Unsubscribe(f, "", i)
			i++
		}
	})
	b.Run("replace", func(b *testing.B) {
		tr := exactTrie()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			tr.Subscribe("dev/42/temp", "", 42, i)
			i++
		}
	})
	b.Run("shared-join", func(b *testing.B) {
		tr := exactTrie()
		for i := range 16 {
			tr.Subscribe("jobs/+", "workers", i, i)
		}
		b.ReportAllocs()
		for b.Loop() {
			tr.Subscribe("jobs/+", "workers", 100, 0)
			tr.Unsubscribe("jobs/+", "workers", 100)
		}
	})
}

// BenchmarkSubscriptionMemory reports the heap cost of one idle client's
// typical subscription, "client/{id}/cmd", including the nodes it creates.
func BenchmarkSubscriptionMemory(b *testing.B) {
	filters := make([]string, benchSubs)
	for i := range filters {
		filters[i] = fmt.Sprintf("client/%08d/cmd", i)
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tr := NewTrie[int, int]()
		for i, f := range filters {
			tr.Subscribe(f, "", i, i)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/benchSubs, "B/sub")
		runtime.KeepAlive(tr)
	}
}

func BenchmarkRetained(b *testing.B) {
	r := NewRetained[int]()
	for i := range benchSubs {
		r.Set(fmt.Sprintf("dev/%d/temp", i), i)
	}
	b.Run("set-replace", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Set("dev/42/temp", 1)
		}
	})
	b.Run("match-exact", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Match("dev/42/temp", func(string, int) bool { return true })
		}
	})
	b.Run("match-plus-10k", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Match("dev/+/temp", func(string, int) bool { return true })
		}
	})
}
