package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/connector/opcua/testserver"
	"github.com/edgeport/edgeport/internal/testwait"
)

// schemaRefRE is the dataschema user property a connector sets once it
// registered its dataset's schema, as mosquitto_sub prints it (%P).
var schemaRefRE = regexp.MustCompile(`dataschema:(aio-sr://edgeport/([0-9a-f]{32}):1)`)

// registeredSchema follows a connector's messages on topic until one
// carries a registered schema's reference, checks that every later one
// carries the same, and returns the message, the reference and the
// schema's name.
func registeredSchema(t *testing.T, sub *subReader, topic string) (mqttMsg, string, string) {
	t.Helper()
	m := sub.next(t, topic, 60*time.Second)
	ref := schemaRefRE.FindStringSubmatch(m.props)
	if ref == nil {
		t.Fatalf("the first message on %s carries no registered schema: %q", topic, m.props)
	}
	for range 2 {
		if next := sub.next(t, topic, 30*time.Second); !strings.Contains(next.props, "dataschema:"+ref[1]) {
			t.Fatalf("a later message on %s: %q, want dataschema %s", topic, next.props, ref[1])
		}
	}
	return m, ref[1], ref[2]
}

// schemaOf reads a schema with `edgeport get schema NAME -o json` (after
// checking that `edgeport get schemas` lists it) and returns the parsed
// content of its version 1 and its status.usedBy.
func schemaOf(t *testing.T, server, name string) (map[string]any, []map[string]any) {
	t.Helper()
	out, errOut, code := cli(t, "", nil, "get", "schemas", "--server", server)
	if code != 0 || !strings.Contains(out, name) || !strings.Contains(out, "JsonSchema/draft-07") {
		t.Fatalf("get schemas (%d):\n%s%s", code, out, errOut)
	}
	out, errOut, code = cli(t, "", nil, "get", "schema", name, "-o", "json", "--server", server)
	if code != 0 {
		t.Fatalf("get schema: %s", errOut)
	}
	var s struct {
		Metadata struct{ Labels map[string]string }
		Spec     struct {
			Versions []struct{ Name, SchemaContent string }
		}
		Status struct{ UsedBy []map[string]any }
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	if s.Metadata.Labels["edgeport.io/registered-by"] != "mqtt" || len(s.Spec.Versions) != 1 || s.Spec.Versions[0].Name != "1" {
		t.Fatalf("schema %s: %s", name, out)
	}
	var content map[string]any
	d := json.NewDecoder(strings.NewReader(s.Spec.Versions[0].SchemaContent))
	d.UseNumber() // the 64-bit bounds do not fit a float64
	if err := d.Decode(&content); err != nil {
		t.Fatal(err)
	}
	return content, s.Status.UsedBy
}

// valueSchema is the JSON Schema of one point's Value in a dataset schema,
// as compact JSON.
func valueSchema(t *testing.T, content map[string]any, point string) string {
	t.Helper()
	p, _ := content["properties"].(map[string]any)[point].(map[string]any)
	if p == nil {
		t.Fatalf("the schema has no point %q", point)
	}
	b, _ := json.Marshal(p["properties"].(map[string]any)["Value"])
	return string(b)
}

// checkSchemaFlow applies a dataflow that validates the connector's topic
// against the registered schema: the connector's messages pass (counted
// by the schema's metrics, forwarded to out/<flow>), a message that breaks
// the schema, published with mosquitto_pub, is dead-lettered with the
// place and keyword; the schema's status lists the flow and the asset.
func checkSchemaFlow(t *testing.T, e *edgeport, m *mosquitto, flow, topic, ref, name, bad, badPath, asset string) {
	t.Helper()
	server := "http://" + e.addr(t, "http")
	out := m.subscribe("-V", "mqttv5", "-t", "out/"+flow, "-t", "dead/"+flow)
	doc := fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: %s}
spec:
  operations:
  - operationType: Source
    sourceSettings: {dataSources: ["%s"], schemaRef: "%s"}
  - operationType: Destination
    destinationSettings: {endpointRef: default, dataDestination: out/%s}
  deadLetter: {endpointRef: default, dataDestination: dead/%s}
`, flow, topic, ref, flow, flow)
	if o, errOut, code := cli(t, doc, nil, "apply", "-f", "-", "--server", server); code != 0 {
		t.Fatalf("apply dataflow: %s%s", o, errOut)
	}
	out.waitLine(t, 60*time.Second, "a connector message through the flow", func(l string) bool {
		return strings.HasPrefix(l, msgPrefix+"out/"+flow+"|")
	})
	runProc(t, lineWait, "", m.pub, "-h", m.host, "-p", m.port, "-V", "mqttv5", "-q", "1", "-t", topic, "-m", bad)
	dead := out.waitLine(t, 30*time.Second, "the bad message dead-lettered", func(l string) bool {
		return strings.HasPrefix(l, msgPrefix+"dead/"+flow+"|")
	})
	for _, want := range []string{"edgeport-error-kind:schema", "edgeport-schema:" + ref, "edgeport-error-path:" + badPath} {
		if !strings.Contains(dead, want) {
			t.Fatalf("dead letter %q lacks %s", dead, want)
		}
	}
	validations := regexp.MustCompile(`edgeport_schema_validations_total\{dataflow="` + flow + `",schema="` + name + `",version="1"\} ([0-9]+)`)
	failures := `edgeport_schema_validation_failures_total{dataflow="` + flow + `",schema="` + name + `",version="1"} 1`
	testwait.For(t, "the schema's metrics", func() bool {
		_, body := httpGet(t, server+"/metrics")
		v := validations.FindStringSubmatch(body)
		return v != nil && v[1] != "0" && v[1] != "1" && strings.Contains(body, failures)
	})
	testwait.For(t, "the schema's users in its status", func() bool {
		_, used := schemaOf(t, server, name)
		var kinds []string
		for _, u := range used {
			kinds = append(kinds, fmt.Sprint(u["kind"], " ", u["name"], " ", u["role"]))
		}
		got := strings.Join(kinds, ",")
		return strings.Contains(got, "Dataflow "+flow+" source") && strings.Contains(got, "Asset "+asset+" publish")
	})
}

// TestConnectorSchemaOpcUa: the OPC UA connector reads its data points'
// DataType and ValueRank from node-opcua, registers the dataset's schema
// through the schema registry API over MQTT, and every message names it
// (CloudEvents dataschema aio-sr://edgeport/<hash>:1); the schema is a
// Schema resource `edgeport get schemas` lists, typed per point; a
// dataflow with that schemaRef validates the connector's messages.
func TestConnectorSchemaOpcUa(t *testing.T) {
	t.Parallel()
	srv, err := testserver.Start(t.TempDir(), testserver.Config{AllowAnonymous: true, AutoAccept: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	e := startEdgeport(t)
	server := "http://" + e.addr(t, "http")
	m := newMosquitto(t, e)
	sub := m.subReader(t, "opc/#")

	doc := fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: Device
metadata: {name: opc-plc}
spec:
  endpoints:
    inbound:
      opc:
        endpointType: Microsoft.OpcUa
        address: %s
        additionalConfiguration: {securityPolicy: None, securityMode: None}
---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: opc-line}
spec:
  deviceRef: {deviceName: opc-plc, endpointName: opc}
  datasets:
  - name: line
    datasetConfiguration: {publishingInterval: 200, samplingInterval: 100, keyFrameCount: 1}
    destinations:
    - target: Mqtt
      configuration: {topic: opc/line, qos: Qos1}
    dataPoints:
    - {name: counter, dataSource: "ns=2;s=Counter"}
    - {name: temperature, dataSource: "ns=2;s=Temperature"}
    - {name: running, dataSource: "ns=2;s=Running"}
    - {name: label, dataSource: "ns=2;s=Label"}
    - {name: started, dataSource: "ns=2;s=Started"}
    - {name: history, dataSource: "ns=2;s=History"}
    - {name: total, dataSource: "ns=2;s=Total"}
`, srv.URL)
	if out, errOut, code := cli(t, doc, nil, "apply", "-f", "-", "--server", server); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	msg, ref, name := registeredSchema(t, sub, "opc/line")
	if v := msg.values(); v["label"] != "line 1" || v["running"] != true || v["total"] != 7.0 || v["started"] != "2026-01-02T03:04:05Z" {
		t.Fatalf("values %v", v)
	}
	content, _ := schemaOf(t, server, name)
	for point, want := range map[string]string{
		"counter":     `{"maximum":2147483647,"minimum":-2147483648,"type":["integer","null"]}`,
		"temperature": `{"anyOf":[{"type":"number"},{"enum":["NaN","Infinity","-Infinity"]},{"type":"null"}]}`,
		"running":     `{"type":["boolean","null"]}`,
		"label":       `{"type":["string","null"]}`,
		"started":     `{"format":"date-time","type":["string","null"]}`,
		"history":     `{"items":{"anyOf":[{"type":"number"},{"enum":["NaN","Infinity","-Infinity"]}]},"type":["array","null"]}`,
		"total":       `{"maximum":18446744073709551615,"minimum":0,"type":["integer","null"]}`,
	} {
		if got := valueSchema(t, content, point); got != want {
			t.Errorf("%s: Value schema %s, want %s", point, got, want)
		}
	}
	checkSchemaFlow(t, e, m, "opc-checked", "opc/line", ref, name,
		`{"counter": {"SourceTimestamp": "2026-01-02T03:04:05Z", "Value": "seven"}}`, "/counter/Value", "opc-line/line")
}

