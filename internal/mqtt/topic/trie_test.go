package topic

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

// hit is one reported match, flattened for comparison: key for plain
// subscriptions, or group/filter plus the member keys for shared groups.
type hit struct {
	key     int
	group   string
	filter  string
	members string
}

func trieHits(tr *Trie[int, int], name string) []hit {
	var got []hit
	tr.Match(name, func(k, v int) {
		if k != v {
			panic("value does not follow key")
		}
		got = append(got, hit{key: k})
	}, func(group, filter string, members []Member[int, int]) {
		keys := make([]string, len(members))
		for i, m := range members {
			keys[i] = fmt.Sprint(m.Key)
		}
		got = append(got, hit{key: -1, group: group, filter: filter, members: strings.Join(keys, ",")})
	})
	slices.SortFunc(got, compareHits)
	return got
}

func compareHits(a, b hit) int {
	if c := a.key - b.key; c != 0 {
		return c
	}
	return strings.Compare(a.group+"\x00"+a.filter, b.group+"\x00"+b.filter)
}

// sub is one subscription in a reference model of the trie.
type sub struct {
	filter, group string
	key           int
}

// bruteHits computes what Trie.Match should report using Match alone.
// Shared members are listed in subscription order.
func bruteHits(subs []sub, name string) []hit {
	var got []hit
	groups := map[[2]string]*hit{}
	for _, s := range subs {
		if !Match(s.filter, name) {
			continue
		}
		if s.group == "" {
			got = append(got, hit{key: s.key})
			continue
		}
		h := groups[[2]string{s.group, s.filter}]
		if h == nil {
			h = &hit{key: -1, group: s.group, filter: s.filter}
			groups[[2]string{s.group, s.filter}] = h
			h.members = fmt.Sprint(s.key)
		} else {
			h.members += "," + fmt.Sprint(s.key)
		}
	}
	for _, h := range groups {
		got = append(got, *h)
	}
	slices.SortFunc(got, compareHits)
	return got
}

var levelAlphabet = []string{"a", "b", "c", "", "$s", "+", "#"}

func randomTopic(rng *rand.Rand, wildcards bool) string {
	n := 1 + rng.IntN(4)
	levels := make([]string, n)
	for i := range levels {
		alpha := levelAlphabet[:5]
		if wildcards {
			alpha = levelAlphabet
		}
		levels[i] = alpha[rng.IntN(len(alpha))]
		if levels[i] == "#" && i != n-1 && rng.IntN(4) > 0 {
			levels[i] = "+" // keep most filters valid; some keep an inner "#"
		}
	}
	return strings.Join(levels, "/")
}

// TestTrieMatchesBruteForce cross-checks Trie.Match against Match over all
// filters for random filter and name sets, including shared groups, and
// again after removing a random half of the subscriptions.
func TestTrieMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		tr := NewTrie[int, int]()
		var subs []sub
		for key := range 300 {
			s := sub{filter: randomTopic(rng, true), key: key}
			if rng.IntN(4) == 0 {
				s.group = []string{"g1", "g2"}[rng.IntN(2)]
			}
			if tr.Subscribe(s.filter, s.group, s.key, s.key) {
				t.Fatalf("fresh key %d reported as replaced", key)
			}
			subs = append(subs, s)
		}
		check := func(stage string) {
			t.Helper()
			if tr.Len() != len(subs) {
				t.Fatalf("round %d %s: Len = %d, want %d", round, stage, tr.Len(), len(subs))
			}
			for range 300 {
				name := randomTopic(rng, false)
				got, want := trieHits(tr, name), bruteHits(subs, name)
				if !slices.Equal(got, want) {
					t.Fatalf("round %d %s: name %q\n got %v\nwant %v", round, stage, name, got, want)
				}
			}
		}
		check("full")
		rng.Shuffle(len(subs), func(i, j int) { subs[i], subs[j] = subs[j], subs[i] })
		for _, s := range subs[len(subs)/2:] {
			if !tr.Unsubscribe(s.filter, s.group, s.key) {
				t.Fatalf("Unsubscribe(%q, %q, %d) = false", s.filter, s.group, s.key)
			}
		}
		subs = subs[:len(subs)/2]
		// Restore subscription order for the shared member lists.
		slices.SortFunc(subs, func(a, b sub) int { return a.key - b.key })
		check("half")
		for _, s := range subs {
			tr.Unsubscribe(s.filter, s.group, s.key)
		}
		if tr.Len() != 0 || tr.nodes.Load() != 0 {
			t.Fatalf("round %d: after removing everything Len = %d, nodes = %d", round, tr.Len(), tr.nodes.Load())
		}
	}
}

