package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
)

// An Azure IoT Operations user applies its broker resources as they are:
// the apiVersion, the namespace and the Kubernetes-only fields are
// accepted, and each field Edgeport does not apply is named in a warning
// with its file and line.
func TestApplyAzureIoTOperationsResources(t *testing.T) {
	url, store := apiServer(t)
	dir := t.TempDir()
	flags := []string{"--server", url, "--data-dir", dir}
	file, err := filepath.Abs("../config/testdata/aio.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, append([]string{"apply", "-f", file}, flags...)...)
	want := "broker/default created\nbrokerlistener/loadbalancer-listener created\n" +
		"brokerauthentication/default created\nbrokerauthorization/my-authz-policies created\n"
	if code != 0 || out != want {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	for _, w := range []string{
		"Warning: " + file + ":23: broker/default: spec.cardinality: ignored: Edgeport has no such field\n",
		"Warning: " + file + ":31: broker/default: spec.memoryProfile: ignored: Edgeport has no such field\n",
		"Warning: " + file + ":77: brokerlistener/loadbalancer-listener: spec.serviceType: ignored: Edgeport has no such field\n",
		"Warning: " + file + ":89: brokerlistener/loadbalancer-listener: spec.ports[1].tls.certManagerCertificateSpec.issuerRef: ignored: Edgeport has no such field\n",
	} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}
	if n := strings.Count(errOut, "Warning: "); n != 13 || strings.Contains(errOut, "error") {
		t.Errorf("want 13 warnings and no error, got:\n%s", errOut)
	}
	o, ok := store.Get(config.Key{Kind: "Broker", Name: "default"})
	if !ok || o.APIVersion != config.APIVersion || o.Metadata.Namespace != "" {
		t.Fatalf("stored broker: %+v", o)
	}
	// The fields Edgeport has are applied.
	c := o.Spec.(*config.BrokerSpec).Advanced.Clients
	if *c.MaxReceiveMaximum != 15000 || *c.SubscriberQueueLimit.Length != 1000 || c.SubscriberQueueLimit.Strategy != config.QueueStrategyDropOldest {
		t.Fatalf("broker limits not applied: %+v", c)
	}
	// Applying the same file again changes nothing.
	out, _, code = runCLI(t, append([]string{"apply", "-f", file}, flags...)...)
	if code != 0 || strings.Count(out, " unchanged\n") != 4 {
		t.Fatalf("second apply: exit %d\n%s", code, out)
	}
}

// `get all -o yaml` and `get -o json` (a List) apply again as they are.
func TestApplyRoundTripsGetOutput(t *testing.T) {
	url, store := apiServer(t)
	dir := t.TempDir()
	flags := []string{"--server", url, "--data-dir", dir}
	file := filepath.Join(dir, "l.yaml")
	if err := os.WriteFile(file, []byte(`apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: one}
spec: {ports: [{port: 1883}]}
---
apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: two}
spec: {ports: [{port: 1884}]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := runCLI(t, append([]string{"apply", "-f", file}, flags...)...); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	for _, format := range []string{"yaml", "json"} {
		listing, errOut, code := runCLI(t, append([]string{"get", "bl", "-o", format}, flags...)...)
		if code != 0 {
			t.Fatalf("get -o %s: exit %d %s", format, code, errOut)
		}
		for _, name := range []string{"one", "two"} {
			if _, err := store.Delete(config.Key{Kind: "BrokerListener", Name: name}, ""); err != nil {
				t.Fatal(err)
			}
		}
		out := filepath.Join(dir, "get."+format)
		if err := os.WriteFile(out, []byte(listing), 0o644); err != nil {
			t.Fatal(err)
		}
		got, errOut, code := runCLI(t, append([]string{"apply", "-f", out}, flags...)...)
		if code != 0 || got != "brokerlistener/one created\nbrokerlistener/two created\n" {
			t.Fatalf("apply of get -o %s: exit %d\n%s%s\ninput:\n%s", format, code, got, errOut, listing)
		}
	}
}

func TestVersionFlag(t *testing.T) {
	flag, _, code := runCLI(t, "--version")
	cmd, _, code2 := runCLI(t, "version")
	if code != 0 || code2 != 0 || flag != cmd || !strings.HasPrefix(flag, "edgeport ") {
		t.Fatalf("--version: %d %q; version: %d %q", code, flag, code2, cmd)
	}
}

func TestGetOutputNameAndWide(t *testing.T) {
	url, store := apiServer(t)
	dir := t.TempDir()
	flags := []string{"--server", url, "--data-dir", dir}
	file := filepath.Join(dir, "l.yaml")
	if err := os.WriteFile(file, []byte(`apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: one, labels: {site: berlin, env: prod}}
spec: {ports: [{port: 1883}]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := runCLI(t, append([]string{"apply", "-f", file}, flags...)...); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	o, _ := store.Get(config.Key{Kind: "BrokerListener", Name: "one"})
	store.SetStatus(o.Key(), o.Metadata.UID, 1, config.Status{Conditions: []config.Condition{
		{Type: "Ready", Status: "False", Reason: "BindFailed", Message: "port 1883: address in use"}}})
	out, _, code := runCLI(t, append([]string{"get", "bl", "-o", "name"}, flags...)...)
	if code != 0 || out != "brokerlistener/one\n" {
		t.Fatalf("-o name: exit %d %q", code, out)
	}
	out, _, code = runCLI(t, append([]string{"get", "bl", "-o", "wide"}, flags...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasSuffix(strings.Join(strings.Fields(lines[0]), " "), "LABELS MESSAGE") ||
		!strings.HasSuffix(lines[1], "env=prod,site=berlin   port 1883: address in use") {
		t.Fatalf("-o wide: exit %d\n%s", code, out)
	}
}
