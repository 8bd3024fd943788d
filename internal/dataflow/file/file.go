// Package file is the dataflow destination that writes local files: JSON
// Lines or Parquet, rotated by size and age, and published atomically so
// that a reader of the folder never sees half a file.
package file

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
)

// Options configure a Destination.
type Options struct {
	Dir string // the folder of finished files
	// Format is config.FormatJSON (JSON Lines), config.FormatParquet, or
	// config.FormatDelta (a Delta Lake table in Dir: Parquet files and
	// their commits in _delta_log; Fields are required).
	Format   string
	MaxBytes int64 // rotate when the staged data reaches this size
	MaxAge   time.Duration
	Prefix   string // file name prefix (the flow's name)
	// Fields, when set, are a Parquet file's columns (from the flow's
	// output schema); a message that does not fit them is refused
	// permanently by Send. Nil: columns are inferred from the payloads.
	Fields []config.SchemaField
	Now    func() time.Time // nil: time.Now
}

// Destination writes messages into a staging file under Dir/.staging,
// fsyncing each batch before Send returns, so an acknowledged message is on
// disk. When the staging file is big or old enough it becomes a finished
// file: renamed into Dir (JSON Lines) or converted to Parquet and renamed
// (the rename is the publication). Staging files left by a crash are
// finished when the destination starts again; a torn last line, which was
// never acknowledged, is dropped.
type Destination struct {
	o       Options
	staging string

	mu      sync.Mutex // guards f, size, started, seq, closed
	f       *os.File   // the open staging file, nil between files
	name    string     // its base name
	size    int64
	started time.Time
	seq     int
	closed  bool

	delta *deltaTable // Format Delta: the table's log as this writer knows it (guarded by mu)

	stop chan struct{}
	wg   sync.WaitGroup // the age ticker
}

var _ stage.Destination = (*Destination)(nil)

// New prepares the folder, finishes staging files of an earlier run and
// starts the age rotation.
func New(o Options) (*Destination, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Format == "" {
		o.Format = config.FormatJSON
	}
	d := &Destination{o: o, staging: filepath.Join(o.Dir, ".staging"), stop: make(chan struct{})}
	if err := os.MkdirAll(d.staging, 0o750); err != nil {
		return nil, fmt.Errorf("creating %s: %w", d.staging, err)
	}
	if o.Format == config.FormatDelta {
		if o.Fields == nil {
			return nil, errors.New("a Delta table needs the columns of a schema (builtInTransformationSettings.schemaRef)")
		}
		var err error
		if d.delta, err = openDelta(o.Dir); err != nil {
			return nil, err
		}
	}
	if err := d.recover(); err != nil {
		return nil, err
	}
	if o.MaxAge > 0 {
		tick := max(min(o.MaxAge/4, 5*time.Second), 50*time.Millisecond)
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			t := time.NewTicker(tick)
			defer t.Stop()
			for {
				select {
				case <-d.stop:
					return
				case <-t.C:
					d.mu.Lock()
					if d.f != nil && d.o.Now().Sub(d.started) >= d.o.MaxAge {
						_ = d.finishLocked() // retried on the next tick or Send
					}
					d.mu.Unlock()
				}
			}
		}()
	}
	return d, nil
}

// recover finishes the staging files of this flow left by an earlier run.
func (d *Destination) recover() error {
	ents, err := os.ReadDir(d.staging)
	if err != nil {
		return fmt.Errorf("reading %s: %w", d.staging, err)
	}
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, d.o.Prefix+"-") || !strings.HasSuffix(n, ".jsonl") {
			continue
		}
		p := filepath.Join(d.staging, n)
		if err := truncateTornLine(p); err != nil {
			return err
		}
		if err := d.publish(n); err != nil {
			return err
		}
	}
	return nil
}

// truncateTornLine cuts a staging file after its last complete line.
func truncateTornLine(p string) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("recovering %s: %w", p, err)
	}
	keep := bytes.LastIndexByte(b, '\n') + 1
	if keep == len(b) {
		return nil
	}
	if err := os.Truncate(p, int64(keep)); err != nil {
		return fmt.Errorf("recovering %s: %w", p, err)
	}
	return nil
}

