package config

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// schemaNode is a checked schema version: the compiled JSON Schema (nil
// for Delta/1.0), the parsed document and the structural shape that
// compatibility compares.
type schemaNode struct {
	compiled *jsonschema.Schema
	raw      any
	shape    *shape
	delta    bool
	// deltaValidator checks messages against a Delta schema (its JSON
	// Schema equivalent); nil for JSON Schemas.
	deltaValidator *jsonschema.Schema
	// fields are the columns the schema defines, or why it defines none.
	fields    []SchemaField
	fieldsErr error
}

// shape is what compatibility looks at in a schema: the types a value may
// have, object properties and which are required, whether other
// properties are allowed, enums, array items and numeric and length
// bounds. Anything else (patterns, formats, combinators) is compared as a
// whole: a change there is reported as a change of that keyword.
type shape struct {
	types    []string // nil: any type
	props    map[string]*shape
	required []string
	closed   bool     // additionalProperties: false
	enum     []string // canonical JSON of each allowed value; nil: no enum
	items    *shape
	bounds   map[string]float64 // minimum, maximum, minLength, maxLength, minItems, maxItems, exclusive*
	opaque   map[string]string  // keyword → canonical JSON, for keywords compared as a whole
}

// opaqueKeywords are compared for equality only.
var opaqueKeywords = []string{"$ref", "pattern", "format", "const", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "patternProperties", "dependencies", "dependentRequired", "dependentSchemas", "prefixItems", "multipleOf"}

func canonicalJSON(v any) string {
	b, _ := json.Marshal(v) // maps marshal with sorted keys
	return string(b)
}

func shapeFromJSON(v any) *shape {
	m, ok := v.(map[string]any)
	if !ok {
		return &shape{} // true, or a schema that says nothing
	}
	s := &shape{}
	switch t := m["type"].(type) {
	case string:
		s.types = []string{t}
	case []any:
		for _, e := range t {
			if str, ok := e.(string); ok {
				s.types = append(s.types, str)
			}
		}
	}
	if p, ok := m["properties"].(map[string]any); ok {
		s.props = map[string]*shape{}
		for k, pv := range p {
			s.props[k] = shapeFromJSON(pv)
		}
	}
	if r, ok := m["required"].([]any); ok {
		for _, e := range r {
			if str, ok := e.(string); ok {
				s.required = append(s.required, str)
			}
		}
	}
	if ap, ok := m["additionalProperties"].(bool); ok && !ap {
		s.closed = true
	}
	if e, ok := m["enum"].([]any); ok {
		s.enum = []string{}
		for _, x := range e {
			s.enum = append(s.enum, canonicalJSON(x))
		}
	}
	if it, ok := m["items"]; ok {
		s.items = shapeFromJSON(it)
	}
	for _, b := range []string{"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems"} {
		if n, ok := m[b].(json.Number); ok {
			if f, err := n.Float64(); err == nil {
				if s.bounds == nil {
					s.bounds = map[string]float64{}
				}
				s.bounds[b] = f
			}
		}
	}
	for _, k := range opaqueKeywords {
		if x, ok := m[k]; ok {
			if s.opaque == nil {
				s.opaque = map[string]string{}
			}
			s.opaque[k] = canonicalJSON(x)
		}
	}
	return s
}

// deltaPrimitiveRE matches Delta Lake's primitive type names.
var deltaPrimitiveRE = regexp.MustCompile(`^(string|long|integer|short|byte|float|double|boolean|binary|date|timestamp|timestamp_ntz|decimal\(\d+,\s*\d+\))$`)

