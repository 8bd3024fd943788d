package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Field types of SchemaField: Delta Lake's type names, plus FieldJSON.
const (
	FieldString    = "string"
	FieldLong      = "long"
	FieldInteger   = "integer"
	FieldShort     = "short"
	FieldByte      = "byte"
	FieldFloat     = "float"
	FieldDouble    = "double"
	FieldBoolean   = "boolean"
	FieldBinary    = "binary"
	FieldDate      = "date"
	FieldTimestamp = "timestamp"
	FieldDecimal   = "decimal" // with Precision and Scale
	FieldStruct    = "struct"  // with Fields
	FieldArray     = "array"   // with Elem
	FieldMap       = "map"     // string keys, Elem the value
	// FieldJSON holds a value of no single type (a JSON Schema without
	// one, or with several): its JSON text, in a string column.
	FieldJSON = "json"
)

// SchemaField is one column (or nested field) a schema defines: what a
// Parquet destination writes, and what a message must hold.
type SchemaField struct {
	Name     string        `json:"name"`
	Type     string        `json:"type"`
	Nullable bool          `json:"nullable"`
	Fields   []SchemaField `json:"fields,omitempty"` // struct
	Elem     *SchemaField  `json:"elem,omitempty"`   // array element, map value
	// Precision and Scale of a decimal.
	Precision int `json:"precision,omitempty"`
	Scale     int `json:"scale,omitempty"`
}

// MaxDecimalPrecision is the widest decimal a Parquet column is written
// for (an INT64 unscaled value).
const MaxDecimalPrecision = 18

// Fields returns the columns the schema defines: a Delta/1.0 schema's
// struct fields, or a JSON Schema object's properties (type and format
// give the column type; a property not listed in required, or whose type
// allows null, is nullable). A JSON Schema that is not an object with
// properties defines no columns.
func (n *schemaNode) Fields() ([]SchemaField, error) { return n.fields, n.fieldsErr }

func (n *schemaNode) buildFields() ([]SchemaField, error) {
	m, _ := n.raw.(map[string]any)
	if n.delta {
		var problems []string
		st := deltaField("", m["properties"], false, "/properties", &problems)
		if len(problems) > 0 {
			return nil, errors.New(strings.Join(problems, "; "))
		}
		return st.Fields, nil
	}
	j := jsonFields{root: m}
	f, err := j.field("", m, false, "", 0)
	if err != nil {
		return nil, err
	}
	if f.Type != FieldStruct || len(f.Fields) == 0 {
		return nil, errors.New("at /: the schema must describe an object with properties")
	}
	return f.Fields, nil
}

var decimalRE = regexp.MustCompile(`^decimal\((\d+),\s*(\d+)\)$`)

// deltaField reads a Delta type (checked already by deltaType); what a
// Parquet column cannot hold is added to problems.
func deltaField(name string, t any, nullable bool, at string, problems *[]string) SchemaField {
	f := SchemaField{Name: name, Nullable: nullable}
	if s, ok := t.(string); ok {
		switch {
		case s == "timestamp_ntz":
			f.Type = FieldTimestamp
		case decimalRE.MatchString(s):
			sub := decimalRE.FindStringSubmatch(s)
			f.Type = FieldDecimal
			f.Precision, _ = strconv.Atoi(sub[1])
			f.Scale, _ = strconv.Atoi(sub[2])
			if f.Precision < 1 || f.Precision > MaxDecimalPrecision || f.Scale > f.Precision {
				*problems = append(*problems, fmt.Sprintf("at %s: %s: Parquet output takes a precision of 1 to %d and a scale of at most the precision", at, s, MaxDecimalPrecision))
			}
		default:
			f.Type = s
		}
		return f
	}
	m, _ := t.(map[string]any)
	switch m["type"] {
	case "struct":
		f.Type = FieldStruct
		fields, _ := m["fields"].([]any)
		for i, x := range fields {
			fm, _ := x.(map[string]any)
			fname, _ := fm["name"].(string)
			nb, ok := fm["nullable"].(bool)
			if !ok {
				nb = true // Delta's default
			}
			f.Fields = append(f.Fields, deltaField(fname, fm["type"], nb, at+"/fields/"+strconv.Itoa(i)+"/type", problems))
		}
	case "array":
		f.Type = FieldArray
		cn, ok := m["containsNull"].(bool)
		if !ok {
			cn = true
		}
		el := deltaField("element", m["elementType"], cn, at+"/elementType", problems)
		f.Elem = &el
	case "map":
		f.Type = FieldMap
		if k, _ := m["keyType"].(string); k != "string" {
			*problems = append(*problems, fmt.Sprintf("at %s/keyType: only string keys are supported (got %s)", at, canonicalJSON(m["keyType"])))
		}
		vn, ok := m["valueContainsNull"].(bool)
		if !ok {
			vn = true
		}
		el := deltaField("value", m["valueType"], vn, at+"/valueType", problems)
		f.Elem = &el
	}
	return f
}

