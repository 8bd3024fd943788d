package opcua

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector/connectortest"
)

func TestExpandRange(t *testing.T) {
	got, err := ExpandRange("10.0.0.254-10.0.1.1:4840,48400")
	if err != nil {
		t.Fatal(err)
	}
	want := "opc.tcp://10.0.0.254:4840 opc.tcp://10.0.0.254:48400 opc.tcp://10.0.0.255:4840 opc.tcp://10.0.0.255:48400 " +
		"opc.tcp://10.0.1.0:4840 opc.tcp://10.0.1.0:48400 opc.tcp://10.0.1.1:4840 opc.tcp://10.0.1.1:48400"
	if strings.Join(got, " ") != want {
		t.Fatalf("got %v", got)
	}
	for _, bad := range []struct{ in, want string }{
		{"10.0.0.1", "want HOST[-LASTHOST]:PORT"},
		{"host:4840", `"host" is not an IPv4 address`},
		{"10.0.0.9-10.0.0.1:4840", "comes before"},
		{"10.0.0.1:0", `port "0" is not 1-65535`},
		{"10.0.0.0-10.0.255.255:4840", "more than 4096 addresses"},
	} {
		if _, err := ExpandRange(bad.in); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want %q", bad.in, err, bad.want)
		}
	}
}

// TestDiscover: scanning a port range finds the test server (and nothing on
// the closed ports), records it as a DiscoveredDevice once, and lists a
// server a Device already reads without recording it.
func TestDiscover(t *testing.T) {
	st := connectortest.Store(t)
	conn, err := NewConnector(t.TempDir(), "urn:test:edgeport", "localhost", nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(APIPath, &API{Trust: conn.Trust(), App: conn.App(), Sessions: conn, Store: st})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	port := shared.URL[strings.LastIndexByte(shared.URL, ':')+1:]
	p, _ := strconv.Atoi(port)
	discover := func(body string) (int, string) {
		resp, err := http.Post(hs.URL+APIPath+"discover", "application/json", bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	body := `{"range":"127.0.0.1:` + strconv.Itoa(p-1) + `,` + port + `,` + strconv.Itoa(p+1) + `","timeoutMillis":2000}`
	code, out := discover(body)
	var res struct {
		Items   []DiscoverResult
		Scanned int
	}
	json.Unmarshal([]byte(out), &res)
	if code != 200 || res.Scanned != 3 || len(res.Items) != 1 || res.Items[0].Result != "created" ||
		!strings.HasPrefix(res.Items[0].Name, "edgeport-test-server-") {
		t.Fatalf("discover: %d %s", code, out)
	}
	o, ok := st.Get(config.Key{Kind: "DiscoveredDevice", Name: res.Items[0].Name})
	if !ok {
		t.Fatal("no DiscoveredDevice recorded")
	}
	spec := o.Spec.(*config.DiscoveredDeviceSpec)
	if spec.DiscoveryID != "urn:edgeport:test-server" || spec.Endpoints.Inbound["opc"].EndpointType != config.EndpointTypeOpcUa ||
		!strings.HasPrefix(spec.Endpoints.Inbound["opc"].Address, "opc.tcp://") {
		t.Fatalf("recorded %+v", spec)
	}
	if _, out := discover(`{"urls":["` + shared.URL + `"]}`); !strings.Contains(out, `"result":"unchanged"`) {
		t.Fatalf("second discovery: %s", out)
	}
	apply(t, st, `apiVersion: edgeport.io/v1
kind: Device
metadata: {name: known}
spec:
  endpoints:
    inbound:
      opc: {endpointType: Microsoft.OpcUa, address: "`+spec.Endpoints.Inbound["opc"].Address+`"}
`)
	if _, out := discover(`{"urls":["` + shared.URL + `"]}`); !strings.Contains(out, `"name":"known","result":"already a device"`) {
		t.Fatalf("discovery of a known device: %s", out)
	}
	for _, bad := range []struct{ body, want string }{
		{`{}`, "give urls or a range"},
		{`{"urls":["http://x"]}`, "is not an opc.tcp:// URL"},
		{`{"range":"nowhere"}`, "want HOST"},
		{`{"hosts":[]}`, `unknown field \"hosts\"`},
	} {
		if code, out := discover(bad.body); code != 400 || !strings.Contains(out, bad.want) {
			t.Errorf("%s: %d %s, want %q", bad.body, code, out, bad.want)
		}
	}
}
