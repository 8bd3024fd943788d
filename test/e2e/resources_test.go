package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// cli runs an edgeport management command and returns stdout, stderr and
// the exit status.
func cli(t *testing.T, stdin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, edgeportBin, args...)
	cmd.WaitDelay = 2 * time.Second
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee) && ctx.Err() == nil:
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatalf("edgeport %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	return "", "", 0
}

// mqttConnect opens an MQTT 5 connection and reports whether the broker
// accepted it.
func mqttConnect(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	cp := packet.Connect{ProtocolName: "MQTT", Version: packet.V5, CleanStart: true, ClientID: "e2e-" + filepath.Base(t.Name())}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(cp.Append(nil, packet.V5)); err != nil {
		t.Fatalf("CONNECT to %s: %v", addr, err)
	}
	h, body, err := packet.NewReader(conn, 0).Next(0)
	if err != nil || h.Type != packet.CONNACK {
		t.Fatalf("no CONNACK from %s: %v %v", addr, h.Type, err)
	}
	var ack packet.ConnAck
	if err := ack.Decode(h.Flags, body, packet.V5); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK from %s: %+v %v", addr, ack, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn
}

type resourceJSON struct {
	Metadata struct {
		Name       string `json:"name"`
		Generation int64  `json:"generation"`
	} `json:"metadata"`
	Status struct {
		ObservedGeneration int64 `json:"observedGeneration"`
		Conditions         []struct {
			Type, Status, Reason, Message string
		} `json:"conditions"`
		Ports []struct {
			Port    int    `json:"port"`
			Address string `json:"address"`
			Ready   bool   `json:"ready"`
		} `json:"ports"`
	} `json:"status"`
}

// waitApplied polls `edgeport get -o json` until generation gen of the
// resource is observed, and returns it.
func waitApplied(t *testing.T, server, kind, name string, gen int64, extra ...string) resourceJSON {
	t.Helper()
	var (
		r           resourceJSON
		out, errOut string
		code        int
		badJSON     error
	)
	applied := testwait.Within(testwait.Timeout, func() bool {
		out, errOut, code = cli(t, "", nil, append([]string{"get", kind, name, "-o", "json", "--server", server}, extra...)...)
		if code != 0 {
			return false
		}
		r = resourceJSON{}
		if badJSON = json.Unmarshal([]byte(out), &r); badJSON != nil {
			return true // reported below
		}
		return r.Metadata.Generation == gen && r.Status.ObservedGeneration == gen
	})
	if badJSON != nil {
		t.Fatalf("get -o json: %v\n%s", badJSON, out)
	}
	if !applied {
		t.Fatalf("%s/%s generation %d not applied: exit %d\n%s%s", kind, name, gen, code, out, errOut)
	}
	return r
}

const listenerFile = `apiVersion: edgeport.io/v1
kind: BrokerListener
metadata:
  name: %s
  labels: {stage: %s}
spec:
  ports:
  - port: 0
`

func TestConfigDirLive(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "listener.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(listenerFile, "from-file", "one")), 0o644); err != nil {
		t.Fatal(err)
	}
	// An invalid file is reported by name and path, and does not stop the start.
	bad := "apiVersion: edgeport.io/v1\nkind: BrokerListener\nmetadata: {name: bad}\nspec:\n  ports:\n  - port: 70000\n"
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	e := startEdgeport(t, "--config", dir)
	server := "http://" + e.addr(t, "http")
	mqttConnect(t, e.addr(t, "from-file:0"))
	if _, err := e.logs.waitFor(time.Second, func(l string) bool {
		return strings.Contains(l, "bad.yaml:6 (BrokerListener/bad): spec.ports[0].port: must be between 0 and 65535")
	}); err != nil {
		t.Fatalf("invalid file not reported: %v", err)
	}

	// Editing the file is applied live: a second listener resource appears
	// and the first one's label changes without touching its port.
	content := fmt.Sprintf(listenerFile, "from-file", "two") + "---\n" + fmt.Sprintf(listenerFile, "second", "one")
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	r := waitApplied(t, server, "bl", "second", 1)
	mqttConnect(t, r.Status.Ports[0].Address)
	out, _, code := cli(t, "", nil, "get", "listeners", "-l", "stage=two", "--server", server)
	if code != 0 || !strings.Contains(out, "from-file") || strings.Contains(out, "second") {
		t.Fatalf("get -l stage=two: exit %d\n%s", code, out)
	}
	// The API may not change what the directory defines.
	_, errOut, code := cli(t, fmt.Sprintf(listenerFile, "second", "api"), nil, "apply", "-f", "-", "--server", server)
	if code != 1 || !strings.Contains(errOut, "is defined by config file "+file) {
		t.Fatalf("apply over a config file: exit %d\n%s", code, errOut)
	}

	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if !testwait.Within(testwait.Timeout, func() bool {
		_, errOut, code = cli(t, "", nil, "get", "brokerlistener", "second", "--server", server)
		return code == 1 && strings.Contains(errOut, "not found")
	}) {
		t.Fatalf("removed file's resource still there: %d %s", code, errOut)
	}
}

