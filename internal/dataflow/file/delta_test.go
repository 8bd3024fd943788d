package file

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	"github.com/edgeport/edgeport/internal/testparquet"
)

const deltaRow = `{"$schema": "Delta/1.0", "type": "object", "properties": {"type": "struct", "fields": [
 {"name": "line", "type": "string", "nullable": false, "metadata": {}},
 {"name": "count", "type": "long", "nullable": false, "metadata": {}},
 {"name": "temperature", "type": "double", "nullable": true, "metadata": {}},
 {"name": "day", "type": "date", "nullable": true, "metadata": {}},
 {"name": "at", "type": "timestamp", "nullable": true, "metadata": {}},
 {"name": "pos", "type": {"type": "struct", "fields": [
   {"name": "lat", "type": "double", "nullable": false, "metadata": {}}]}, "nullable": true, "metadata": {}},
 {"name": "tags", "type": {"type": "array", "elementType": "string", "containsNull": false}, "nullable": true, "metadata": {}}
]}}`

// writeDelta sends each payload to a Delta destination on dir in its own
// batch and closes it, which commits one data file.
func writeDelta(t *testing.T, dir string, fields []config.SchemaField, payloads ...string) {
	t.Helper()
	d, err := New(Options{Dir: dir, Format: config.FormatDelta, MaxBytes: 1 << 30, Prefix: "flow", Fields: fields})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range payloads {
		if err := d.Send(context.Background(), []*stage.Message{payloadMsg(p)}); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// commitActions returns the kinds of the actions of one commit.
func commitActions(t *testing.T, dir string, version int) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, DeltaLogDir, fmt.Sprintf("%020d.json", version)))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var a map[string]json.RawMessage
		if err := json.Unmarshal([]byte(l), &a); err != nil {
			t.Fatal(err)
		}
		for k := range a {
			kinds = append(kinds, k)
		}
	}
	return kinds
}