// TestConnectorSchemaPymodbus: the Modbus connector registers its
// dataset's schema from the points' data types (ranges per type, a
// number once scaled) before its first poll of pymodbus; the rest as for
// OPC UA.
func TestConnectorSchemaPymodbus(t *testing.T) {
	t.Parallel()
	requirePymodbus(t)
	port := freeTCPPort(t)
	dev := startPymodbus(t, port, "")
	t.Cleanup(dev.stop)
	e := startEdgeport(t)
	server := "http://" + e.addr(t, "http")
	m := newMosquitto(t, e)
	sub := m.subReader(t, "mb/#")

	doc := fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: Device
metadata: {name: mb-plc}
spec:
  endpoints:
    inbound:
      tcp:
        endpointType: Microsoft.Modbus
        address: modbus-tcp://127.0.0.1:%s
---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: mb-line}
spec:
  deviceRef: {deviceName: mb-plc, endpointName: tcp}
  datasets:
  - name: types
    datasetConfiguration: {samplingInterval: 200, keyFrameCount: 1}
    destinations:
    - target: Mqtt
      configuration: {topic: mb/types, qos: Qos1}
    dataPoints:
    - {name: i16, dataSource: "holding:0", dataPointConfiguration: {dataType: int16}}
    - {name: u16, dataSource: "holding:1"}
    - {name: f32, dataSource: "holding:6", dataPointConfiguration: {dataType: float32}}
    - {name: i64, dataSource: "holding:12", dataPointConfiguration: {dataType: int64}}
    - {name: model, dataSource: "holding:20", dataPointConfiguration: {dataType: string, count: 3}}
    - {name: scaled, dataSource: "holding:23", dataPointConfiguration: {scale: 0.1}}
    - {name: coil0, dataSource: "coil:0"}
