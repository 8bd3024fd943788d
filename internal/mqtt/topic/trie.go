package topic

import (
	"strings"
	"sync"
	"sync/atomic"
)

// Member is one subscription: the subscriber's key and its value (options).
type Member[K comparable, V any] struct {
	Key   K
	Value V
}

// Trie indexes subscriptions by filter level for matching topic names.
// The zero value is ready to use; a Trie must not be copied after first use.
//
// Concurrency design: every node has its own RWMutex and no operation ever
// holds more than a parent and one child lock (always in that order), so
// publishes on unrelated branches never contend and Match never blocks on
// writers elsewhere in the tree. Match holds one read lock at a time, only
// while copying a node's child pointers or subscribers into a pooled scratch
// buffer; callbacks run with no locks held, so they may call back into the
// Trie. Walking into a child after releasing the parent is safe because a
// node is pruned only when it holds nothing, and a pruned node is marked
// dead and never reused: a reader that reaches it finds it empty, which is
// the correct answer at some instant during the call. Writers that lock a
// dead node restart from the root, so a Subscribe racing with the pruning
// of its path re-creates the path instead of adding to an unreachable node.
type Trie[K comparable, V any] struct {
	root    node[K, V]
	count   atomic.Int64 // subscriptions
	nodes   atomic.Int64 // nodes excluding the root, for leak tests
	scratch sync.Pool    // *matchScratch[K, V]

	// testHook, when set by tests, runs where a writer has found a node but
	// not yet locked it: the window in which a concurrent prune can strike.
	testHook func()
}

type node[K comparable, V any] struct {
	mu     sync.RWMutex
	parent *node[K, V] // immutable; nil for the root
	level  string      // immutable; this node's level in parent
	dead   bool        // detached from the tree; guarded by mu

	kids  smallMap[node[K, V]] // literal levels
	plus  *node[K, V]          // "+" level
	hash  *node[K, V]          // "#" as last level; always a leaf
	subs  subSet[K, V]
	group []sharedGroup[K, V] // few per node; linear search is fine
}

// sharedGroup is one $share group at a node. members is copy-on-write: a
// published slice is never modified, so Match hands it to the callback
// without copying or locking, and insertion order (for round-robin) is
// preserved. That makes membership changes O(members), acceptable because
// groups are small and change far less often than they are matched.
type sharedGroup[K comparable, V any] struct {
	name, filter string
	members      []Member[K, V]
}

type sharedHit[K comparable, V any] struct {
	group, filter string
	members       []Member[K, V]
}

type matchScratch[K comparable, V any] struct {
	subs   []Member[K, V]
	shared []sharedHit[K, V]
	// Skipping what a nil callback would ignore saves the copy, e.g. for a
	// broker that only looks for one shared group.
	noSubs, noShared bool
}

// maxPooledScratch bounds the buffers kept for reuse so one huge fan-out
// does not pin memory in the pool.
const maxPooledScratch = 1 << 14

// NewTrie returns an empty Trie.
func NewTrie[K comparable, V any]() *Trie[K, V] {
	return new(Trie[K, V])
}

// Len returns the number of subscriptions, shared-group members included.
func (t *Trie[K, V]) Len() int { return int(t.count.Load()) }

// Subscribe adds or replaces the entry for key under filter in the shared
// group group ("" for a non-shared subscription). filter is the inner filter
// (without $share/group) and should be valid; invalid filters are stored
// and matched with the same literal rules as Match. It reports whether an
// existing entry was replaced.
func (t *Trie[K, V]) Subscribe(filter, group string, key K, v V) (replaced bool) {
	for {
		n := t.walk(filter, true)
		t.hook()
		n.mu.Lock()
		if n.dead {
			n.mu.Unlock()
			continue
		}
		if group == "" {
			replaced = n.subs.put(key, v)
		} else {
			replaced = n.putShared(filter, group, key, v)
		}
		n.mu.Unlock()
		if !replaced {
			t.count.Add(1)
		}
		return replaced
	}
}

