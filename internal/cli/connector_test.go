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
