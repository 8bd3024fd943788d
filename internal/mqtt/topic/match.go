package topic

import "strings"

// Match reports whether the topic name matches filter. It does not validate
// either argument: '+' is a wildcard wherever it forms a whole level, '#' only
// when it forms the whole last level, and anything else compares literally.
// The Trie and Retained index use exactly the same rules.
//
// Names starting with '$' (e.g. $SYS/...) are not matched by filters whose
// first level is a wildcard, as the specification requires.
func Match(filter, name string) bool {
	if len(name) > 0 && name[0] == '$' && len(filter) > 0 && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	// fi and ni are the starts of the current levels; an index past the end
	// means every level has been consumed (a trailing "/" leaves one empty
	// level, so the end itself is still a valid level start).
	fi, ni := 0, 0
	for {
		fe := levelEnd(filter, fi)
		if ni > len(name) {
			// "a/#" also matches "a": '#' covers the parent level.
			return fi <= len(filter) && fe == len(filter) && filter[fi:fe] == "#"
		}
		if fi > len(filter) {
			return false
		}
		lev := filter[fi:fe]
		if lev == "#" && fe == len(filter) {
			return true
		}
		ne := levelEnd(name, ni)
		if lev != "+" && lev != name[ni:ne] {
			return false
		}
		fi, ni = fe+1, ne+1
		if fi > len(filter) && ni > len(name) {
			return true
		}
	}
}

// levelEnd returns the index of the '/' ending the level starting at i, or
// len(s) for the last level. It returns i when i is past the end.
func levelEnd(s string, i int) int {
	if i >= len(s) {
		return max(i, len(s))
	}
	if j := strings.IndexByte(s[i:], '/'); j >= 0 {
		return i + j
	}
	return len(s)
}
