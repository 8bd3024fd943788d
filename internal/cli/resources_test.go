package cli

import (
	"bytes"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/api"
	"github.com/edgeport/edgeport/internal/config"
)

// apiServer serves the real API over a fresh store; the CLI runs in process.
func apiServer(t *testing.T) (string, *config.Store) {
	t.Helper()
	store := config.NewStore(config.Builtin(), "", nil)
	srv := httptest.NewServer(api.New(store, api.Options{Token: "abcdefabcdefabcdef"}, nil))
	t.Cleanup(srv.Close)
	return srv.URL, store
}

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestApplyGetDeleteInProcess(t *testing.T) {
	url, store := apiServer(t)
	dir := t.TempDir()
	flags := []string{"--server", url, "--data-dir", dir}
	file := filepath.Join(dir, "all.yaml")
	docs := `apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: one, labels: {env: prod}}
spec: {ports: [{port: 1883}]}
---
apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: two}
spec: {ports: [{port: 70000}]}
---
apiVersion: edgeport.io/v1
kind: Widget
metadata: {name: three}
---
apiVersion: edgeport.io/v1
kind: BrokerAuthorization
metadata: {}
spec: {}
`
	if err := os.WriteFile(file, []byte(docs), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, append([]string{"apply", "-f", file}, flags...)...)
	if code != 1 || out != "brokerlistener/one created\n" {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		file + `:6: brokerlistener/two: BrokerListener "two" is invalid` + "\n  " + file + ":9: spec.ports[0].port: must be between 0 and 65535",
		file + `:11: kind "Widget" is not one of Broker, BrokerListener`,
		file + ":15: BrokerAuthorization is invalid\n  " + file + ":17: metadata.name: required\n  " + file + ":18: spec.authorizationPolicies.rules: at least one rule is required",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if _, ok := store.Get(config.Key{Kind: "BrokerListener", Name: "two"}); ok {
		t.Fatal("invalid resource stored")
	}
	// A status as the app would set it shows in the table.
	o, _ := store.Get(config.Key{Kind: "BrokerListener", Name: "one"})
	store.SetStatus(o.Key(), o.Metadata.UID, 1, config.Status{
		Conditions: []config.Condition{{Type: "Ready", Status: "True", Reason: "Listening"}},
		Ports:      []config.PortStatus{{Port: 1883, Protocol: "Mqtt", Address: "127.0.0.1:1883", Ready: true}},
	})
	out, _, code = runCLI(t, append([]string{"get", "BL", "-l", "env=prod"}, flags...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME READY REASON AGE PORTS ADDRESSES" ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), "one True Listening ") ||
		!strings.HasSuffix(lines[1], "1883/Mqtt   127.0.0.1:1883") {
		t.Fatalf("get: exit %d\n%s", code, out)
	}
	out, _, code = runCLI(t, append([]string{"get", "brokerlistener", "one", "-o", "json"}, flags...)...)
	if code != 0 || !strings.Contains(out, `"kind": "BrokerListener"`) || !strings.Contains(out, `"observedGeneration": 1`) {
		t.Fatalf("get -o json: exit %d\n%s", code, out)
	}
	if _, errOut, code := runCLI(t, append([]string{"get", "bl", "-o", "xml"}, flags...)...); code != 1 || !strings.Contains(errOut, "-o") {
		t.Fatalf("-o xml: exit %d %s", code, errOut)
	}
	out, _, code = runCLI(t, append([]string{"delete", "listeners", "one"}, flags...)...)
	if code != 0 || out != "brokerlistener/one deleted\n" {
		t.Fatalf("delete: exit %d %q", code, out)
	}
	if _, errOut, code := runCLI(t, "get", "bl", "--server", "http://127.0.0.1:1", "--data-dir", dir); code != 1 ||
		!strings.Contains(errOut, "cannot reach the Edgeport API") {
		t.Fatalf("unreachable server: exit %d %s", code, errOut)
	}
}

func TestAge(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		-time.Second:          "0s",
		45 * time.Second:      "45s",
		3*time.Minute + 12e9:  "3m12s",
		40 * time.Minute:      "40m",
		5 * time.Hour:         "5h",
		12 * 24 * time.Hour:   "12d",
		47*time.Hour + 59e9*6: "47h",
	} {
		ts := now.Add(-d)
		if got := age(&ts, now); got != want {
			t.Errorf("age(%v) = %s, want %s", d, got, want)
		}
	}
	if age(nil, now) != "<unknown>" {
		t.Error("nil time")
	}
}
