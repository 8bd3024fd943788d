package topic

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzMatch checks that the Trie and the Retained index agree with Match for
// arbitrary (also invalid) filters and names. filters holds up to 16
// newline-separated filters.
func FuzzMatch(f *testing.F) {
	for _, c := range matchCases {
		f.Add(c.filter, c.name)
	}
	f.Add("a/#\n+/b\n#\na/b\n$SYS/+", "a/b")
	f.Add("+/+/+\n/#\n//", "//")
	f.Fuzz(func(t *testing.T, filters, name string) {
		list := strings.Split(filters, "\n")
		if len(list) > 16 {
			list = list[:16]
		}
		tr := NewTrie[int, int]()
		var subs []sub
		for i, fl := range list {
			s := sub{filter: fl, key: i}
			if i%3 == 2 {
				s.group = "g"
			}
			tr.Subscribe(s.filter, s.group, s.key, s.key)
			subs = append(subs, s)
		}
		if got, want := trieHits(tr, name), bruteHits(subs, name); !slices.Equal(got, want) {
			t.Fatalf("name %q filters %q\n got %v\nwant %v", name, list, got, want)
		}

		r := NewRetained[int]()
		r.Set(name, 1)
		for _, fl := range list {
			hits := 0
			r.Match(fl, func(string, int) bool { hits++; return true })
			if (hits == 1) != Match(fl, name) || hits > 1 {
				t.Fatalf("Retained.Match(%q) over %q: %d hits, Match = %v", fl, name, hits, Match(fl, name))
			}
		}

		for _, s := range subs {
			if !tr.Unsubscribe(s.filter, s.group, s.key) {
				t.Fatalf("Unsubscribe(%q) = false", s.filter)
			}
		}
		if tr.Len() != 0 || tr.nodes.Load() != 0 {
			t.Fatalf("Len %d nodes %d after unsubscribing all", tr.Len(), tr.nodes.Load())
		}
		if ValidName(name) == nil && !Match(name, name) {
			t.Fatalf("valid name %q does not match itself", name)
		}
	})
}

// FuzzValidFilter compares ValidFilter and ValidName with straightforward
// reference implementations built on strings.Split.
func FuzzValidFilter(f *testing.F) {
	for _, c := range matchCases {
		f.Add(c.filter)
		f.Add(c.name)
	}
	for _, s := range []string{"a#", "#/a", "a/+b", "+", "\x00", "\xff", "$share/g/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		wantFilter := refValidFilter(s)
		if got := ValidFilter(s) == nil; got != wantFilter {
			t.Fatalf("ValidFilter(%q) valid=%v, reference says %v", s, got, wantFilter)
		}
		wantName := wantFilter && !strings.ContainsAny(s, "+#")
		if got := ValidName(s) == nil; got != wantName {
			t.Fatalf("ValidName(%q) valid=%v, reference says %v", s, got, wantName)
		}
		_, inner, shared, err := ParseShared("$share/g/" + s)
		if !shared || (err == nil) != wantFilter || (err == nil && inner != s) {
			t.Fatalf("ParseShared($share/g/%q) = %q, %v, %v", s, inner, shared, err)
		}
	})
}

func refValidFilter(s string) bool {
	if s == "" || len(s) > MaxLength || !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
		return false
	}
	levels := strings.Split(s, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}
