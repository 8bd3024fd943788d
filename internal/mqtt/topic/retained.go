package topic

import (
	"strings"
	"sync"
)

// Retained stores one value per topic name in a trie by level, so a new
// subscription's filter visits only matching branches. The zero value is
// ready to use. A single RWMutex suffices: Set/Delete are short and Match
// runs once per subscription, not per publish.
type Retained[V any] struct {
	mu    sync.RWMutex
	root  rnode[V]
	count int
}

type rnode[V any] struct {
	parent *rnode[V]
	level  string
	kids   smallMap[rnode[V]]
	name   string // full topic name when has is set
	val    V
	has    bool
}

// retainedHit is one result gathered by Match before fn runs.
type retainedHit[V any] struct {
	name string
	val  V
}

// NewRetained returns an empty index.
func NewRetained[V any]() *Retained[V] {
	return new(Retained[V])
}

// Len returns the number of stored topics.
func (r *Retained[V]) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.count
}

// Set stores v for name, replacing any previous value.
func (r *Retained[V]) Set(name string, v V) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := &r.root
	for i := 0; ; {
		end := levelEnd(name, i)
		c := n.kids.get(name[i:end])
		if c == nil {
			c = &rnode[V]{parent: n, level: strings.Clone(name[i:end])}
			n.kids.put(c.level, c)
		}
		n = c
		if end == len(name) {
			break
		}
		i = end + 1
	}
	if !n.has {
		n.has = true
		n.name = strings.Clone(name)
		r.count++
	}
	n.val = v
}

// Delete removes name and reports whether it was stored.
func (r *Retained[V]) Delete(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.find(name)
	if n == nil || !n.has {
		return false
	}
	var zero V
	n.has, n.name, n.val = false, "", zero
	r.count--
	for n != &r.root && !n.has && n.kids.len() == 0 {
		n.parent.kids.del(n.level)
		n = n.parent
	}
	return true
}

// Get returns the value stored for name.
func (r *Retained[V]) Get(name string) (V, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if n := r.find(name); n != nil && n.has {
		return n.val, true
	}
	var zero V
	return zero, false
}

// find returns the node for name or nil; r.mu must be held.
func (r *Retained[V]) find(name string) *rnode[V] {
	n := &r.root
	for i := 0; n != nil; {
		end := levelEnd(name, i)
		n = n.kids.get(name[i:end])
		if end == len(name) {
			break
		}
		i = end + 1
	}
	return n
}

// Match calls fn for every stored topic matching filter, in no particular
// order, until fn returns false. Matches are gathered under the read lock
// and delivered after it is released, so fn may call any method of r.
func (r *Retained[V]) Match(filter string, fn func(name string, v V) bool) {
	var hits []retainedHit[V]
	r.mu.RLock()
	r.root.collect(filter, 0, true, &hits)
	r.mu.RUnlock()
	for _, h := range hits {
		if !fn(h.name, h.val) {
			return
		}
	}
}

// collect appends the stored topics below n matching filter from byte i on
// (i past the end means every filter level has been consumed).
func (n *rnode[V]) collect(filter string, i int, root bool, hits *[]retainedHit[V]) {
	for {
		if i > len(filter) {
			n.appendTo(hits)
			return
		}
		end := levelEnd(filter, i)
		lev := filter[i:end]
		switch {
		case lev == "#" && end == len(filter):
			// '#' also matches the parent level ("a/#" matches "a"); the
			// root never holds a value.
			n.appendTo(hits)
			n.kids.each(func(level string, c *rnode[V]) bool {
				if !root || level == "" || level[0] != '$' {
					c.collectAll(hits)
				}
				return true
			})
			return
		case lev == "+":
			n.kids.each(func(level string, c *rnode[V]) bool {
				if !root || level == "" || level[0] != '$' {
					c.collect(filter, end+1, false, hits)
				}
				return true
			})
			return
		}
		if n = n.kids.get(lev); n == nil {
			return
		}
		i, root = end+1, false
	}
}

func (n *rnode[V]) collectAll(hits *[]retainedHit[V]) {
	n.appendTo(hits)
	n.kids.each(func(_ string, c *rnode[V]) bool {
		c.collectAll(hits)
		return true
	})
}

func (n *rnode[V]) appendTo(hits *[]retainedHit[V]) {
	if n.has {
		*hits = append(*hits, retainedHit[V]{n.name, n.val})
	}
}
