package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the .defaulted.yaml golden files")

// TestFixtures decodes every testdata/*.good.yaml and *.bad.yaml. A file's
// "# expect: " lines list, in order, exactly the errors it must produce; a
// good file must produce none and render, defaults applied, as its
// .defaulted.yaml golden file. "# warn: " lines list, in order, exactly
// the warnings (as line: path: message).
func TestFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		good := strings.HasSuffix(f, ".good.yaml")
		if !good && !strings.HasSuffix(f, ".bad.yaml") {
			continue
		}
		n++
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var want, wantWarn []string
			for _, l := range strings.Split(string(data), "\n") {
				if e, ok := strings.CutPrefix(l, "# expect: "); ok {
					want = append(want, e)
				}
				if w, ok := strings.CutPrefix(l, "# warn: "); ok {
					wantWarn = append(wantWarn, w)
				}
			}
			if good && len(want) > 0 {
				t.Fatalf("a good fixture expects errors")
			}
			if !good && len(want) == 0 {
				t.Fatalf("a bad fixture lists no # expect: lines")
			}
			docs, err := Builtin().DecodeAll(data)
			var got, gotWarn []string
			for _, d := range docs {
				for _, w := range d.Warnings {
					gotWarn = append(gotWarn, fmt.Sprintf("%d: %s", w.Line, w.Error()))
				}
				var ve *ValidationError
				switch {
				case errors.As(d.Err, &ve):
					got = append(got, ve.Errs.Strings()...)
				case d.Err != nil:
					got = append(got, d.Err.Error())
				}
			}
			if err != nil {
				got = append(got, err.Error())
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("errors:\n  got:  %s\n  want: %s", strings.Join(got, "\n        "), strings.Join(want, "\n        "))
			}
			if strings.Join(gotWarn, "\n") != strings.Join(wantWarn, "\n") {
				t.Errorf("warnings:\n  got:  %s\n  want: %s", strings.Join(gotWarn, "\n        "), strings.Join(wantWarn, "\n        "))
			}
			if good {
				checkGolden(t, strings.TrimSuffix(f, ".good.yaml")+".defaulted.yaml", docs)
			}
		})
	}
	if n < 10 {
		t.Fatalf("only %d fixtures found", n)
	}
}

func checkGolden(t *testing.T, golden string, docs []Document) {
	t.Helper()
	var out bytes.Buffer
	for i, d := range docs {
		data, err := json.Marshal(d.Object)
		if err != nil {
			t.Fatal(err)
		}
		y, err := JSONToYAML(data)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(y)
	}
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if out.String() != string(want) {
		t.Errorf("defaulted output differs from %s:\n%s", golden, out.String())
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
