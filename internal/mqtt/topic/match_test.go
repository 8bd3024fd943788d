package topic

import (
	"fmt"
	"testing"
)

type matchCase struct {
	filter, name string
	want         bool
}

// matchCases includes every example from MQTT 5.0 section 4.7 plus edge
// cases around empty levels, '#' at the parent level and the '$' rule.
var matchCases = []matchCase{
	// 4.7.1.2 multi-level wildcard
	{"sport/tennis/player1/#", "sport/tennis/player1", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	{"sport/tennis/player1/#", "sport/tennis/player2", false},
	{"sport/tennis/player1/#", "sport/tennis", false},
	{"sport/#", "sport", true},
	{"sport/#", "sport/", true},
	{"sport/#", "sports", false},
	{"sport/#", "/sport", false},
	{"#", "sport", true},
	{"#", "sport/tennis/player1", true},
	{"#", "/", true},
	{"#", "/finance", true},
	{"#", "a//b", true},
	// 4.7.1.3 single-level wildcard
	{"sport/tennis/+", "sport/tennis/player1", true},
	{"sport/tennis/+", "sport/tennis/player2", true},
	{"sport/tennis/+", "sport/tennis/player1/ranking", false},
	{"sport/tennis/+", "sport/tennis", false},
	{"sport/tennis/+", "sport/tennis/", true},
	{"sport/+", "sport", false},
	{"sport/+", "sport/", true},
	{"+", "sport", true},
	{"+", "/finance", false},
	{"+", "/", false},
	{"+/+", "/finance", true},
	{"+/+", "/", true},
	{"+/+", "a", false},
	{"+/+", "a/b/c", false},
	{"/+", "/finance", true},
	{"/+", "finance", false},
	{"/+", "/", true},
	{"+/tennis/#", "sport/tennis", true},
	{"+/tennis/#", "sport/tennis/player1/ranking", true},
	{"+/tennis/#", "sport/football", false},
	{"sport/+/player1", "sport/tennis/player1", true},
	{"sport/+/player1", "sport//player1", true},
	{"+/+/+", "a//c", true},
	{"a/+/c", "a//c", true},
	{"a/+/c", "a/c", false},
	{"+/#", "a", true},
	{"+/#", "/", true},
	{"+/#", "a/b/c", true},
	// 4.7.2 topics beginning with $
	{"#", "$SYS/broker/uptime", false},
	{"#", "$SYS", false},
	{"+/monitor/Clients", "$SYS/monitor/Clients", false},
	{"$SYS/#", "$SYS/monitor/Clients", true},
	{"$SYS/#", "$SYS", true},
	{"$SYS/monitor/+", "$SYS/monitor/Clients", true},
	{"+", "$SYS", false},
	{"+/#", "$SYS/x", false},
	{"$SYS/+", "$SYS/x", true},
	{"$+/x", "$SYS/x", false},
	{"a/$b", "a/$b", true},
	{"a/+", "a/$b", true},
	{"a/#", "a/$b/c", true},
	{"$share/g/a", "$share/g/a", true},
	// 4.7.3 literal matching and empty levels
	{"/finance", "/finance", true},
	{"/finance", "finance", false},
	{"finance", "/finance", false},
	{"finance/", "finance", false},
	{"finance", "finance/", false},
	{"ACCOUNTS", "Accounts", false},
	{"Accounts payable", "Accounts payable", true},
	{"a/b/c", "a/b/c", true},
	{"a/b/c", "a/b", false},
	{"a/b", "a/b/c", false},
	{"a//b", "a//b", true},
	{"a//b", "a/b", false},
	{"//", "//", true},
	{"/", "/", true},
	{"/", "//", false},
	{"+//+", "a//b", true},
	{"a/#", "a", true},
	{"a/#", "a/", true},
	{"a/#", "ab", false},
	{"a/b/#", "a", false},
	{"a/+/#", "a", false},
	{"a/+/#", "a/b", true},
	{"a/+/#", "a/", true},
	{"a/+/+", "a/b", false},
	{"données/+", "données/température", true},
	// Not valid filters, but the literal rule still applies consistently.
	{"a/#/b", "a/#/b", true},
	{"a/#/b", "a/x/b", false},
	{"a/b#", "a/b#", true},
	{"a/b#", "a/bc", false},
	{"a+/b", "a+/b", true},
	{"a+/b", "ax/b", false},
	{"#a", "$x", false},
	{"", "", true},
	{"", "a", false},
	{"a", "", false},
	{"#", "", true},
	{"+", "", true},
}

func TestMatchTable(t *testing.T) {
	for _, c := range matchCases {
		if got := Match(c.filter, c.name); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.filter, c.name, got, c.want)
		}
	}
}

// TestMatchTableTrie checks that each table case behaves the same through a
// single-subscription Trie (plain and shared) and the Retained index.
func TestMatchTableTrie(t *testing.T) {
	for _, c := range matchCases {
		t.Run(fmt.Sprintf("%s|%s", c.filter, c.name), func(t *testing.T) {
			tr := NewTrie[int, string]()
			tr.Subscribe(c.filter, "", 1, "v")
			tr.Subscribe(c.filter, "g", 2, "w")
			var plain, shared int
			tr.Match(c.name, func(k int, v string) {
				if k != 1 || v != "v" {
					t.Errorf("unexpected entry %d=%q", k, v)
				}
				plain++
			}, func(group, filter string, members []Member[int, string]) {
				if group != "g" || filter != c.filter || len(members) != 1 || members[0] != (Member[int, string]{2, "w"}) {
					t.Errorf("unexpected group %q %q %v", group, filter, members)
				}
				shared++
			})
			want := 0
			if c.want {
				want = 1
			}
			if plain != want || shared != want {
				t.Errorf("trie matched %d plain, %d shared; want %d", plain, shared, want)
			}

			r := NewRetained[int]()
			r.Set(c.name, 7)
			hits := 0
			r.Match(c.filter, func(name string, v int) bool {
				if name != c.name || v != 7 {
					t.Errorf("retained hit %q=%d", name, v)
				}
				hits++
				return true
			})
			if hits != want {
				t.Errorf("retained matched %d, want %d", hits, want)
			}
		})
	}
}

func TestMatchNoAlloc(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		for _, c := range matchCases {
			Match(c.filter, c.name)
		}
	})
	if allocs != 0 {
		t.Fatalf("Match allocated %.1f times per run", allocs)
	}
}

func BenchmarkMatch(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Match("sport/+/player1/#", "sport/tennis/player1/score/wimbledon")
	}
}
