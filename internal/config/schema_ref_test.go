package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSchemaRef(t *testing.T) {
	cases := []struct {
		in, name, version, err string
	}{
		{in: "aio-sr://thermostat:1", name: "thermostat", version: "1"},
		{in: "aio-sr://plant-ns/thermostat:12", name: "thermostat", version: "12"},
		{in: "aio-sr://thermostat", err: "must name a version"},
		{in: "aio-sr://thermostat:", err: "must name a version"},
		{in: "aio-sr://thermostat:1.0.0", err: `version must be a number (got "1.0.0"`},
		{in: "aio-sr://:1", err: "must name a schema"},
		{in: "aio-sr://Thermo_stat:1", err: `schema name "Thermo_stat": must be lower-case`},
		{in: "sr://thermostat:1", err: "must be aio-sr://<name>:<version>"},
	}
	for _, c := range cases {
		r, err := ParseSchemaRef(c.in)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: error %v, want %q", c.in, err, c.err)
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.in, err)
		case c.err == "" && (r.Name != c.name || r.Version != c.version):
			t.Errorf("%s: %+v", c.in, r)
		}
	}
}

const thermostatSchema = `apiVersion: edgeport.io/v1
kind: Schema
metadata: {name: thermostat}
spec:
  format: JsonSchema/draft-07
  versions:
  - name: "1"
    schemaContent: '{"type": "object", "required": ["temperature"], "properties": {"temperature": {"type": "number"}, "tags": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}}'
`

func flowWithRefs(src, out, format string) string {
	return `apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: f}
spec:
  operations:
  - operationType: Source
    sourceSettings: {dataSources: [a/b], schemaRef: "` + src + `"}
  - operationType: BuiltInTransformation
    builtInTransformationSettings: {serializationFormat: ` + format + `, schemaRef: "` + out + `"}
  - operationType: Destination
    destinationSettings: {endpointRef: files, dataDestination: x}
`
}

// A schemaRef must name a stored schema and version when the flow is
// applied; the error names the field. A schema that cannot give Parquet
// columns is refused for a Parquet flow.
func TestDataflowSchemaRefsAtApply(t *testing.T) {
	s := NewStore(Builtin(), "", nil)
	apply := func(doc string) error {
		obj, err := Builtin().Decode([]byte(doc))
		if err != nil {
			return err
		}
		_, _, err = s.Apply(obj, ApplyOptions{})
		return err
	}
	if err := apply(thermostatSchema); err != nil {
		t.Fatal(err)
	}
	if err := apply(`apiVersion: edgeport.io/v1
kind: Schema
metadata: {name: scalar}
spec:
  format: JsonSchema/draft-07
  versions: [{name: "1", schemaContent: '{"type": "number"}'}]
`); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		doc  string
		errs []string
	}{
		{doc: flowWithRefs("aio-sr://thermostat:1", "aio-sr://ns/thermostat:1", "Parquet")},
		{doc: flowWithRefs("aio-sr://nothing:1", "aio-sr://thermostat:2", "Json"), errs: []string{
			`spec.operations[0].sourceSettings.schemaRef: no Schema "nothing"`,
			`spec.operations[1].builtInTransformationSettings.schemaRef: schema "thermostat" has no version 2 (it has 1)`,
		}},
		{doc: flowWithRefs("aio-sr://scalar:1", "aio-sr://scalar:1", "Parquet"), errs: []string{
			`spec.operations[1].builtInTransformationSettings.schemaRef: cannot define Parquet columns: at /: the schema must describe an object with properties`,
		}},
		{doc: flowWithRefs("thermostat", "aio-sr://thermostat:1", "Json"), errs: []string{
			`spec.operations[0].sourceSettings.schemaRef: must be aio-sr://<name>:<version> (got "thermostat")`,
		}},
	}
	for i, c := range cases {
		err := apply(c.doc)
		if len(c.errs) == 0 {
			if err != nil {
				t.Errorf("case %d: %v", i, err)
			}
			continue
		}
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("case %d: error %v, want a validation error", i, err)
			continue
		}
		got := ve.Errs.Strings()
		for _, want := range c.errs {
			found := false
			for _, g := range got {
				found = found || strings.HasPrefix(g, want)
			}
			if !found {
				t.Errorf("case %d: errors %q lack %q", i, got, want)
			}
		}
	}
}

