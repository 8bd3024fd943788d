package cli

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector/connectortest"
)

// schema infer --file: the printed Schema resource applies as it is, and
// its schema accepts the samples; --delta -o schema prints a Delta/1.0
// document that compiles.
func TestSchemaInferFromFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "samples.jsonl")
	lines := []string{
		`{"temperature": 21.5, "unit": "C", "at": "2025-06-01T12:00:00Z"}`,
		``,
		`not json`,
		`{"temperature": 19, "at": "2025-06-01T12:00:01Z"}`,
	}
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, "schema", "infer", "--file", file, "--name", "thermostat")
	if code != 0 {
		t.Fatalf("infer: %s", errOut)
	}
	if !strings.Contains(errOut, "1 payload(s) were not JSON") {
		t.Errorf("stderr: %q", errOut)
	}
	obj, err := config.Builtin().Decode([]byte(out))
	if err != nil {
		t.Fatalf("the proposal does not apply: %v\n%s", err, out)
	}
	spec := obj.Spec.(*config.SchemaSpec)
	c, err := config.CompileSchemaContent(spec.Format, spec.Versions[0].SchemaContent)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{lines[0], lines[3]} {
		if err := c.ValidateMessage([]byte(l)); err != nil {
			t.Errorf("%s: %v", l, err)
		}
	}
	if err := c.ValidateMessage([]byte(`{"unit": "C", "at": "2025-06-01T12:00:00Z"}`)); err == nil {
		t.Error("temperature, in every sample, is not required")
	}
	out, errOut, code = runCLI(t, "schema", "infer", "--file", file, "--delta", "-o", "schema")
	if code != 0 {
		t.Fatalf("infer --delta: %s", errOut)
	}
	d, err := config.CompileSchemaContent(config.SchemaFormatDelta, out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	fields, _ := d.Fields()
	var got []string
	for _, f := range fields {
		got = append(got, f.Name+":"+f.Type+map[bool]string{true: "?", false: ""}[f.Nullable])
	}
	if strings.Join(got, " ") != "at:timestamp temperature:double unit:string?" {
		t.Errorf("delta fields %v", got)
	}
	if _, errOut, code := runCLI(t, "schema", "infer"); code == 0 || !strings.Contains(errOut, "give -t/--topic") {
		t.Errorf("no source: %d %s", code, errOut)
	}
}

// schema infer -t listens on a real broker: mosquitto_pub publishes until
// the command has its samples.
func TestSchemaInferFromTopic(t *testing.T) {
	_, addr := connectortest.Broker(t)
	host, port, _ := strings.Cut(addr, ":")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			_ = exec.CommandContext(ctx, "mosquitto_pub", "-h", host, "-p", port, "-t", "plant/l1/t",
				"-m", `{"seq": `+strconv.Itoa(i)+`, "ok": true}`).Run()
		}
	}()
	out, errOut, code := runCLI(t, "schema", "infer", "--host", host, "-p", port, "-t", "plant/+/t", "--samples", "3", "--seconds", "60s", "-o", "schema")
	cancel()
	<-done
	if code != 0 {
		t.Fatalf("infer: %s", errOut)
	}
	for _, want := range []string{`"seq"`, `"type": "integer"`, `"ok"`, `"boolean"`, `"required"`, "from 3 sample(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
}
