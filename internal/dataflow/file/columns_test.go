package file

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	"github.com/edgeport/edgeport/internal/testparquet"
)

// deltaAll is a Delta/1.0 schema with every type a column can have.
const deltaAll = `{"$schema": "Delta/1.0", "type": "object", "properties": {"type": "struct", "fields": [
 {"name": "name", "type": "string", "nullable": false, "metadata": {}},
 {"name": "count", "type": "long", "nullable": false, "metadata": {}},
 {"name": "small", "type": "short", "nullable": true, "metadata": {}},
 {"name": "tiny", "type": "byte", "nullable": true, "metadata": {}},
 {"name": "mid", "type": "integer", "nullable": true, "metadata": {}},
 {"name": "ratio", "type": "float", "nullable": true, "metadata": {}},
 {"name": "temperature", "type": "double", "nullable": true, "metadata": {}},
 {"name": "ok", "type": "boolean", "nullable": true, "metadata": {}},
 {"name": "blob", "type": "binary", "nullable": true, "metadata": {}},
 {"name": "day", "type": "date", "nullable": true, "metadata": {}},
 {"name": "at", "type": "timestamp", "nullable": true, "metadata": {}},
 {"name": "price", "type": "decimal(10,2)", "nullable": true, "metadata": {}},
 {"name": "pos", "type": {"type": "struct", "fields": [
   {"name": "lat", "type": "double", "nullable": false, "metadata": {}},
   {"name": "lon", "type": "double", "nullable": true, "metadata": {}}]}, "nullable": true, "metadata": {}},
 {"name": "tags", "type": {"type": "array", "elementType": "string", "containsNull": false}, "nullable": true, "metadata": {}},
 {"name": "attrs", "type": {"type": "map", "keyType": "string", "valueType": "long", "valueContainsNull": true}, "nullable": true, "metadata": {}}
]}}`

func schemaFields(t *testing.T, format, content string) []config.SchemaField {
	t.Helper()
	c, err := config.CompileSchemaContent(format, content)
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.Fields()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func payloadMsg(p string) *stage.Message {
	return &stage.Message{SourceTopic: "plant/line1", Received: time.UnixMilli(1_700_000_000_000), Payload: []byte(p)}
}

// writeSchemaFile sends payloads to a Parquet destination with the
// schema's columns and returns the finished file and Send's errors per
// payload.
func writeSchemaFile(t *testing.T, fields []config.SchemaField, payloads []string) (string, []error) {
	t.Helper()
	dir := t.TempDir()
	d, err := New(Options{Dir: dir, Format: config.FormatParquet, MaxBytes: 1 << 30, Prefix: "flow", Fields: fields})
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, len(payloads))
	for i, p := range payloads {
		errs[i] = d.Send(context.Background(), []*stage.Message{payloadMsg(p)})
	}
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	files, err := Files(dir)
	if err != nil || len(files) != 1 {
		t.Fatalf("files %v, %v", files, err)
	}
	return files[0], errs
}