// A config directory may hold a Dataflow in a file that sorts before its
// Schema's: schemas are applied first.
func TestDirAppliesSchemasFirst(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a-flow.yaml"), []byte(flowWithRefs("aio-sr://thermostat:1", "aio-sr://thermostat:1", "Json")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "z-schema.yaml"), []byte(thermostatSchema), 0o600); err != nil {
		t.Fatal(err)
	}
	s := NewStore(Builtin(), "", nil)
	d, err := NewDir(dir, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := d.Sync(); len(p) > 0 {
		t.Fatalf("problems: %v", p)
	}
	if _, ok := s.Get(Key{Kind: "Dataflow", Name: "f"}); !ok {
		t.Fatal("the Dataflow was not applied")
	}
}

// Messages are checked against a version; the error gives the place in
// the message (a JSON pointer) and the keyword that failed.
func TestValidateMessage(t *testing.T) {
	js := mustCompile(t, SchemaFormatJSONDraft07, `{"type": "object", "required": ["temperature"],
	  "properties": {"temperature": {"type": "number", "maximum": 150}, "unit": {"enum": ["C", "F"]},
	  "pos": {"type": "object", "required": ["lat"], "properties": {"lat": {"type": "number"}}},
	  "a/b": {"type": "string"}}}`)
	delta := mustCompile(t, SchemaFormatDelta, `{"$schema": "Delta/1.0", "type": "object", "properties": {"type": "struct", "fields": [
	  {"name": "id", "type": "integer", "nullable": false, "metadata": {}},
	  {"name": "at", "type": "timestamp", "nullable": true, "metadata": {}},
	  {"name": "day", "type": "date", "nullable": true, "metadata": {}},
	  {"name": "small", "type": "byte", "nullable": true, "metadata": {}},
	  {"name": "tags", "type": {"type": "array", "elementType": "string", "containsNull": false}, "nullable": true, "metadata": {}}]}}`)
	cases := []struct {
		s             *CompiledSchema
		payload       string
		path, keyword string
	}{
		{s: js, payload: `{"temperature": 21.5, "unit": "C", "pos": {"lat": 1}}`},
		{s: js, payload: `{"unit": "C"}`, path: "", keyword: "required"},
		{s: js, payload: `{"temperature": "hot"}`, path: "/temperature", keyword: "type"},
		{s: js, payload: `{"temperature": 151}`, path: "/temperature", keyword: "maximum"},
		{s: js, payload: `{"temperature": 1, "unit": "K"}`, path: "/unit", keyword: "enum"},
		{s: js, payload: `{"temperature": 1, "pos": {}}`, path: "/pos", keyword: "required"},
		{s: js, payload: `{"temperature": 1, "a/b": 2}`, path: "/a~1b", keyword: "type"},
		{s: js, payload: `not json`, path: "", keyword: "json"},
		{s: delta, payload: `{"id": 1, "at": "2024-01-01T00:00:00Z", "day": "2024-01-01", "small": 5, "tags": ["a"]}`},
		{s: delta, payload: `{"id": 1, "at": null}`},
		{s: delta, payload: `{"at": "2024-01-01T00:00:00Z"}`, path: "", keyword: "required"},
		{s: delta, payload: `{"id": null}`, path: "/id", keyword: "type"},
		{s: delta, payload: `{"id": 2147483648}`, path: "/id", keyword: "maximum"},
		{s: delta, payload: `{"id": 1, "small": 128}`, path: "/small", keyword: "maximum"},
		{s: delta, payload: `{"id": 1, "at": "yesterday"}`, path: "/at", keyword: "format"},
		{s: delta, payload: `{"id": 1, "day": "2024-13-01"}`, path: "/day", keyword: "format"},
		{s: delta, payload: `{"id": 1, "tags": ["a", null]}`, path: "/tags/1", keyword: "type"},
	}
	for i, c := range cases {
		err := c.s.ValidateMessage([]byte(c.payload))
		if c.keyword == "" {
			if err != nil {
				t.Errorf("case %d %s: %v", i, c.payload, err)
			}
			continue
		}
		var me *MessageError
		if !errors.As(err, &me) {
			t.Errorf("case %d %s: error %v, want a MessageError", i, c.payload, err)
			continue
		}
		if me.InstancePath != c.path || me.Keyword != c.keyword {
			t.Errorf("case %d %s: at %q keyword %q (%v), want at %q keyword %q", i, c.payload, me.InstancePath, me.Keyword, err, c.path, c.keyword)
		}
	}
}