// Send appends the batch to the staging file and makes it durable.
func (d *Destination) Send(ctx context.Context, batch []*stage.Message) error {
	var buf bytes.Buffer
	for _, m := range batch {
		if d.o.Fields != nil && d.columnar() {
			// Refused now, while it can still be dead-lettered.
			if _, err := rowOf(d.o.Fields, m.Payload); err != nil {
				return stage.Permanent(err)
			}
		}
		if err := d.line(&buf, m); err != nil {
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("file destination closed")
	}
	if d.f == nil {
		now := d.o.Now().UTC()
		d.seq++
		d.name = fmt.Sprintf("%s-%s-%d.jsonl", d.o.Prefix, now.Format("20060102T150405.000000000Z"), d.seq)
		f, err := os.OpenFile(filepath.Join(d.staging, d.name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return fmt.Errorf("opening staging file: %w", err)
		}
		d.f, d.size, d.started = f, 0, now
	}
	n, err := d.f.Write(buf.Bytes())
	d.size += int64(n)
	if err == nil {
		err = d.f.Sync()
	}
	if err != nil {
		// A partial write leaves a torn line; the next file starts clean.
		_ = d.f.Close()
		d.f = nil
		_ = truncateTornLine(filepath.Join(d.staging, d.name))
		return fmt.Errorf("writing %s: %w", d.name, err)
	}
	if d.size >= d.o.MaxBytes || (d.o.MaxAge > 0 && d.o.Now().Sub(d.started) >= d.o.MaxAge) {
		// The batch is durable in staging: a failed rotation is retried
		// later and does not fail the send.
		_ = d.finishLocked()
	}
	return nil
}

// columnar says whether finished files are Parquet (a file or a Delta
// table's data file): lines are then staged as envelopes.
func (d *Destination) columnar() bool {
	return d.o.Format == config.FormatParquet || d.o.Format == config.FormatDelta
}

// envelope is a staged line of a Parquet file: the payload with what the
// file's extra columns need.
type envelope struct {
	Topic    string          `json:"t"`
	Received int64           `json:"r"` // Unix milliseconds
	Payload  json.RawMessage `json:"p"`
}

// line renders one message as a line: the JSON payload itself for JSON
// Lines (a payload that is not JSON is written as a JSON string), an
// envelope for Parquet.
func (d *Destination) line(buf *bytes.Buffer, m *stage.Message) error {
	payload := compactJSON(m.Payload)
	if !d.columnar() {
		buf.Write(payload)
		buf.WriteByte('\n')
		return nil
	}
	b, err := json.Marshal(envelope{Topic: m.SourceTopic, Received: m.Received.UnixMilli(), Payload: payload})
	if err != nil {
		return stage.Permanent(err)
	}
	buf.Write(b)
	buf.WriteByte('\n')
	return nil
}

func compactJSON(p []byte) []byte {
	var b bytes.Buffer
	if json.Valid(p) && json.Compact(&b, p) == nil {
		return b.Bytes()
	}
	s, _ := json.Marshal(string(p))
	return s
}

// finishLocked closes the staging file and publishes it.
func (d *Destination) finishLocked() error {
	if d.f == nil {
		return nil
	}
	if err := d.f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", d.name, err)
	}
	d.f = nil
	return d.publish(d.name)
}

// publish turns the staging file name into a finished file in Dir.
func (d *Destination) publish(name string) error {
	src := filepath.Join(d.staging, name)
	base := strings.TrimSuffix(name, ".jsonl")
	if d.o.Format == config.FormatDelta {
		return d.publishDelta(src, base)
	}
	if d.o.Format != config.FormatParquet {
		if err := os.Rename(src, filepath.Join(d.o.Dir, base+".jsonl")); err != nil {
			return fmt.Errorf("publishing %s: %w", name, err)
		}
		return syncDir(d.o.Dir)
	}
	tmp := filepath.Join(d.staging, base+".parquet.tmp")
	write := writeParquet
	if d.o.Fields != nil {
		write = d.writeSchemaParquet
	}
	if err := write(src, tmp); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, filepath.Join(d.o.Dir, base+".parquet")); err != nil {
		return fmt.Errorf("publishing %s: %w", name, err)
	}
	if err := syncDir(d.o.Dir); err != nil {
		return err
	}
	if err := os.Remove(src); err != nil {
		return fmt.Errorf("removing %s: %w", src, err)
	}
	return syncDir(d.staging)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// readEnvelopes reads a Parquet staging file.
func readEnvelopes(p string) ([]envelope, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []envelope
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 256<<20)
	for sc.Scan() {
		var e envelope
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			continue // not an envelope: a JSON Lines file of another format setting
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// Close finishes the open file and stops the age rotation.
func (d *Destination) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.stop)
	err := d.finishLocked()
	d.mu.Unlock()
	d.wg.Wait()
	return err
}

// Files lists the finished files of dir, oldest first (for tests and tools).
func Files(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() && (strings.HasSuffix(e.Name(), ".jsonl") || strings.HasSuffix(e.Name(), ".parquet")) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(out)
	return out, nil
}

// Batching implements stage.Batcher: one fsync covers a batch, so the
// flow collects up to 1,000 messages for at most 10 ms.
func (d *Destination) Batching() stage.Batching {
	return stage.Batching{MaxMessages: 1000, Latency: 10 * time.Millisecond}
}
