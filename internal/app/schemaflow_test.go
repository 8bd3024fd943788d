package app

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/file"
	mqttc "github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testparquet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// The docs/schemas.md walkthrough: a JSON Schema checks what arrives, a
// Delta schema checks what the mapping makes and defines the Parquet
// columns. Messages that fail either go to the dead-letter topic with the
// schema, the place in the message and the keyword; the metrics count
// validations and failures by schema; the file reads back in Apache
// Arrow's reader with the schema's columns.
func TestDataflowSchemaValidationAndParquet(t *testing.T) {
	a := startApp(t, Config{})
	out := t.TempDir()
	apply(t, a, `apiVersion: edgeport.io/v1
kind: Schema
metadata: {name: thermostat}
spec:
  format: JsonSchema/draft-07
  versions:
  - name: "1"
    schemaContent: |
      {"$schema": "http://json-schema.org/draft-07/schema#",
       "type": "object", "required": ["temperature"],
       "properties": {"temperature": {"type": "number"}, "line": {"type": "string"},
                      "unit": {"type": "string", "enum": ["C", "F"]}}}
`)
	apply(t, a, `apiVersion: edgeport.io/v1
kind: Schema
metadata: {name: archive-row}
spec:
  format: Delta/1.0
  versions:
  - name: "1"
    schemaContent: |
      {"$schema": "Delta/1.0", "type": "object", "properties": {"type": "struct", "fields": [
        {"name": "line", "type": "string", "nullable": false, "metadata": {}},
        {"name": "temperature", "type": "double", "nullable": false, "metadata": {}},
        {"name": "temperatureF", "type": "double", "nullable": false, "metadata": {}},
        {"name": "unit", "type": "string", "nullable": true, "metadata": {}}]}}
`)
	apply(t, a, fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: DataflowEndpoint
metadata: {name: archive}
spec:
  endpointType: LocalStorage
  localStorageSettings: {path: %s}
`, out))
	apply(t, a, `apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: thermostat-archive}
spec:
  operations:
  - operationType: Source
    sourceSettings: {dataSources: ["plant/+/thermostat"], schemaRef: "aio-sr://thermostat:1"}
  - operationType: BuiltInTransformation
    builtInTransformationSettings:
      serializationFormat: Parquet
      schemaRef: "aio-sr://archive-row:1"
      map:
      - {inputs: ["*"], output: "*"}
      - {inputs: [temperature], output: temperature}
      - {inputs: [temperature], output: temperatureF, expression: "cToF($1)"}
  - operationType: Destination
    destinationSettings: {endpointRef: archive, dataDestination: thermostat}
  deadLetter: {endpointRef: default, dataDestination: deadletter/thermostat}
`)
	k := config.Key{Kind: "Dataflow", Name: "thermostat-archive"}
	waitStatus(t, a, k, config.ConditionTrue)

	sub := tcpClient(t, a, "dead-letter-reader")
	var mu sync.Mutex
	var dead []*mqttc.Message
	if err := sub.Subscribe(context.Background(), mqttc.Subscription{Filters: []packet.Subscription{{Filter: "deadletter/#", QoS: 1}},
		Handler: func(_ context.Context, m *mqttc.Message) { mu.Lock(); dead = append(dead, m); mu.Unlock() }}); err != nil {
		t.Fatal(err)
	}
	pub := tcpClient(t, a, "thermostats")
	for _, p := range []string{
		`{"line": "l1", "temperature": 20, "unit": "C"}`,
		`{"line": "l1", "temperature": "warm"}`, // fails the source schema
		`{"temperature": 21}`,                   // passes it, but the output needs line
		`{"line": "l2", "temperature": 30.5}`,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		if err := pub.Publish(ctx, &mqttc.Message{Topic: "plant/l1/thermostat", QoS: 1, Payload: []byte(p)}); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	testwait.For(t, "two dead letters", func() bool { mu.Lock(); defer mu.Unlock(); return len(dead) >= 2 })
	var st config.DataflowStatus
	if !testwait.Within(wait, func() bool {
		_, st = flowStatus(t, a, "thermostat-archive")
		return st.Sent == 2 && st.DeadLettered == 2
	}) {
		t.Fatalf("status %+v", st)
	}
	mu.Lock()
	want := []map[string]string{
		{"edgeport-error-kind": "schema", "edgeport-schema": "aio-sr://thermostat:1", "edgeport-error-path": "/temperature", "edgeport-error-keyword": "type"},
		{"edgeport-error-kind": "schema", "edgeport-schema": "aio-sr://archive-row:1", "edgeport-error-path": "/", "edgeport-error-keyword": "required"},
	}
	for i, w := range want {
		for key, val := range w {
			if got, _ := dead[i].UserValue(key); got != val {
				t.Errorf("dead letter %d: %s = %q, want %q (%v)", i, key, got, val, dead[i].User)
			}
		}
	}
	if e, _ := dead[1].UserValue("edgeport-error"); !strings.Contains(e, "transformed message does not match schema aio-sr://archive-row:1") || !strings.Contains(e, "line") {
		t.Errorf("dead letter error: %q", e)
	}
	mu.Unlock()

	for _, c := range []struct {
		schema string
		val, f float64
	}{{"thermostat", 4, 1}, {"archive-row", 3, 1}} {
		v := metricWith(t, a, "edgeport_schema_validations_total", c.schema)
		f := metricWith(t, a, "edgeport_schema_validation_failures_total", c.schema)
		if v != c.val || f != c.f {
			t.Errorf("%s: %v validations, %v failures; want %v, %v", c.schema, v, f, c.val, c.f)
		}
	}

	// Deleting the flow finishes its file.
	if _, err := a.Resources().Delete(k, "test"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(out, "thermostat")
	var files []string
	testwait.For(t, "a Parquet file", func() bool { files, _ = file.Files(dir); return len(files) == 1 })
	fields, rows := testparquet.Read(t, files[0])
	var cols []string
	for _, f := range fields {
		n := ""
		if f.Nullable {
			n = "?"
		}
		cols = append(cols, f.Name+":"+f.Type+n)
	}
	if got, want := strings.Join(cols, " "), "line:Utf8 temperature:Float64 temperatureF:Float64 unit:Utf8?"; got != want {
		t.Errorf("columns %q, want %q", got, want)
	}
	if len(rows) != 2 || rows[0]["line"] != "l1" || rows[0]["temperatureF"] != 68.0 || rows[0]["unit"] != "C" ||
		rows[1]["line"] != "l2" || rows[1]["unit"] != nil {
		t.Errorf("rows %v", rows)
	}
}

// metricWith returns the value of a counter with the given schema label.
func metricWith(t *testing.T, a *App, name, schema string) float64 {
	t.Helper()
	mfs, err := a.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "schema" && l.GetValue() == schema {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{schema=%q}", name, schema)
	return 0
}

// The docs/schemas.md Delta walkthrough: the same flow with
// serializationFormat Delta writes a Delta Lake table whose columns come
// from the Delta/1.0 schema; each finished file is a commit, a later run
// of the flow appends to the table, and a Delta reader (the protocol
// checks of testparquet.ReadDelta and Apache Arrow for the data files)
// reads every row. A Delta flow without a schemaRef is refused at apply
// time.
func TestDataflowDeltaTable(t *testing.T) {
	a := startApp(t, Config{})
	out := t.TempDir()
	apply(t, a, `apiVersion: edgeport.io/v1
kind: Schema
metadata: {name: archive-row}
spec:
  format: Delta/1.0
  versions:
  - name: "1"
    schemaContent: |
      {"$schema": "Delta/1.0", "type": "object", "properties": {"type": "struct", "fields": [
        {"name": "line", "type": "string", "nullable": false, "metadata": {}},
        {"name": "temperature", "type": "double", "nullable": false, "metadata": {}},
        {"name": "unit", "type": "string", "nullable": true, "metadata": {}}]}}
`)
	apply(t, a, fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: DataflowEndpoint
metadata: {name: lake}
spec:
  endpointType: LocalStorage
  localStorageSettings: {path: %s}
`, out))
	flow := `apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: NAME}
spec:
  operations:
  - operationType: Source
    sourceSettings: {dataSources: ["plant/+/thermostat"]}
  - operationType: BuiltInTransformation
    builtInTransformationSettings:
      serializationFormat: Delta
      schemaRef: "aio-sr://archive-row:1"
      map: [{inputs: ["*"], output: "*"}]
  - operationType: Destination
    destinationSettings: {endpointRef: lake, dataDestination: thermostat}
`
	if _, err := config.Builtin().Decode([]byte(strings.Replace(strings.Replace(flow, "NAME", "lake", 1), `      schemaRef: "aio-sr://archive-row:1"`+"\n", "", 1))); err == nil ||
		!strings.Contains(err.Error(), "builtInTransformationSettings.schemaRef: required with serializationFormat Delta") {
		t.Fatalf("a Delta flow without schemaRef: %v", err)
	}
	pub := tcpClient(t, a, "thermostats")
	dir := filepath.Join(out, "thermostat")
	for run, payloads := range [][]string{
		{`{"line": "l1", "temperature": 20, "unit": "C"}`, `{"line": "l2", "temperature": 30.5}`},
		{`{"line": "l3", "temperature": 19}`},
	} {
		// A flow of its own name per run: the status of a deleted flow
		// cannot pass for the new one's.
		name := fmt.Sprintf("thermostat-lake-%d", run)
		k := config.Key{Kind: "Dataflow", Name: name}
		apply(t, a, strings.Replace(flow, "NAME", name, 1))
		waitStatus(t, a, k, config.ConditionTrue)
		// Ready follows the source's SUBACK (stage.Subscriber); the
		// broker's own view of the subscription is checked as well.
		testwait.For(t, "the flow's subscription", func() bool {
			for _, s := range a.Broker().Sessions() {
				if strings.Contains(s.ClientID, name) && s.Online {
					for _, sub := range s.Subscriptions {
						if sub.Filter == "plant/+/thermostat" {
							return true
						}
					}
				}
			}
			return false
		})
		for _, p := range payloads {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			if err := pub.Publish(ctx, &mqttc.Message{Topic: "plant/l1/thermostat", QoS: 1, Payload: []byte(p)}); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
		var st config.DataflowStatus
		if !testwait.Within(wait, func() bool { _, st = flowStatus(t, a, name); return st.Sent == uint64(len(payloads)) }) {
			t.Fatalf("run %d: status %+v", run, st)
		}
		// Deleting the flow finishes its file: one commit per run.
		if _, err := a.Resources().Delete(k, "test"); err != nil {
			t.Fatal(err)
		}
		testwait.For(t, "the commit", func() bool {
			_, err := os.Stat(filepath.Join(dir, file.DeltaLogDir, fmt.Sprintf("%020d.json", run)))
			return err == nil
		})
	}
	tbl := testparquet.ReadDelta(t, dir)
	var lines []string
	for _, r := range tbl.Rows {
		lines = append(lines, fmt.Sprint(r["line"], " ", r["temperature"], " ", r["unit"]))
	}
	if tbl.Versions != 2 || strings.Join(lines, ",") != "l1 20 C,l2 30.5 <nil>,l3 19 <nil>" {
		t.Fatalf("%d versions, rows %v", tbl.Versions, lines)
	}
	if s, _ := json.Marshal(tbl.Schema); !strings.Contains(string(s), `{"metadata":{},"name":"unit","nullable":true,"type":"string"}`) {
		t.Errorf("schemaString %s", s)
	}
}
