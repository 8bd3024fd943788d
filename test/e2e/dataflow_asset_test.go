package e2e

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/edgeport/edgeport/internal/testpeer/httpsink"
	"github.com/edgeport/edgeport/internal/testwait"
)

// sawReading reports whether the sink accepted a payload with this
// reading published on this topic.
func sawReading(s *httpsink.Sink, reading float64, topic string) bool {
	for _, p := range s.Payloads() {
		var m map[string]any
		if json.Unmarshal([]byte(p), &m) == nil && m["reading"] == reading && m["topic"] == topic {
			return true
		}
	}
	return false
}

const assetFlowDoc = `apiVersion: edgeport.io/v1
kind: Device
metadata: {name: line1-plc}
spec:
  endpoints:
    inbound:
      tcp:
        endpointType: Microsoft.Modbus
        address: modbus-tcp://127.0.0.1:%s
        additionalConfiguration: {requestTimeout: 1000}
---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: line1}
spec:
  deviceRef: {deviceName: line1-plc, endpointName: tcp}
  defaultDatasetsConfiguration: {samplingInterval: 50}
  datasets:
  - name: counters
    destinations: [{target: Mqtt, configuration: {topic: %s}}]
    dataPoints:
    - {name: count, dataSource: "holding:27"}
---
apiVersion: edgeport.io/v1
kind: DataflowEndpoint
metadata: {name: sink}
spec:
  endpointType: Http
  httpSettings: {url: "%s"}
---
apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: line1-to-sink}
spec:
  operations:
  - operationType: Source
    sourceSettings: {endpointRef: default, assetRef: line1}
  - operationType: BuiltInTransformation
    builtInTransformationSettings:
      map:
      - {inputs: [count.Value], output: reading}
      - {inputs: [$metadata.topic], output: topic}
  - operationType: Destination
    destinationSettings: {endpointRef: sink, dataDestination: /}
`

// A dataflow whose source is an Asset (assetRef) consumes what the asset's
// datasets publish: values read by the Modbus connector from a real
// pymodbus device reach an HTTP destination through the flow's map rules,
// and when the asset's dataset moves to another topic, the flow follows.
func TestDataflowAssetSourcePymodbus(t *testing.T) {
	t.Parallel()
	requirePymodbus(t)
	port := freeTCPPort(t)
	py := startPymodbus(t, port, "")
	defer py.stop()
	e := startEdgeport(t)
	server := "http://" + e.addr(t, "http")
	sink := httpsink.Start(t)

	apply := func(topic string) {
		t.Helper()
		doc := fmt.Sprintf(assetFlowDoc, port, topic, sink.URL)
		if out, errOut, code := cli(t, doc, nil, "apply", "-f", "-", "--server", server); code != 0 {
			t.Fatalf("apply: %s%s", out, errOut)
		}
	}
	apply("plant/line1/counters")
	py.writeHolding(27, 4242)
	testwait.For(t, "the device's value through the flow", func() bool { return sawReading(sink, 4242, "plant/line1/counters") })

	apply("plant/line1/v2/counters")
	py.writeHolding(27, 4343)
	testwait.For(t, "the flow following the asset's new topic", func() bool { return sawReading(sink, 4343, "plant/line1/v2/counters") })
}