// TestDeltaTableAppends writes a table in three runs and reads it back
// as a Delta reader would (testparquet.ReadDelta: the log checked against
// the protocol's required fields, every data file read by Apache Arrow):
// the first commit creates the table, each later run appends a commit,
// a schema with a new nullable column is a metaData action in the next
// commit, and the statistics give the row count, nulls and bounds.
func TestDeltaTableAppends(t *testing.T) {
	dir := t.TempDir()
	fields := schemaFields(t, config.SchemaFormatDelta, deltaRow)
	writeDelta(t, dir, fields,
		`{"line": "l1", "count": 3, "temperature": 20.5, "day": "2026-01-02", "at": "2026-01-02T03:04:05.123456Z", "pos": {"lat": 1.5}, "tags": ["a"]}`,
		`{"line": "l2", "count": -7, "at": "2026-01-02T03:04:05.1Z"}`,
		`{"line": "l0", "count": 10, "temperature": -4, "day": "2025-12-31"}`)
	writeDelta(t, dir, fields, `{"line": "l3", "count": 1}`, `{"line": "l4", "count": 2}`)

	tbl := testparquet.ReadDelta(t, dir)
	if tbl.Versions != 2 || len(tbl.Files) != 2 || len(tbl.Rows) != 5 {
		t.Fatalf("versions %d, files %d, rows %d", tbl.Versions, len(tbl.Files), len(tbl.Rows))
	}
	if got := strings.Join(commitActions(t, dir, 0), ","); got != "protocol,metaData,add,commitInfo" {
		t.Errorf("version 0: %s", got)
	}
	if got := strings.Join(commitActions(t, dir, 1), ","); got != "add,commitInfo" {
		t.Errorf("version 1: %s", got)
	}
	schema, _ := json.Marshal(tbl.Schema)
	// The schema's order (Parquet writes its columns sorted by name;
	// Delta readers match columns by name).
	want := `{"fields":[{"metadata":{},"name":"line","nullable":false,"type":"string"},{"metadata":{},"name":"count","nullable":false,"type":"long"},` +
		`{"metadata":{},"name":"temperature","nullable":true,"type":"double"},{"metadata":{},"name":"day","nullable":true,"type":"date"},` +
		`{"metadata":{},"name":"at","nullable":true,"type":"timestamp"},` +
		`{"metadata":{},"name":"pos","nullable":true,"type":{"fields":[{"metadata":{},"name":"lat","nullable":false,"type":"double"}],"type":"struct"}},` +
		`{"metadata":{},"name":"tags","nullable":true,"type":{"containsNull":false,"elementType":"string","type":"array"}}],"type":"struct"}`
	if string(schema) != want {
		t.Errorf("schemaString\n got  %s\n want %s", schema, want)
	}
	var cols []string
	for _, f := range tbl.Fields {
		cols = append(cols, f.Name+":"+f.Type)
	}
	if got, want := strings.Join(cols, " "), "at:Timestamp<MICROSECOND, UTC> count:Int64 day:Date32<DAY> line:Utf8 pos:Struct<{lat:Float64}> tags:List<Utf8> temperature:Float64"; got != want {
		t.Errorf("Arrow columns %s", got)
	}
	if r := tbl.Rows[0]; r["line"] != "l1" || r["count"] != "3" || r["day"] != "2026-01-02" || r["temperature"] != 20.5 {
		t.Errorf("first row %v", r)
	}
	stats, _ := json.Marshal(tbl.Files[0].Stats)
	wantStats := `{"maxValues":{"at":"2026-01-02T03:04:05.124Z","count":10,"day":"2026-01-02","line":"l2","temperature":20.5},` +
		`"minValues":{"at":"2026-01-02T03:04:05.100Z","count":-7,"day":"2025-12-31","line":"l0","temperature":-4},` +
		`"nullCount":{"at":1,"count":0,"day":1,"line":0,"tags":2,"temperature":1},"numRecords":3}`
	if string(stats) != wantStats {
		t.Errorf("stats\n got  %s\n want %s", stats, wantStats)
	}

	// A new version of the schema with one more nullable column: the next
	// commit carries the new metaData (same table id); old rows read null.
	more := strings.Replace(deltaRow, `"fields": [`, `"fields": [ {"name": "unit", "type": "string", "nullable": true, "metadata": {}},`, 1)
	writeDelta(t, dir, schemaFields(t, config.SchemaFormatDelta, more), `{"line": "l5", "count": 5, "unit": "C"}`)
	if got := strings.Join(commitActions(t, dir, 2), ","); got != "metaData,add,commitInfo" {
		t.Errorf("version 2: %s", got)
	}
	tbl = testparquet.ReadDelta(t, dir)
	if tbl.Versions != 3 || len(tbl.Rows) != 6 || tbl.Rows[5]["unit"] != "C" || !strings.Contains(fmt.Sprint(tbl.Schema), "unit") {
		t.Fatalf("after the schema change: %d versions, rows %v", tbl.Versions, tbl.Rows)
	}
	ids := map[string]bool{}
	for v := range 3 {
		b, _ := os.ReadFile(filepath.Join(dir, DeltaLogDir, fmt.Sprintf("%020d.json", v)))
		for _, l := range strings.Split(string(b), "\n") {
			var a struct{ MetaData *struct{ ID string } }
			if json.Unmarshal([]byte(l), &a) == nil && a.MetaData != nil {
				ids[a.MetaData.ID] = true
			}
		}
	}
	if len(ids) != 1 {
		t.Errorf("table ids %v: a metaData update must keep the id", ids)
	}
}

