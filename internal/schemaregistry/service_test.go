package schemaregistry

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector/connectortest"
	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/client/clienttest"
	"github.com/edgeport/edgeport/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// invoker is an MQTT 5 client on the broker's TCP listener, as a
// connector using the SDKs' schema registry client would be.
type invoker struct {
	t *testing.T
	c *client.Client
}

func newInvoker(t *testing.T, addr string) *invoker {
	c := clienttest.Connect(t, client.Options{Dialer: client.TCP(addr, nil), ClientID: "connector-1", CleanStart: true})
	return &invoker{t: t, c: c}
}

// call invokes a command and returns the status, the response and the
// user properties.
func (iv *invoker) call(cmd string, req any) (string, Response, *client.Message) {
	iv.t.Helper()
	payload, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := iv.c.Request(ctx, &client.Message{Topic: TopicPrefix + cmd, Payload: payload, QoS: 1, ContentType: "application/json"})
	if err != nil {
		iv.t.Fatalf("%s: %v", cmd, err)
	}
	st, _ := m.UserValue(propStatus)
	var r Response
	if st == "200" && len(m.Payload) > 0 { // empty: get found nothing
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			iv.t.Fatalf("%s: response %q: %v", cmd, m.Payload, err)
		}
	}
	return st, r, m
}

func put(format, content, version string) PutRequest {
	var p PutRequest
	p.PutSchemaRequest.Format, p.PutSchemaRequest.SchemaContent, p.PutSchemaRequest.Version = format, content, version
	p.PutSchemaRequest.SchemaType = config.SchemaTypeMessage
	return p
}

func get(name, version string) GetRequest {
	var g GetRequest
	g.GetSchemaRequest.Name, g.GetSchemaRequest.Version = name, version
	return g
}

func start(t *testing.T) (*config.Store, *invoker) {
	b, addr := connectortest.Broker(t)
	st := connectortest.Store(t)
	svc := New(st, connectortest.Client(t, b, "$edgeport/schemaregistry"), nil)
	svc.refresh = 50 * time.Millisecond
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = svc.Stop(ctx)
	})
	return st, newInvoker(t, addr)
}

// TestPutGetOverMQTT registers a schema the way a connector does, reads
// it back by name and version, and finds it stored as a Schema resource
// named by its content hash, with the hash in its status.
func TestPutGetOverMQTT(t *testing.T) {
	st, iv := start(t)
	content := `{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": {"temperature": {"type": "number"}}}`
	code, r, m := iv.call("put", put(config.SchemaFormatJSONDraft07, content, "1"))
	if code != "200" || r.Schema == nil {
		t.Fatalf("put: status %s %s", code, m.Payload)
	}
	hash := config.SchemaContentHash(content)
	want := Schema{Format: config.SchemaFormatJSONDraft07, Hash: hash, Name: hash[:32], Namespace: Namespace,
		SchemaContent: content, SchemaType: config.SchemaTypeMessage, Version: "1"}
	if got, _ := json.Marshal(r.Schema); string(got) != string(must(json.Marshal(want))) {
		t.Fatalf("put returned %s", got)
	}
	if v, _ := m.UserValue(propProtocolVersion); v != "1.0" || m.ContentType != "application/json" {
		t.Errorf("response metadata: __protVer %q content type %q", v, m.ContentType)
	}
	// The same put again is answered with the stored schema.
	if code, r2, _ := iv.call("put", put(config.SchemaFormatJSONDraft07, content, "1")); code != "200" || r2.Schema.Hash != hash {
		t.Fatalf("second put: %s %+v", code, r2.Schema)
	}
	for _, version := range []string{"1", ""} {
		code, g, _ := iv.call("get", get(hash[:32], version))
		if code != "200" || g.Schema == nil || g.Schema.SchemaContent != content || g.Schema.Version != "1" {
			t.Fatalf("get version %q: %s %+v", version, code, g.Schema)
		}
	}
	// As Azure IoT Operations' registry: 200 with an empty payload, which
	// the SDKs' client reads as "no schema" (not an error).
	if code, g, m := iv.call("get", get("nothing-here", "")); code != "200" || g.Schema != nil || len(m.Payload) != 0 {
		t.Fatalf("get unknown: %s %q", code, m.Payload)
	}
	if code, g, m := iv.call("get", get(hash[:32], "9")); code != "200" || g.Schema != nil || len(m.Payload) != 0 {
		t.Fatalf("get unknown version: %s %+v", code, g.Schema)
	}
	o, ok := st.Get(config.Key{Kind: "Schema", Name: hash[:32]})
	if !ok {
		t.Fatal("not stored as a Schema resource")
	}
	if o.Status == nil || len(o.Status.Versions) != 1 || o.Status.Versions[0].Hash != hash || o.Status.Condition(config.ConditionReady) == nil || o.Status.Condition(config.ConditionReady).Status != config.ConditionTrue {
		t.Fatalf("status %+v", o.Status)
	}
}

