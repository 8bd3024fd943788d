package opcua

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector"
	"github.com/edgeport/edgeport/internal/connector/connectortest"
)

// connectorEnv is the OPC UA connector on the real connector runtime and
// broker, with the API served over HTTP.
type connectorEnv struct {
	broker  *broker.Broker
	store   *config.Store
	conn    *Connector
	addr    string // MQTT
	api     string // base URL of the opcua API
	secrets string // the secrets dir: <secrets>/<name>/<key>
}

func startConnector(t *testing.T) *connectorEnv {
	t.Helper()
	b, addr := connectortest.Broker(t)
	st := connectortest.Store(t)
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	os.MkdirAll(filepath.Join(secrets, "opc"), 0o700)
	os.WriteFile(filepath.Join(secrets, "opc", "username"), []byte("operator\n"), 0o600)
	os.WriteFile(filepath.Join(secrets, "opc", "password"), []byte("secret\n"), 0o600)
	conn, err := NewConnector(filepath.Join(dir, "pki", "opcua"), "urn:test:edgeport", "localhost", nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := connector.New(connector.Options{
		Store: st, Connectors: []connector.Connector{conn},
		Publisher:  connector.BrokerPublisher{Broker: b, ClientID: "$edgeport/connector/opcua"},
		SecretsDir: secrets, StatusInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	mux := http.NewServeMux()
	mux.Handle(APIPath, &API{Trust: conn.Trust(), App: conn.App(), Sessions: conn})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return &connectorEnv{broker: b, store: st, conn: conn, addr: addr, api: hs.URL + strings.TrimSuffix(APIPath, "/"), secrets: secrets}
}

// mosquittoSub runs mosquitto_sub (MQTT 5) on filter and returns its lines:
// topic, user properties and payload separated by tabs.
func mosquittoSub(t *testing.T, addr, filter string) <-chan string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("mosquitto_sub", "-V", "mqttv5", "-h", host, "-p", port, "-t", filter, "-q", "1", "-F", "%t\t%P\t%p")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("mosquitto_sub: %v (scripts/test.sh installs mosquitto-clients)", err)
	}
	lines := make(chan string, 10000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		<-done
	})
	return lines
}

func apply(t *testing.T, st *config.Store, yaml string) {
	t.Helper()
	connectortest.Apply(t, st, yaml)
}

func post(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/octet-stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func deviceYAML(name, url, policy, mode string) string {
	return deviceAuthYAML(name, url, policy, mode, `          method: UsernamePassword
          usernamePasswordCredentials: {usernameSecretName: opc/username, passwordSecretName: opc/password}`)
}

// deviceAuthYAML is a device with one OPC UA endpoint whose authentication
// block is auth (indented under authentication:).
func deviceAuthYAML(name, url, policy, mode, auth string) string {
	return fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: Device
metadata: {name: %s}
spec:
  endpoints:
    inbound:
      opc:
        endpointType: Microsoft.OpcUa
        address: %s
        authentication:
%s
        additionalConfiguration:
          securityPolicy: %s
          securityMode: %s
          session: {keepAliveIntervalMilliseconds: 1000, reconnectPeriodMilliseconds: 100, reconnectExponentialBackOffMilliseconds: 500}
`, name, url, auth, policy, mode)
}

func assetYAML(name, device string) string {
	return fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: %s}
spec:
  deviceRef: {deviceName: %s, endpointName: opc}
  datasets:
  - name: line
    datasetConfiguration: {publishingInterval: 200, samplingInterval: 100, queueSize: 10}
    destinations:
    - target: Mqtt
      configuration: {topic: plant/%s/line, qos: Qos1}
    dataPoints:
    - {name: counter, dataSource: "ns=2;s=Counter"}
    - {name: temperature, dataSource: "nsu=urn:edgeport:test;s=Temperature"}
    - {name: missing, dataSource: "ns=2;s=DoesNotExist"}
  eventGroups:
  - name: boiler
    dataSource: ns=2;s=Boiler
    events:
    - name: severe
      eventConfiguration: {minSeverity: 500}
      destinations:
      - target: Mqtt
        configuration: {topic: plant/%s/alarms}
      dataPoints:
      - {name: message, dataSource: Message}
      - {name: severity, dataSource: Severity}
`, name, device, name, name)
}

