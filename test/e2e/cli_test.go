package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// runEdgeport runs the binary to completion and returns its combined
// output and exit code.
func runEdgeport(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return runStatus(t, 15*time.Second, edgeportBin, args...)
}

// runStatus runs program to completion within limit and returns its
// combined output and exit status: a non-zero status is the program's
// answer, not a test failure; not finishing in time is.
func runStatus(t *testing.T, limit time.Duration, program string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, program, args...)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee) && ctx.Err() == nil:
		return string(out), ee.ExitCode()
	}
	t.Fatalf("%s %s: %v\n%s", filepath.Base(program), strings.Join(args, " "), err, out)
	return "", 0
}

func TestVersion(t *testing.T) {
	t.Parallel()
	out, code := runEdgeport(t, "version")
	if code != 0 || !regexp.MustCompile(`^edgeport \S+\n$`).MatchString(out) {
		t.Fatalf("edgeport version: exit %d, output %q", code, out)
	}
}

// TestReleaseBuildVersion builds the binary as a release is built
// (scripts/build.sh) and checks that it reports the checkout's git
// describe in `version` and `--version` (the "edgeport started" log line
// and /statusz print the same function's answer).
func TestReleaseBuildVersion(t *testing.T) {
	t.Parallel()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	desc := exec.CommandContext(ctx, "git", "describe", "--tags", "--always", "--dirty")
	desc.Dir = root
	want, err := desc.Output()
	if err != nil {
		t.Fatalf("git describe (the tests run from a git checkout): %v", err)
	}
	bin := filepath.Join(t.TempDir(), "edgeport")
	build := exec.CommandContext(ctx, filepath.Join(root, "scripts", "build.sh"), bin)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("scripts/build.sh: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := exec.CommandContext(ctx, bin, args...).Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); got != "edgeport "+strings.TrimSpace(string(want)) {
			t.Fatalf("edgeport %s: %q, want %q", args[0], got, "edgeport "+strings.TrimSpace(string(want)))
		}
	}
}

// TestServeDefaults checks the zero-configuration addresses through the
// help text: running with them would need ports a test cannot rely on.
func TestServeDefaults(t *testing.T) {
	t.Parallel()
	out, code := runEdgeport(t, "serve", "--help")
	if code != 0 {
		t.Fatalf("serve --help: exit %d\n%s", code, out)
	}
	for _, want := range []string{
		`--mqtt-addr string`, `(default "127.0.0.1:1883")`,
		`--ws-addr string`, `(default "127.0.0.1:8083")`,
		`--http-addr string`, `(default "127.0.0.1:8080")`,
		`--ws-path string`, `(default "/mqtt")`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("serve --help lacks %q:\n%s", want, out)
		}
	}
}

func TestBadFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		flag string // the flag the message must name
	}{
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--max-inflight", "70000"}, "--max-inflight"},
		{[]string{"--max-packet-size", "-5"}, "--max-packet-size"},
		{[]string{"--max-queued-messages", "-7"}, "--max-queued-messages"},
		{[]string{"--mqtt-addr", "nonsense"}, "--mqtt-addr"},
		{[]string{"--ws-addr", "127.0.0.1:99999"}, "--ws-addr"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--sys-interval", "banana"}, "--sys-interval"},
		{[]string{"--max-inflight", "many"}, "--max-inflight"},
		{[]string{"--no-such-flag"}, "--no-such-flag"},
	} {
		t.Run(strings.Join(tc.args, "="), func(t *testing.T) {
			t.Parallel()
			// Ephemeral ports, in case a bad value were accepted and the
			// broker started: it then fails on the timeout, not a busy port.
			args := append([]string{"serve", "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off", "--http-addr", "off",
				"--data-dir", t.TempDir()}, tc.args...)
			out, code := runEdgeport(t, args...)
			if code == 0 {
				t.Fatalf("exit 0 for %v:\n%s", tc.args, out)
			}
			if !strings.Contains(out, tc.flag) {
				t.Fatalf("message does not name %s:\n%s", tc.flag, out)
			}
		})
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

func TestHTTPOnly(t *testing.T) {
	t.Parallel()
	e := startEdgeport(t, "--mqtt-addr", "off", "--ws-addr", "off")
	var names []string
	for name := range e.addrs {
		names = append(names, name)
	}
	if !slices.Equal(names, []string{"http"}) {
		t.Fatalf("listeners %v, want only http", e.addrs)
	}
	base := "http://" + e.addr(t, "http")
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, body := httpGet(t, base+path); code != http.StatusOK {
			t.Errorf("GET %s: %d %q", path, code, body)
		}
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := startEdgeport(t)
	m := newMosquitto(t, e)
	base := "http://" + e.addr(t, "http")
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := httpGet(t, base+path); code != http.StatusOK || body != "ok\n" {
			t.Errorf("GET %s: %d %q", path, code, body)
		}
	}
	if _, body := httpGet(t, base+"/metrics"); !strings.Contains(body, "\nedgeport_broker_connected_sessions 0\n") {
		t.Errorf("/metrics lacks edgeport_broker_connected_sessions 0:\n%s", body)
	}

	// QoS 1: mosquitto_pub exits after PUBACK, which the broker sends after
	// counting the publish.
	m.publish("-q", "1", "-t", "metrics/probe", "-m", "count me")
	const want = `edgeport_broker_publishes_received_total{listener="mqtt"} 1`
	if code, body := httpGet(t, base+"/metrics"); code != http.StatusOK || !strings.Contains(body, "\n"+want+"\n") {
		t.Fatalf("/metrics (status %d) lacks %q:\n%s", code, want, body)
	}
}
