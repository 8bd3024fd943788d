package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/config"
)

// TestGetDevicesAssets: `get devices,assets` prints both tables with the
// connector columns, from a status as the connector runtime writes it.
func TestGetDevicesAssets(t *testing.T) {
	url, store := apiServer(t)
	dir := t.TempDir()
	flags := []string{"--server", url, "--data-dir", dir}
	file := filepath.Join(dir, "plant.yaml")
	docs := `apiVersion: edgeport.io/v1
kind: Device
metadata: {name: logger}
spec:
  endpoints:
    inbound:
      tcp: {endpointType: Microsoft.Modbus, address: "modbus-tcp://10.0.0.5"}
---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: inverter}
spec:
  deviceRef: {deviceName: logger, endpointName: tcp}
  datasets:
  - name: power
    destinations: [{target: Mqtt, configuration: {topic: solar/inverter}}]
    dataPoints:
    - {name: p, dataSource: "input:1"}
    - {name: q, dataSource: "input:2"}
`
	if err := os.WriteFile(file, []byte(docs), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := runCLI(t, append([]string{"apply", "-f", file}, flags...)...); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	last := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	d, _ := store.Get(config.Key{Kind: "Device", Name: "logger"})
	store.SetStatus(d.Key(), d.Metadata.UID, 1, config.Status{
		Conditions: []config.Condition{{Type: "Ready", Status: "False", Reason: "NotConnected"}},
		Endpoints:  map[string]config.EndpointStatus{"tcp": {State: "Degraded", LastError: "timeout: request timed out"}},
	})
	a, _ := store.Get(config.Key{Kind: "Asset", Name: "inverter"})
	store.SetStatus(a.Key(), a.Metadata.UID, 1, config.Status{
		Conditions: []config.Condition{{Type: "Ready", Status: "False", Reason: "DataPointErrors"}},
		Datasets: []config.DatasetStatus{{Name: "power", LastValueTime: &last, Samples: 42, Messages: 21,
			DataPoints: []config.DataPointStatus{{Name: "p", LastValueTime: &last, Samples: 21}, {Name: "q", Samples: 21, Error: "IllegalDataAddress"}}}},
	})
	out, errOut, code := runCLI(t, append([]string{"get", "devices,assets"}, flags...)...)
	if code != 0 {
		t.Fatalf("get: %s", errOut)
	}
	for _, want := range []string{
		"ENDPOINTS", "CONNECTED", "LAST-ERROR", "tcp/Modbus", "0/1", "tcp: timeout: request timed out",
		"DEVICE", "DATASETS", "POINTS", "SAMPLES", "LAST-VALUE", "logger/tcp", "1/2", "42", "03:04:05Z", "power.q: IllegalDataAddress",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, errOut, code := runCLI(t, append([]string{"get", "devices,assets", "x"}, flags...)...); code != 1 || !strings.Contains(errOut, "names need a single kind") {
		t.Fatalf("names with two kinds: %d %s", code, errOut)
	}
}