// Unsubscribe removes the entry for key under filter in group and prunes
// nodes left empty. It reports whether the entry existed.
func (t *Trie[K, V]) Unsubscribe(filter, group string, key K) (found bool) {
	for {
		n := t.walk(filter, false)
		if n == nil {
			return false
		}
		t.hook()
		n.mu.Lock()
		if n.dead {
			// Pruned after we found it; the entry may since have been
			// re-added under a fresh node.
			n.mu.Unlock()
			continue
		}
		if group == "" {
			found = n.subs.remove(key)
		} else {
			found = n.removeShared(group, key)
		}
		empty := found && n.empty()
		n.mu.Unlock()
		if found {
			t.count.Add(-1)
		}
		if empty {
			t.prune(n)
		}
		return found
	}
}

// walk returns the node for filter, creating missing nodes when create is
// set and returning nil otherwise. The returned node may be dead by the time
// the caller locks it.
func (t *Trie[K, V]) walk(filter string, create bool) *node[K, V] {
	n := &t.root
	for i := 0; ; {
		end := levelEnd(filter, i)
		lev, last := filter[i:end], end == len(filter)
		n.mu.RLock()
		c := n.child(lev, last)
		n.mu.RUnlock()
		if c == nil {
			if !create {
				return nil
			}
			t.hook()
			n.mu.Lock()
			if n.dead {
				// Our path was pruned under us; start over.
				n.mu.Unlock()
				n, i = &t.root, 0
				continue
			}
			if c = n.child(lev, last); c == nil {
				c = n.addChild(lev, last)
				t.nodes.Add(1)
			}
			n.mu.Unlock()
		}
		n = c
		if last {
			return n
		}
		i = end + 1
	}
}

func (t *Trie[K, V]) hook() {
	if t.testHook != nil {
		t.testHook()
	}
}

// prune detaches n and then its ancestors for as long as they are empty.
// Locks are taken parent first, matching every other path.
func (t *Trie[K, V]) prune(n *node[K, V]) {
	for n != &t.root {
		p := n.parent
		p.mu.Lock()
		if p.dead {
			// A dead parent had no children, so n is already detached.
			p.mu.Unlock()
			return
		}
		n.mu.Lock()
		if n.dead || !n.empty() {
			n.mu.Unlock()
			p.mu.Unlock()
			return
		}
		n.dead = true
		p.detach(n)
		t.nodes.Add(-1)
		n.mu.Unlock()
		more := p.empty()
		p.mu.Unlock()
		if !more {
			return
		}
		n = p
	}
}

// Match calls fn for every non-shared subscription whose filter matches the
// topic name, and fnShared once per matching shared group with its members
// in insertion order. The members slice is only valid during the call and
// must not be modified. Either callback may be nil. Callbacks run without
// any lock held. A subscription made by several filters matching the same
// name is reported once per filter.
func (t *Trie[K, V]) Match(name string, fn func(key K, v V), fnShared func(group, filter string, members []Member[K, V])) {
	s, _ := t.scratch.Get().(*matchScratch[K, V])
	if s == nil {
		s = new(matchScratch[K, V])
	}
	s.noSubs, s.noShared = fn == nil, fnShared == nil
	t.match(&t.root, name, 0, len(name) > 0 && name[0] == '$', s)
	for _, m := range s.subs {
		fn(m.Key, m.Value)
	}
	for _, h := range s.shared {
		fnShared(h.group, h.filter, h.members)
	}
	if cap(s.subs) > maxPooledScratch || cap(s.shared) > maxPooledScratch {
		return
	}
	clear(s.subs)
	clear(s.shared)
	s.subs, s.shared = s.subs[:0], s.shared[:0]
	t.scratch.Put(s)
}

