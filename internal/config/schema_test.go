package config

import (
	"errors"
	"strings"
	"testing"
)

func mustCompile(t *testing.T, format, content string) *CompiledSchema {
	t.Helper()
	n, err := CompileSchemaContent(format, content)
	if err != nil {
		t.Fatalf("compiling %s: %v", content, err)
	}
	return n
}

// TestSchemaCompatibilityRules has a case per rule: the breaking change
// and the message that names the field, under each mode that sees it.
func TestSchemaCompatibilityRules(t *testing.T) {
	const base = `{"type": "object", "required": ["id"], "properties": {
		"id": {"type": "string"},
		"temp": {"type": "number", "minimum": -50, "maximum": 150},
		"count": {"type": "integer"},
		"unit": {"type": "string", "enum": ["C", "F"]},
		"tags": {"type": "array", "items": {"type": "string"}},
		"pos": {"type": "object", "properties": {"lat": {"type": "number"}}}}}`
	// edit replaces one property definition of base (or, with a
	// "required:" prefix, the required list).
	edit := func(old, repl string) string {
		if !strings.Contains(base, old) {
			t.Fatalf("base does not contain %s", old)
		}
		return strings.Replace(base, old, repl, 1)
	}
	cases := []struct {
		name, next string
		backward   []string // breaks under Backward (nil: compatible)
		forward    []string
	}{
		{name: "unchanged", next: base},
		{name: "added optional field", next: edit(`"id": {"type": "string"},`, `"id": {"type": "string"}, "site": {"type": "string"},`)},
		{
			name:     "added required field",
			next:     edit(`"required": ["id"], "properties": {`, `"required": ["id", "site"], "properties": {"site": {"type": "string"},`),
			backward: []string{`added required field "site"`},
		},
		{
			name:     "optional field became required",
			next:     edit(`"required": ["id"]`, `"required": ["id", "temp"]`),
			backward: []string{`field "temp" became required`},
		},
		{
			name:    "removed required field",
			next:    edit(`"required": ["id"], "properties": {`+"\n\t\t"+`"id": {"type": "string"},`, `"properties": {`),
			forward: []string{`removed required field "id"`},
		},
		{
			name:     "type change",
			next:     edit(`"temp": {"type": "number"`, `"temp": {"type": "string"`),
			backward: []string{`field "temp": type changed from number to string`},
			forward:  []string{`field "temp": type changed from string to number`},
		},
		{
			name:    "type widened integer to number",
			next:    edit(`"count": {"type": "integer"}`, `"count": {"type": "number"}`),
			forward: []string{`field "count": type changed from number to integer`},
		},
		{
			name:     "enum narrowing",
			next:     edit(`["C", "F"]`, `["C"]`),
			backward: []string{`field "unit": enum no longer allows "F"`},
		},
		{
			name:    "enum widening",
			next:    edit(`["C", "F"]`, `["C", "F", "K"]`),
			forward: []string{`field "unit": enum no longer allows "K"`},
		},
		{
			name:     "range narrowed",
			next:     edit(`"maximum": 150`, `"maximum": 100`),
			backward: []string{`field "temp": maximum changed from 150 to 100`},
		},
		{
			name:     "nested field type change",
			next:     edit(`"lat": {"type": "number"}`, `"lat": {"type": "string"}`),
			backward: []string{`field "pos.lat": type changed from number to string`},
			forward:  []string{`field "pos.lat": type changed from string to number`},
		},
		{
			name:     "array item type change",
			next:     edit(`"items": {"type": "string"}`, `"items": {"type": "integer"}`),
			backward: []string{`field "tags[]": type changed from string to integer`},
			forward:  []string{`field "tags[]": type changed from integer to string`},
		},
		{
			name:     "closed object",
			next:     strings.Replace(base, `"type": "object", "required"`, `"type": "object", "additionalProperties": false, "required"`, 1),
			backward: []string{`the document: additionalProperties set to false`},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			prev := mustCompile(t, SchemaFormatJSONDraft07, base)
			next := mustCompile(t, SchemaFormatJSONDraft07, c.next)
			check := func(mode string, want []string) {
				t.Helper()
				got := SchemaCompatibility(mode, prev, next)
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("%s:\n got  %q\n want %q", mode, got, want)
				}
			}
			check(CompatBackward, c.backward)
			check(CompatForward, c.forward)
			full := append(append([]string{}, c.backward...), c.forward...)
			if len(full) == 0 {
				full = nil
			}
			check(CompatFull, full)
		})
	}
}

