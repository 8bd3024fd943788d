package e2e

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/testwait"
)

// checkReport is the part of `edgeport check -o json` the tests read.
type checkReport struct {
	Status  string `json:"status"`
	Summary struct {
		OK, Warn, Fail int
	} `json:"summary"`
	Checks []struct {
		Name    string         `json:"name"`
		Status  string         `json:"status"`
		Message string         `json:"message"`
		Hint    string         `json:"hint"`
		Details map[string]any `json:"details"`
		Items   []struct {
			Name    string `json:"name"`
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"items"`
	} `json:"checks"`
}

func (r checkReport) check(t *testing.T, name string) (status, message string) {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c.Status, c.Message
		}
	}
	t.Fatalf("report has no %s check: %+v", name, r)
	return "", ""
}

// storageHealthy fails t unless the storage check says the data directory
// is writable and judges nothing but its file system's free space. The
// free space is the machine's (CI runs with its disk about 90% full), so
// the verdict may be ok, or a warning or failure about free space, not
// one fixed status: TestCheckStorageThresholds (internal/cli) proves the
// thresholds with given figures. It returns the verdict.
func storageHealthy(t *testing.T, rep checkReport) string {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name != "storage" {
			continue
		}
		if w, _ := c.Details["writable"].(bool); !w || !strings.Contains(c.Message, " writable, ") {
			t.Fatalf("storage: %s %q, want a writable data directory", c.Status, c.Message)
		}
		if c.Status != "ok" && !strings.HasPrefix(c.Hint, "free space below") {
			t.Fatalf("storage: %s %q (%s): not about free space", c.Status, c.Message, c.Hint)
		}
		return c.Status
	}
	t.Fatalf("report has no storage check: %+v", rep)
	return ""
}

// runCheck runs `edgeport check -o json` against e and decodes the report.
func runCheck(t *testing.T, e *edgeport, extra ...string) (checkReport, int, string) {
	t.Helper()
	args := append([]string{"check", "--server", "http://" + e.addr(t, "http"), "-o", "json"}, extra...)
	out, code := runEdgeport(t, args...)
	var rep checkReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("edgeport check -o json: exit %d, output not JSON (%v):\n%s", code, err, out)
	}
	return rep, code, out
}

// checkUntil runs the check until the named check has the wanted status,
// for conditions the server reaches shortly after start (a self-test round).
func checkUntil(t *testing.T, e *edgeport, name, want string) (checkReport, int, string) {
	t.Helper()
	return checkUntilWithin(t, e, 15*time.Second, name, want)
}

// checkUntilWithin is checkUntil waiting up to d.
func checkUntilWithin(t *testing.T, e *edgeport, d time.Duration, name, want string) (checkReport, int, string) {
	t.Helper()
	var (
		rep  checkReport
		code int
		out  string
	)
	// The caller judges the last report, reached or not.
	testwait.Within(d, func() bool {
		rep, code, out = runCheck(t, e)
		st, _ := rep.check(t, name)
		return st == want
	})
	return rep, code, out
}

func TestCheckHealthyInstance(t *testing.T) {
	t.Parallel()
	e := startEdgeport(t, "--selftest-interval", "100ms")
	rep, code, out := checkUntil(t, e, "selftest", "ok")
	storage := storageHealthy(t, rep)
	if storage != "fail" && (code != 0 || rep.Status == "fail") {
		t.Fatalf("exit %d, status %s:\n%s", code, rep.Status, out)
	}
	var names []string
	for _, c := range rep.Checks {
		names = append(names, c.Name)
	}
	want := []string{"server", "listeners", "storage", "selftest", "resources", "connectors", "dataflows", "authentication", "authorization"}
	if !slices.Equal(names, want) {
		t.Fatalf("checks %v, want %v", names, want)
	}
	for name, wantStatus := range map[string]string{
		"server": "ok", "listeners": "ok", "selftest": "ok", "connectors": "ok", "dataflows": "ok",
		// Loopback listeners without authentication or authorization are
		// tolerated with a warning.
		"authentication": "warn", "authorization": "warn",
	} {
		if st, msg := rep.check(t, name); st != wantStatus {
			t.Errorf("%s: %s (%s), want %s", name, st, msg, wantStatus)
		}
	}
	for _, c := range rep.Checks {
		if c.Name == "listeners" && len(c.Items) != 2 {
			t.Errorf("listeners checked: %+v, want mqtt and ws", c.Items)
		}
	}

	// The table at each detail level.
	for level, wantLines := range map[string][]string{
		"0": {"passed", "warning(s), "},
		"1": {"[ok]   listeners", "2 of 2 MQTT listeners accept connections", "[warn] authentication"},
		"2": {"[ok]   mqtt", "[ok]   ws", "CONNACK success", "latencyMs:"},
	} {
		out, code := runEdgeport(t, "check", "--server", "http://"+e.addr(t, "http"), "--detail-level", level)
		if storage == "ok" && !strings.Contains(out, "warning(s), 0 failed") {
			t.Errorf("--detail-level %s: a failure:\n%s", level, out)
		}
		if storage != "fail" && code != 0 {
			t.Fatalf("--detail-level %s: exit %d\n%s", level, code, out)
		}
		for _, w := range wantLines {
			if !strings.Contains(out, w) {
				t.Errorf("--detail-level %s lacks %q:\n%s", level, w, out)
			}
		}
	}
}

// TestCheckBrokerRefusingConnections runs a broker whose packet size limit
// is below the size of any CONNECT: it is up, but no client (the self-test
// probe included) can connect, and check must say so and fail.
func TestCheckBrokerRefusingConnections(t *testing.T) {
	t.Parallel()
	e := startEdgeport(t, "--max-packet-size", "20", "--selftest-interval", "100ms")
	rep, code, out := checkUntil(t, e, "selftest", "fail")
	if code != 1 || rep.Status != "fail" {
		t.Fatalf("exit %d, status %s, want 1 and fail:\n%s", code, rep.Status, out)
	}
	if st, msg := rep.check(t, "listeners"); st != "fail" || !strings.Contains(msg, "0 of 2") {
		t.Errorf("listeners: %s %q, want fail with 0 of 2", st, msg)
	}
	if st, msg := rep.check(t, "selftest"); st != "fail" {
		t.Errorf("selftest: %s %q, want fail", st, msg)
	}
	if st, _ := rep.check(t, "server"); st != "ok" {
		t.Errorf("server: %s, want ok (the HTTP side is fine)", st)
	}
}

// TestCheckStorageGone removes the data directory under a running instance.
func TestCheckStorageGone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := startEdgeport(t, "--data-dir", dir, "--in-memory")
	rep, code, out := runCheck(t, e)
	if st := storageHealthy(t, rep); st != "fail" && code != 0 {
		t.Fatalf("exit %d before removal:\n%s", code, out)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	rep, code, out = runCheck(t, e)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	if st, msg := rep.check(t, "storage"); st != "fail" || !strings.Contains(msg, "not writable") {
		t.Errorf("storage: %s %q, want fail, not writable", st, msg)
	}
}

func TestCheckServerUnreachable(t *testing.T) {
	t.Parallel()
	out, code := runEdgeport(t, "check", "--server", "http://"+freePort(t), "--timeout", "2s")
	if code != 1 || !strings.Contains(out, "[fail] server") || !strings.Contains(out, "connection refused") {
		t.Fatalf("exit %d, want 1 and a failed server check:\n%s", code, out)
	}
}

func TestObservabilityFlagErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"serve", "--selftest-interval", "-1s", "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off", "--http-addr", "off"}, "--selftest-interval"},
		{[]string{"check", "--detail-level", "3"}, "--detail-level"},
		{[]string{"check", "-o", "yaml"}, "-o"},
		{[]string{"check", "--server", "127.0.0.1:8080"}, "--server"},
	} {
		out, code := runEdgeport(t, tc.args...)
		if code == 0 || !strings.Contains(out, tc.flag) {
			t.Errorf("edgeport %v: exit %d, want non-zero naming %s:\n%s", tc.args, code, tc.flag, out)
		}
	}
}