// match collects the subscriptions below n matching name from byte i on
// (i past the end means every level has been consumed). It recurses only
// into '+' branches and iterates along literal ones.
func (t *Trie[K, V]) match(n *node[K, V], name string, i int, dollar bool, s *matchScratch[K, V]) {
	for {
		n.mu.RLock()
		if i > len(name) {
			s.collect(n)
			h := n.hash // "a/#" matches "a"
			n.mu.RUnlock()
			if h != nil {
				h.mu.RLock()
				s.collect(h)
				h.mu.RUnlock()
			}
			return
		}
		end := levelEnd(name, i)
		c := n.kids.get(name[i:end])
		plus, hash := n.plus, n.hash
		n.mu.RUnlock()
		if dollar {
			// Only the first level is affected by the '$' rule.
			plus, hash, dollar = nil, nil, false
		}
		if hash != nil {
			hash.mu.RLock()
			s.collect(hash)
			hash.mu.RUnlock()
		}
		if plus != nil {
			t.match(plus, name, end+1, false, s)
		}
		if c == nil {
			return
		}
		n, i = c, end+1
	}
}

// collect snapshots n's subscriptions; n.mu must be read-locked.
func (s *matchScratch[K, V]) collect(n *node[K, V]) {
	if !s.noSubs {
		s.subs = append(s.subs, n.subs.list...)
	}
	if s.noShared {
		return
	}
	for _, g := range n.group {
		s.shared = append(s.shared, sharedHit[K, V]{g.name, g.filter, g.members})
	}
}

// child returns the child for a filter level; n.mu must be held.
func (n *node[K, V]) child(lev string, last bool) *node[K, V] {
	switch {
	case lev == "+":
		return n.plus
	case lev == "#" && last:
		return n.hash
	}
	return n.kids.get(lev)
}

// addChild creates the child for a filter level; n.mu must be write-locked.
func (n *node[K, V]) addChild(lev string, last bool) *node[K, V] {
	c := &node[K, V]{parent: n}
	switch {
	case lev == "+":
		c.level = "+"
		n.plus = c
	case lev == "#" && last:
		c.level = "#"
		n.hash = c
	default:
		// Clone so the trie does not pin the (possibly large) packet buffer
		// the filter was sliced from.
		c.level = strings.Clone(lev)
		n.kids.put(c.level, c)
	}
	return c
}

// detach removes child c; n.mu must be write-locked.
func (n *node[K, V]) detach(c *node[K, V]) {
	switch c {
	case n.plus:
		n.plus = nil
	case n.hash:
		n.hash = nil
	default:
		n.kids.del(c.level)
	}
}

func (n *node[K, V]) empty() bool {
	return n.subs.len() == 0 && len(n.group) == 0 && n.kids.len() == 0 && n.plus == nil && n.hash == nil
}

// putShared adds or replaces key in group; n.mu must be write-locked.
func (n *node[K, V]) putShared(filter, group string, key K, v V) (replaced bool) {
	gi := n.findGroup(group)
	if gi < 0 {
		n.group = append(n.group, sharedGroup[K, V]{
			name:    strings.Clone(group),
			filter:  strings.Clone(filter),
			members: []Member[K, V]{{key, v}},
		})
		return false
	}
	g := &n.group[gi]
	members := make([]Member[K, V], len(g.members), len(g.members)+1)
	copy(members, g.members)
	for i := range members {
		if members[i].Key == key {
			members[i].Value = v // keep its round-robin position
			g.members = members
			return true
		}
	}
	g.members = append(members, Member[K, V]{key, v})
	return false
}

// removeShared removes key from group; n.mu must be write-locked.
func (n *node[K, V]) removeShared(group string, key K) bool {
	gi := n.findGroup(group)
	if gi < 0 {
		return false
	}
	g := &n.group[gi]
	for i := range g.members {
		if g.members[i].Key != key {
			continue
		}
		if len(g.members) == 1 {
			last := len(n.group) - 1
			n.group[gi] = n.group[last]
			n.group[last] = sharedGroup[K, V]{}
			n.group = n.group[:last]
			if last == 0 {
				n.group = nil
			}
			return true
		}
		members := make([]Member[K, V], 0, len(g.members)-1)
		members = append(members, g.members[:i]...)
		g.members = append(members, g.members[i+1:]...)
		return true
	}
	return false
}

func (n *node[K, V]) findGroup(name string) int {
	for i := range n.group {
		if n.group[i].name == name {
			return i
		}
	}
	return -1
}