// jsonFields derives fields from a JSON Schema document.
type jsonFields struct{ root map[string]any }

// deref follows local references (#/definitions/x, #/$defs/x).
func (j jsonFields) deref(m map[string]any, depth int) (map[string]any, error) {
	for depth < 32 {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m, nil
		}
		p, ok := strings.CutPrefix(ref, "#/")
		if !ok {
			return nil, fmt.Errorf("$ref %q: only references inside the document define columns", ref)
		}
		var cur any = j.root
		for _, seg := range strings.Split(p, "/") {
			seg = strings.ReplaceAll(strings.ReplaceAll(seg, "~1", "/"), "~0", "~")
			cm, _ := cur.(map[string]any)
			cur = cm[seg]
		}
		next, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("$ref %q: not found", ref)
		}
		m = next
		depth++
	}
	return nil, errors.New("$ref: too deep")
}

func (j jsonFields) field(name string, v any, nullable bool, at string, depth int) (SchemaField, error) {
	f := SchemaField{Name: name, Nullable: nullable, Type: FieldJSON}
	if depth > 32 {
		return f, fmt.Errorf("at %s: nested too deep (a recursive schema cannot define columns)", orRoot(at))
	}
	m, ok := v.(map[string]any)
	if !ok {
		return f, nil // true: any value
	}
	m, err := j.deref(m, 0)
	if err != nil {
		return f, fmt.Errorf("at %s: %v", orRoot(at), err)
	}
	var types []string
	switch t := m["type"].(type) {
	case string:
		types = []string{t}
	case []any:
		for _, e := range t {
			if s, ok := e.(string); ok {
				types = append(types, s)
			}
		}
	}
	if i := indexOf(types, "null"); i >= 0 {
		f.Nullable = true
		types = append(types[:i:i], types[i+1:]...)
	}
	if len(types) != 1 {
		return f, nil // no single type: JSON text
	}
	format, _ := m["format"].(string)
	switch types[0] {
	case "string":
		switch {
		case format == "date-time":
			f.Type = FieldTimestamp
		case format == "date":
			f.Type = FieldDate
		case m["contentEncoding"] == "base64":
			f.Type = FieldBinary
		default:
			f.Type = FieldString
		}
	case "integer":
		f.Type = FieldLong
	case "number":
		f.Type = FieldDouble
	case "boolean":
		f.Type = FieldBoolean
	case "array":
		items, ok := m["items"]
		if !ok {
			return f, nil
		}
		if _, tuple := items.([]any); tuple {
			return f, nil
		}
		el, err := j.field("element", items, false, at+"/items", depth+1)
		if err != nil {
			return f, err
		}
		f.Type, f.Elem = FieldArray, &el
	case "object":
		props, _ := m["properties"].(map[string]any)
		if len(props) == 0 {
			if ap, ok := m["additionalProperties"].(map[string]any); ok {
				el, err := j.field("value", ap, false, at+"/additionalProperties", depth+1)
				if err != nil {
					return f, err
				}
				f.Type, f.Elem = FieldMap, &el
			}
			return f, nil
		}
		required := map[string]bool{}
		if r, ok := m["required"].([]any); ok {
			for _, e := range r {
				if s, ok := e.(string); ok {
					required[s] = true
				}
			}
		}
		names := make([]string, 0, len(props))
		for k := range props {
			names = append(names, k)
		}
		sort.Strings(names)
		f.Type = FieldStruct
		for _, k := range names {
			sf, err := j.field(k, props[k], !required[k], at+"/properties/"+k, depth+1)
			if err != nil {
				return f, err
			}
			f.Fields = append(f.Fields, sf)
		}
	}
	return f, nil
}

