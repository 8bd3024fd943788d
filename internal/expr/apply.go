package expr

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// ErrEval wraps every error Apply returns: the message could not be
// transformed (a type mismatch, a division by zero, a failing dataset).
// The dataflow engine dead-letters such a message with the error.
var ErrEval = errors.New("evaluating")

// Apply filters and maps one message. keep is false when a filter rule
// was true, meaning the message is dropped. With no map rules the message
// passes unchanged; otherwise the output payload holds only what the map
// rules write, and the output keeps the input's topic, content type and
// user properties unless rules write them. in is not modified.
func (m *Mapping) Apply(in Message) (out Message, keep bool, err error) {
	st := m.state(&in)
	defer m.release(st)
	for _, r := range m.filters {
		for j := range r.inputs {
			v, _, err := st.input(r, j, nil)
			if err != nil {
				return Message{}, false, evalErr(fmt.Sprintf("%s.inputs[%d]", r.field, j), err)
			}
			st.vals = append(st.vals, v)
		}
		res, err := st.r.run(r.prog, st.vals)
		st.vals = st.vals[:0]
		if err != nil {
			return Message{}, false, evalErr(r.field+".expression", err)
		}
		switch res := res.(type) {
		case bool:
			if res {
				return Message{}, false, nil
			}
		case nil:
			// A missing input makes the condition unknown: keep the message.
		default:
			return Message{}, false, evalErr(r.field+".expression", fmt.Errorf("the result is %s, want a boolean", typeName(norm(res))))
		}
	}
	if len(m.maps) == 0 {
		return in, true, nil
	}
	if err := st.expand(); err != nil {
		return Message{}, false, err
	}
	out = Message{Topic: in.Topic, ContentType: in.ContentType, UserProperties: slices.Clone(in.UserProperties)}
	doc := make(map[string]any, len(st.insts))
	for i := range st.insts {
		ins := &st.insts[i]
		r := ins.r
		if ins.dead || r.output == nil || ins.skip {
			continue
		}
		v := ins.vals[0]
		if r.prog != nil {
			if v, err = st.r.run(r.prog, ins.vals); err != nil {
				return Message{}, false, evalErr(r.field+".expression", err)
			}
			if f, ok := v.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
				return Message{}, false, evalErr(r.field+".expression", fmt.Errorf("the result is %v, which JSON cannot carry", f))
			}
		}
		write(&out, doc, r.output, ins.cap, v, r.prog != nil)
	}
	out.Payload = doc
	return out, true, nil
}

func evalErr(field string, err error) error {
	if errors.Is(err, ErrEval) {
		return err // a dataset's error, which names the dataset
	}
	return fmt.Errorf("%w %s: %w", ErrEval, field, err)
}

// instance is one application of a map rule: a rule without a wildcard
// has one, a wildcard rule one per captured segment.
type instance struct {
	r    *rule
	cap  []string // the captured segments; nil without a wildcard
	vals []any
	rank int  // len(cap): how much the wildcard covered
	prev int  // the previous instance with the same inputs, -1 when none
	dead bool // overridden by a more specific rule below it
	skip bool // a copy whose input is missing: nothing to write
}

// state is the scratch space of one Apply call, pooled.
type state struct {
	m       *Mapping
	r       *runner // the VM for this message's expressions
	in      *Message
	ctxDone []bool
	ctxRec  []any
	vals    []any
	arena   []any
	insts   []instance
	byKey   map[string]int
	caps    []string // arena of captured segments
	keys    []string // stack of sorted object keys being enumerated
}

func (m *Mapping) state(in *Message) *state {
	st, _ := m.states.Get().(*state)
	if st == nil {
		st = &state{byKey: map[string]int{}}
	}
	st.m, st.in = m, in
	if st.r == nil {
		st.r = newRunner()
	}
	n := len(m.datasets)
	st.ctxDone = slices.Grow(st.ctxDone[:0], n)[:n]
	st.ctxRec = slices.Grow(st.ctxRec[:0], n)[:n]
	return st
}

