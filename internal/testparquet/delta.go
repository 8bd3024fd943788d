package testparquet

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Table is a Delta Lake table as ReadDelta found it.
type Table struct {
	Versions int   // commits, 0 to Versions-1
	Schema   any   // the latest metaData.schemaString, parsed
	Files    []Add // the data files of the latest snapshot, in commit order
	// Rows are every data file's rows, read with Arrow, in file order.
	Rows []map[string]any
	// Fields are the Arrow columns of the first data file.
	Fields []Field
}

// Add is one add action.
type Add struct {
	Path       string
	Size       int64
	NumRecords int64
	Stats      map[string]any
}

var commitName = regexp.MustCompile(`^[0-9]{20}\.json$`)

// ReadDelta reads a Delta table as a reader following the Delta
// transaction protocol would, checking what the protocol requires on the
// way: commit files named by 20-digit versions from 0 without a gap, one
// action per line; a protocol action (minReaderVersion, minWriterVersion)
// and a metaData action (id, format.provider parquet, schemaString a
// struct whose fields have name, type, nullable and metadata,
// partitionColumns, configuration) in version 0; add actions with a
// relative path to an existing file of that size, partitionValues,
// modificationTime, dataChange and stats JSON whose numRecords is the
// file's row count as Apache Arrow's reader reads it. It is written from
// the protocol, not from Edgeport's writer.
func ReadDelta(t testing.TB, dir string) Table {
	t.Helper()
	logDir := filepath.Join(dir, "_delta_log")
	ents, err := os.ReadDir(logDir)
	if err != nil {
		t.Fatalf("no Delta log: %v", err)
	}
	var commits []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue // hidden files (temporaries) are not part of the log
		}
		if !commitName.MatchString(e.Name()) {
			t.Fatalf("_delta_log holds %q, not a commit file", e.Name())
		}
		commits = append(commits, e.Name())
	}
	if len(commits) == 0 {
		t.Fatal("the Delta log has no commit")
	}
	var tbl Table
	active := map[string]int{} // path → index in tbl.Files
	for v, name := range commits {
		if want := fmt.Sprintf("%020d.json", v); name != want {
			t.Fatalf("commit %d is named %s (a gap or a stray file)", v, name)
		}
		f, err := os.Open(filepath.Join(logDir, name))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		var sawProtocol, sawMeta bool
		for line := 1; sc.Scan(); line++ {
			var action map[string]map[string]any
			if err := json.Unmarshal(sc.Bytes(), &action); err != nil || len(action) != 1 {
				t.Fatalf("%s line %d: not one action: %s (%v)", name, line, sc.Bytes(), err)
			}
			for kind, a := range action {
				at := fmt.Sprintf("%s line %d %s", name, line, kind)
				switch kind {
				case "protocol":
					sawProtocol = true
					r, rok := a["minReaderVersion"].(float64)
					w, wok := a["minWriterVersion"].(float64)
					if !rok || !wok || r < 1 || w < 1 {
						t.Fatalf("%s: %v", at, a)
					}
				case "metaData":
					sawMeta = true
					format, _ := a["format"].(map[string]any)
					_, pok := a["partitionColumns"].([]any)
					_, cok := a["configuration"].(map[string]any)
					if id, _ := a["id"].(string); id == "" || format["provider"] != "parquet" || !pok || !cok {
						t.Fatalf("%s: %v", at, a)
					}
					ss, _ := a["schemaString"].(string)
					var schema map[string]any
					if err := json.Unmarshal([]byte(ss), &schema); err != nil || schema["type"] != "struct" {
						t.Fatalf("%s: schemaString %q: %v", at, ss, err)
					}
					fields, _ := schema["fields"].([]any)
					for _, fv := range fields {
						f, _ := fv.(map[string]any)
						_, nok := f["nullable"].(bool)
						_, mok := f["metadata"].(map[string]any)
						if name, _ := f["name"].(string); name == "" || f["type"] == nil || !nok || !mok {
							t.Fatalf("%s: schema field %v", at, f)
						}
					}
					tbl.Schema = schema
				case "add":
					p, _ := a["path"].(string)
					_, pvok := a["partitionValues"].(map[string]any)
					size, sok := a["size"].(float64)
					_, mok := a["modificationTime"].(float64)
					_, dok := a["dataChange"].(bool)
					if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "://") || !pvok || !sok || !mok || !dok {
						t.Fatalf("%s: %v", at, a)
					}
					rel, err := url.PathUnescape(p)
					if err != nil {
						t.Fatalf("%s: path %q: %v", at, p, err)
					}
					fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(rel)))
					if err != nil || fi.Size() != int64(size) {
						t.Fatalf("%s: data file %s: %v (size %v in the log)", at, rel, err, size)
					}
					add := Add{Path: rel, Size: int64(size)}
					if s, ok := a["stats"].(string); ok {
						if err := json.Unmarshal([]byte(s), &add.Stats); err != nil {
							t.Fatalf("%s: stats %q: %v", at, s, err)
						}
						n, _ := add.Stats["numRecords"].(float64)
						add.NumRecords = int64(n)
					}
					if _, dup := active[rel]; dup {
						t.Fatalf("%s: %s is added twice", at, rel)
					}
					active[rel] = len(tbl.Files)
					tbl.Files = append(tbl.Files, add)
				case "remove":
					p, _ := a["path"].(string)
					rel, _ := url.PathUnescape(p)
					delete(active, rel)
				case "commitInfo", "txn", "cdc", "domainMetadata", "checkpointMetadata", "sidecar":
				default:
					t.Fatalf("%s: unknown action", at)
				}
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		if v == 0 && (!sawProtocol || !sawMeta) {
			t.Fatalf("version 0 lacks the protocol or metaData action")
		}
	}
	tbl.Versions = len(commits)
	var live []Add
	for _, a := range tbl.Files {
		if _, ok := active[a.Path]; ok {
			live = append(live, a)
		}
	}
	tbl.Files = live
	paths := make([]string, len(tbl.Files))
	for i, a := range tbl.Files {
		paths[i] = filepath.Join(dir, filepath.FromSlash(a.Path))
	}
	for i, f := range ReadAll(t, paths...) {
		if i == 0 {
			tbl.Fields = f.Fields
		}
		if a := tbl.Files[i]; int64(len(f.Rows)) != a.NumRecords {
			t.Fatalf("%s: %d rows, numRecords %d", a.Path, len(f.Rows), a.NumRecords)
		}
		tbl.Rows = append(tbl.Rows, f.Rows...)
	}
	return tbl
}