// A Delta schema defines the columns: every type, nullability, nested
// struct, list and map. Messages missing a nullable field get a null;
// messages missing a required one, or with a value of the wrong type, are
// refused permanently (dead-lettered by the flow) with the field's path.
// The file is read back by parquet-go and by Apache Arrow's Rust reader.
func TestParquetColumnsFromDeltaSchema(t *testing.T) {
	fields := schemaFields(t, config.SchemaFormatDelta, deltaAll)
	full := `{"name": "a", "count": 3, "small": -2, "tiny": 7, "mid": 100000, "ratio": 0.5, "temperature": 21.5, "ok": true,
	  "blob": "AQI=", "day": "2024-02-29", "at": "2024-01-02T03:04:05.123Z", "price": 123.45,
	  "pos": {"lat": 48.1, "lon": 11.5}, "tags": ["x", "y"], "attrs": {"k": 1, "n": null}, "extra": "not a column"}`
	payloads := []string{
		full,
		`{"name": "b", "count": 4}`,
		`{"name": "c", "count": 9007199254740993, "pos": {"lat": 1}, "tags": []}`,
		`{"count": 5}`,
		`{"name": "d", "count": 1.5}`,
		`{"name": "e", "count": 1, "pos": {"lon": 2}}`,
		`{"name": "f", "count": 1, "small": 40000}`,
		`{"name": "g", "count": 1, "day": "29.02.2024"}`,
		`{"name": "h", "count": 1, "price": 1.234}`,
		`{"name": "i", "count": 1, "tags": ["x", null]}`,
		`[1, 2]`,
	}
	path, errs := writeSchemaFile(t, fields, payloads)
	wantErr := []string{"", "", "",
		`at /name: column "name" is required`,
		`at /count: column "count" is an integer; got 1.5`,
		`at /pos/lat: column "lat" is required`,
		`at /small: column "small" is a 16-bit integer; got 40000`,
		`at /day: column "day" is a date (YYYY-MM-DD); got "29.02.2024"`,
		`at /price: column "price" is a decimal with at most 2 digits after the point; got 1.234`,
		`at /tags/1: column "element" is required`,
		`at /: the payload must be a JSON object`,
	}
	for i, want := range wantErr {
		switch {
		case want == "" && errs[i] != nil:
			t.Errorf("payload %d refused: %v", i, errs[i])
		case want != "" && (errs[i] == nil || !errors.Is(errs[i], stage.ErrPermanent) || !strings.Contains(errs[i].Error(), want)):
			t.Errorf("payload %d: error %v, want permanent %q", i, errs[i], want)
		}
	}

	// parquet-go's reader: the file's schema and rows.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	leaf := map[string]string{}
	for _, path := range pf.Schema().Columns() {
		col, _ := pf.Schema().Lookup(path...)
		leaf[strings.Join(path, ".")] = col.Node.Type().String()
	}
	for col, want := range map[string]string{
		"name": "STRING", "count": "INT(64,true)", "small": "INT(16,true)", "tiny": "INT(8,true)", "mid": "INT(32,true)",
		"ratio": "FLOAT", "temperature": "DOUBLE", "ok": "BOOLEAN", "blob": "BYTE_ARRAY", "day": "DATE",
		"at": "TIMESTAMP(isAdjustedToUTC=true,unit=MICROS)", "price": "DECIMAL(10,2)", "pos.lat": "DOUBLE", "pos.lon": "DOUBLE",
		"tags.list.element": "STRING", "attrs.key_value.key": "STRING", "attrs.key_value.value": "INT(64,true)",
	} {
		if leaf[col] != want {
			t.Errorf("parquet-go: column %s is %q, want %s", col, leaf[col], want)
		}
	}
	for _, fl := range pf.Schema().Fields() {
		wantOptional := fl.Name() != "name" && fl.Name() != "count"
		if fl.Optional() != wantOptional {
			t.Errorf("parquet-go: column %s optional=%v, want %v", fl.Name(), fl.Optional(), wantOptional)
		}
	}
	if n := pf.NumRows(); n != 3 {
		t.Fatalf("parquet-go: %d rows, want 3", n)
	}
	r := parquet.NewReader(f)
	defer r.Close()
	var got []map[string]any
	for range 3 {
		row := map[string]any{}
		if err := r.Read(&row); err != nil {
			t.Fatal(err)
		}
		got = append(got, row)
	}
	if got[0]["name"] != "a" || got[0]["count"] != int64(3) || got[0]["temperature"] != 21.5 || got[1]["temperature"] != nil ||
		got[2]["count"] != int64(9007199254740993) {
		t.Errorf("parquet-go rows: %v", got)
	}

	// Apache Arrow's reader.
	af, rows := testparquet.Read(t, path)
	types := map[string]string{}
	nullable := map[string]bool{}
	for _, x := range af {
		types[x.Name], nullable[x.Name] = x.Type, x.Nullable
	}
	wantTypes := map[string]string{
		"name": "Utf8", "count": "Int64", "small": "Int16", "tiny": "Int8", "mid": "Int32", "ratio": "Float32",
		"temperature": "Float64", "ok": "Bool", "blob": "Binary", "day": "Date32<DAY>",
		"at": "Timestamp<MICROSECOND, UTC>", "price": "Decimal[10e+2]", "pos": "Struct<{lat:Float64, lon:Float64}>",
		"tags": "List<Utf8>", "attrs": "Map<{key:Utf8, value:Int64}>",
	}
	if !reflect.DeepEqual(types, wantTypes) {
		t.Errorf("arrow types:\n got %v\nwant %v", types, wantTypes)
	}
	for name := range wantTypes {
		if want := name != "name" && name != "count"; nullable[name] != want {
			t.Errorf("arrow: %s nullable=%v, want %v", name, nullable[name], want)
		}
	}
	for _, x := range af {
		if x.Name == "pos" && (x.Children[0].Nullable || !x.Children[1].Nullable) {
			t.Errorf("arrow: pos.lat must be required and pos.lon nullable: %+v", x.Children)
		}
	}
	wantRows := []map[string]any{
		{"name": "a", "count": "3", "small": -2.0, "tiny": 7.0, "mid": 100000.0, "ratio": 0.5, "temperature": 21.5, "ok": true,
			"blob": "AQI=", "day": "2024-02-29", "at": "2024-01-02T03:04:05.123Z", "price": "123.45",
			"pos": map[string]any{"lat": 48.1, "lon": 11.5}, "tags": []any{"x", "y"}, "attrs": map[string]any{"k": "1", "n": nil}},
		{"name": "b", "count": "4", "small": nil, "tiny": nil, "mid": nil, "ratio": nil, "temperature": nil, "ok": nil,
			"blob": nil, "day": nil, "at": nil, "price": nil, "pos": nil, "tags": nil, "attrs": nil},
		{"name": "c", "count": "9007199254740993", "small": nil, "tiny": nil, "mid": nil, "ratio": nil, "temperature": nil, "ok": nil,
			"blob": nil, "day": nil, "at": nil, "price": nil, "pos": map[string]any{"lat": 1.0, "lon": nil}, "tags": []any{}, "attrs": nil},
	}
	if !reflect.DeepEqual(rows, wantRows) {
		g, _ := json.Marshal(rows)
		w, _ := json.Marshal(wantRows)
		t.Errorf("arrow rows:\n got %s\nwant %s", g, w)
	}
}