func TestTrieReplaceAndUnsubscribe(t *testing.T) {
	tr := NewTrie[string, int]()
	steps := []struct {
		op            string // "sub" or "unsub"
		filter, group string
		key           string
		v             int
		want          bool // replaced or found
		wantLen       int
	}{
		{"sub", "a/b", "", "c1", 1, false, 1},
		{"sub", "a/b", "", "c1", 2, true, 1},
		{"sub", "a/b", "", "c2", 1, false, 2},
		{"sub", "a/b", "g", "c1", 5, false, 3}, // shared is a separate subscription
		{"sub", "a/b", "g", "c1", 6, true, 3},
		{"sub", "a/+", "", "c1", 1, false, 4},
		{"unsub", "a/b", "", "c3", 0, false, 4},
		{"unsub", "a/b", "h", "c1", 0, false, 4},
		{"unsub", "a/c", "", "c1", 0, false, 4},
		{"unsub", "a/b/c", "", "c1", 0, false, 4},
		{"unsub", "a/b", "", "c1", 0, true, 3},
		{"unsub", "a/b", "", "c1", 0, false, 3},
		{"unsub", "a/b", "g", "c1", 0, true, 2},
		{"unsub", "a/b", "", "c2", 0, true, 1},
		{"unsub", "a/+", "", "c1", 0, true, 0},
	}
	for i, s := range steps {
		var got bool
		if s.op == "sub" {
			got = tr.Subscribe(s.filter, s.group, s.key, s.v)
		} else {
			got = tr.Unsubscribe(s.filter, s.group, s.key)
		}
		if got != s.want || tr.Len() != s.wantLen {
			t.Fatalf("step %d %s(%q, %q, %q) = %v, Len %d; want %v, Len %d", i, s.op, s.filter, s.group, s.key, got, tr.Len(), s.want, s.wantLen)
		}
		if i == 4 {
			values := map[string]int{}
			tr.Match("a/b", func(k string, v int) { values["plain:"+k] = v },
				func(g, f string, ms []Member[string, int]) {
					for _, m := range ms {
						values[g+":"+m.Key] = m.Value
					}
				})
			want := map[string]int{"plain:c1": 2, "plain:c2": 1, "g:c1": 6}
			if fmt.Sprint(values) != fmt.Sprint(want) {
				t.Fatalf("after replace got %v, want %v", values, want)
			}
		}
	}
	if n := tr.nodes.Load(); n != 0 {
		t.Fatalf("%d nodes left after removing everything", n)
	}
}

func TestTrieSharedOrder(t *testing.T) {
	tr := NewTrie[string, int]()
	members := func() string {
		var got []string
		calls := 0
		tr.Match("s/x", nil, func(g, f string, ms []Member[string, int]) {
			calls++
			if g != "grp" || f != "s/+" {
				t.Errorf("group %q filter %q", g, f)
			}
			for _, m := range ms {
				got = append(got, fmt.Sprintf("%s=%d", m.Key, m.Value))
			}
		})
		if calls > 1 {
			t.Errorf("fnShared called %d times for one group", calls)
		}
		return strings.Join(got, " ")
	}
	for i, k := range []string{"c", "a", "d", "b"} {
		tr.Subscribe("s/+", "grp", k, i)
	}
	if got := members(); got != "c=0 a=1 d=2 b=3" {
		t.Fatalf("insertion order: %s", got)
	}
	tr.Subscribe("s/+", "grp", "a", 9)
	if got := members(); got != "c=0 a=9 d=2 b=3" {
		t.Fatalf("replace must keep position: %s", got)
	}
	tr.Unsubscribe("s/+", "grp", "d")
	tr.Subscribe("s/+", "grp", "e", 4)
	if got := members(); got != "c=0 a=9 b=3 e=4" {
		t.Fatalf("after unsubscribe: %s", got)
	}

	// A slice handed to fnShared is a snapshot: later changes do not alter it.
	var held []Member[string, int]
	tr.Match("s/x", nil, func(_, _ string, ms []Member[string, int]) { held = ms })
	tr.Subscribe("s/+", "grp", "c", 100)
	tr.Unsubscribe("s/+", "grp", "b")
	if fmt.Sprint(held) != "[{c 0} {a 9} {b 3} {e 4}]" {
		t.Fatalf("snapshot changed: %v", held)
	}
	for _, k := range []string{"c", "a", "e"} {
		tr.Unsubscribe("s/+", "grp", k)
	}
	if got := members(); got != "" || tr.Len() != 0 || tr.nodes.Load() != 0 {
		t.Fatalf("after emptying: %q, Len %d, nodes %d", got, tr.Len(), tr.nodes.Load())
	}
}