func orRoot(at string) string {
	if at == "" {
		return "/"
	}
	return at
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// deltaJSONSchema turns Delta fields into the JSON Schema a message must
// satisfy to be written under them: the types, integer ranges, formats of
// dates and timestamps, and non-nullable fields required and not null.
func deltaJSONSchema(fields []SchemaField) map[string]any {
	return fieldJSONSchema(SchemaField{Type: FieldStruct, Fields: fields})
}

var intRanges = map[string][2]int64{
	FieldLong:    {-1 << 63, 1<<63 - 1},
	FieldInteger: {-1 << 31, 1<<31 - 1},
	FieldShort:   {-1 << 15, 1<<15 - 1},
	FieldByte:    {-1 << 7, 1<<7 - 1},
}

func fieldJSONSchema(f SchemaField) map[string]any {
	var s map[string]any
	switch f.Type {
	case FieldString:
		s = map[string]any{"type": "string"}
	case FieldBinary:
		s = map[string]any{"type": "string", "contentEncoding": "base64"}
	case FieldDate:
		s = map[string]any{"type": "string", "format": "date"}
	case FieldTimestamp:
		s = map[string]any{"type": "string", "format": "date-time"}
	case FieldLong, FieldInteger, FieldShort, FieldByte:
		r := intRanges[f.Type]
		s = map[string]any{"type": "integer", "minimum": json.Number(strconv.FormatInt(r[0], 10)), "maximum": json.Number(strconv.FormatInt(r[1], 10))}
	case FieldFloat, FieldDouble, FieldDecimal:
		s = map[string]any{"type": "number"}
	case FieldBoolean:
		s = map[string]any{"type": "boolean"}
	case FieldStruct:
		props := map[string]any{}
		var req []any
		for _, sf := range f.Fields {
			props[sf.Name] = fieldJSONSchema(sf)
			if !sf.Nullable {
				req = append(req, sf.Name)
			}
		}
		s = map[string]any{"type": "object", "properties": props}
		if len(req) > 0 {
			s["required"] = req
		}
	case FieldArray:
		s = map[string]any{"type": "array", "items": fieldJSONSchema(*f.Elem)}
	case FieldMap:
		s = map[string]any{"type": "object", "additionalProperties": fieldJSONSchema(*f.Elem)}
	default:
		return map[string]any{}
	}
	if f.Nullable {
		s["type"] = []any{s["type"], "null"}
	}
	return s
}

// compileDeltaValidator compiles the JSON Schema equivalent of a Delta
// schema; formats (date, date-time) are asserted, since the columns need
// them.
func compileDeltaValidator(fields []SchemaField) (*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	c.AssertFormat()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(canonicalJSON(deltaJSONSchema(fields))))
	if err != nil {
		return nil, err
	}
	if err := c.AddResource(schemaBaseURL, doc); err != nil {
		return nil, err
	}
	return c.Compile(schemaBaseURL)
}

// MessageError is a message that does not validate: where in the message
// (a JSON pointer) and which schema keyword failed.
type MessageError struct {
	InstancePath string // "/pos/lat"; "" is the whole message
	Keyword      string // "required", "type", ...
	Message      string
	More         int // further failures not described
}

func (e *MessageError) Error() string {
	s := fmt.Sprintf("at %s: %s: %s", orRoot(e.InstancePath), e.Keyword, e.Message)
	if e.More > 0 {
		s += fmt.Sprintf(" (and %d more)", e.More)
	}
	return s
}

// ValidateMessage checks a JSON payload against the schema version. A
// payload that is not JSON is a *MessageError at the root too.
func (n *schemaNode) ValidateMessage(payload []byte) error {
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(string(payload)))
	if err != nil {
		return &MessageError{Keyword: "json", Message: "the payload is not JSON: " + err.Error()}
	}
	sch := n.compiled
	if n.delta {
		if sch = n.deltaValidator; sch == nil {
			return errors.New("the Delta schema has no validator")
		}
	}
	err = sch.Validate(v)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	var leaves []*jsonschema.ValidationError
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			leaves = append(leaves, e)
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	first := leaves[0]
	me := &MessageError{More: len(leaves) - 1, Message: first.ErrorKind.LocalizedString(schemaPrinter)}
	if len(first.InstanceLocation) > 0 {
		var b strings.Builder
		for _, seg := range first.InstanceLocation {
			b.WriteByte('/')
			b.WriteString(strings.ReplaceAll(strings.ReplaceAll(seg, "~", "~0"), "/", "~1"))
		}
		me.InstancePath = b.String()
	}
	if kp := first.ErrorKind.KeywordPath(); len(kp) > 0 {
		me.Keyword = kp[len(kp)-1]
	} else {
		// Kinds without a keyword of their own: the false schema, not.
		me.Keyword = strings.ToLower(strings.TrimPrefix(fmt.Sprintf("%T", first.ErrorKind), "*kind."))
		if me.Keyword == "falseschema" {
			me.Keyword = "false"
		}
	}
	return me
}

// DeltaSchema renders fields as a Delta/1.0 schema document (Azure IoT
// Operations' envelope); a FieldJSON field becomes a string.
func DeltaSchema(fields []SchemaField) map[string]any {
	return map[string]any{
		"$schema":    SchemaFormatDelta,
		"type":       "object",
		"properties": deltaTypeOf(SchemaField{Type: FieldStruct, Fields: fields}),
	}
}

func deltaTypeOf(f SchemaField) any {
	switch f.Type {
	case FieldStruct:
		fields := make([]any, len(f.Fields))
		for i, sf := range f.Fields {
			fields[i] = map[string]any{"name": sf.Name, "type": deltaTypeOf(sf), "nullable": sf.Nullable, "metadata": map[string]any{}}
		}
		return map[string]any{"type": "struct", "fields": fields}
	case FieldArray:
		return map[string]any{"type": "array", "elementType": deltaTypeOf(*f.Elem), "containsNull": f.Elem.Nullable}
	case FieldMap:
		return map[string]any{"type": "map", "keyType": "string", "valueType": deltaTypeOf(*f.Elem), "valueContainsNull": f.Elem.Nullable}
	case FieldDecimal:
		return fmt.Sprintf("decimal(%d,%d)", f.Precision, f.Scale)
	case FieldJSON:
		return FieldString
	}
	return f.Type
}
