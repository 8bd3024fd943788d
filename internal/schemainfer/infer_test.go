package schemainfer

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
)

var samples = []string{
	`{"temperature": 21.5, "count": 3, "unit": "C", "at": "2025-06-01T12:00:00Z", "day": "2025-06-01", "ok": true, "pos": {"lat": 48.1, "lon": 11.5}, "tags": ["a"]}`,
	`{"temperature": 19, "count": 7, "at": "2025-06-01T12:00:01.5+02:00", "day": "2025-06-02", "ok": false, "pos": {"lat": 48.2}, "tags": [], "note": null}`,
	`{"temperature": -4.25, "count": 5, "unit": "F", "at": "2025-06-01T12:00:02Z", "day": "2025-06-03", "ok": true, "pos": {"lat": 48.3}, "tags": ["b", 1]}`,
}

// The proposal: types per field (integer when every number was whole),
// required = present in every sample, ranges seen, formats of strings that
// all were timestamps or dates, nested objects and array items merged.
func TestInfer(t *testing.T) {
	in := New()
	for _, s := range samples {
		if err := in.Add([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.Add([]byte(`not json`)); err == nil {
		t.Fatal("a payload that is not JSON was taken")
	}
	got, _ := json.Marshal(in.Schema())
	var g map[string]any
	_ = json.Unmarshal(got, &g)
	want := map[string]any{
		"$schema":     "http://json-schema.org/draft-07/schema#",
		"description": "inferred by edgeport schema infer from 3 sample(s)",
		"type":        "object",
		"required":    []any{"at", "count", "day", "ok", "pos", "tags", "temperature"},
		"properties": map[string]any{
			"temperature": map[string]any{"type": "number", "minimum": -4.25, "maximum": 21.5},
			"count":       map[string]any{"type": "integer", "minimum": 3.0, "maximum": 7.0},
			"unit":        map[string]any{"type": "string"},
			"at":          map[string]any{"type": "string", "format": "date-time"},
			"day":         map[string]any{"type": "string", "format": "date"},
			"ok":          map[string]any{"type": "boolean"},
			"note":        map[string]any{"type": "null"},
			"pos": map[string]any{"type": "object", "required": []any{"lat"}, "properties": map[string]any{
				"lat": map[string]any{"type": "number", "minimum": 48.1, "maximum": 48.3},
				"lon": map[string]any{"type": "number", "minimum": 11.5, "maximum": 11.5},
			}},
			"tags": map[string]any{"type": "array", "items": map[string]any{"type": []any{"integer", "string"}, "minimum": 1.0, "maximum": 1.0}},
		},
	}
	if !reflect.DeepEqual(g, want) {
		w, _ := json.Marshal(want)
		t.Errorf("schema\n got %s\nwant %s", got, w)
	}
	// The proposal compiles and accepts every sample it came from.
	c, err := config.CompileSchemaContent(config.SchemaFormatJSONDraft07, string(got))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range samples {
		if err := c.ValidateMessage([]byte(s)); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
}

// FuzzInfer: whatever JSON comes in, the proposal compiles as draft-07
// and accepts the message it came from.
func FuzzInfer(f *testing.F) {
	for _, s := range samples {
		f.Add([]byte(s))
	}
	f.Add([]byte(`[1, "a", null, {"a": [[]]}]`))
	f.Add([]byte(`12345678901234567890`))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := New()
		if in.Add(b) != nil {
			return
		}
		doc, err := json.Marshal(in.Schema())
		if err != nil {
			t.Fatal(err)
		}
		c, err := config.CompileSchemaContent(config.SchemaFormatJSONDraft07, string(doc))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		if err := c.ValidateMessage(b); err != nil {
			t.Fatalf("%s under %s: %v", b, doc, err)
		}
	})
}