// TestConnectorEndToEnd: a device on SignAndEncrypt with a username from
// secret files, whose server certificate nobody trusted yet. The device
// status names the command that trusts it; trusting it through the API
// (what `edgeport connector opcua certs trust` calls) connects without a
// restart, and samples arrive through the broker at mosquitto_sub in Azure
// IoT Operations' shape, batched per publishing interval, with the unknown
// node reported on its point and events filtered by severity.
func TestConnectorEndToEnd(t *testing.T) {
	env := startConnector(t)
	lines := mosquittoSub(t, env.addr, "plant/#")
	apply(t, env.store, deviceYAML("press", shared.URL, "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256", "signAndEncrypt")+"---\n"+assetYAML("press-1", "press"))

	want := "server certificate not trusted: run `edgeport connector opcua certs trust " + shared.Thumbprint + "`"
	connectortest.Eventually(t, 20*time.Second, "the untrusted-certificate status", func() bool {
		s := connectortest.Status(env.store, "Device", "press")
		return s != nil && strings.HasPrefix(s.Endpoints["opc"].LastError, want) &&
			strings.Contains(s.Condition(config.ConditionReady).Message, want)
	})
	code, body := post(t, env.api+"/certs/"+shared.Thumbprint[:12]+"/trust")
	if code != 200 || !strings.Contains(body, `"list":"trusted"`) {
		t.Fatalf("trust: %d %s", code, body)
	}

	var line map[string]struct {
		SourceTimestamp time.Time
		Value           any
	}
	multi := false
	deadline := time.Now().Add(30 * time.Second)
	for !multi {
		var l string
		select {
		case l = <-lines:
		case <-time.After(time.Until(deadline)):
			t.Fatal("no batched message on plant/press-1/line")
		}
		f := strings.SplitN(l, "\t", 3)
		if len(f) != 3 || f[0] != "plant/press-1/line" {
			continue
		}
		if !strings.Contains(f[1], "specversion:1.0") || !strings.Contains(f[1], "subject:press-1/line") || !strings.Contains(f[1], "type:ua-") {
			t.Fatalf("user properties %q", f[1])
		}
		line = nil
		if err := json.Unmarshal([]byte(f[2]), &line); err != nil {
			t.Fatalf("payload %q: %v", f[2], err)
		}
		multi = len(line) >= 2
	}
	if c, ok := line["counter"]; !ok || c.SourceTimestamp.IsZero() {
		t.Fatalf("batch lacks counter: %v", line)
	}

	connectortest.Eventually(t, 10*time.Second, "asset status", func() bool {
		s := connectortest.Status(env.store, "Asset", "press-1")
		if s == nil || len(s.Datasets) != 1 {
			return false
		}
		pts := s.Datasets[0].DataPoints
		return pts[0].Samples > 0 && pts[1].Samples > 0 && strings.Contains(pts[2].Error, "BadNodeIdUnknown")
	})
	if r := connectortest.Status(env.store, "Device", "press").Condition(config.ConditionReady); r.Status != config.ConditionTrue {
		t.Fatalf("device not ready: %+v", r)
	}

	// Events: only severity >= 500 pass the server-side filter.
	got := 0
	for got < 2 {
		select {
		case l := <-lines:
			f := strings.SplitN(l, "\t", 3)
			if f[0] != "plant/press-1/alarms" {
				continue
			}
			var ev map[string]struct{ Value any }
			if err := json.Unmarshal([]byte(f[2]), &ev); err != nil {
				t.Fatal(err)
			}
			if sev, _ := ev["severity"].Value.(float64); sev < 500 {
				t.Fatalf("event below the filter: %s", f[2])
			}
			if msg, _ := ev["message"].Value.(string); !strings.HasPrefix(msg, "boiler event") {
				t.Fatalf("event message: %s", f[2])
			}
			got++
		case <-time.After(20 * time.Second):
			t.Fatal("no events")
		}
	}

	// The connector's own metrics: items by state, the trust list.
	want = `
# HELP edgeport_opcua_certificates Certificates in the OPC UA trust list, by list (trusted, issuers, rejected): a rejected one waits for ` + "`edgeport connector opcua certs trust`" + `.
# TYPE edgeport_opcua_certificates gauge
edgeport_opcua_certificates{list="issuers"} 0
edgeport_opcua_certificates{list="rejected"} 0
edgeport_opcua_certificates{list="trusted"} 1
# HELP edgeport_opcua_monitored_items Monitored items of a device endpoint, by state: accepted by the server or refused (bad node id, unsupported filter).
# TYPE edgeport_opcua_monitored_items gauge
edgeport_opcua_monitored_items{device="press",endpoint="opc",state="accepted"} 3
edgeport_opcua_monitored_items{device="press",endpoint="opc",state="refused"} 1
`
	if err := testutil.CollectAndCompare(env.conn, strings.NewReader(want), "edgeport_opcua_certificates", "edgeport_opcua_monitored_items"); err != nil {
		t.Fatal(err)
	}

	// Browse through the API, as `edgeport connector opcua browse` does.
	resp, err := http.Get(env.api + "/browse/press?depth=2&node=" + url.QueryEscape("ns=2;s=Plant"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"nodeId":"ns=2;s=Boiler.Add"`) || !strings.Contains(string(b), `"dataType":"Int32"`) {
		t.Fatalf("browse: %d %s", resp.StatusCode, b)
	}
}

// Bad configurations are refused at apply with a field path, and a device
// whose endpoint is unreachable reports it without disturbing another.
func TestConnectorBadInput(t *testing.T) {
	env := startConnector(t)
	docs, err := env.store.Kinds().DecodeAll([]byte(`apiVersion: edgeport.io/v1
kind: Device
metadata: {name: bad}
spec:
  endpoints:
    inbound:
      opc:
        endpointType: Microsoft.OpcUa
        address: opc.tcp://127.0.0.1:1
        additionalConfiguration: {securityPolicy: Basic128Rsa15, securityMode: Sign}
`))
	if err == nil && (len(docs) != 1 || docs[0].Err == nil) {
		t.Fatal("a device with an unsupported policy was accepted")
	}
	msg := fmt.Sprint(err)
	if len(docs) == 1 && docs[0].Err != nil {
		msg = docs[0].Err.Error()
	}
	if !strings.Contains(msg, "spec.endpoints.inbound.opc.additionalConfiguration.securityPolicy") {
		t.Fatalf("error %q does not name the field", msg)
	}

	apply(t, env.store, deviceYAML("good", shared.URL, "None", "None")+"---\n"+assetYAML("good-1", "good")+"---\n"+
		deviceYAML("gone", "opc.tcp://127.0.0.1:1", "None", "None")+"---\n"+assetYAML("gone-1", "gone"))
	docs, err = env.store.Kinds().DecodeAll([]byte(strings.Replace(assetYAML("good-2", "good"),
		"datasetConfiguration: {publishingInterval: 200", "datasetConfiguration: {publishingInterval: -5", 1)))
	if err != nil || len(docs) != 1 || docs[0].Err != nil {
		t.Fatalf("decoding: %v %+v", err, docs)
	}
	if _, _, err := env.store.Apply(docs[0].Object, config.ApplyOptions{}); err == nil ||
		!strings.Contains(err.Error(), "spec.datasets[0].datasetConfiguration.publishingInterval") {
		t.Fatalf("a negative publishing interval: %v", err)
	}
	connectortest.Eventually(t, 20*time.Second, "unreachable device status and the other device's data", func() bool {
		g := connectortest.Status(env.store, "Device", "gone")
		a := connectortest.Status(env.store, "Asset", "good-1")
		return g != nil && strings.Contains(g.Endpoints["opc"].LastError, "getting endpoints of opc.tcp://127.0.0.1:1") &&
			a != nil && len(a.Datasets) == 1 && a.Datasets[0].Samples > 0
	})
}

// TestQueuedValuesSplit: with a sampling interval ten times shorter than the
// publishing interval and a queue, one publish response carries several
// values of a point; each goes out in its own message (a JSON object cannot
// name a point twice), so consecutive messages hold consecutive counter
// values instead of one value per second.
func TestQueuedValuesSplit(t *testing.T) {
	env := startConnector(t)
	lines := mosquittoSub(t, env.addr, "plant/#")
	apply(t, env.store, deviceYAML("q", shared.URL, "None", "None")+`---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: q-1}
spec:
  deviceRef: {deviceName: q, endpointName: opc}
  datasets:
  - name: fast
    datasetConfiguration: {publishingInterval: 1000, samplingInterval: 100, queueSize: 50}
    destinations:
    - target: Mqtt
      configuration: {topic: plant/q-1/fast}
    dataPoints:
    - {name: counter, dataSource: "ns=2;s=Counter"}
`)
	var values []float64
	for len(values) < 25 {
		select {
		case l := <-lines:
			f := strings.SplitN(l, "\t", 3)
			var m map[string]struct{ Value float64 }
			if err := json.Unmarshal([]byte(f[2]), &m); err != nil {
				t.Fatal(err)
			}
			values = append(values, m["counter"].Value)
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d messages", len(values))
		}
	}
	for i := 1; i < len(values); i++ {
		// Sampling every 100 ms a counter that changes every 100 ms may
		// see a value twice or skip one; one value per publishing interval
		// would jump by about ten.
		if d := values[i] - values[i-1]; d < 0 || d > 3 {
			t.Fatalf("counter values %v: step %v at %d", values, d, i)
		}
	}
}
