package file

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	"github.com/edgeport/edgeport/internal/testwait"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func msgs(from, n int) []*stage.Message {
	var out []*stage.Message
	for i := from; i < from+n; i++ {
		out = append(out, &stage.Message{
			SourceTopic: "plant/line1/temp", Received: time.UnixMilli(1_700_000_000_000 + int64(i)),
			Payload: []byte(`{"seq": ` + strconv.Itoa(i) + `, "temperature": 21.5, "ok": true, "site": {"id": "s1"}}`),
		})
	}
	return out
}

func lines(t *testing.T, p string) []string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func TestJSONLinesRotateBySize(t *testing.T) {
	dir := t.TempDir()
	d, err := New(Options{Dir: dir, Format: config.FormatJSON, MaxBytes: 1024, Prefix: "flow"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i += 5 {
		if err := d.Send(context.Background(), msgs(i, 5)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	files, err := Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("%d files for ~4 KiB rotated at 1 KiB", len(files))
	}
	seq := 0
	for _, f := range files {
		for _, l := range lines(t, f) {
			if !strings.HasPrefix(l, `{"seq":`+strconv.Itoa(seq)+`,`) {
				t.Fatalf("%s: line %q, want seq %d (compact JSON, in order)", f, l, seq)
			}
			seq++
		}
	}
	if seq != 50 {
		t.Fatalf("%d lines, want 50", seq)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, ".staging")); len(ents) != 0 {
		t.Fatalf("staging not empty after Close: %v", ents)
	}
}

func TestRotateByAge(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	d, err := New(Options{Dir: dir, MaxBytes: 1 << 30, MaxAge: 100 * time.Millisecond, Prefix: "flow", Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	if err := d.Send(context.Background(), msgs(0, 3)); err != nil {
		t.Fatal(err)
	}
	if files, _ := Files(dir); len(files) != 0 {
		t.Fatalf("published before its age: %v", files)
	}
	c.add(time.Second)
	var files []string
	testwait.For(t, "an old file published without new messages", func() bool {
		files, _ = Files(dir)
		return len(files) == 1
	})
	if got := lines(t, files[0]); len(got) != 3 {
		t.Fatalf("published file has %d lines", len(got))
	}
}

// A crash leaves a staging file with a torn last line (never acknowledged):
// the next start publishes the complete lines only.
func TestRecoverStagingAfterCrash(t *testing.T) {
	dir := t.TempDir()
	staging := filepath.Join(dir, ".staging")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		t.Fatal(err)
	}
	torn := "{\"seq\":0}\n{\"seq\":1}\n{\"se"
	if err := os.WriteFile(filepath.Join(staging, "flow-20260101T000000.000000000Z-1.jsonl"), []byte(torn), 0o640); err != nil {
		t.Fatal(err)
	}
	// Another flow's staging file is left alone.
	if err := os.WriteFile(filepath.Join(staging, "other-20260101T000000.000000000Z-1.jsonl"), []byte("{}\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Dir: dir, MaxBytes: 1 << 20, Prefix: "flow"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	files, _ := Files(dir)
	if len(files) != 1 {
		t.Fatalf("files %v", files)
	}
	if got := lines(t, files[0]); len(got) != 2 || got[1] != `{"seq":1}` {
		t.Fatalf("recovered lines %q", got)
	}
	if _, err := os.Stat(filepath.Join(staging, "other-20260101T000000.000000000Z-1.jsonl")); err != nil {
		t.Fatalf("another flow's staging file: %v", err)
	}
}

type row struct {
	Topic       *string  `parquet:"_topic,optional"`
	Received    *int64   `parquet:"_received,optional"`
	Seq         *float64 `parquet:"seq,optional"`
	Temperature *float64 `parquet:"temperature,optional"`
	OK          *bool    `parquet:"ok,optional"`
	Site        *string  `parquet:"site,optional"`
	Extra       *string  `parquet:"extra,optional"`
	Payload     *string  `parquet:"_payload,optional"`
}

func TestParquet(t *testing.T) {
	dir := t.TempDir()
	d, err := New(Options{Dir: dir, Format: config.FormatParquet, MaxBytes: 1 << 20, Prefix: "flow"})
	if err != nil {
		t.Fatal(err)
	}
	batch := msgs(0, 10)
	batch = append(batch,
		&stage.Message{SourceTopic: "plant/x", Received: time.UnixMilli(5), Payload: []byte(`{"seq": 10, "extra": "e"}`)},
		&stage.Message{SourceTopic: "plant/x", Received: time.UnixMilli(6), Payload: []byte(`not json`)},
	)
	if err := d.Send(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	files, _ := Files(dir)
	if len(files) != 1 || !strings.HasSuffix(files[0], ".parquet") {
		t.Fatalf("files %v", files)
	}
	f, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	rows, err := parquet.Read[row](f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 12 {
		t.Fatalf("%d rows", len(rows))
	}
	r0 := rows[0]
	if *r0.Topic != "plant/line1/temp" || *r0.Received != 1_700_000_000_000 || *r0.Seq != 0 || *r0.Temperature != 21.5 ||
		!*r0.OK || *r0.Site != `{"id":"s1"}` || r0.Extra != nil {
		t.Fatalf("row 0 %+v", r0)
	}
	if r := rows[10]; *r.Seq != 10 || *r.Extra != "e" || r.Temperature != nil {
		t.Fatalf("row 10 %+v", r)
	}
	if r := rows[11]; r.Seq != nil || *r.Payload != `"not json"` {
		t.Fatalf("row 11 %+v", r)
	}
}
