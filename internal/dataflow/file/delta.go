package file

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/config"
)

// A Delta Lake table (serializationFormat: Delta) is the destination's
// folder: Parquet data files written with the schema's columns, and
// _delta_log/<version, 20 digits>.json commits, each a file of
// newline-delimited actions (Delta transaction protocol, reader version
// 1, writer version 2). The first commit holds the protocol, the table's
// metaData (id, format parquet, schemaString from the flow's output
// schema, no partition columns) and the add action of the first file;
// each later file is one more commit with its add action (path, size,
// modification time, dataChange, statistics), and a metaData action when
// the schema changed. A commit is written to a temporary file and linked
// to its version's name: link fails when that version exists, so a
// commit never replaces another (another writer got the version first:
// the commit is retried as the next one).

// DeltaLogDir is the folder of a table's commits.
const DeltaLogDir = "_delta_log"

// deltaTable is the writer's view of a table's log.
type deltaTable struct {
	dir     string
	log     string
	version int64           // the latest committed version, -1 for none
	id      string          // metaData.id
	schema  string          // the latest metaData.schemaString
	added   map[string]bool // data file paths the log adds
}

// openDelta reads a table's log (creating its folder): the latest
// version, the table id and schema, and the files it adds, so that a data
// file committed before a crash is not committed twice.
func openDelta(dir string) (*deltaTable, error) {
	t := &deltaTable{dir: dir, log: filepath.Join(dir, DeltaLogDir), version: -1, added: map[string]bool{}}
	if err := os.MkdirAll(t.log, 0o750); err != nil {
		return nil, fmt.Errorf("creating %s: %w", t.log, err)
	}
	if err := t.refresh(); err != nil {
		return nil, err
	}
	return t, nil
}

// refresh reads the commits after the version known.
func (t *deltaTable) refresh() error {
	for v := t.version + 1; ; v++ {
		f, err := os.Open(filepath.Join(t.log, deltaVersionName(v)))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the Delta log: %w", err)
		}
		err = t.read(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("reading the Delta log, version %d: %w", v, err)
		}
		t.version = v
	}
}

func (t *deltaTable) read(f *os.File) error {
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var a struct {
			MetaData *struct {
				ID           string `json:"id"`
				SchemaString string `json:"schemaString"`
			} `json:"metaData"`
			Add *struct {
				Path string `json:"path"`
			} `json:"add"`
			Remove *struct {
				Path string `json:"path"`
			} `json:"remove"`
		}
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			return err
		}
		switch {
		case a.MetaData != nil:
			t.id, t.schema = a.MetaData.ID, a.MetaData.SchemaString
		case a.Add != nil:
			t.added[a.Add.Path] = true
		case a.Remove != nil:
			delete(t.added, a.Remove.Path)
		}
	}
	return sc.Err()
}

func deltaVersionName(v int64) string { return fmt.Sprintf("%020d.json", v) }

// deltaFile is a data file to commit.
type deltaFile struct {
	name  string // relative to the table's folder
	size  int64
	mtime time.Time
	stats deltaStats
}

// commit appends a commit adding file; a file the log adds already (a
// retry after a crash between commit and cleanup) is not added again.
func (t *deltaTable) commit(fields []config.SchemaField, file deltaFile, now time.Time) error {
	schema, err := deltaSchemaString(fields)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		if err := t.refresh(); err != nil {
			return err
		}
		if t.added[file.name] {
			return nil
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf) // one action per line
		enc.SetEscapeHTML(false)
		next := t.version + 1
		id := t.id
		if next == 0 {
			_ = enc.Encode(map[string]any{"protocol": map[string]any{"minReaderVersion": 1, "minWriterVersion": 2}})
			id = newUUID()
		}
		if next == 0 || schema != t.schema {
			_ = enc.Encode(map[string]any{"metaData": map[string]any{
				"id":               id,
				"format":           map[string]any{"provider": "parquet", "options": map[string]string{}},
				"schemaString":     schema,
				"partitionColumns": []string{},
				"configuration":    map[string]string{},
				"createdTime":      now.UnixMilli(),
			}})
		}
		stats, _ := json.Marshal(file.stats)
		_ = enc.Encode(map[string]any{"add": map[string]any{
			"path":             (&urlPath{file.name}).String(),
			"partitionValues":  map[string]string{},
			"size":             file.size,
			"modificationTime": file.mtime.UnixMilli(),
			"dataChange":       true,
			"stats":            string(stats),
		}})
		_ = enc.Encode(map[string]any{"commitInfo": map[string]any{
			"timestamp":           now.UnixMilli(),
			"operation":           "WRITE",
			"operationParameters": map[string]string{"mode": "Append"},
			"engineInfo":          "edgeport",
			"isBlindAppend":       true,
		}})
		err := t.put(next, buf.Bytes())
		if errors.Is(err, fs.ErrExist) && attempt < 10 {
			continue // another writer took this version: read it and try the next
		}
		if err != nil {
			return err
		}
		t.version, t.id, t.schema = next, id, schema
		t.added[file.name] = true
		return nil
	}
}

