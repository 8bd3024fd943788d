// Package expr implements the dataflow mapping and filter language of Azure
// IoT Operations: field paths, $1..$n expressions, wildcards, datasets and the function library.
package expr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Spec is the transformation a dataflow applies, with Azure IoT
// Operations' field names (builtInTransformationSettings).
type Spec struct {
	Datasets []DatasetRule `json:"datasets,omitempty"`
	Filter   []FilterRule  `json:"filter,omitempty"`
	Map      []MapRule     `json:"map,omitempty"`
}

// DatasetRule selects the record of a state-store dataset that a message
// is enriched with: the first record for which Expression is true. Key is
// the state-store key, optionally "<key> as <alias>". Inputs are
// $source.<path> (the message) and $context.<path> (the record).
type DatasetRule struct {
	Key         string   `json:"key"`
	Inputs      []string `json:"inputs,omitempty"`
	Expression  string   `json:"expression,omitempty"`
	Description string   `json:"description,omitempty"`
}

// FilterRule drops a message when Expression is true. Rules are OR-ed.
type FilterRule struct {
	Inputs      []string `json:"inputs,omitempty"`
	Expression  string   `json:"expression"`
	Description string   `json:"description,omitempty"`
}

// MapRule writes Output from Inputs, through Expression when there is
// one. An empty Output writes nothing, which removes the inputs from the
// output when a wildcard rule above would have copied them.
type MapRule struct {
	Inputs      []string `json:"inputs"`
	Output      string   `json:"output"`
	Expression  string   `json:"expression,omitempty"`
	Description string   `json:"description,omitempty"`
}

// Message is what a mapping reads and writes: a decoded JSON document and
// the message's metadata. Kafka headers travel as UserProperties.
type Message struct {
	// Payload is a document as encoding/json decodes it (map[string]any,
	// []any, string, float64 or json.Number, bool, nil); int64 is accepted
	// too. Decode with json.Decoder.UseNumber (or DecodeJSON) so that
	// integers stay integers: Azure IoT Operations divides integers
	// exactly as integers.
	Payload        any
	Topic          string
	ContentType    string
	UserProperties []UserProperty
}

// UserProperty is an MQTT 5 user property (or a Kafka header).
type UserProperty struct{ Key, Value string }

// Datasets gives a mapping the records of its contextualization datasets.
// The dataflow engine implements it over the state store, caching each key
// and refreshing it on change notifications.
type Datasets interface {
	// Records returns the records stored under the state-store key, in
	// order, or nil when the key holds nothing. It is called for every
	// message that needs the dataset, so it must be cheap. The caller
	// does not modify the records, and the implementation must not
	// either: a changed dataset is returned as a new slice (the mapping
	// keeps an index per slice).
	Records(key string) []any
}

// DecodeJSON decodes a payload keeping integers exact (as json.Number).
func DecodeJSON(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON value")
	}
	return v, nil
}

