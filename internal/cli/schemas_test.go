package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
)

// TestSchemasGetDescribe: apply a Schema through the API, list it, describe
// it with its versions and hashes, and see an incompatible new version
// refused with the breaking field named.
func TestSchemasGetDescribe(t *testing.T) {
	url, _ := apiServer(t)
	dir := t.TempDir()
	flags := []string{"--server", url, "--data-dir", dir}
	v1 := `{"type": "object", "required": ["temperature"], "properties": {"temperature": {"type": "number"}}}`
	v2 := `{"type": "object", "required": ["temperature"], "properties": {"temperature": {"type": "number"}, "unit": {"type": "string"}}}`
	doc := func(versions ...string) string {
		out := "apiVersion: edgeport.io/v1\nkind: Schema\nmetadata: {name: thermostat}\nspec:\n  format: JsonSchema/draft-07\n  versions:\n"
		for i, v := range versions {
			out += "  - name: \"" + string(rune('1'+i)) + "\"\n    schemaContent: '" + v + "'\n"
		}
		return out
	}
	file := filepath.Join(dir, "schema.yaml")
	apply := func(content string) (string, int) {
		t.Helper()
		if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := runCLI(t, append([]string{"apply", "-f", file}, flags...)...)
		return out + errOut, code
	}
	if out, code := apply(doc(v1, v2)); code != 0 {
		t.Fatalf("apply: %s", out)
	}
	out, errOut, code := runCLI(t, append([]string{"get", "schemas"}, flags...)...)
	if code != 0 {
		t.Fatalf("get: %s", errOut)
	}
	for _, want := range []string{"FORMAT", "COMPATIBILITY", "VERSIONS", "LATEST-HASH", "thermostat", "JsonSchema/draft-07", "Backward", "1,2", config.SchemaContentHash(v2)[:12]} {
		if !strings.Contains(out, want) {
			t.Errorf("get output lacks %q:\n%s", want, out)
		}
	}
	out, errOut, code = runCLI(t, append([]string{"describe", "schema", "thermostat"}, flags...)...)
	if code != 0 {
		t.Fatalf("describe: %s", errOut)
	}
	for _, want := range []string{"Versions:", "VERSION", "HASH", config.SchemaContentHash(v1), config.SchemaContentHash(v2)} {
		if !strings.Contains(out, want) {
			t.Errorf("describe output lacks %q:\n%s", want, out)
		}
	}
	breaking := `{"type": "object", "required": ["temperature", "site"], "properties": {"temperature": {"type": "number"}, "site": {"type": "string"}}}`
	out, code = apply(doc(v1, v2, breaking))
	if code == 0 || !strings.Contains(out, `spec.versions[2].schemaContent: not Backward compatible with version 2: added required field "site"`) {
		t.Fatalf("incompatible version: exit %d: %s", code, out)
	}
	changed := strings.Replace(v2, `"type": "object"`, `"type": "object", "description": "changed"`, 1)
	out, code = apply(doc(v1, changed))
	if code == 0 || !strings.Contains(out, "version 2 is immutable") {
		t.Fatalf("changed version: exit %d: %s", code, out)
	}
}

// describe lists what uses a schema, from its status.
func TestDescribeSchemaUses(t *testing.T) {
	var b strings.Builder
	describeSchemaUses(&b, &config.Status{UsedBy: []config.SchemaUse{
		{Kind: "Dataflow", Name: "archive", Role: "source", Version: "1", Topics: []string{"plant/+/t", "lab/#"}},
		{Kind: "Dataflow", Name: "archive", Role: "output", Version: "2", Destination: "files:t"},
		{Kind: "Asset", Name: "line1/temps", Role: "publish", Version: "1", Topics: []string{"plant/line1/temps"}},
	}})
	out := b.String()
	for _, want := range []string{"Used by:", "KIND", "TOPICS", "Dataflow  archive      source", "plant/+/t,lab/#", "to files:t", "Asset     line1/temps  publish"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	describeSchemaUses(&b, nil)
	if b.String() != "Used by: nothing\n" {
		t.Errorf("unused: %q", b.String())
	}
	o := &config.Object{Kind: "Schema", Spec: &config.SchemaSpec{}, Status: &config.Status{UsedBy: []config.SchemaUse{{Kind: "Dataflow"}, {Kind: "Dataflow"}, {Kind: "Asset"}}}}
	for _, c := range config.Builtin().LookupKind("Schema").Columns {
		if c.Header == "USED-BY" {
			if got := c.Value(o); got != "2 dataflows,1 asset" {
				t.Errorf("USED-BY %q", got)
			}
		}
	}
}