// A JSON Schema defines the columns too: property types and formats give
// the column types, required gives nullability, a type with null is
// nullable, and a property of no single type is its JSON text.
func TestParquetColumnsFromJSONSchema(t *testing.T) {
	fields := schemaFields(t, config.SchemaFormatJSONDraft07, `{
	  "$schema": "http://json-schema.org/draft-07/schema#",
	  "type": "object", "required": ["id", "temperature", "at"],
	  "definitions": {"unit": {"type": "string", "enum": ["C", "F"]}},
	  "properties": {
	    "id": {"type": "integer"},
	    "temperature": {"type": "number"},
	    "at": {"type": "string", "format": "date-time"},
	    "unit": {"$ref": "#/definitions/unit"},
	    "note": {"type": ["string", "null"]},
	    "raw": {},
	    "readings": {"type": "array", "items": {"type": "number"}},
	    "site": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "floor": {"type": "integer"}}}
	  }}`)
	path, errs := writeSchemaFile(t, fields, []string{
		`{"id": 1, "temperature": 21.5, "at": "2025-06-01T12:00:00Z", "unit": "C", "note": null, "raw": {"a": [1]}, "readings": [1, 2.5], "site": {"name": "s1", "floor": 2}}`,
		`{"id": 2, "temperature": 20, "at": "2025-06-01T12:00:01Z"}`,
		`{"id": 3, "at": "2025-06-01T12:00:02Z"}`,
	})
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("valid payloads refused: %v", errs)
	}
	if errs[2] == nil || !strings.Contains(errs[2].Error(), `at /temperature: column "temperature" is required`) {
		t.Fatalf("missing required column: %v", errs[2])
	}
	af, rows := testparquet.Read(t, path)
	got := map[string]string{}
	for _, x := range af {
		n := ""
		if x.Nullable {
			n = "?"
		}
		got[x.Name] = x.Type + n
	}
	want := map[string]string{
		"id": "Int64", "temperature": "Float64", "at": "Timestamp<MICROSECOND, UTC>", "unit": "Utf8?", "note": "Utf8?",
		"raw": "Utf8?", "readings": "List<Float64>?", "site": "Struct<{floor:Int64, name:Utf8}>?",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("arrow columns:\n got %v\nwant %v", got, want)
	}
	if len(rows) != 2 || rows[0]["raw"] != `{"a":[1]}` || rows[0]["unit"] != "C" || rows[1]["site"] != nil ||
		!reflect.DeepEqual(rows[0]["site"], map[string]any{"name": "s1", "floor": "2"}) {
		t.Errorf("arrow rows: %v", rows)
	}
}