func TestCLIResourceCommands(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	e := startEdgeport(t, "--data-dir", data)
	srv := []string{"--server", "http://" + e.addr(t, "http"), "--data-dir", data}
	dir := t.TempDir()
	file := filepath.Join(dir, "l.yaml")
	write := func(content string) {
		if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(stdin string, args ...string) (string, string, int) {
		t.Helper()
		return cli(t, stdin, nil, append(args, srv...)...)
	}

	write(fmt.Sprintf(listenerFile, "plant", "one"))
	for _, want := range []string{"brokerlistener/plant created", "brokerlistener/plant unchanged"} {
		if out, errOut, code := run("", "apply", "-f", file); code != 0 || out != want+"\n" {
			t.Fatalf("apply: exit %d, %q %s (want %q)", code, out, errOut, want)
		}
	}
	write(fmt.Sprintf(listenerFile, "plant", "two"))
	if out, _, code := run("", "apply", "-f", dir); code != 0 || out != "brokerlistener/plant configured\n" {
		t.Fatalf("apply dir: exit %d, %q", code, out)
	}
	r := waitApplied(t, srv[1], "BrokerListener", "plant", 1)
	mqttConnect(t, r.Status.Ports[0].Address)

	// Every error at once, with field paths; nothing applied.
	bad := "apiVersion: edgeport.io/v1\nkind: BrokerListener\nmetadata: {name: broken}\nspec:\n  ports:\n  - port: 70000\n    protocl: Mqtt\n"
	_, errOut, code := run(bad, "apply", "-f", "-")
	for _, want := range []string{
		"error: <stdin>:1: brokerlistener/broken: BrokerListener \"broken\" is invalid",
		"  <stdin>:7: spec.ports[0].protocl: unknown field (did you mean \"protocol\"?)",
		"  <stdin>:6: spec.ports[0].port: must be between 0 and 65535 (0 picks a free port)",
	} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Fatalf("invalid apply: exit %d, stderr lacks %q:\n%s", code, want, errOut)
		}
	}

	out, _, code := run("", "get", "bl")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME ") ||
		!strings.Contains(lines[0], "READY") || !strings.Contains(lines[0], "AGE") || !strings.Contains(lines[0], "PORTS") ||
		!strings.HasPrefix(lines[1], "plant ") || !strings.Contains(lines[1], "True") || !strings.Contains(lines[1], "Listening") {
		t.Fatalf("get bl: exit %d\n%s", code, out)
	}
	out, _, code = run("", "get", "BrokerListeners", "plant", "-o", "yaml")
	if code != 0 || !strings.HasPrefix(out, "apiVersion: edgeport.io/v1\nkind: BrokerListener\nmetadata:\n  name: plant\n") ||
		!strings.Contains(out, "      protocol: Mqtt\n      address: 127.0.0.1\n") || !strings.Contains(out, "status:\n") {
		t.Fatalf("get -o yaml: exit %d\n%s", code, out)
	}
	// What get -o yaml prints applies again, unchanged.
	if out2, errOut, code := run(out, "apply", "-f", "-"); code != 0 || out2 != "brokerlistener/plant unchanged\n" {
		t.Fatalf("re-apply of get -o yaml: exit %d %q %s", code, out2, errOut)
	}
	out, _, code = run("", "describe", "listener", "plant")
	for _, want := range []string{"Name:         plant", "Labels:       stage=two", "Source:       API", "Spec:\n  ports:",
		"Observed Generation: 1", "Ready  True", "Listening", "Events:", "Created"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("describe lacks %q: exit %d\n%s", want, code, out)
		}
	}
	if out, _, code := run("", "get", "all"); code != 0 || !strings.Contains(out, "brokerlistener/plant") {
		t.Fatalf("get all: exit %d\n%s", code, out)
	}
	if _, errOut, code := run("", "get", "widgets"); code != 1 || !strings.Contains(errOut, `unknown resource type "widgets"`) {
		t.Fatalf("get widgets: exit %d %s", code, errOut)
	}

	// Resources created through the API survive a restart.
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	e2 := startEdgeport(t, "--data-dir", data)
	srv[1] = "http://" + e2.addr(t, "http")
	mqttConnect(t, e2.addr(t, "plant:0"))

	if out, errOut, code := run("", "delete", "-f", file); code != 0 || out != "brokerlistener/plant deleted\n" {
		t.Fatalf("delete -f: exit %d %q %s", code, out, errOut)
	}
	if _, errOut, code := run("", "delete", "bl", "plant"); code != 1 || !strings.Contains(errOut, `BrokerListener "plant" not found`) {
		t.Fatalf("second delete: exit %d %s", code, errOut)
	}
	if _, _, code := run("", "delete", "bl", "plant", "--ignore-not-found"); code != 0 {
		t.Fatalf("delete --ignore-not-found: exit %d", code)
	}
	if _, errOut, code := run("", "get", "bl"); code != 0 || !strings.Contains(errOut, "No resources found") {
		t.Fatalf("get after delete: exit %d %s", code, errOut)
	}
}

