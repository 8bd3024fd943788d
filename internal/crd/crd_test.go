package crd

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/edgeport/edgeport/internal/config"
)

// The committed CRDs are what the registry generates today.
func TestCommittedCRDsUpToDate(t *testing.T) {
	files, err := Generate(config.Builtin())
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"../../deploy/crds", "../../deploy/helm/edgeport/crds"} {
		want := map[string]bool{}
		for _, f := range files {
			want[f.Name] = true
			got, err := os.ReadFile(filepath.Join(dir, f.Name))
			if err != nil || !bytes.Equal(got, f.Data) {
				t.Errorf("%s/%s is not what the kinds registry generates: run go generate ./internal/crd", dir, f.Name)
			}
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), Group+"_") && !want[e.Name()] {
				t.Errorf("%s/%s names no kind any more: run go generate ./internal/crd", dir, e.Name())
			}
		}
	}
}

// Every kind has its CRD with the registry's names.
func TestEveryKindHasACRD(t *testing.T) {
	kinds := config.Builtin()
	for _, def := range kinds.All() {
		c, err := Definition(def)
		if err != nil {
			t.Fatal(err)
		}
		n := c.Spec.Names
		if c.Metadata.Name != def.Plural+".edgeport.io" || n.Kind != def.Kind || n.Plural != def.Plural ||
			!slices.Equal(n.ShortNames, def.ShortNames) {
			t.Errorf("%s: names %+v", def.Kind, n)
		}
		if _, ok := c.Spec.Versions[0].Subresources["status"]; !ok {
			t.Errorf("%s: no status subresource", def.Kind)
		}
	}
	if len(hints) > len(kinds.All()) {
		t.Errorf("hints for kinds the registry does not have")
	}
}

// A hint whose path names no field would silently check nothing.
func TestHintsNameFields(t *testing.T) {
	for _, def := range config.Builtin().All() {
		paths := map[string]bool{}
		collectPaths(reflect.TypeOf(def.New()), "spec", paths)
		for p := range hints[def.Kind] {
			if !paths[p] {
				t.Errorf("hints[%s][%q] names no field of %T", def.Kind, p, def.New())
			}
		}
	}
}

func collectPaths(t reflect.Type, path string, out map[string]bool) {
	out[path] = true
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType || t == jsonType:
	case t.Kind() == reflect.Struct:
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			collectPaths(t.Field(i).Type, path+"."+name, out)
		}
	case t.Kind() == reflect.Slice:
		collectPaths(t.Elem(), path+"[]", out)
	case t.Kind() == reflect.Map:
		collectPaths(t.Elem(), path+"{}", out)
	}
}

// Every `edgeport get` column is either printed by kubectl or marked as
// not expressible.
func TestColumnsCovered(t *testing.T) {
	for _, def := range config.Builtin().All() {
		for _, c := range def.Columns {
			if _, ok := columns[def.Kind][c.Header]; !ok {
				t.Errorf("%s column %s: no entry in columns", def.Kind, c.Header)
			}
		}
	}
}

// The CRD schema is never stricter than Edgeport's validation: every
// document the config package's tests hold valid (testdata/*.good.yaml and
// their defaulted forms) passes the schema of its kind. The API server
// checks the same keywords (type, enum, minimum, maximum, required,
// minItems, minProperties, maxLength, pattern).
func TestValidDocumentsPassTheCRDSchema(t *testing.T) {
	schemas := compiledSchemas(t)
	files, _ := filepath.Glob("../config/testdata/*.good.yaml")
	more, _ := filepath.Glob("../config/testdata/*.defaulted.yaml")
	files = append(files, more...)
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	n := 0
	for _, f := range files {
		for _, doc := range yamlDocs(t, f) {
			m, ok := doc.(map[string]any)
			if !ok {
				continue
			}
			kind, _ := m["kind"].(string)
			s := schemas[kind]
			if s == nil {
				continue
			}
			n++
			if err := s.Validate(doc); err != nil {
				t.Errorf("%s: %s %v rejected by its CRD schema: %v", f, kind, m["metadata"], err)
			}
		}
	}
	t.Logf("%d documents checked", n)
}

// The schema refuses what the hints say, at the field path our validation
// names.
func TestCRDSchemaRejectsAtTheSamePath(t *testing.T) {
	schemas := compiledSchemas(t)
	cases := []struct {
		doc, path string
	}{
		{`{"apiVersion":"edgeport.io/v1","kind":"BrokerListener","metadata":{"name":"l"},"spec":{"ports":[{"port":70000}]}}`, "/spec/ports/0/port"},
		{`{"apiVersion":"edgeport.io/v1","kind":"BrokerListener","metadata":{"name":"l"},"spec":{"ports":[{"port":1,"protocol":"Http"}]}}`, "/spec/ports/0/protocol"},
		{`{"apiVersion":"edgeport.io/v1","kind":"BrokerListener","metadata":{"name":"l"},"spec":{"ports":[]}}`, "/spec/ports"},
		{`{"apiVersion":"edgeport.io/v1","kind":"Broker","metadata":{"name":"other"}}`, "/metadata/name"},
		{`{"apiVersion":"edgeport.io/v1","kind":"Dataflow","metadata":{"name":"f"},"spec":{"mode":"On","operations":[{}]}}`, "/spec/mode"},
	}
	for _, c := range cases {
		var doc any
		if err := json.Unmarshal([]byte(c.doc), &doc); err != nil {
			t.Fatal(err)
		}
		kind := doc.(map[string]any)["kind"].(string)
		err := schemas[kind].Validate(doc)
		if err == nil {
			t.Errorf("%s: accepted", c.doc)
			continue
		}
		if !strings.Contains(err.Error(), "'"+c.path+"'") {
			t.Errorf("%s: error does not name %s: %v", c.doc, c.path, err)
		}
		// Edgeport's own validation names the same field.
		if _, derr := config.Builtin().Decode([]byte(c.doc)); derr == nil ||
			!strings.Contains(derr.Error(), jsonPointerToField(c.path)) {
			t.Errorf("%s: our validation: %v, want a message at %s", c.doc, derr, jsonPointerToField(c.path))
		}
	}
}

// jsonPointerToField turns /spec/ports/0/port into spec.ports[0].port.
func jsonPointerToField(p string) string {
	var b strings.Builder
	for _, s := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if s != "" && s[0] >= '0' && s[0] <= '9' {
			b.WriteString("[" + s + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s)
	}
	return b.String()
}

func compiledSchemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	out := map[string]*jsonschema.Schema{}
	for _, def := range config.Builtin().All() {
		c, err := Definition(def)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(c.Spec.Versions[0].Schema.OpenAPIV3Schema)
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		comp := jsonschema.NewCompiler()
		url := "mem:///" + def.Plural + ".json"
		if err := comp.AddResource(url, doc); err != nil {
			t.Fatal(err)
		}
		s, err := comp.Compile(url)
		if err != nil {
			t.Fatalf("%s: %v", def.Kind, err)
		}
		out[def.Kind] = s
	}
	return out
}

func yamlDocs(t *testing.T, file string) []any {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []any
	for {
		var v any
		if err := dec.Decode(&v); err != nil {
			break
		}
		// Through JSON, so numbers and maps have the types the validator expects.
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		m, _ := doc.(map[string]any)
		if m == nil {
			continue
		}
		if items, ok := m["items"].([]any); ok && m["kind"] == "List" {
			out = append(out, items...)
			continue
		}
		out = append(out, doc)
	}
	return out
}
