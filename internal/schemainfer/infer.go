// Package schemainfer proposes a JSON Schema (draft-07) from sample JSON
// messages: the types seen, the fields every sample had, numeric ranges.
package schemainfer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"regexp"
	"sort"
	"time"
)

// node is what the samples showed at one place of the messages.
type node struct {
	seen  int             // samples in which this place had a value (null included)
	types map[string]bool // JSON Schema type names seen
	// min and max are the extreme numbers seen, exactly (big.Rat), with
	// their text as it came.
	min, max         *big.Rat
	minText, maxText json.Number
	nums             int
	strs             int
	times            int // strings that are RFC 3339 date-times
	dates            int // strings that are YYYY-MM-DD dates
	props            map[string]*node
	objs             int // objects seen here (a property's presence is counted against it)
	items            *node
	keyOrd           []string // property names in first-seen order
}

func newNode() *node { return &node{types: map[string]bool{}} }

// Inferrer accumulates samples. It is not safe for concurrent use.
type Inferrer struct {
	root    *node
	samples int
}

// New returns an empty Inferrer.
func New() *Inferrer { return &Inferrer{root: newNode()} }

// Samples is how many messages were added.
func (in *Inferrer) Samples() int { return in.samples }

// Add takes one JSON message; a payload that is not JSON is an error and
// is not counted.
func (in *Inferrer) Add(payload []byte) error {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("not JSON: something follows the value")
	}
	in.samples++
	in.root.add(v)
	return nil
}

func (n *node) add(v any) {
	n.seen++
	switch x := v.(type) {
	case nil:
		n.types["null"] = true
	case bool:
		n.types["boolean"] = true
	case json.Number:
		r, ok := new(big.Rat).SetString(x.String())
		if !ok {
			n.types["number"] = true
			return
		}
		if r.IsInt() {
			n.types["integer"] = true
		} else {
			n.types["number"] = true
		}
		n.nums++
		if n.min == nil || r.Cmp(n.min) < 0 {
			n.min, n.minText = r, x
		}
		if n.max == nil || r.Cmp(n.max) > 0 {
			n.max, n.maxText = r, x
		}
	case string:
		n.types["string"] = true
		n.strs++
		if isDateTime(x) {
			n.times++
		} else if isDate(x) {
			n.dates++
		}
	case []any:
		n.types["array"] = true
		if n.items == nil {
			n.items = newNode()
		}
		for _, e := range x {
			n.items.add(e)
		}
	case map[string]any:
		n.types["object"] = true
		n.objs++
		if n.props == nil {
			n.props = map[string]*node{}
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := n.props[k]
			if p == nil {
				p = newNode()
				n.props[k] = p
				n.keyOrd = append(n.keyOrd, k)
			}
			p.add(x[k])
		}
	}
}

// Schema returns the proposed draft-07 schema document: at every place
// the types seen (integer when every number was whole; several types as a
// list), for objects the properties and as required those present in
// every sample, for arrays the items of all samples merged, for numbers
// the range seen (minimum, maximum), for strings that were all RFC 3339
// timestamps or dates the format. Annotations say how many samples it
// came from.
func (in *Inferrer) Schema() map[string]any {
	s := in.root.schema()
	out := map[string]any{"$schema": "http://json-schema.org/draft-07/schema#"}
	for k, v := range s {
		out[k] = v
	}
	out["description"] = fmt.Sprintf("inferred by edgeport schema infer from %d sample(s)", in.samples)
	return out
}

func (n *node) schema() map[string]any {
	s := map[string]any{}
	var types []string
	for t := range n.types {
		types = append(types, t)
	}
	if n.types["integer"] && n.types["number"] {
		types = remove(types, "integer")
	}
	sort.Strings(types)
	switch len(types) {
	case 0:
		return s // no value seen: anything
	case 1:
		s["type"] = types[0]
	default:
		list := make([]any, len(types))
		for i, t := range types {
			list[i] = t
		}
		s["type"] = list
	}
	if n.nums > 0 {
		s["minimum"], s["maximum"] = n.minText, n.maxText
	}
	if n.strs > 0 {
		switch {
		case n.times == n.strs:
			s["format"] = "date-time"
		case n.dates == n.strs:
			s["format"] = "date"
		}
	}
	if n.props != nil {
		props := map[string]any{}
		var req []any
		keys := append([]string(nil), n.keyOrd...)
		sort.Strings(keys)
		for _, k := range keys {
			p := n.props[k]
			props[k] = p.schema()
			if p.seen == n.objs {
				req = append(req, k)
			}
		}
		s["properties"] = props
		if len(req) > 0 {
			s["required"] = req
		}
	}
	if n.items != nil {
		s["items"] = n.items.schema()
	}
	return s
}

func remove(s []string, v string) []string {
	out := s[:0]
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

// RFC 3339's shapes, stricter than time.Parse (which takes a one-digit
// hour), so that a format proposed is one validators assert.
var (
	dateTimeRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$`)
	dateRE     = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)
)

func isDateTime(s string) bool {
	if !dateTimeRE.MatchString(s) {
		return false
	}
	_, err := time.Parse(time.RFC3339Nano, s)
	return err == nil
}

func isDate(s string) bool {
	if !dateRE.MatchString(s) {
		return false
	}
	_, err := time.Parse(time.DateOnly, s)
	return err == nil
}
