package portal_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/simonvetter/modbus"

	"github.com/edgeport/edgeport/internal/app"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/edgeport/edgeport/internal/testwait"
)

// pressRegisters is a Modbus device whose holding registers hold their
// own address.
type pressRegisters struct{}

func (pressRegisters) HandleCoils(*modbus.CoilsRequest) ([]bool, error) {
	return nil, modbus.ErrIllegalFunction
}
func (pressRegisters) HandleDiscreteInputs(*modbus.DiscreteInputsRequest) ([]bool, error) {
	return nil, modbus.ErrIllegalFunction
}
func (pressRegisters) HandleInputRegisters(*modbus.InputRegistersRequest) ([]uint16, error) {
	return nil, modbus.ErrIllegalFunction
}
func (pressRegisters) HandleHoldingRegisters(req *modbus.HoldingRegistersRequest) ([]uint16, error) {
	out := make([]uint16, req.Quantity)
	for i := range out {
		out[i] = req.Addr + uint16(i)
	}
	return out, nil
}

func applyDoc(t *testing.T, a *app.App, doc string) {
	t.Helper()
	docs, err := config.Builtin().DecodeAll([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if d.Err != nil {
			t.Fatalf("%s %s: %v", d.Kind, d.Name, d.Err)
		}
		if _, _, err := a.Resources().Apply(d.Object, config.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// testSchemasPage: the schemas page lists each schema with its versions
// and content, the dataflows that name it (with their topics) and the
// asset datasets whose connector registered it (with theirs), and the
// validations and failures counted per version and dataflow. A Modbus
// device polled by the connector registers its dataset's schema; a
// dataflow validates with it, another with an applied schema, which a
// valid and an invalid message pass through.
func testSchemasPage(t *testing.T, ctx context.Context, a *app.App, base, mqttAddr, shots string) {
	devAddr := testserve.FreeAddr(t)
	dev, err := modbus.NewServer(&modbus.ServerConfiguration{URL: "tcp://" + devAddr, MaxClients: 4}, pressRegisters{})
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dev.Stop() })

	applyDoc(t, a, fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: Schema
metadata: {name: thermostat}
spec:
  displayName: Thermostat telemetry
  format: JsonSchema/draft-07
  versions:
  - name: "1"
    schemaContent: '{"type": "object", "required": ["temperature"], "properties": {"temperature": {"type": "number"}}}'
  - name: "2"
    schemaContent: '{"type": "object", "required": ["temperature"], "properties": {"temperature": {"type": "number"}, "unit": {"type": "string"}}}'
---
apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: thermostat-checked}
spec:
  operations:
  - operationType: Source
    sourceSettings: {dataSources: ["factory/+/thermostat"], schemaRef: "aio-sr://thermostat:2"}
  - operationType: Destination
    destinationSettings: {endpointRef: default, dataDestination: checked/thermostat}
---
apiVersion: edgeport.io/v1
kind: Device
metadata: {name: press-plc}
spec:
  endpoints:
    inbound:
      tcp: {endpointType: Microsoft.Modbus, address: "modbus-tcp://%s"}
---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: press}
spec:
  deviceRef: {deviceName: press-plc, endpointName: tcp}
  datasets:
  - name: telemetry
    datasetConfiguration: {samplingInterval: 200, keyFrameCount: 1}
    destinations:
    - {target: Mqtt, configuration: {topic: factory/press/telemetry}}
    dataPoints:
    - {name: pressure, dataSource: "holding:3"}
`, devAddr))
	// The connector registered the dataset's schema: its status names it.
	var ref string
	testwait.For(t, "the press dataset's registered schema", func() bool {
		o, ok := a.Resources().Get(config.Key{Kind: "Asset", Name: "press"})
		if ok && o.Status != nil && len(o.Status.Datasets) == 1 {
			ref = o.Status.Datasets[0].SchemaRef
		}
		return ref != ""
	})
	registered := strings.TrimSuffix(strings.TrimPrefix(ref, "aio-sr://edgeport/"), ":1")
	applyDoc(t, a, `apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: press-checked}
spec:
  operations:
  - operationType: Source
    sourceSettings: {dataSources: ["factory/press/telemetry"], schemaRef: "`+ref+`"}
  - operationType: Destination
    destinationSettings: {endpointRef: default, dataDestination: checked/press}
`)
	testwait.For(t, "the flows running", func() bool {
		for _, n := range []string{"thermostat-checked", "press-checked"} {
			o, ok := a.Resources().Get(config.Key{Kind: "Dataflow", Name: n})
			if !ok || o.Status == nil || o.Ready().Status != config.ConditionTrue {
				return false
			}
		}
		return true
	})
	// Ready follows the source's SUBACK; the broker's view is checked too.
	testwait.For(t, "the thermostat flow's subscription", func() bool {
		for _, s := range a.Broker().Sessions() {
			if strings.Contains(s.ClientID, "thermostat-checked") && s.Online && len(s.Subscriptions) > 0 {
				return true
			}
		}
		return false
	})
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID("thermostat-1"))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect: %v", tok.Error())
	}
	defer pub.Disconnect(0)
	for _, p := range []string{`{"temperature": 21.5, "unit": "C"}`, `{"temperature": "warm"}`} {
		if tok := pub.Publish("factory/l1/thermostat", 1, false, p); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}

	run(t, ctx, "schemas page",
		chromedp.Navigate(base+"/schemas"),
		chromedp.WaitVisible(chromedp.CSS(`#schema-list tr[data-name="thermostat"]`)),
		// The list counts both messages, one failed (refreshed every 5 s).
		poll(`(() => { const td = document.querySelectorAll('#schema-list tr[data-name="thermostat"] td');
			return td.length === 6 && td[4].textContent === "2" && td[5].textContent === "1"; })()`),
		chromedp.Click(chromedp.CSS(`#schema-list tr[data-name="thermostat"]`)),
		chromedp.WaitVisible(chromedp.CSS("#schema-users")),
		chromedp.WaitVisible(chromedp.CSS("#schema-validations")))
	users := get(t, ctx, "users", chromedp.Text(chromedp.CSS("#schema-users")))
	if !strings.Contains(users, "thermostat-checked") || !strings.Contains(users, "source") || !strings.Contains(users, "factory/+/thermostat") {
		t.Fatalf("users of thermostat: %q", users)
	}
	counts := get(t, ctx, "validations", chromedp.Text(chromedp.CSS("#schema-validations tbody")))
	if got := strings.Join(strings.Fields(counts), " "); got != "thermostat-checked 2 2 1" {
		t.Fatalf("validations of thermostat: %q", got)
	}
	versions := get(t, ctx, "versions", chromedp.Evaluate[[]string](
		`[...document.querySelectorAll("#schema-body details.schema-version")].map((d) => d.dataset.version + ":" + d.open + ":" + d.querySelector("pre").textContent.includes('"unit"'))`))
	if strings.Join(versions, " ") != "2:true:true 1:false:false" {
		t.Fatalf("versions (newest first, open, content): %v", versions)
	}
	title := get(t, ctx, "title", chromedp.Text(chromedp.CSS("#schema-title")))
	if title != "Schema thermostat (Thermostat telemetry)" {
		t.Fatalf("title %q", title)
	}
	screenshot(t, ctx, shots, "schemas")

	// The connector-registered schema: the asset dataset with its topic,
	// and the flow that validates the connector's messages with it.
	run(t, ctx, "registered schema",
		chromedp.Click(chromedp.CSS(`#schema-list tr[data-name="`+registered+`"]`)),
		poll(`document.getElementById("schema-title").textContent === "Schema `+registered+`"`),
		poll(`document.getElementById("schema-users") && document.getElementById("schema-users").textContent.includes("press/telemetry") &&
			document.getElementById("schema-users").textContent.includes("press-checked")`),
		poll(`(() => { const td = document.querySelectorAll('#schema-validations tbody td');
			return td.length === 4 && Number(td[2].textContent) > 0 && td[3].textContent === "0"; })()`))
	users = get(t, ctx, "users", chromedp.Text(chromedp.CSS("#schema-users")))
	hint := get(t, ctx, "hint", chromedp.Text(chromedp.CSS("#schema-hint")))
	if !strings.Contains(users, "Asset") || !strings.Contains(users, "publish") || !strings.Contains(users, "factory/press/telemetry") ||
		!strings.Contains(hint, "registered through the schema registry API") {
		t.Fatalf("users of the registered schema: %q (%q)", users, hint)
	}
}
