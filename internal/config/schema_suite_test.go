package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// suiteCase is one schema of the JSON Schema Test Suite with its tests.
type suiteCase struct {
	Description string          `json:"description"`
	Schema      json.RawMessage `json:"schema"`
	Tests       []struct {
		Description string          `json:"description"`
		Data        json.RawMessage `json:"data"`
		Valid       bool            `json:"valid"`
	} `json:"tests"`
}

// suiteRemote lists cases whose schema refers to a document by URL other
// than the draft's own metaschema: Edgeport refuses remote references (it
// fetches nothing), so these must fail to compile rather than pass.
var suiteRemote = map[string]bool{
	"ref.json/Location-independent identifier with base URI change in subschema": true,
}

// TestJSONSchemaTestSuiteDraft07 runs the official draft-07 cases (the
// vendored testdata/JSON-Schema-Test-Suite) through CompileSchemaContent
// and ValidateMessage, the path every dataflow message takes: each schema
// compiles and every test's data validates or fails as the suite says.
func TestJSONSchemaTestSuiteDraft07(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "JSON-Schema-Test-Suite", "tests", "draft7", "*.json"))
	if err != nil || len(files) < 30 {
		t.Fatalf("suite files: %v, %v", files, err)
	}
	total := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var cases []suiteCase
		if err := json.Unmarshal(data, &cases); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, c := range cases {
			name := filepath.Base(f) + "/" + c.Description
			compiled, err := CompileSchemaContent(SchemaFormatJSONDraft07, string(c.Schema))
			if suiteRemote[name] {
				if err == nil {
					t.Errorf("%s: a remote reference compiled; it must be refused", name)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			for _, tc := range c.Tests {
				total++
				err := compiled.ValidateMessage(tc.Data)
				var me *MessageError
				switch {
				case tc.Valid && err != nil:
					t.Errorf("%s / %s: %s refused: %v", name, tc.Description, tc.Data, err)
				case !tc.Valid && err == nil:
					t.Errorf("%s / %s: %s accepted", name, tc.Description, tc.Data)
				case !tc.Valid && !errors.As(err, &me):
					t.Errorf("%s / %s: error %v is not a MessageError", name, tc.Description, err)
				case !tc.Valid && me.Keyword == "":
					t.Errorf("%s / %s: error %v names no keyword", name, tc.Description, err)
				}
			}
		}
	}
	if total < 400 {
		t.Errorf("only %d suite tests ran", total)
	}
	t.Logf("%d draft-07 suite tests in %d files", total, len(files))
}

// TestSuiteVendoredWithLicence keeps the suite's licence beside it.
func TestSuiteVendoredWithLicence(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "JSON-Schema-Test-Suite", "LICENSE"))
	if err != nil || !strings.Contains(string(b), "Julian Berman") {
		t.Fatalf("LICENSE: %v", err)
	}
}
