package config

import (
	"errors"
	"strings"
	"testing"
)

const refsDevice = `apiVersion: edgeport.io/v1
kind: Device
metadata: {name: logger}
spec:
  endpoints:
    inbound:
      tcp: {endpointType: Microsoft.Modbus, address: "modbus-tcp://127.0.0.1:1502"}
`

const refsAsset = `apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: inverter}
spec:
  deviceRef: {deviceName: logger, endpointName: %s}
  datasets:
  - name: d
    destinations: [{target: Mqtt, configuration: {topic: t}}]
    dataPoints: [{name: p, dataSource: "holding:1", dataPointConfiguration: {dataType: float32, count: 1}}]
`

// TestAssetRefsAtApply: an asset is checked against its device's endpoint
// type when the device is in the registry, and accepted (to be reported in
// status) when it is not there yet.
func TestAssetRefsAtApply(t *testing.T) {
	s := NewStore(Builtin(), "", nil)
	asset := mustDecode(t, strings.Replace(refsAsset, "%s", "tcp", 1))
	if _, _, err := s.Apply(asset, ApplyOptions{}); err != nil {
		t.Fatalf("asset before its device: %v", err)
	}
	if _, _, err := s.Apply(mustDecode(t, refsDevice), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	asset.Metadata.Name = "inverter-2"
	_, _, err := s.Apply(asset, ApplyOptions{})
	var ve *ValidationError
	if !errors.As(err, &ve) || strings.Join(ve.Errs.Strings(), "\n") !=
		"spec.datasets[0].dataPoints[0].dataPointConfiguration.count: float32 takes 2 registers (got 1)" {
		t.Fatalf("asset after its device: %v", err)
	}
	_, _, err = s.Apply(mustDecode(t, strings.Replace(refsAsset, "%s", "rtu", 1)), ApplyOptions{})
	if !errors.As(err, &ve) || ve.Errs.Strings()[0] != `spec.deviceRef.endpointName: device "logger" has no inbound endpoint "rtu" (it has tcp)` {
		t.Fatalf("unknown endpoint: %v", err)
	}
}

// FuzzModbusPoint: any data source and configuration text gives a point
// or field errors, never a panic, and a point without errors is in range.
func FuzzModbusPoint(f *testing.F) {
	f.Add("holding:5000", `{"dataType":"float32","wordOrder":"LittleEndian"}`)
	f.Add("coil:1", `{}`)
	f.Add("input:65535", `{"dataType":"string","count":4}`)
	f.Add("x", `{"scale":"a"}`)
	f.Fuzz(func(t *testing.T, src, cfg string) {
		var errs Errors
		var j JSON
		if err := j.UnmarshalJSON([]byte(cfg)); err != nil {
			return
		}
		p, ok := ParseModbusPoint(&DataPoint{Name: "p", DataSource: src, DataPointConfiguration: j}, "p", &errs)
		if ok != (len(errs) == 0) {
			t.Fatalf("ok=%v with %v", ok, errs)
		}
		if ok && (p.Address < 0 || p.Count < 1 || p.Address+p.Count-1 > 65535) {
			t.Fatalf("accepted out of range: %+v", p)
		}
	})
}

// FuzzJSONConfig: any bytes given as a protocol configuration (the API's
// JSON form, object or string) are accepted as one JSON object or refused,
// and an accepted one decodes into a connector's configuration with field
// errors, never a panic.
func FuzzJSONConfig(f *testing.F) {
	f.Add([]byte(`{"unitId":1,"requestTimeout":500}`))
	f.Add([]byte(`"{\"maxGap\":2}"`))
	f.Add([]byte(`{"unitId":"x","concurrency":[1]}`))
	f.Add([]byte(`[1,2]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var j JSON
		if err := j.UnmarshalJSON(data); err != nil {
			return
		}
		if len(j) > 0 && j[0] != '{' {
			t.Fatalf("accepted a non-object: %s", j)
		}
		var errs Errors
		var c ModbusEndpointConfiguration
		DecodeConfig(j, &c, "c", &errs)
		for _, e := range errs {
			if !strings.HasPrefix(e.Path, "c") {
				t.Fatalf("error outside the configuration: %v", e)
			}
		}
	})
}
