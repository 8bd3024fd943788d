package topic

// subSet holds the non-shared subscriptions of one trie node. Entries live in
// a dense slice so Match can snapshot them with a single copy; an index map
// is added only for large fan-outs, where linear search for Subscribe and
// Unsubscribe would become quadratic.
type subSet[K comparable, V any] struct {
	list  []Member[K, V]
	index map[K]int // position in list; nil while len(list) <= smallMax
}

func (s *subSet[K, V]) find(key K) int {
	if s.index != nil {
		if i, ok := s.index[key]; ok {
			return i
		}
		return -1
	}
	for i := range s.list {
		if s.list[i].Key == key {
			return i
		}
	}
	return -1
}

func (s *subSet[K, V]) put(key K, v V) (replaced bool) {
	if i := s.find(key); i >= 0 {
		s.list[i].Value = v
		return true
	}
	s.list = append(s.list, Member[K, V]{key, v})
	if s.index != nil {
		s.index[key] = len(s.list) - 1
	} else if len(s.list) > smallMax {
		s.index = make(map[K]int, 2*len(s.list))
		for i := range s.list {
			s.index[s.list[i].Key] = i
		}
	}
	return false
}

func (s *subSet[K, V]) remove(key K) bool {
	i := s.find(key)
	if i < 0 {
		return false
	}
	last := len(s.list) - 1
	if i != last {
		s.list[i] = s.list[last]
		if s.index != nil {
			s.index[s.list[i].Key] = i
		}
	}
	s.list[last] = Member[K, V]{} // drop references for the GC
	s.list = s.list[:last]
	if s.index != nil {
		delete(s.index, key)
		if len(s.list) <= smallMax/2 {
			s.index = nil
		}
	}
	// Shrink after churn so a node that once had a large fan-out does not
	// keep its peak capacity forever.
	if n := len(s.list); n == 0 {
		s.list = nil
	} else if cap(s.list) > 32 && n < cap(s.list)/4 {
		s.list = append(make([]Member[K, V], 0, 2*n), s.list...)
	}
	return true
}

func (s *subSet[K, V]) len() int { return len(s.list) }
