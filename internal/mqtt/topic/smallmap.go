package topic

// smallMax is how many entries a smallMap keeps in its slice before
// switching to a Go map. Most trie nodes have one or two children, and even
// an empty-ish Go map costs a few hundred bytes, which matters at
// millions of nodes; a linear scan of eight short strings is as fast as
// hashing.
const smallMax = 8

type levelEntry[T any] struct {
	level string
	node  *T
}

// smallMap maps a level string to a child node.
type smallMap[T any] struct {
	list []levelEntry[T]
	m    map[string]*T // non-nil replaces list
}

func (s *smallMap[T]) get(level string) *T {
	if s.m != nil {
		return s.m[level]
	}
	for i := range s.list {
		if s.list[i].level == level {
			return s.list[i].node
		}
	}
	return nil
}

// put adds a child; the level must not be present.
func (s *smallMap[T]) put(level string, n *T) {
	if s.m != nil {
		s.m[level] = n
		return
	}
	if len(s.list) < smallMax {
		s.list = append(s.list, levelEntry[T]{level, n})
		return
	}
	s.m = make(map[string]*T, 2*smallMax)
	for _, e := range s.list {
		s.m[e.level] = e.node
	}
	s.m[level] = n
	s.list = nil
}

func (s *smallMap[T]) del(level string) {
	if s.m != nil {
		delete(s.m, level)
		// Go maps never shrink; falling back to the slice once few children
		// remain gives the memory back after churn.
		if len(s.m) <= smallMax/2 {
			s.list = make([]levelEntry[T], 0, len(s.m))
			for l, n := range s.m {
				s.list = append(s.list, levelEntry[T]{l, n})
			}
			s.m = nil
		}
		return
	}
	for i := range s.list {
		if s.list[i].level == level {
			last := len(s.list) - 1
			s.list[i] = s.list[last]
			s.list[last] = levelEntry[T]{}
			s.list = s.list[:last]
			if len(s.list) == 0 {
				s.list = nil
			}
			return
		}
	}
}

func (s *smallMap[T]) len() int {
	if s.m != nil {
		return len(s.m)
	}
	return len(s.list)
}

// each calls fn for every child until fn returns false, and reports whether
// it ran to completion.
func (s *smallMap[T]) each(fn func(level string, n *T) bool) bool {
	if s.m != nil {
		for l, n := range s.m {
			if !fn(l, n) {
				return false
			}
		}
		return true
	}
	for _, e := range s.list {
		if !fn(e.level, e.node) {
			return false
		}
	}
	return true
}