// TestSchemaCompatibilityClosedRemoval: with additionalProperties false on
// both sides, removing a field breaks old data (Backward).
func TestSchemaCompatibilityClosedRemoval(t *testing.T) {
	prev := mustCompile(t, SchemaFormatJSONDraft07, `{"type": "object", "additionalProperties": false, "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}`)
	next := mustCompile(t, SchemaFormatJSONDraft07, `{"type": "object", "additionalProperties": false, "properties": {"a": {"type": "string"}}}`)
	if got := SchemaCompatibility(CompatBackward, prev, next); strings.Join(got, ";") != `removed field "b"` {
		t.Errorf("backward: %q", got)
	}
	if got := SchemaCompatibility(CompatForward, prev, next); got != nil {
		t.Errorf("forward: %q", got)
	}
}

// TestSchemaCompatibilityDelta: a Delta table may gain nullable columns
// and widen types; a non-nullable column or a narrowed type breaks it.
func TestSchemaCompatibilityDelta(t *testing.T) {
	table := func(fields string) string {
		return `{"$schema": "Delta/1.0", "type": "object", "properties": {"type": "struct", "fields": [` + fields + `]}}`
	}
	prev := mustCompile(t, SchemaFormatDelta, table(`{"name": "a", "type": "integer", "nullable": false}`))
	cases := []struct {
		fields, mode string
		want         string
	}{
		{`{"name": "a", "type": "long", "nullable": false}`, CompatBackward, ""},
		{`{"name": "a", "type": "integer", "nullable": false}, {"name": "b", "type": "string", "nullable": true}`, CompatFull, ""},
		{`{"name": "a", "type": "integer", "nullable": false}, {"name": "b", "type": "string", "nullable": false}`, CompatBackward, `added required field "b"`},
		{`{"name": "a", "type": "short", "nullable": false}`, CompatBackward, `field "a": type changed from integer to short`},
		{`{"name": "a", "type": "long", "nullable": false}`, CompatForward, `field "a": type changed from long to integer`},
		{`{"name": "b", "type": "string"}`, CompatForward, `removed required field "a"`},
	}
	for _, c := range cases {
		got := SchemaCompatibility(c.mode, prev, mustCompile(t, SchemaFormatDelta, table(c.fields)))
		if strings.Join(got, "; ") != c.want {
			t.Errorf("%s %s: got %q, want %q", c.mode, c.fields, got, c.want)
		}
	}
}

// TestSchemaVersionsImmutable applies a schema, then tries to change a
// stored version: refused with both hashes; adding a version is accepted.
func TestSchemaVersionsImmutable(t *testing.T) {
	s := NewStore(Builtin(), "", nil)
	obj := func(versions ...SchemaVersion) *Object {
		return &Object{APIVersion: APIVersion, Kind: "Schema", Metadata: Metadata{Name: "t"},
			Spec: &SchemaSpec{Format: SchemaFormatJSONDraft07, Versions: versions}}
	}
	v1 := SchemaVersion{Name: "1", SchemaContent: `{"type": "object"}`}
	if _, _, err := s.Apply(obj(v1), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	changed := SchemaVersion{Name: "1", SchemaContent: `{"type": "object", "properties": {"a": {"type": "string"}}}`}
	_, _, err := s.Apply(obj(changed), ApplyOptions{})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("changing version 1: %v", err)
	}
	want := "spec.versions[0].schemaContent: version 1 is immutable: stored with hash " +
		SchemaContentHash(v1.SchemaContent)[:12] + ", got " + SchemaContentHash(changed.SchemaContent)[:12] + "; add a new version instead"
	if got := strings.Join(ve.Errs.Strings(), "\n"); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	v2 := changed
	v2.Name = "2"
	if res, _, err := s.Apply(obj(v1, v2), ApplyOptions{}); err != nil || res != Configured {
		t.Fatalf("adding version 2: %v %v", res, err)
	}
	o, _ := s.Get(Key{Kind: "Schema", Name: "t"})
	if v := o.Spec.(*SchemaSpec).Latest(); v == nil || v.Name != "2" {
		t.Fatalf("latest = %+v", v)
	}
}

func TestSchemaContentHash(t *testing.T) {
	// SHA-256 of the empty string, a fixed point of the definition.
	if got := SchemaContentHash(""); got != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Fatal(got)
	}
}

// FuzzCompileSchemaContent: any content compiles or fails with an error,
// and never panics, in every format.
func FuzzCompileSchemaContent(f *testing.F) {
	f.Add(`{"type": "object", "properties": {"a": {"type": "string"}}}`)
	f.Add(`{"type": "object", "properties": {"type": "struct", "fields": [{"name": "a", "type": {"type": "array", "elementType": "long"}}]}}`)
	f.Add(`{"$ref": "#/definitions/x", "definitions": {"x": {"enum": [1, "a", null]}}}`)
	f.Add(`[`)
	f.Fuzz(func(t *testing.T, content string) {
		for _, format := range []string{SchemaFormatJSONDraft07, SchemaFormatJSON2020, SchemaFormatDelta} {
			n, err := CompileSchemaContent(format, content)
			if err == nil {
				SchemaCompatibility(CompatFull, n, n)
			}
		}
	})
}
