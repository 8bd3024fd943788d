package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/simonvetter/modbus"

	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/edgeport/edgeport/internal/testwait"
)

// dashboardExprs returns every PromQL expression of every dashboard in
// deploy/grafana: panel targets (rows' nested panels included) and the
// templating variables' queries.
func dashboardExprs(t *testing.T) map[string][]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "deploy", "grafana", "*.json"))
	if err != nil || len(files) < 3 {
		t.Fatalf("dashboards: %v %v", files, err)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	out := map[string][]string{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels     []panel `json:"panels"`
			Templating struct {
				List []struct {
					Definition string `json:"definition"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := filepath.Base(f)
		var walk func(ps []panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				for _, tg := range p.Targets {
					out[name] = append(out[name], tg.Expr)
				}
				var nested []panel
				for _, r := range p.Panels {
					var np panel
					if err := json.Unmarshal(r, &np); err != nil {
						t.Fatalf("%s: %v", f, err)
					}
					nested = append(nested, np)
				}
				walk(nested)
			}
		}
		walk(d.Panels)
		for _, v := range d.Templating.List {
			if v.Definition != "" {
				out[name] = append(out[name], v.Definition)
			}
		}
	}
	return out
}

var (
	promStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promNotMetric = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
		"group_right": true, "offset": true, "bool": true, "and": true, "or": true, "unless": true, "instance": true, "Inf": true, "NaN": true}
)

// metricNames extracts the metric names a PromQL expression (or Grafana's
// label_values(metric, label)) refers to: identifiers that are not
// functions (followed by "("), keywords, label matchers, grouping labels,
// ranges or numbers.
func metricNames(expr string) []string {
	s := promStrings.ReplaceAllString(expr, " ")
	s = promMatchers.ReplaceAllString(s, " ")
	s = promRanges.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	if rest, ok := strings.CutPrefix(strings.TrimSpace(s), "label_values("); ok {
		s, _, _ = strings.Cut(rest, ",")
	}
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(s, -1) {
		id := s[loc[0]:loc[1]]
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // the tail of a number like 1e3
		}
		if promNotMetric[id] || strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " "), "(") {
			continue
		}
		names = append(names, id)
	}
	return names
}

func TestMetricNamesFromPromQL(t *testing.T) {
	for expr, want := range map[string]string{
		`sum by (listener) (rate(edgeport_broker_publishes_received_total{instance=~"$instance"}[$__rate_interval]))`: "edgeport_broker_publishes_received_total",
		`histogram_quantile(0.99, sum by (le, type) (rate(x_seconds_bucket{a="b,c"}[5m])))`:                           "x_seconds_bucket",
		`sum(a_total) / ignoring(kind) sum(b) > 0.5 and on(x) c`:                                                      "a_total b c",
		`label_values(edgeport_dataflow_running, dataflow)`:                                                           "edgeport_dataflow_running",
	} {
		if got := strings.Join(metricNames(expr), " "); got != want {
			t.Errorf("%s: %q, want %q", expr, got, want)
		}
	}
}

// registered reports whether reg has a collector describing a metric named
// name: registering a probe with the same name but other help and labels
// is refused exactly then (the registry checks descriptor consistency).
func registered(t *testing.T, reg *prometheus.Registry, name string) bool {
	t.Helper()
	p := probeCollector{prometheus.NewDesc(name, "dashboard test probe", []string{"dashboard_test_probe"}, nil)}
	err := reg.Register(p)
	if err == nil {
		reg.Unregister(p)
		return false
	}
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		return true
	}
	return strings.Contains(err.Error(), "same fully-qualified name")
}

type probeCollector struct{ d *prometheus.Desc }

func (p probeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- p.d }
func (p probeCollector) Collect(chan<- prometheus.Metric)    {}

// modbusRegs is a Modbus TCP device (simonvetter/modbus's server) whose
// holding registers count up.
type modbusRegs struct {
	mu sync.Mutex // guards n
	n  uint16
}

func (m *modbusRegs) HandleCoils(*modbus.CoilsRequest) ([]bool, error) {
	return nil, modbus.ErrIllegalFunction
}
func (m *modbusRegs) HandleDiscreteInputs(*modbus.DiscreteInputsRequest) ([]bool, error) {
	return nil, modbus.ErrIllegalFunction
}
func (m *modbusRegs) HandleInputRegisters(*modbus.InputRegistersRequest) ([]uint16, error) {
	return nil, modbus.ErrIllegalFunction
}
func (m *modbusRegs) HandleHoldingRegisters(req *modbus.HoldingRegistersRequest) ([]uint16, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n++
	out := make([]uint16, req.Quantity)
	for i := range out {
		out[i] = m.n
	}
	return out, nil
}

// Every metric name that a Grafana dashboard in deploy/grafana queries is
// one Edgeport exports: found in a real scrape of /metrics of a server
// with the self-test, a Modbus device polled by the connector, an OPC UA
// device and a dataflow running, or else registered in the very registry
// /metrics serves (families whose series appear only after rare events:
// a Modbus write, a dropped message).
func TestDashboardMetricNamesExist(t *testing.T) {
	srvAddr := freeAddr(t)
	dev, err := modbus.NewServer(&modbus.ServerConfiguration{URL: "tcp://" + srvAddr, MaxClients: 4}, &modbusRegs{})
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dev.Stop() })
	a := startApp(t, Config{HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir(), SelfTestInterval: 50 * time.Millisecond})
	for _, doc := range []string{
		fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: Device
metadata: {name: plc}
spec:
  endpoints:
    inbound:
      tcp:
        endpointType: Microsoft.Modbus
        address: modbus-tcp://%s
        additionalConfiguration: {requestTimeout: 500}
`, srvAddr),
		fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: Device
metadata: {name: ua}
spec:
  endpoints:
    inbound:
      opc:
        endpointType: Microsoft.OpcUa
        address: opc.tcp://%s
`, freeAddr(t)),
		`apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: line}
spec:
  deviceRef: {deviceName: plc, endpointName: tcp}
  defaultDatasetsConfiguration: {samplingInterval: 50}
  datasets:
  - name: counters
    destinations: [{target: Mqtt, configuration: {topic: plant/line/counters}}]
    dataPoints:
    - {name: count, dataSource: "holding:0"}
`,
		`apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: line-copy}
spec:
  operations:
  - operationType: Source
    sourceSettings: {endpointRef: default, assetRef: line}
  - operationType: Destination
    destinationSettings: {endpointRef: default, dataDestination: "copy/${inputTopic}"}
`,
	} {
		apply(t, a, doc)
	}
	var served map[string]bool
	testwait.For(t, "the connector and the flow moving data", func() bool {
		served = scrape(t, a)
		return served["edgeport_connector_samples_total"] && served["edgeport_dataflow_latency_seconds"] &&
			served["edgeport_modbus_request_duration_seconds"] && served["edgeport_selftest_latency_seconds"]
	})
	exprs := dashboardExprs(t)
	var onlyRegistered []string
	checked := 0
	for _, file := range sortedKeys(exprs) {
		for _, expr := range exprs[file] {
			names := metricNames(expr)
			if len(names) == 0 {
				t.Errorf("%s: no metric name in %q", file, expr)
			}
			for _, n := range names {
				checked++
				family := n
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(n, suf); ok && (served[b] || registered(t, a.reg, b)) {
						family = b
					}
				}
				switch {
				case served[family]:
				case registered(t, a.reg, family):
					onlyRegistered = append(onlyRegistered, family)
				default:
					t.Errorf("%s: %q refers to %s, which Edgeport does not export", file, expr, n)
				}
			}
		}
	}
	sort.Strings(onlyRegistered)
	onlyRegistered = slices.Compact(onlyRegistered)
	t.Logf("%d metric references checked; registered but without series in this run: %v", checked, onlyRegistered)
	// The probe itself must tell a missing name from a registered one.
	if registered(t, a.reg, "edgeport_no_such_metric_total") || !registered(t, a.reg, "edgeport_dataflow_running") {
		t.Fatal("the registry probe does not discriminate")
	}
}

func sortedKeys(m map[string][]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// freeAddr returns a loopback address whose port was free a moment ago,
// for a server that cannot report the port it picked.
func freeAddr(t *testing.T) string { return testserve.FreeAddr(t) }