// TestDeltaConcurrentWritersNeverOverwrite runs two writers on one table
// at once: each commit lands on a version of its own (a writer that finds
// its version taken retries on the next), so the log has every file once
// and no gap.
func TestDeltaConcurrentWritersNeverOverwrite(t *testing.T) {
	dir := t.TempDir()
	fields := schemaFields(t, config.SchemaFormatDelta, deltaRow)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := New(Options{Dir: dir, Format: config.FormatDelta, MaxBytes: 1, Prefix: fmt.Sprintf("writer%d", w), Fields: fields})
			if err != nil {
				t.Error(err)
				return
			}
			for i := range 3 {
				// MaxBytes 1: every send finishes and commits a file.
				if err := d.Send(context.Background(), []*stage.Message{payloadMsg(fmt.Sprintf(`{"line": "w%d", "count": %d}`, w, i))}); err != nil {
					t.Error(err)
				}
			}
			if err := d.Close(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	tbl := testparquet.ReadDelta(t, dir)
	if tbl.Versions != 6 || len(tbl.Files) != 6 || len(tbl.Rows) != 6 {
		t.Fatalf("versions %d, files %d, rows %d", tbl.Versions, len(tbl.Files), len(tbl.Rows))
	}
	if got := strings.Join(commitActions(t, dir, 0), ","); !strings.HasPrefix(got, "protocol,metaData,add") {
		t.Errorf("version 0: %s", got)
	}
	for v := 1; v < 6; v++ {
		if got := strings.Join(commitActions(t, dir, v), ","); got != "add,commitInfo" {
			t.Errorf("version %d: %s (only one writer creates the table)", v, got)
		}
	}
}

// TestDeltaRecoveryCommitsOnce: a crash after a data file was committed
// but before its staging file was removed must not add the file again
// when the destination starts over; a staging file never committed is
// committed then.
func TestDeltaRecoveryCommitsOnce(t *testing.T) {
	dir := t.TempDir()
	fields := schemaFields(t, config.SchemaFormatDelta, deltaRow)
	writeDelta(t, dir, fields, `{"line": "l1", "count": 1}`)
	tbl := testparquet.ReadDelta(t, dir)
	base := strings.TrimSuffix(strings.TrimPrefix(tbl.Files[0].Path, "part-"), ".parquet")
	line, _ := json.Marshal(envelope{Topic: "t", Received: 1, Payload: json.RawMessage(`{"line": "l1", "count": 1}`)})
	staging := filepath.Join(dir, ".staging")
	// The committed file's staging file, as a crash would leave it, and a
	// second one that was never committed.
	for _, name := range []string{base, "flow-20260102T030405.000000000Z-9"} {
		if err := os.WriteFile(filepath.Join(staging, name+".jsonl"), append(line, '\n'), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	d, err := New(Options{Dir: dir, Format: config.FormatDelta, MaxBytes: 1 << 30, Prefix: "flow", Fields: fields, Now: func() time.Time { return time.Unix(1, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	tbl = testparquet.ReadDelta(t, dir)
	if tbl.Versions != 2 || len(tbl.Files) != 2 || len(tbl.Rows) != 2 {
		t.Fatalf("versions %d, files %v, rows %d", tbl.Versions, tbl.Files, len(tbl.Rows))
	}
	if ents, _ := os.ReadDir(staging); len(ents) != 0 {
		t.Fatalf("staging files left: %v", ents)
	}
	if _, err := New(Options{Dir: t.TempDir(), Format: config.FormatDelta, Prefix: "flow"}); err == nil || !strings.Contains(err.Error(), "schemaRef") {
		t.Fatalf("a Delta destination without columns: %v", err)
	}
}

// FuzzDeltaLog feeds the log reader arbitrary commit files: it never
// panics, a log it accepts is at version 0, and a commit appended to it
// lands as version 1 and is found again by a fresh reader.
func FuzzDeltaLog(f *testing.F) {
	f.Add([]byte(`{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}` + "\n" +
		`{"metaData":{"id":"x","format":{"provider":"parquet"},"schemaString":"{}","partitionColumns":[],"configuration":{}}}` + "\n" +
		`{"add":{"path":"a.parquet","size":1,"dataChange":true}}` + "\n"))
	f.Add([]byte(`{"remove":{"path":"a.parquet"}}` + "\n\n"))
	f.Add([]byte(`{"add":`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, DeltaLogDir), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, DeltaLogDir, deltaVersionName(0)), data, 0o640); err != nil {
			t.Fatal(err)
		}
		tbl, err := openDelta(dir)
		if err != nil {
			return
		}
		if tbl.version != 0 {
			t.Fatalf("version %d", tbl.version)
		}
		if tbl.added["part-new.parquet"] {
			return // committed already: commit adds nothing (TestDeltaRecoveryCommitsOnce)
		}
		fields := []config.SchemaField{{Name: "a", Type: config.FieldLong}}
		if err := tbl.commit(fields, deltaFile{name: "part-new.parquet", size: 1, mtime: time.Unix(1, 0)}, time.Unix(2, 0)); err != nil {
			t.Fatal(err)
		}
		again, err := openDelta(dir)
		if err != nil || again.version != 1 || !again.added["part-new.parquet"] {
			t.Fatalf("after a commit: %+v %v", again, err)
		}
	})
}