// TestPutRefused: requests the registry cannot store are answered with
// the SDKs' error metadata: 400 and the field for a malformed request,
// 422 and the validation error for a schema that does not compile.
func TestPutRefused(t *testing.T) {
	_, iv := start(t)
	cases := []struct {
		cmd      string
		req      any
		status   string
		prop     string
		contains string
	}{
		{"put", put(config.SchemaFormatJSONDraft07, "", "1"), "400", "schemaContent", "schemaContent is required"},
		{"put", put("", `{}`, "1"), "400", "format", "format is required"},
		{"put", put(config.SchemaFormatJSONDraft07, `{"type": "strin"}`, "1"), "422", "schemaContent",
			"spec.versions[0].schemaContent: does not compile: at /type: value must be one of"},
		{"put", put(config.SchemaFormatJSONDraft07, `{}`, "one"), "422", "version", `must be a number`},
		{"put", put("Avro", `{}`, "1"), "422", "format", `spec.format: must be one of`},
		{"get", get("", ""), "400", "name", "name is required"},
		{"delete", get("x", ""), "400", "", `unknown command "delete"`},
		{"get", "not an object", "400", "", "the payload must be JSON"},
	}
	for _, c := range cases {
		code, _, m := iv.call(c.cmd, c.req)
		msg, _ := m.UserValue(propStatusMessage)
		prop, _ := m.UserValue(propInvalidName)
		if code != c.status || prop != c.prop || !strings.Contains(msg, c.contains) {
			t.Errorf("%s %+v: status %s prop %q message %q", c.cmd, c.req, code, prop, msg)
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestSchemaUsedBy: a Schema's status lists the dataflows that name it
// (with their source topic filters or their destination) and the asset
// datasets whose connector registered it (with their topic), and follows
// changes to either.
func TestSchemaUsedBy(t *testing.T) {
	st, _ := start(t)
	connectortest.Apply(t, st, `apiVersion: edgeport.io/v1
kind: Schema
metadata: {name: thermostat}
spec:
  format: JsonSchema/draft-07
  versions: [{name: "1", schemaContent: '{"type": "object", "properties": {"t": {"type": "number"}}}'}]
---
apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: check}
spec:
  operations:
  - operationType: Source
    sourceSettings: {dataSources: ["plant/+/thermostat"], schemaRef: "aio-sr://thermostat:1"}
  - operationType: BuiltInTransformation
    builtInTransformationSettings: {schemaRef: "aio-sr://thermostat:1"}
  - operationType: Destination
    destinationSettings: {endpointRef: default, dataDestination: checked}
`)
	k := config.Key{Kind: "Schema", Name: "thermostat"}
	usedBy := func() []config.SchemaUse {
		o, _ := st.Get(k)
		if o.Status == nil {
			return nil
		}
		return o.Status.UsedBy
	}
	testwait.For(t, "dataflow uses", func() bool { return len(usedBy()) == 2 })
	u := usedBy()
	if u[0].Kind != "Dataflow" || u[0].Name != "check" || u[0].Role != "source" || u[0].Version != "1" ||
		len(u[0].Topics) != 1 || u[0].Topics[0] != "plant/+/thermostat" {
		t.Errorf("source use: %+v", u[0])
	}
	if u[1].Role != "output" || u[1].Destination != "default:checked" {
		t.Errorf("output use: %+v", u[1])
	}
	// An asset dataset whose connector registered the schema: its status
	// names it (SetStatus notifies nobody; the refresh picks it up).
	connectortest.Apply(t, st, `apiVersion: edgeport.io/v1
kind: Device
metadata: {name: plc}
spec:
  endpoints:
    inbound:
      main: {endpointType: Microsoft.Modbus, address: "modbus-tcp://127.0.0.1:502"}
---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: line1}
spec:
  deviceRef: {deviceName: plc, endpointName: main}
  datasets:
  - name: temps
    destinations: [{target: Mqtt, configuration: {topic: plant/line1/temps}}]
    dataPoints: [{name: t, dataSource: "holding:1"}]
`)
	a, _ := st.Get(config.Key{Kind: "Asset", Name: "line1"})
	st.SetStatus(a.Key(), a.Metadata.UID, a.Metadata.Generation, config.Status{Datasets: []config.DatasetStatus{
		{Name: "temps", Topic: "plant/line1/temps", SchemaRef: "aio-sr://thermostat:1"}}})
	testwait.For(t, "asset use", func() bool { return len(usedBy()) == 3 })
	if u := usedBy()[2]; u.Kind != "Asset" || u.Name != "line1/temps" || u.Role != "publish" || u.Topics[0] != "plant/line1/temps" {
		t.Errorf("asset use: %+v", u)
	}
	if _, err := st.Delete(config.Key{Kind: "Dataflow", Name: "check"}, ""); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "dataflow gone", func() bool { return len(usedBy()) == 1 })
}