// ParseJSONLines decodes a dataset stored as JSON Lines: one JSON value
// per line, blank lines ignored.
func ParseJSONLines(data []byte) ([]any, error) {
	var out []any
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		v, err := DecodeJSON(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// Error is a problem with one field of a Spec. Field is relative to the
// transformation ("map[3].expression", "filter[0].inputs[1]"); the caller
// prefixes its own path. Pos is a 1-based byte offset in the field's text,
// 0 when the problem is the field as a whole.
type Error struct {
	Field string
	Pos   int
	Msg   string
}

func (e *Error) Error() string { return e.Field + ": " + e.Detail() }

// Detail is the message without the field: "5: unknown function \"ctof\"".
func (e *Error) Detail() string {
	if e.Pos > 0 {
		return strconv.Itoa(e.Pos) + ": " + e.Msg
	}
	return e.Msg
}

// Errors is every problem Compile found, in the order of the spec.
type Errors []*Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

// Mapping is a compiled Spec. It is safe for concurrent use; the only
// state it keeps between messages is the last known values of `? $last`
// inputs.
type Mapping struct {
	datasets []*dataset
	filters  []*rule
	maps     []*rule
	lookup   Datasets
	special  bool // some map rule has a wildcard, so specialization can apply
	nslots   int

	states sync.Pool // *state, each with its own VM

	mu   sync.Mutex // guards last
	last []any      // last known value per `? $last` slot
}

type dataset struct {
	key, alias string
	inputs     []*path
	prog       *program

	// When the expression is `$i == $j` between the message and the
	// record (the usual shape), records are found through a hash index
	// instead of running the expression on each. eqMsg and eqRec are the
	// input indexes, -1 when the expression has another shape.
	eqMsg, eqRec int

	mu  sync.Mutex // guards idx
	idx *recordIndex
}

type rule struct {
	field  string // "map[3]", for errors
	inputs []*path
	output *path // nil when the output is empty
	prog   *program
	wildIn int    // index of the first input with a wildcard, -1 when none
	slots  []int  // per input: the `? $last` slot, -1 when none
	key    string // identity of the inputs when there is no wildcard
	bad    bool   // an input did not parse (Compile fails)
}

// Compile checks and compiles a spec. Every expression is compiled once
// here; errors name the field and position. datasets may be nil: then
// every dataset is empty, which suits validating a spec without running it.
func Compile(spec Spec, datasets Datasets) (*Mapping, error) {
	m := &Mapping{lookup: datasets}
	c := newCompiler(&regexCache{})
	var errs Errors
	add := func(field string, err error) {
		var se *SyntaxError
		if errors.As(err, &se) {
			errs = append(errs, &Error{Field: field, Pos: se.Pos, Msg: se.Msg})
			return
		}
		errs = append(errs, &Error{Field: field, Msg: err.Error()})
	}
	aliases := map[string]int{}
	for i, d := range spec.Datasets {
		f := fmt.Sprintf("datasets[%d]", i)
		ds := &dataset{eqMsg: -1, eqRec: -1}
		key, alias, hasAlias := strings.Cut(d.Key, " as ")
		ds.key, ds.alias = strings.TrimSpace(key), strings.TrimSpace(alias)
		if !hasAlias {
			ds.alias = ds.key
		}
		switch {
		case ds.key == "":
			add(f+".key", errors.New("a dataset needs the state-store key it is read from"))
		case ds.alias == "":
			add(f+".key", errors.New(`expected "<key> as <alias>"`))
		default:
			if j, dup := aliases[ds.alias]; dup {
				add(f+".key", fmt.Errorf("dataset %q is already declared by datasets[%d]", ds.alias, j))
			}
			aliases[ds.alias] = i
		}
		m.datasets = append(m.datasets, ds)
	}
	for i, d := range spec.Datasets {
		f := fmt.Sprintf("datasets[%d]", i)
		ds := m.datasets[i]
		if len(d.Inputs) > maxInputs {
			add(f+".inputs", fmt.Errorf("%d inputs, more than the %d allowed", len(d.Inputs), maxInputs))
			continue
		}
		for j, in := range d.Inputs {
			p, err := parsePath(in)
			if err != nil {
				add(fmt.Sprintf("%s.inputs[%d]", f, j), err)
				continue
			}
			switch {
			case p.wild >= 0:
				add(fmt.Sprintf("%s.inputs[%d]", f, j), errors.New("a dataset input cannot have a wildcard"))
			case p.last || p.hasDef:
				add(fmt.Sprintf("%s.inputs[%d]", f, j), errors.New("a dataset input cannot use ? $last or ?? <default>"))
			case p.src == srcContext && p.alias != "" && p.alias != ds.alias:
				add(fmt.Sprintf("%s.inputs[%d]", f, j), fmt.Errorf("a dataset's inputs read the message ($source.<path>) and this dataset's record ($context.<path>), not $context(%s)", p.alias))
			}
			if p.src == srcContext {
				p.alias = "" // the record under test
			}
			ds.inputs = append(ds.inputs, p)
		}
		if d.Expression != "" {
			prog, err := c.compile(d.Expression, len(d.Inputs))
			if err != nil {
				add(f+".expression", err)
			}
			ds.prog = prog
			ds.eqMsg, ds.eqRec = equalityInputs(d.Expression, ds.inputs)
		}
	}
	for i, fr := range spec.Filter {
		f := fmt.Sprintf("filter[%d]", i)
		r := m.rule(c, f, fr.Inputs, fr.Expression, aliases, add)
		if strings.TrimSpace(fr.Expression) == "" {
			add(f+".expression", errors.New("a filter rule needs an expression; the message is dropped when it is true"))
		}
		if r.wildIn >= 0 {
			add(fmt.Sprintf("%s.inputs[%d]", f, r.wildIn), errors.New("filters take no wildcards"))
		}
		m.filters = append(m.filters, r)
	}
	for i, mr := range spec.Map {
		f := fmt.Sprintf("map[%d]", i)
		r := m.rule(c, f, mr.Inputs, mr.Expression, aliases, add)
		if len(mr.Inputs) == 0 {
			add(f+".inputs", errors.New("a map rule needs at least one input"))
		}
		if mr.Expression == "" && len(mr.Inputs) > 1 && strings.TrimSpace(mr.Output) != "" {
			add(f+".expression", errors.New("an expression is required to combine several inputs"))
		}
		if strings.TrimSpace(mr.Output) != "" {
			p, err := parsePath(mr.Output)
			switch {
			case err != nil:
				add(f+".output", err)
			case p.last || p.hasDef:
				add(f+".output", errors.New("? $last and ?? <default> apply to inputs, not to the output"))
			case p.src == srcContext:
				add(f+".output", errors.New("a dataset cannot be written"))
			case p.src == srcPayload && len(p.segs) == 0:
				add(f+".output", errors.New("empty output path"))
			case r.bad:
				// The inputs are wrong already; do not guess about the output.
			case p.wild >= 0 && r.wildIn < 0:
				add(f+".output", errors.New("the output has a wildcard but no input does"))
			case p.wild < 0 && r.wildIn >= 0:
				add(f+".output", fmt.Errorf("inputs[%d] has a wildcard, so the output needs one to place each match", r.wildIn))
			default:
				r.output = p
			}
		}
		if r.wildIn >= 0 {
			m.special = true
		}
		m.maps = append(m.maps, r)
	}
	m.last = make([]any, m.nslots)
	if len(errs) > 0 {
		return nil, errs
	}
	return m, nil
}

func (m *Mapping) rule(c *exprCompiler, f string, inputs []string, expression string, aliases map[string]int, add func(string, error)) *rule {
	r := &rule{field: f, wildIn: -1}
	if len(inputs) > maxInputs {
		add(f+".inputs", fmt.Errorf("%d inputs, more than the %d allowed", len(inputs), maxInputs))
		return r
	}
	keys := make([]string, 0, len(inputs))
	for j, in := range inputs {
		fi := fmt.Sprintf("%s.inputs[%d]", f, j)
		p, err := parsePath(in)
		if err != nil {
			add(fi, err)
			p = &path{wild: -1}
			r.bad = true
		}
		slot := -1
		switch {
		case p.src == srcContext && p.alias == "":
			add(fi, errors.New("write $context(<dataset>).<path>; bare $context. is for dataset rules"))
		case p.src == srcContext:
			i, ok := aliases[p.alias]
			if !ok {
				add(fi, fmt.Errorf("unknown dataset %q%s", p.alias, declared(aliases)))
			}
			p.ds = i
		}
		if p.wild >= 0 {
			if p.last {
				add(fi, errors.New("? $last cannot follow a wildcard input"))
			}
			if r.wildIn < 0 {
				r.wildIn = j
			}
		}
		if p.last {
			slot = m.nslots
			m.nslots++
		}
		r.inputs = append(r.inputs, p)
		r.slots = append(r.slots, slot)
		keys = append(keys, string(p.appendKey(nil, nil)))
	}
	r.key = joinKeys(keys)
	if strings.TrimSpace(expression) != "" {
		prog, err := c.compile(expression, len(inputs))
		if err != nil {
			add(f+".expression", err)
		}
		r.prog = prog
	}
	return r
}

func declared(aliases map[string]int) string {
	if len(aliases) == 0 {
		return " (no datasets are declared)"
	}
	names := make([]string, 0, len(aliases))
	for a := range aliases {
		names = append(names, a)
	}
	sort.Strings(names)
	return " (declared: " + strings.Join(names, ", ") + ")"
}

// DatasetKeys returns the state-store keys the mapping reads, so that
// the caller can load and watch them.
func (m *Mapping) DatasetKeys() []string {
	keys := make([]string, len(m.datasets))
	for i, d := range m.datasets {
		keys[i] = d.key
	}
	return keys
}