// TestTrieLargeFanout crosses the small-slice thresholds for children and
// subscribers in both directions.
func TestTrieLargeFanout(t *testing.T) {
	tr := NewTrie[int, int]()
	const n = 100
	for i := range n {
		tr.Subscribe("fan/out", "", i, i)
		tr.Subscribe(fmt.Sprintf("kid/%d", i), "", i, i)
	}
	for round := range 2 {
		for i := round; i < n; i += 1 + round {
			if got := trieHits(tr, fmt.Sprintf("kid/%d", i)); len(got) != 1 || got[0].key != i {
				t.Fatalf("round %d kid/%d: %v", round, i, got)
			}
		}
		got := trieHits(tr, "fan/out")
		if len(got) != tr.Len()/2 {
			t.Fatalf("round %d fan/out: %d hits, want %d", round, len(got), tr.Len()/2)
		}
		for i, h := range got {
			if want := i + round*(i+1); h.key != want { // all keys, then the odd ones
				t.Fatalf("round %d: hit %d is key %d", round, i, h.key)
			}
		}
		// Remove every other key, then the rest in the next round.
		for i := round; i < n; i += 2 {
			tr.Unsubscribe("fan/out", "", i)
			tr.Unsubscribe(fmt.Sprintf("kid/%d", i), "", i)
		}
	}
	if tr.Len() != 0 || tr.nodes.Load() != 0 {
		t.Fatalf("Len %d, nodes %d", tr.Len(), tr.nodes.Load())
	}
}

// TestTrieReentrant checks that callbacks may modify the trie.
func TestTrieReentrant(t *testing.T) {
	tr := NewTrie[int, int]()
	tr.Subscribe("a/b", "", 1, 1)
	tr.Subscribe("a/+", "g", 2, 2)
	tr.Match("a/b", func(k, _ int) {
		tr.Unsubscribe("a/b", "", k)
		tr.Subscribe("a/b/c", "", k, k)
	}, func(_, f string, ms []Member[int, int]) {
		tr.Unsubscribe(f, "g", ms[0].Key)
	})
	if got := trieHits(tr, "a/b/c"); len(got) != 1 || tr.Len() != 1 {
		t.Fatalf("got %v, Len %d", got, tr.Len())
	}
}

