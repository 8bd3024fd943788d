// Package testparquet reads Parquet files in tests with an independent
// reader: Apache Arrow's Rust parquet crate (parquet-wasm) run by Node.
package testparquet

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Field is a column as Arrow reads it: its Arrow type (e.g. "Int64",
// "Struct<{lat:Float64, lon:Float64}>"), nullability and children.
type Field struct {
	Name     string  `json:"name"`
	Type     string  `json:"type"`
	Nullable bool    `json:"nullable"`
	Children []Field `json:"children"`
}

// Read returns the file's columns and rows. Values: 64-bit integers and
// decimals as strings, dates YYYY-MM-DD, timestamps RFC 3339 with
// milliseconds, binary base64, other numbers float64. The reader lives in
// test/parquet; scripts/test.sh installs it.
func Read(t testing.TB, path string) ([]Field, []map[string]any) {
	t.Helper()
	var res File
	run(t, &res, path)
	return res.Fields, res.Rows
}

// File is one Parquet file as Arrow reads it.
type File struct {
	Fields []Field          `json:"fields"`
	Rows   []map[string]any `json:"rows"`
}

// ReadAll reads several files with one start of the reader.
func ReadAll(t testing.TB, paths ...string) []File {
	t.Helper()
	switch len(paths) {
	case 0:
		return nil
	case 1:
		f, r := Read(t, paths[0])
		return []File{{Fields: f, Rows: r}}
	}
	var res []File
	run(t, &res, paths...)
	return res
}

func run(t testing.TB, out any, paths ...string) {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(self), "..", "..", "test", "parquet")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "parquet-wasm")); err != nil {
		t.Fatalf("the independent Parquet reader is not installed: run scripts/test.sh (or npm ci in test/parquet): %v", err)
	}
	b, err := exec.Command("node", append([]string{filepath.Join(dir, "read.mjs")}, paths...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("reading %v with Arrow: %v\n%s", paths, err, ee.Stderr)
		}
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}