`, port)
	if out, errOut, code := cli(t, doc, nil, "apply", "-f", "-", "--server", server); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	msg, ref, name := registeredSchema(t, sub, "mb/types")
	if v := msg.values(); v["i16"] != -2.0 || v["model"] != "SG10K" || v["coil0"] != true {
		t.Fatalf("values %v", v)
	}
	content, _ := schemaOf(t, server, name)
	for point, want := range map[string]string{
		"i16":    `{"maximum":32767,"minimum":-32768,"type":["integer","null"]}`,
		"u16":    `{"maximum":65535,"minimum":0,"type":["integer","null"]}`,
		"i64":    `{"maximum":9223372036854775807,"minimum":-9223372036854775808,"type":["integer","null"]}`,
		"f32":    `{"anyOf":[{"type":"number"},{"enum":["NaN","Infinity","-Infinity"]},{"type":"null"}]}`,
		"scaled": `{"anyOf":[{"type":"number"},{"enum":["NaN","Infinity","-Infinity"]},{"type":"null"}]}`,
		"model":  `{"type":["string","null"]}`,
		"coil0":  `{"type":["boolean","null"]}`,
	} {
		if got := valueSchema(t, content, point); got != want {
			t.Errorf("%s: Value schema %s, want %s", point, got, want)
		}
	}
	checkSchemaFlow(t, e, m, "mb-checked", "mb/types", ref, name,
		`{"u16": {"SourceTimestamp": "2026-01-02T03:04:05Z", "Value": 70000}}`, "/u16/Value", "mb-line/types")
}