// Fields from a JSON Schema: types, formats, nullability, nested objects,
// arrays, maps, local references; recursion is refused.
func TestJSONSchemaFields(t *testing.T) {
	s := mustCompile(t, SchemaFormatJSON2020, `{"type": "object", "required": ["a"], "$defs": {"p": {"type": "integer"}},
	  "properties": {"a": {"$ref": "#/$defs/p"}, "b": {"type": ["number", "null"]}, "c": {"type": "string", "format": "date"},
	  "d": {"type": "object", "additionalProperties": {"type": "boolean"}}, "e": {"type": ["string", "integer"]},
	  "f": {"type": "string", "contentEncoding": "base64"}}}`)
	fields, err := s.Fields()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fields {
		d := f.Name + ":" + f.Type
		if f.Elem != nil {
			d += "<" + f.Elem.Type + ">"
		}
		if f.Nullable {
			d += "?"
		}
		got = append(got, d)
	}
	if want := "a:long b:double? c:date? d:map<boolean>? e:json? f:binary?"; strings.Join(got, " ") != want {
		t.Errorf("fields %q, want %q", strings.Join(got, " "), want)
	}
	rec := mustCompile(t, SchemaFormatJSONDraft07, `{"type": "object", "definitions": {"n": {"type": "object", "properties": {"next": {"$ref": "#/definitions/n"}}}},
	  "properties": {"head": {"$ref": "#/definitions/n"}}}`)
	if _, err := rec.Fields(); err == nil || !strings.Contains(err.Error(), "recursive") {
		t.Errorf("recursive schema: %v", err)
	}
}

// BenchmarkValidateMessage: the cost a schemaRef adds per dataflow
// message (a thermostat reading against a small draft-07 schema, and the
// same against a Delta/1.0 schema).
func BenchmarkValidateMessage(b *testing.B) {
	js, err := CompileSchemaContent(SchemaFormatJSONDraft07, `{"type": "object", "required": ["temperature", "line"],
	  "properties": {"temperature": {"type": "number", "maximum": 150}, "line": {"type": "string"}, "unit": {"enum": ["C", "F"]},
	  "at": {"type": "string"}}}`)
	if err != nil {
		b.Fatal(err)
	}
	delta, err := CompileSchemaContent(SchemaFormatDelta, `{"$schema": "Delta/1.0", "type": "object", "properties": {"type": "struct", "fields": [
	  {"name": "temperature", "type": "double", "nullable": false, "metadata": {}},
	  {"name": "line", "type": "string", "nullable": false, "metadata": {}},
	  {"name": "unit", "type": "string", "nullable": true, "metadata": {}},
	  {"name": "at", "type": "timestamp", "nullable": true, "metadata": {}}]}}`)
	if err != nil {
		b.Fatal(err)
	}
	msg := []byte(`{"line": "l1", "temperature": 21.5, "unit": "C", "at": "2025-06-01T12:00:00Z"}`)
	for _, c := range []struct {
		name string
		s    *CompiledSchema
	}{{"draft-07", js}, {"delta", delta}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.s.ValidateMessage(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