func (m *Mapping) release(st *state) {
	clear(st.ctxDone)
	clear(st.ctxRec)
	clear(st.vals[:cap(st.vals)])
	clear(st.arena[:cap(st.arena)])
	clear(st.insts[:cap(st.insts)])
	clear(st.byKey)
	clear(st.caps[:cap(st.caps)])
	clear(st.keys[:cap(st.keys)])
	st.caps, st.keys = st.caps[:0], st.keys[:0]
	st.m, st.in = nil, nil
	st.vals, st.arena, st.insts = st.vals[:0], st.arena[:0], st.insts[:0]
	m.states.Put(st)
}

// input reads input j of rule r, with the wildcard (if any) replaced by
// cap, applying `? $last` and `?? <default>`. found is false when the
// value is missing.
func (st *state) input(r *rule, j int, cap []string) (v any, found bool, err error) {
	p := r.inputs[j]
	v, found, err = st.get(p, cap)
	if err != nil {
		return nil, false, err
	}
	if slot := r.slots[j]; slot >= 0 {
		m := st.m
		m.mu.Lock()
		if found && v != nil {
			m.last[slot] = v
		} else if m.last[slot] != nil {
			v, found = m.last[slot], true
		}
		m.mu.Unlock()
	}
	if (!found || v == nil) && p.hasDef {
		v, found = p.def, true
	}
	return v, found, nil
}

func (st *state) get(p *path, cap []string) (any, bool, error) {
	switch p.src {
	case srcPayload:
		v, ok := walk(st.in.Payload, p.segs, p.wild, cap)
		return v, ok, nil
	case srcTopic:
		return st.in.Topic, st.in.Topic != "", nil
	case srcContentType:
		return st.in.ContentType, st.in.ContentType != "", nil
	case srcUserProp:
		key := p.segs[0]
		if p.wild == 0 {
			key = cap[0]
		}
		for _, up := range st.in.UserProperties {
			if up.Key == key {
				return up.Value, true, nil
			}
		}
		return nil, false, nil
	case srcContext:
		rec, ok, err := st.context(p.ds)
		if err != nil || !ok {
			return nil, false, err
		}
		v, ok := walk(rec, p.segs, p.wild, cap)
		return v, ok, nil
	}
	return nil, false, nil
}

// context returns the record of dataset i that matches the message: the
// first for which the dataset's expression is true. It is looked up once
// per message, and only when a rule reads it.
func (st *state) context(i int) (any, bool, error) {
	if st.ctxDone[i] {
		return st.ctxRec[i], st.ctxRec[i] != nil, nil
	}
	st.ctxDone[i] = true
	ds := st.m.datasets[i]
	var recs []any
	if st.m.lookup != nil {
		recs = st.m.lookup.Records(ds.key)
	}
	if ds.eqMsg >= 0 {
		if ix := ds.index(recs); ix != nil && ix.ok {
			v, _, err := st.get(ds.inputs[ds.eqMsg], nil)
			if err != nil {
				return nil, false, err
			}
			if k, ok := indexKey(v); ok {
				if j, ok := ix.m[k]; ok {
					st.ctxRec[i] = recs[j]
				}
				return st.ctxRec[i], st.ctxRec[i] != nil, nil
			}
			// A missing or compound message value: scan, as the
			// expression would.
		}
	}
	vals := make([]any, len(ds.inputs))
	for _, rec := range recs {
		if ds.prog == nil {
			st.ctxRec[i] = rec
			break
		}
		for j, p := range ds.inputs {
			if p.src == srcContext {
				vals[j], _ = walk(rec, p.segs, -1, nil)
			} else {
				vals[j], _, _ = st.get(p, nil)
			}
		}
		res, err := st.r.run(ds.prog, vals)
		if err != nil {
			return nil, false, evalErr(fmt.Sprintf("datasets[%d].expression", i), err)
		}
		if b, _ := res.(bool); b {
			st.ctxRec[i] = rec
			break
		}
	}
	return st.ctxRec[i], st.ctxRec[i] != nil, nil
}

