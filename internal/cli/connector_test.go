package cli

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector/opcua"
)

// TestOpcuaCertsCommands: the trust workflow a person runs, against the
// real connector API over HTTP. A server certificate is rejected (as a
// session does on an unknown server), listed, trusted by prefix, rejected
// again and removed; a CA goes into the issuers list from a PEM file.
func TestOpcuaCertsCommands(t *testing.T) {
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	conn, err := opcua.NewConnector(pki, "urn:test:edgeport", "localhost", nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(opcua.APIPath, &opcua.API{Trust: conn.Trust(), App: conn.App(), Sessions: conn})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	flags := []string{"--server", srv.URL, "--data-dir", dir}

	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "plc-7"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	thumb := opcua.Thumbprint(der)
	if _, err := conn.Trust().Verify(der, "opc.tcp://plc-7:4840", time.Now()); err == nil {
		t.Fatal("unknown certificate accepted")
	}

	out, errOut, code := runCLI(t, append([]string{"connector", "opcua", "certs", "list"}, flags...)...)
	if code != 0 || !strings.Contains(out, "rejected  "+thumb) || !strings.Contains(out, "CN=plc-7") || !strings.Contains(out, "opc.tcp://plc-7:4840") {
		t.Fatalf("list: %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runCLI(t, append([]string{"connector", "opcua", "certs", "trust", thumb[:10]}, flags...)...)
	if code != 0 || out != "certificate "+thumb+" (CN=plc-7) is trusted\n" {
		t.Fatalf("trust: %d\n%s%s", code, out, errOut)
	}
	if _, err := conn.Trust().Verify(der, "opc.tcp://plc-7:4840", time.Now()); err != nil {
		t.Fatalf("after trust: %v", err)
	}
	out, errOut, code = runCLI(t, append([]string{"connector", "opcua", "certs", "reject", thumb}, flags...)...)
	if code != 0 || !strings.HasSuffix(out, "is rejected\n") {
		t.Fatalf("reject: %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runCLI(t, append([]string{"connector", "opcua", "certs", "remove", thumb}, flags...)...)
	if code != 0 || !strings.HasSuffix(out, "is removed\n") {
		t.Fatalf("remove: %d\n%s%s", code, out, errOut)
	}
	_, errOut, code = runCLI(t, append([]string{"connector", "opcua", "certs", "trust", thumb}, flags...)...)
	if code == 0 || !strings.Contains(errOut, "no such certificate") {
		t.Fatalf("trust of a removed certificate: %d %s", code, errOut)
	}
	_, errOut, code = runCLI(t, append([]string{"connector", "opcua", "certs", "trust", "abc"}, flags...)...)
	if code == 0 || !strings.Contains(errOut, "at least 8 characters") {
		t.Fatalf("short thumbprint: %d %s", code, errOut)
	}

	file := filepath.Join(dir, "ca.pem")
	os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	out, errOut, code = runCLI(t, append([]string{"connector", "opcua", "certs", "add", file, "--issuer"}, flags...)...)
	if code != 0 || out != "certificate "+thumb+" (CN=plc-7) added to issuers\n" {
		t.Fatalf("add: %d\n%s%s", code, out, errOut)
	}
	out, _, code = runCLI(t, append([]string{"connector", "opcua", "certs", "show-own"}, flags...)...)
	if code != 0 || !strings.Contains(out, "# application URI urn:test:edgeport") || !strings.Contains(out, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("show-own: %d\n%s", code, out)
	}
	_, errOut, code = runCLI(t, append([]string{"connector", "opcua", "browse", "nodevice"}, flags...)...)
	if code == 0 || !strings.Contains(errOut, "device nodevice has no running OPC UA endpoint") {
		t.Fatalf("browse of an unknown device: %d %s", code, errOut)
	}
}

// TestOpcuaImportExport: data points from CSV into an asset through the
// real API, back out as the same CSV; a bad file changes nothing.
func TestOpcuaImportExport(t *testing.T) {
	url, store := apiServer(t)
	dir := t.TempDir()
	flags := []string{"--server", url, "--data-dir", dir}
	res := filepath.Join(dir, "res.yaml")
	os.WriteFile(res, []byte(`apiVersion: edgeport.io/v1
kind: Device
metadata: {name: press}
spec:
  endpoints:
    inbound:
      opc: {endpointType: Microsoft.OpcUa, address: "opc.tcp://127.0.0.1:4840"}
---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: press-1}
spec:
  deviceRef: {deviceName: press, endpointName: opc}
  datasets:
  - name: line
    destinations:
    - target: Mqtt
      configuration: {topic: plant/press-1/line}
    dataPoints:
    - {name: old, dataSource: "ns=2;s=Old"}
`), 0o644)
	if out, errOut, code := runCLI(t, append([]string{"apply", "-f", res}, flags...)...); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	csvFile := filepath.Join(dir, "points.csv")
	in := "name,dataSource,samplingInterval,queueSize,deadbandType,deadbandValue,heartbeatInterval\n" +
		"counter,ns=2;s=Counter,100,10,,,\n" +
		"level,nsu=urn:edgeport:test;s=Level,,,Percent,2.5,5000\n"
	os.WriteFile(csvFile, []byte(in), 0o644)
	out, errOut, code := runCLI(t, append([]string{"connector", "opcua", "import", "press-1", "--dataset", "line", "--csv", csvFile}, flags...)...)
	if code != 0 || out != "asset/press-1 dataset line: 2 data points\n" {
		t.Fatalf("import: %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runCLI(t, append([]string{"connector", "opcua", "export", "press-1", "--csv"}, flags...)...)
	if code != 0 || out != in {
		t.Fatalf("export: %d\n%s%s\nwant\n%s", code, out, errOut, in)
	}
	// The dataset kept its destination; the points are validated like any
	// apply (a Percent deadband of 2.5 on an OPC UA asset is fine).
	o, _ := store.Get(config.Key{Kind: "Asset", Name: "press-1"})
	if ds := o.Spec.(*config.AssetSpec).Datasets[0]; ds.Destinations[0].Configuration.Topic != "plant/press-1/line" || len(ds.DataPoints) != 2 {
		t.Fatalf("dataset after import: %+v", ds)
	}

	os.WriteFile(csvFile, []byte("name,dataSource\nx,ns=2;s=X\nx,ns=2;s=Y\n"), 0o644)
	_, errOut, code = runCLI(t, append([]string{"connector", "opcua", "import", "press-1", "--dataset", "line", "--csv", csvFile}, flags...)...)
	if code == 0 || !strings.Contains(errOut, `line 3: name "x" already used on line 2`) {
		t.Fatalf("bad csv: %d %s", code, errOut)
	}
	out, _, _ = runCLI(t, append([]string{"connector", "opcua", "export", "press-1", "--csv", "--dataset", "line"}, flags...)...)
	if out != in {
		t.Fatalf("a bad file changed the asset:\n%s", out)
	}
}

// TestApproveDiscoveredDevice: `edgeport approve` turns a DiscoveredDevice
// into a Device with its endpoints and removes the discovered one.
func TestApproveDiscoveredDevice(t *testing.T) {
	url, store := apiServer(t)
	dir := t.TempDir()
	flags := []string{"--server", url, "--data-dir", dir}
	spec := &config.DiscoveredDeviceSpec{DiscoveryID: "urn:plc-7", Version: 1}
	spec.Endpoints.Inbound = map[string]config.DiscoveredEndpoint{"opc": {EndpointType: config.EndpointTypeOpcUa, Address: "opc.tcp://10.0.0.7:4840"}}
	if _, _, err := store.Apply(&config.Object{APIVersion: config.APIVersion, Kind: "DiscoveredDevice", Metadata: config.Metadata{Name: "plc-7-a1b2c3"}, Spec: spec}, config.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, append([]string{"get", "discovereddevices"}, flags...)...)
	if code != 0 || !strings.Contains(out, "plc-7-a1b2c3") || !strings.Contains(out, "urn:plc-7") || !strings.Contains(out, "opc.tcp://10.0.0.7:4840") {
		t.Fatalf("get: %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runCLI(t, append([]string{"approve", "discovereddevice/plc-7-a1b2c3"}, flags...)...)
	if code != 0 || out != "device/plc-7-a1b2c3 created from discovereddevice/plc-7-a1b2c3\n" {
		t.Fatalf("approve: %d\n%s%s", code, out, errOut)
	}
	o, ok := store.Get(config.Key{Kind: "Device", Name: "plc-7-a1b2c3"})
	if !ok {
		t.Fatal("no device")
	}
	if ep := o.Spec.(*config.DeviceSpec).Endpoints.Inbound["opc"]; ep.Address != "opc.tcp://10.0.0.7:4840" || ep.EndpointType != config.EndpointTypeOpcUa {
		t.Fatalf("device endpoint %+v", ep)
	}
	if _, ok := store.Get(config.Key{Kind: "DiscoveredDevice", Name: "plc-7-a1b2c3"}); ok {
		t.Fatal("discovered device still there")
	}
	_, errOut, code = runCLI(t, append([]string{"approve", "nothing"}, flags...)...)
	if code == 0 || !strings.Contains(errOut, "nothing") {
		t.Fatalf("approve of nothing: %d %s", code, errOut)
	}
}
