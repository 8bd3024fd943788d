package topic

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

func retainedNames(r *Retained[int], filter string) []string {
	var got []string
	r.Match(filter, func(name string, v int) bool {
		got = append(got, fmt.Sprintf("%s=%d", name, v))
		return true
	})
	slices.Sort(got)
	return got
}

func countRNodes[V any](n *rnode[V]) int {
	total := 0
	n.kids.each(func(_ string, c *rnode[V]) bool {
		total += 1 + countRNodes(c)
		return true
	})
	return total
}

func TestRetainedBasic(t *testing.T) {
	r := NewRetained[int]()
	r.Set("a/b", 1)
	r.Set("a/b/c", 2)
	r.Set("a", 3)
	r.Set("$SYS/x", 4)
	r.Set("/lead", 5)
	r.Set("a/b", 6) // replace
	if r.Len() != 5 {
		t.Fatalf("Len = %d, want 5", r.Len())
	}
	if v, ok := r.Get("a/b"); !ok || v != 6 {
		t.Fatalf("Get(a/b) = %d, %v", v, ok)
	}
	if _, ok := r.Get("a/b/c/d"); ok {
		t.Fatal("Get of a missing deeper topic succeeded")
	}
	if _, ok := r.Get("a/"); ok {
		t.Fatal("Get(a/) succeeded")
	}
	tests := []struct {
		filter string
		want   []string
	}{
		{"#", []string{"/lead=5", "a/b/c=2", "a/b=6", "a=3"}},
		{"a/#", []string{"a/b/c=2", "a/b=6", "a=3"}},
		{"a/+", []string{"a/b=6"}},
		{"+", []string{"a=3"}},
		{"+/+", []string{"/lead=5", "a/b=6"}},
		{"+/#", []string{"/lead=5", "a/b/c=2", "a/b=6", "a=3"}},
		{"$SYS/#", []string{"$SYS/x=4"}},
		{"$SYS/+", []string{"$SYS/x=4"}},
		{"+/x", nil},
		{"a/b/c", []string{"a/b/c=2"}},
		{"b", nil},
	}
	for _, tt := range tests {
		if got := retainedNames(r, tt.filter); !slices.Equal(got, tt.want) {
			t.Errorf("Match(%q) = %v, want %v", tt.filter, got, tt.want)
		}
	}

	calls := 0
	r.Match("#", func(string, int) bool { calls++; return false })
	if calls != 1 {
		t.Fatalf("Match kept going after fn returned false: %d calls", calls)
	}

	if r.Delete("a/b/c/d") || r.Delete("a/") {
		t.Fatal("Delete of a missing topic reported true")
	}
	for _, name := range []string{"a/b", "a/b/c", "a", "$SYS/x", "/lead"} {
		if !r.Delete(name) {
			t.Fatalf("Delete(%q) = false", name)
		}
		if r.Delete(name) {
			t.Fatalf("second Delete(%q) = true", name)
		}
	}
	if r.Len() != 0 || countRNodes(&r.root) != 0 {
		t.Fatalf("after deleting everything Len = %d, nodes = %d", r.Len(), countRNodes(&r.root))
	}
}

// TestRetainedMatchesBruteForce compares Retained.Match with Match over all
// stored names for random names and filters.
func TestRetainedMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	r := NewRetained[int]()
	stored := map[string]int{}
	for i := range 400 {
		name := randomTopic(rng, false)
		r.Set(name, i)
		stored[name] = i
	}
	if r.Len() != len(stored) {
		t.Fatalf("Len = %d, want %d", r.Len(), len(stored))
	}
	for range 500 {
		filter := randomTopic(rng, true)
		var want []string
		for name, v := range stored {
			if Match(filter, name) {
				want = append(want, fmt.Sprintf("%s=%d", name, v))
			}
		}
		slices.Sort(want)
		if got := retainedNames(r, filter); !slices.Equal(got, want) {
			t.Fatalf("Match(%q)\n got %v\nwant %v", filter, got, want)
		}
	}
	for name := range stored {
		r.Delete(name)
	}
	if r.Len() != 0 || countRNodes(&r.root) != 0 {
		t.Fatalf("Len %d, nodes %d", r.Len(), countRNodes(&r.root))
	}
}

func TestRetainedReentrantAndConcurrent(t *testing.T) {
	r := NewRetained[int]()
	r.Set("a/1", 1)
	// fn may modify the index.
	r.Match("a/+", func(name string, v int) bool {
		r.Delete(name)
		r.Set(name+"/x", v)
		return true
	})
	if got := retainedNames(r, "#"); !slices.Equal(got, []string{"a/1/x=1"}) {
		t.Fatalf("got %v", got)
	}
	r.Delete("a/1/x")

	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 300 {
				name := fmt.Sprintf("w%d/%d/v", w, i%7)
				r.Set(name, i)
				if v, ok := r.Get(name); !ok || v != i {
					t.Errorf("Get(%q) = %d, %v", name, v, ok)
					return
				}
				r.Match("+/+/v", func(string, int) bool { return true })
				r.Delete(name)
			}
		})
	}
	wg.Wait()
	if r.Len() != 0 || countRNodes(&r.root) != 0 {
		t.Fatalf("Len %d, nodes %d", r.Len(), countRNodes(&r.root))
	}
}