// walk follows segs from v; the wildcard segment, if any, is replaced by
// the captured segments. A segment of digits indexes an array.
func walk(v any, segs []string, wild int, cap []string) (any, bool) {
	for i, s := range segs {
		if i == wild {
			for _, c := range cap {
				var ok bool
				if v, ok = child(v, c); !ok {
					return nil, false
				}
			}
			continue
		}
		var ok bool
		if v, ok = child(v, s); !ok {
			return nil, false
		}
	}
	return v, true
}

func child(v any, k string) (any, bool) {
	switch x := v.(type) {
	case map[string]any:
		c, ok := x[k]
		return c, ok
	case []any:
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i >= len(x) {
			return nil, false
		}
		return x[i], true
	}
	return nil, false
}

// expand resolves every map rule into instances and applies Azure IoT
// Operations' rank rule: when a rule resolves to the same input fields as
// an earlier one, it is a second rule (both apply) if its wildcard covers
// as many segments or more, and a specialization (it replaces the earlier
// one) if it covers fewer.
func (st *state) expand() error {
	for _, r := range st.m.maps {
		if r.wildIn < 0 {
			if err := st.addInstance(r, nil, nil); err != nil {
				return err
			}
			continue
		}
		var err error
		if e := st.enumerate(r.inputs[r.wildIn], func(cap []string, v any) bool {
			err = st.addInstance(r, cap, v)
			return err == nil
		}); e != nil {
			return evalErr(fmt.Sprintf("%s.inputs[%d]", r.field, r.wildIn), e)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// addInstance resolves the inputs of r for one capture (wv is the value
// of the wildcard input that produced it) and records the instance.
func (st *state) addInstance(r *rule, cap []string, wv any) error {
	start := len(st.arena)
	skip := false
	for j, p := range r.inputs {
		if cap != nil && j == r.wildIn {
			st.arena = append(st.arena, wv)
			continue
		}
		v, found, err := st.input(r, j, cap)
		if err != nil {
			return evalErr(fmt.Sprintf("%s.inputs[%d]", r.field, j), err)
		}
		if !found && p.wild >= 0 {
			// Every wildcard input must resolve for this capture.
			st.arena = st.arena[:start]
			return nil
		}
		if !found && j == 0 && r.prog == nil {
			skip = true
		}
		st.arena = append(st.arena, v)
	}
	ins := instance{r: r, cap: cap, vals: st.arena[start:len(st.arena):len(st.arena)], rank: len(cap), prev: -1, skip: skip}
	if st.m.special {
		key := r.key
		if cap != nil {
			key = st.resolvedKey(r, cap)
		}
		idx := len(st.insts)
		if prev, ok := st.byKey[key]; ok {
			ins.prev = prev
			for i := prev; i >= 0; i = st.insts[i].prev {
				if st.insts[i].rank > ins.rank {
					st.insts[i].dead = true
				}
			}
		}
		st.byKey[key] = idx
	}
	st.insts = append(st.insts, ins)
	return nil
}

// resolvedKey names the concrete fields a wildcard instance reads, in the
// same form as rule.key, so that rules can be compared.
func (st *state) resolvedKey(r *rule, cap []string) string {
	if len(r.inputs) == 1 {
		return string(r.inputs[0].appendKey(nil, cap))
	}
	parts := make([]string, len(r.inputs))
	for j, p := range r.inputs {
		parts[j] = string(p.appendKey(nil, cap))
	}
	return joinKeys(parts)
}

// enumerate calls fn for every match of a wildcard path, in key order so
// that results do not depend on map iteration. A trailing * matches leaf
// fields (one or more segments deep); a * followed by more segments
// matches every field under which those segments exist.
func (st *state) enumerate(p *path, fn func(cap []string, v any) bool) error {
	var root any
	switch p.src {
	case srcPayload:
		root = st.in.Payload
	case srcContext:
		rec, ok, err := st.context(p.ds)
		if err != nil || !ok {
			return err
		}
		root = rec
	case srcUserProp:
		for _, up := range st.in.UserProperties {
			if !fn([]string{up.Key}, up.Value) {
				return nil
			}
		}
		return nil
	default:
		return nil
	}
	if base, ok := walk(root, p.segs[:p.wild], -1, nil); ok {
		st.descend(base, p.segs[p.wild+1:], nil, fn)
	}
	return nil
}

// descend walks v for enumerate. Captures and key lists live in the
// state's arenas, so a match costs no allocation of its own.
func (st *state) descend(v any, suffix []string, prefix []string, fn func(cap []string, v any) bool) bool {
	obj, ok := v.(map[string]any)
	if !ok {
		return true
	}
	kstart := len(st.keys)
	for k := range obj {
		st.keys = append(st.keys, k)
	}
	keys := st.keys[kstart:]
	slices.Sort(keys)
	defer func() { st.keys = st.keys[:kstart] }()
	for _, k := range keys {
		c := obj[k]
		cstart := len(st.caps)
		st.caps = append(append(st.caps, prefix...), k)
		cap := st.caps[cstart:len(st.caps):len(st.caps)]
		sub, isObj := c.(map[string]any)
		if len(suffix) == 0 {
			if isObj && len(sub) > 0 {
				if !st.descend(sub, suffix, cap, fn) {
					return false
				}
				continue
			}
			if !fn(cap, c) {
				return false
			}
			continue
		}
		if x, ok := walk(c, suffix, -1, nil); ok {
			if !fn(cap, x) {
				return false
			}
		}
		if isObj {
			if !st.descend(sub, suffix, cap, fn) {
				return false
			}
		}
	}
	return true
}

// write stores v at the output path. A missing value computed by an
// expression removes the field (or user property); a copied JSON null is
// written as null.
func write(out *Message, doc map[string]any, p *path, cap []string, v any, computed bool) {
	switch p.src {
	case srcTopic:
		out.Topic = metaString(v)
	case srcContentType:
		out.ContentType = metaString(v)
	case srcUserProp:
		key := p.segs[0]
		if p.wild == 0 {
			key = cap[0]
		}
		out.UserProperties = slices.DeleteFunc(out.UserProperties, func(up UserProperty) bool { return up.Key == key })
		if v != nil {
			out.UserProperties = append(out.UserProperties, UserProperty{Key: key, Value: metaString(v)})
		}
	case srcPayload:
		if v == nil && computed {
			deletePath(doc, p, cap)
			return
		}
		setPath(doc, p, cap, clone(v))
	}
}

func metaString(v any) string {
	if v == nil {
		return ""
	}
	return toString(norm(v))
}

// segments yields the segments of p with the wildcard replaced by cap.
func segments(p *path, cap []string, yield func(seg string, last bool) bool) {
	n := len(p.segs)
	if p.wild >= 0 {
		n += len(cap) - 1
	}
	i := 0
	for j, s := range p.segs {
		if j == p.wild {
			for _, c := range cap {
				i++
				if !yield(c, i == n) {
					return
				}
			}
			continue
		}
		i++
		if !yield(s, i == n) {
			return
		}
	}
}

func setPath(doc map[string]any, p *path, cap []string, v any) {
	cur := doc
	segments(p, cap, func(s string, last bool) bool {
		if last {
			cur[s] = v
			return false
		}
		next, ok := cur[s].(map[string]any)
		if !ok {
			next = make(map[string]any)
			cur[s] = next
		}
		cur = next
		return true
	})
}

func deletePath(doc map[string]any, p *path, cap []string) {
	cur := doc
	segments(p, cap, func(s string, last bool) bool {
		if last {
			delete(cur, s)
			return false
		}
		next, ok := cur[s].(map[string]any)
		cur = next
		return ok
	})
}

// clone copies objects and arrays so that later writes into the output
// never reach the input document.
func clone(v any) any {
	switch x := v.(type) {
	case map[string]any:
		c := make(map[string]any, len(x))
		for k, e := range x {
			c[k] = clone(e)
		}
		return c
	case []any:
		c := make([]any, len(x))
		for i, e := range x {
			c[i] = clone(e)
		}
		return c
	}
	return v
}