// TestTrieConcurrent races subscribers, unsubscribers and matchers on
// overlapping filters so nodes are constantly created and pruned. Each
// worker owns its keys, so after its own Subscribe returns a Match must see
// the subscription: that catches a subscribe lost to a racing prune.
func TestTrieConcurrent(t *testing.T) {
	tr := NewTrie[int, int]()
	filters := []string{"a", "a/b", "a/b/c", "a/+/c", "a/#", "+/b", "#", "a/b/c/d", "x/y"}
	names := []string{"a", "a/b", "a/b/c", "a/x/c", "a/b/c/d", "x/y", "q"}
	tr.Subscribe("a/b/c", "", -1, -1) // stable throughout
	const workers, iters = 6, 5000
	var wg sync.WaitGroup
	errs := make(chan string, workers)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range iters {
				f := filters[rng.IntN(len(filters))]
				group := ""
				if rng.IntN(3) == 0 {
					group = "g"
				}
				key := w*iters + i
				tr.Subscribe(f, group, key, key)
				name := names[rng.IntN(len(names))]
				seen, stable, want := false, false, Match(f, name)
				tr.Match(name, func(k, _ int) {
					seen = seen || k == key
					stable = stable || k == -1
				}, func(_, _ string, ms []Member[int, int]) {
					for _, m := range ms {
						seen = seen || m.Key == key
					}
				})
				if seen != want || stable != Match("a/b/c", name) {
					errs <- fmt.Sprintf("worker %d: after Subscribe(%q) Match(%q) saw own=%v stable=%v", w, f, name, seen, stable)
					return
				}
				if !tr.Unsubscribe(f, group, key) {
					errs <- fmt.Sprintf("worker %d: lost subscription %q", w, f)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	tr.Unsubscribe("a/b/c", "", -1)
	if tr.Len() != 0 || tr.nodes.Load() != 0 {
		t.Fatalf("Len %d, nodes %d after all unsubscribes", tr.Len(), tr.nodes.Load())
	}
}

func TestTrieMatchNoAlloc(t *testing.T) {
	tr := NewTrie[int, int]()
	for i := range 1000 {
		tr.Subscribe(fmt.Sprintf("dev/%d/temp", i), "", i, i)
		tr.Subscribe(fmt.Sprintf("dev/%d/+", i), "g", i, i)
	}
	tr.Subscribe("dev/#", "", -1, 0)
	var n int
	fn := func(int, int) { n++ }
	fs := func(_, _ string, ms []Member[int, int]) { n += len(ms) }
	allocs := testing.AllocsPerRun(200, func() {
		tr.Match("dev/42/temp", fn, fs)
		tr.Match("dev/7/humidity", fn, fs)
		tr.Match("other", fn, fs)
	})
	if n == 0 {
		t.Fatal("nothing matched")
	}
	// sync.Pool deliberately drops items under the race detector, so the
	// zero-allocation guarantee only holds in normal builds.
	if allocs != 0 && !raceEnabled {
		t.Fatalf("Trie.Match allocated %.2f times per run", allocs)
	}
	t.Logf("allocs per run: %.2f (race=%v)", allocs, raceEnabled)
}

// TestTriePruneRace deterministically runs a prune in the window between a
// writer finding a node and locking it, for each place that can happen.
func TestTriePruneRace(t *testing.T) {
	tests := []struct {
		name        string
		existing    string // filter of the subscription removed by the hook
		op          string
		filter      string
		wantFound   bool
		wantMatched bool
	}{
		// Subscribe's leaf is pruned before it is locked.
		{"subscribe-leaf", "a/b", "sub", "a/b", false, true},
		// A node Subscribe wants to add a child to is pruned.
		{"subscribe-parent", "a", "sub", "a/b/c", false, true},
		{"subscribe-wildcard", "a/+", "sub", "a/+", false, true},
		// Unsubscribe finds a node that is then pruned and the key re-added
		// under a fresh path by the hook.
		{"unsubscribe-readded", "a/b", "unsub", "a/b", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTrie[string, int]()
			tr.Subscribe(tt.existing, "", "old", 0)
			if tt.op == "unsub" {
				tr.Subscribe(tt.filter, "", "me", 1)
			}
			tr.testHook = func() {
				tr.testHook = nil // fire once
				tr.Unsubscribe(tt.existing, "", "old")
				if tt.op == "unsub" {
					// Removing "me" and adding it again prunes the node our
					// Unsubscribe already found and builds a new one.
					tr.Unsubscribe(tt.filter, "", "me")
					tr.Subscribe(tt.filter, "", "me", 2)
				}
			}
			var got bool
			if tt.op == "sub" {
				got = tr.Subscribe(tt.filter, "", "me", 1)
			} else {
				got = tr.Unsubscribe(tt.filter, "", "me")
			}
			if tr.testHook != nil {
				t.Fatal("hook never ran")
			}
			if got != tt.wantFound {
				t.Fatalf("%s returned %v, want %v", tt.op, got, tt.wantFound)
			}
			matched := false
			name := strings.ReplaceAll(tt.filter, "+", "x")
			tr.Match(name, func(k string, _ int) { matched = matched || k == "me" }, nil)
			if matched != tt.wantMatched {
				t.Fatalf("Match(%q) saw the subscription: %v, want %v", name, matched, tt.wantMatched)
			}
			wantLen := 0
			if tt.wantMatched {
				wantLen = 1
			}
			if tr.Len() != wantLen {
				t.Fatalf("Len %d, want %d", tr.Len(), wantLen)
			}
			tr.Unsubscribe(tt.filter, "", "me")
			if tr.Len() != 0 || tr.nodes.Load() != 0 {
				t.Fatalf("Len %d, nodes %d after cleanup", tr.Len(), tr.nodes.Load())
			}
		})
	}
}