// put writes a commit: a temporary file, fsynced, then a hard link to the
// version's name, which fails with fs.ErrExist rather than replace a
// commit (a rename would replace it), then the log folder fsynced.
func (t *deltaTable) put(version int64, data []byte) error {
	tmp := filepath.Join(t.log, fmt.Sprintf(".%s.%s.tmp", deltaVersionName(version), newUUID()))
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("writing Delta commit %d: %w", version, err)
	}
	defer os.Remove(tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing Delta commit %d: %w", version, err)
	}
	if err := os.Link(tmp, filepath.Join(t.log, deltaVersionName(version))); err != nil {
		return fmt.Errorf("committing Delta version %d: %w", version, err)
	}
	return syncDir(t.log)
}

// urlPath is an add action's path: a relative URI (RFC 2396), so
// characters outside the unreserved set are percent-encoded.
type urlPath struct{ p string }

func (u *urlPath) String() string {
	var b strings.Builder
	for i := 0; i < len(u.p); i++ {
		c := u.p[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.!~*'()/", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// deltaSchemaString writes the columns as a Delta schema (struct type
// JSON): the table's metaData.schemaString.
func deltaSchemaString(fields []config.SchemaField) (string, error) {
	b, err := json.Marshal(deltaStruct(fields))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func deltaStruct(fields []config.SchemaField) map[string]any {
	fs := make([]any, len(fields))
	for i, f := range fields {
		fs[i] = map[string]any{"name": f.Name, "type": deltaType(f), "nullable": f.Nullable, "metadata": map[string]any{}}
	}
	return map[string]any{"type": "struct", "fields": fs}
}

func deltaType(f config.SchemaField) any {
	switch f.Type {
	case config.FieldJSON:
		return "string" // the value's JSON text
	case config.FieldDecimal:
		return fmt.Sprintf("decimal(%d,%d)", f.Precision, f.Scale)
	case config.FieldStruct:
		return deltaStruct(f.Fields)
	case config.FieldArray:
		return map[string]any{"type": "array", "elementType": deltaType(*f.Elem), "containsNull": f.Elem.Nullable}
	case config.FieldMap:
		return map[string]any{"type": "map", "keyType": "string", "valueType": deltaType(*f.Elem), "valueContainsNull": f.Elem.Nullable}
	}
	return f.Type
}

// deltaStats are an add action's statistics: row count, and per
// top-level column the nulls and, for numbers, strings, dates and
// timestamps, the least and greatest value (timestamps at millisecond
// precision, rounded outwards so the bounds still hold).
type deltaStats struct {
	NumRecords int64          `json:"numRecords"`
	MinValues  map[string]any `json:"minValues"`
	MaxValues  map[string]any `json:"maxValues"`
	NullCount  map[string]any `json:"nullCount"`
}

func statsOf(fields []config.SchemaField, rows []map[string]any) deltaStats {
	s := deltaStats{NumRecords: int64(len(rows)), MinValues: map[string]any{}, MaxValues: map[string]any{}, NullCount: map[string]any{}}
	for _, f := range fields {
		switch f.Type {
		case config.FieldStruct:
			continue // nested statistics are optional; not written
		}
		var nulls int64
		var lo, hi any
		for _, r := range rows {
			v, ok := r[f.Name]
			if !ok || v == nil {
				nulls++
				continue
			}
			if lo == nil || less(v, lo) {
				lo = v
			}
			if hi == nil || less(hi, v) {
				hi = v
			}
		}
		s.NullCount[f.Name] = nulls
		if lo == nil {
			continue
		}
		if min, max, ok := statBounds(f.Type, lo, hi); ok {
			s.MinValues[f.Name], s.MaxValues[f.Name] = min, max
		}
	}
	return s
}

// less orders two values of one column as rowOf makes them.
func less(a, b any) bool {
	switch x := a.(type) {
	case int64:
		return x < b.(int64)
	case int32:
		return x < b.(int32)
	case int16:
		return x < b.(int16)
	case int8:
		return x < b.(int8)
	case float64:
		return x < b.(float64)
	case float32:
		return x < b.(float32)
	case string:
		return x < b.(string)
	}
	return false
}

// statBounds renders a column's bounds as Delta statistics write them,
// or false for a type without them (booleans, binary, decimals, lists,
// maps, JSON text).
func statBounds(typ string, lo, hi any) (any, any, bool) {
	switch typ {
	case config.FieldLong, config.FieldInteger, config.FieldShort, config.FieldByte, config.FieldString:
		return lo, hi, true
	case config.FieldFloat, config.FieldDouble:
		l, h := toF64(lo), toF64(hi)
		if math.IsInf(l, 0) || math.IsInf(h, 0) {
			return nil, nil, false
		}
		return l, h, true
	case config.FieldDate:
		day := func(v any) string { return time.Unix(int64(v.(int32))*86400, 0).UTC().Format(time.DateOnly) }
		return day(lo), day(hi), true
	case config.FieldTimestamp:
		const layout = "2006-01-02T15:04:05.000Z07:00"
		l := time.UnixMicro(lo.(int64)).UTC().Truncate(time.Millisecond)
		h := time.UnixMicro(hi.(int64)).UTC()
		if t := h.Truncate(time.Millisecond); !t.Equal(h) {
			h = t.Add(time.Millisecond)
		}
		return l.Format(layout), h.Format(layout), true
	}
	return nil, nil, false
}

func toF64(v any) float64 {
	if f, ok := v.(float32); ok {
		return float64(f)
	}
	return v.(float64)
}

// deltaDataName is a data file's name in the table: the staging name's
// base (flow, time, sequence), unique per flow.
func deltaDataName(base string) string {
	return "part-" + base + ".parquet"
}

// publishDelta turns a staging file into a data file of the table and
// commits it: the Parquet file is written beside the log (invisible to
// readers until committed), then the commit adds it, then the staging
// file goes. After a crash the staging file is published again; a data
// file the log already adds is not added twice.
func (d *Destination) publishDelta(src, base string) error {
	dataName := deltaDataName(base)
	if !d.delta.added[dataName] {
		rows, err := d.schemaRows(src, filepath.Join(d.o.Dir, base+".rejected.jsonl"))
		if err != nil {
			return err
		}
		if len(rows) > 0 {
			tmp := filepath.Join(d.staging, base+".parquet.tmp")
			if err := writeRows(tmp, d.o.Fields, rows); err != nil {
				_ = os.Remove(tmp)
				return err
			}
			dst := filepath.Join(d.o.Dir, dataName)
			if err := os.Rename(tmp, dst); err != nil {
				return fmt.Errorf("publishing %s: %w", dataName, err)
			}
			if err := syncDir(d.o.Dir); err != nil {
				return err
			}
			fi, err := os.Stat(dst)
			if err != nil {
				return err
			}
			file := deltaFile{name: dataName, size: fi.Size(), mtime: fi.ModTime(), stats: statsOf(d.o.Fields, rows)}
			if err := d.delta.commit(d.o.Fields, file, d.o.Now()); err != nil {
				return err
			}
		}
	}
	if err := os.Remove(src); err != nil {
		return fmt.Errorf("removing %s: %w", src, err)
	}
	return syncDir(d.staging)
}