func TestAPIToken(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	e := startEdgeport(t, "--data-dir", data, "--api-require-token")
	server := "http://" + e.addr(t, "http")

	resp, err := http.Get(server + "/api/v1/brokerlisteners")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("without token: %s", resp.Status)
	}
	// Metrics stay open for Prometheus.
	if code, _ := httpGet(t, server+"/metrics"); code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}

	tok, _, code := cli(t, "", nil, "token", "--data-dir", data)
	tok = strings.TrimSpace(tok)
	if code != 0 || len(tok) != 64 {
		t.Fatalf("edgeport token: exit %d %q", code, tok)
	}
	fi, err := os.Stat(filepath.Join(data, "api-token"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	other := t.TempDir() // no token file here
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		msg  string
	}{
		{"token file from data dir", nil, []string{"--data-dir", data}, 0, ""},
		{"flag", nil, []string{"--data-dir", other, "--token", tok}, 0, ""},
		{"environment", []string{"EDGEPORT_TOKEN=" + tok}, []string{"--data-dir", other}, 0, ""},
		{"missing", nil, []string{"--data-dir", other}, 1, "a bearer token is required"},
		{"wrong", nil, []string{"--data-dir", other, "--token", strings.Repeat("0", 64)}, 1, "invalid bearer token"},
	} {
		_, errOut, code := cli(t, "", tc.env, append([]string{"get", "brokerlisteners", "--server", server}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("%s: exit %d, want %d with %q:\n%s", tc.name, code, tc.code, tc.msg, errOut)
		}
	}
	if _, errOut, code := cli(t, "", nil, "token", "--data-dir", other); code != 1 || !strings.Contains(errOut, "no API token") {
		t.Fatalf("token without file: exit %d %s", code, errOut)
	}
}

func TestConfigDirMissing(t *testing.T) {
	t.Parallel()
	out, code := runEdgeport(t, "serve", "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off", "--http-addr", "off",
		"--data-dir", t.TempDir(), "--config", filepath.Join(t.TempDir(), "missing"))
	if code == 0 || !strings.Contains(out, "--config:") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}