// compileDelta checks a Delta/1.0 schema: the Azure IoT Operations
// envelope {"$schema": "Delta/1.0", "type": "object", "properties":
// {"type": "struct", "fields": [...]}} with Delta Lake's field types.
func compileDelta(doc any) (*schemaNode, error) {
	m, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("at /: must be an object")
	}
	if d, ok := m["$schema"]; ok && d != SchemaFormatDelta {
		return nil, fmt.Errorf("at /$schema: must be %q (got %s)", SchemaFormatDelta, canonicalJSON(d))
	}
	if t := m["type"]; t != "object" {
		return nil, fmt.Errorf("at /type: must be \"object\" (got %s)", canonicalJSON(t))
	}
	st, err := deltaType(m["properties"], "/properties")
	if err != nil {
		return nil, err
	}
	if len(st.types) == 0 || st.types[0] != "struct" {
		return nil, fmt.Errorf("at /properties: must be a struct type")
	}
	st.types = []string{"object"}
	n := &schemaNode{raw: doc, shape: st, delta: true}
	n.fields, n.fieldsErr = n.buildFields()
	// The validator checks types and nullability even where a column
	// could not be written (a decimal wider than Parquet output takes).
	var problems []string
	f := deltaField("", m["properties"], false, "/properties", &problems)
	if n.deltaValidator, err = compileDeltaValidator(f.Fields); err != nil {
		return nil, fmt.Errorf("at /properties: %v", err)
	}
	return n, nil
}

func deltaType(v any, at string) (*shape, error) {
	if s, ok := v.(string); ok {
		if !deltaPrimitiveRE.MatchString(s) {
			return nil, fmt.Errorf("at %s: unknown Delta type %q", at, s)
		}
		return &shape{types: []string{s}}, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("at %s: must be a type name or a type object", at)
	}
	switch m["type"] {
	case "struct":
		fields, ok := m["fields"].([]any)
		if !ok {
			return nil, fmt.Errorf("at %s/fields: required, an array of fields", at)
		}
		s := &shape{types: []string{"struct"}, props: map[string]*shape{}}
		for i, f := range fields {
			fat := at + "/fields/" + strconv.Itoa(i)
			fm, ok := f.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("at %s: must be an object", fat)
			}
			name, _ := fm["name"].(string)
			if name == "" {
				return nil, fmt.Errorf("at %s/name: required", fat)
			}
			if _, dup := s.props[name]; dup {
				return nil, fmt.Errorf("at %s/name: duplicate field %q", fat, name)
			}
			ft, err := deltaType(fm["type"], fat+"/type")
			if err != nil {
				return nil, err
			}
			s.props[name] = ft
			switch n := fm["nullable"].(type) {
			case nil:
			case bool:
				if !n {
					s.required = append(s.required, name)
				}
			default:
				return nil, fmt.Errorf("at %s/nullable: must be a boolean", fat)
			}
		}
		return s, nil
	case "array":
		el, err := deltaType(m["elementType"], at+"/elementType")
		if err != nil {
			return nil, err
		}
		return &shape{types: []string{"array"}, items: el}, nil
	case "map":
		k, err := deltaType(m["keyType"], at+"/keyType")
		if err != nil {
			return nil, err
		}
		val, err := deltaType(m["valueType"], at+"/valueType")
		if err != nil {
			return nil, err
		}
		return &shape{types: []string{"map"}, opaque: map[string]string{"keyType": canonicalJSON(k.types), "valueType": canonicalJSON(val.types)}}, nil
	}
	return nil, fmt.Errorf("at %s/type: must be struct, array, map or a primitive type name (got %s)", at, canonicalJSON(m["type"]))
}

// SchemaCompatibility lists why version next breaks mode against prev;
// nil means compatible. Backward: data valid under prev stays valid under
// next; Forward: data valid under next is valid under prev; Full: both.
func SchemaCompatibility(mode string, prev, next *CompiledSchema) []string {
	ps, ns := prev.shapeOf(), next.shapeOf()
	var out []string
	if mode == CompatBackward || mode == CompatFull {
		out = append(out, breaks(ps, ns, "", true)...)
	}
	if mode == CompatForward || mode == CompatFull {
		for _, b := range breaks(ns, ps, "", false) {
			if !slices.Contains(out, b) {
				out = append(out, b)
			}
		}
	}
	return out
}

func (n *schemaNode) shapeOf() *shape {
	if n.shape == nil {
		n.shape = shapeFromJSON(n.raw)
	}
	return n.shape
}

func fieldPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func describePath(path string) string {
	if path == "" {
		return "the document"
	}
	return "field " + strconv.Quote(path)
}

// widens reports whether every value of type from is a value of type to.
var widens = map[string][]string{
	"integer": {"number", "long"}, // JSON Schema integer ⊂ number; Delta integer ⊂ long
	"byte":    {"short", "integer", "long"},
	"short":   {"integer", "long"},
	"float":   {"double"},
}

func typeAccepts(to []string, t string) bool {
	if to == nil || slices.Contains(to, t) {
		return true
	}
	for _, w := range widens[t] {
		if slices.Contains(to, w) {
			return true
		}
	}
	return false
}

// breaks lists how a value valid under from can fail under to. toIsNew
// says which of the two is the newer version, for the wording.
func breaks(from, to *shape, path string, toIsNew bool) []string {
	var out []string
	// Types.
	switch {
	case to.types != nil && from.types == nil:
		out = append(out, fmt.Sprintf("%s: type restricted to %s", describePath(path), strings.Join(to.types, ",")))
	case to.types != nil:
		for _, t := range from.types {
			if !typeAccepts(to.types, t) {
				out = append(out, fmt.Sprintf("%s: type changed from %s to %s", describePath(path),
					strings.Join(from.types, ","), strings.Join(to.types, ",")))
				break
			}
		}
	}
	// Enums.
	switch {
	case to.enum != nil && from.enum == nil:
		out = append(out, fmt.Sprintf("%s: enum added", describePath(path)))
	case to.enum != nil:
		for _, v := range from.enum {
			if !slices.Contains(to.enum, v) {
				out = append(out, fmt.Sprintf("%s: enum no longer allows %s", describePath(path), v))
			}
		}
	}
	// Bounds: a lower bound may only go down, an upper bound only up.
	for _, b := range sortedKeys(to.bounds) {
		tv := to.bounds[b]
		fv, had := from.bounds[b]
		lower := strings.HasPrefix(b, "min") || b == "exclusiveMinimum"
		switch {
		case !had:
			out = append(out, fmt.Sprintf("%s: %s %v added", describePath(path), b, tv))
		case lower && tv > fv, !lower && tv < fv:
			out = append(out, fmt.Sprintf("%s: %s changed from %v to %v", describePath(path), b, fv, tv))
		}
	}
	// Keywords compared as a whole.
	for _, k := range sortedKeys(to.opaque) {
		if from.opaque[k] != to.opaque[k] {
			out = append(out, fmt.Sprintf("%s: %s changed", describePath(path), k))
		}
	}
	// Required properties.
	for _, r := range to.required {
		if slices.Contains(from.required, r) {
			continue
		}
		fp := fieldPath(path, r)
		_, known := from.props[r]
		switch {
		case known:
			out = append(out, fmt.Sprintf("field %q became required", fp))
		case toIsNew:
			out = append(out, fmt.Sprintf("added required field %q", fp))
		default:
			out = append(out, fmt.Sprintf("removed required field %q", fp))
		}
	}
	// Closing the object, and properties it no longer allows.
	if to.closed && !from.closed {
		out = append(out, fmt.Sprintf("%s: additionalProperties set to false", describePath(path)))
	}
	names := make([]string, 0, len(from.props))
	for k := range from.props {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		tp, ok := to.props[k]
		if !ok {
			if to.closed && from.closed {
				if toIsNew {
					out = append(out, fmt.Sprintf("removed field %q", fieldPath(path, k)))
				} else {
					out = append(out, fmt.Sprintf("added field %q", fieldPath(path, k)))
				}
			}
			continue
		}
		out = append(out, breaks(from.props[k], tp, fieldPath(path, k), toIsNew)...)
	}
	if from.items != nil && to.items != nil {
		out = append(out, breaks(from.items, to.items, path+"[]", toIsNew)...)
	} else if to.items != nil && from.items == nil {
		out = append(out, fmt.Sprintf("%s: items restricted", describePath(path)))
	}
	return out
}
