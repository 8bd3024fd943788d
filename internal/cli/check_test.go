package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/telemetry"
)

func TestCheckStorageThresholds(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		name string
		in   *telemetry.StorageStatus
		want string
	}{
		{"absent", nil, statusWarn},
		{"plenty", &telemetry.StorageStatus{Path: "/d", TotalBytes: 100 * gib, FreeBytes: 50 * gib, Writable: true}, statusOK},
		{"below 10%", &telemetry.StorageStatus{Path: "/d", TotalBytes: 100 * gib, FreeBytes: 9 * gib, Writable: true}, statusWarn},
		{"below 2%", &telemetry.StorageStatus{Path: "/d", TotalBytes: 100 * gib, FreeBytes: gib, Writable: true}, statusFail},
		// A large disk: a low ratio that still leaves many GiB is not a problem.
		{"below 10% of a large disk", &telemetry.StorageStatus{Path: "/d", TotalBytes: 252 * gib, FreeBytes: 24 * gib, Writable: true}, statusOK},
		{"below 2% of a large disk", &telemetry.StorageStatus{Path: "/d", TotalBytes: 1000 * gib, FreeBytes: 5 * gib, Writable: true}, statusWarn},
		// A small card: a low ratio is a low amount.
		{"below 10% of a small card", &telemetry.StorageStatus{Path: "/d", TotalBytes: 16 * gib, FreeBytes: gib, Writable: true}, statusWarn},
		{"below 2% of a small card", &telemetry.StorageStatus{Path: "/d", TotalBytes: 16 * gib, FreeBytes: gib / 4, Writable: true}, statusFail},
		{"unwritable", &telemetry.StorageStatus{Path: "/d", TotalBytes: 100 * gib, FreeBytes: 50 * gib, Error: "read-only"}, statusFail},
		{"size unknown", &telemetry.StorageStatus{Path: "/d", Writable: true, Error: "statfs"}, statusWarn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkStorage(tc.in); got.Status != tc.want {
				t.Fatalf("status %s (%s), want %s", got.Status, got.Message, tc.want)
			}
		})
	}
}

func TestCheckSelfTest(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *telemetry.ProbeStatus
		want string
		msg  string
	}{
		{"disabled", nil, statusWarn, "disabled"},
		{"no round yet", &telemetry.ProbeStatus{}, statusWarn, "not completed"},
		{"healthy", &telemetry.ProbeStatus{Runs: 9, LastLatencySeconds: 0.0004}, statusOK, "400µs"},
		{"slow", &telemetry.ProbeStatus{Runs: 9, LastLatencySeconds: 0.08}, statusWarn, "above 50ms"},
		{"failing", &telemetry.ProbeStatus{Runs: 9, Failures: 2, ConsecutiveFailures: 2, LastError: "no delivery"}, statusFail, "no delivery"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := checkSelfTest(tc.in)
			if got.Status != tc.want || !strings.Contains(got.Message, tc.msg) {
				t.Fatalf("%s %q, want %s containing %q", got.Status, got.Message, tc.want, tc.msg)
			}
		})
	}
}

func TestCheckSecurity(t *testing.T) {
	loop := telemetry.ListenerInfo{Name: "local", Address: "127.0.0.1:1883"}
	wide := telemetry.ListenerInfo{Name: "wide", Address: "0.0.0.0:1883"}
	guarded := telemetry.ListenerInfo{Name: "guarded", Address: "0.0.0.0:8883", Authentication: "users", Authorization: "topics"}
	for _, tc := range []struct {
		name               string
		in                 []telemetry.ListenerInfo
		wantAuthn, wantAuz string
	}{
		{"loopback only", []telemetry.ListenerInfo{loop}, statusWarn, statusWarn},
		{"anonymous beyond loopback", []telemetry.ListenerInfo{loop, wide}, statusFail, statusFail},
		{"guarded", []telemetry.ListenerInfo{guarded}, statusOK, statusOK},
		{"guarded and loopback", []telemetry.ListenerInfo{guarded, loop}, statusWarn, statusWarn},
		// A port beyond loopback without authentication that refuses
		// everyone is not anonymous access (issue 11 item 5).
		{"refuses everyone", []telemetry.ListenerInfo{guarded, {Name: "closed", Address: "0.0.0.0:1884", Admits: "nobody"}}, statusOK, statusOK},
		// An unbound port is judged by its configured address.
		{"unbound beyond loopback", []telemetry.ListenerInfo{{Name: "down", Configured: "0.0.0.0:1885", Admits: "everyone"}}, statusFail, statusFail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			authn, authz := checkSecurity(tc.in)
			if authn.Status != tc.wantAuthn || authz.Status != tc.wantAuz {
				t.Fatalf("authentication %s (%s), authorization %s (%s); want %s, %s",
					authn.Status, authn.Message, authz.Status, authz.Message, tc.wantAuthn, tc.wantAuz)
			}
			if authn.Status != statusOK && authn.Hint == "" {
				t.Errorf("no hint for %s", authn.Message)
			}
		})
	}
}

func TestReadiness(t *testing.T) {
	list := `{"items":[
	 {"kind":"Broker","metadata":{"name":"default","generation":2},"status":{"observedGeneration":2,"conditions":[{"type":"Ready","status":"True"}]}},
	 {"kind":"BrokerListener","metadata":{"name":"lan","generation":3},"status":{"observedGeneration":2,"conditions":[{"type":"Ready","status":"True"}]}},
	 {"kind":"BrokerListener","metadata":{"name":"bad","generation":1},"status":{"conditions":[{"type":"Ready","status":"False","reason":"BindFailed","message":"address in use"}]}},
	 {"kind":"BrokerListener","metadata":{"name":"new","generation":1}}]}`
	objs, err := decodeList(json.RawMessage(list))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ status, msg string }{
		{statusOK, "Ready"}, {statusWarn, "not applied"}, {statusFail, "BindFailed: address in use"}, {statusWarn, "no Ready condition"},
	}
	if len(objs) != len(want) {
		t.Fatalf("%d objects", len(objs))
	}
	for i, obj := range objs {
		got := readiness("brokerlisteners", obj)
		if got.Status != want[i].status || !strings.Contains(got.Message, want[i].msg) {
			t.Errorf("%s: %s %q, want %s containing %q", got.Name, got.Status, got.Message, want[i].status, want[i].msg)
		}
	}
	if objs, err := decodeList(json.RawMessage(`[{"metadata":{"name":"x"}}]`)); err != nil || len(objs) != 1 {
		t.Errorf("bare array: %v %v", objs, err)
	}
}

func TestDialAddress(t *testing.T) {
	for _, tc := range []struct{ bound, server, want string }{
		{"127.0.0.1:1883", "10.0.0.5", "127.0.0.1:1883"},
		{"0.0.0.0:1883", "10.0.0.5", "10.0.0.5:1883"},
		{"[::]:1883", "", "127.0.0.1:1883"},
		{"[::]:1883", "localhost", "127.0.0.1:1883"},
		{":1883", "edge.local", "edge.local:1883"},
	} {
		if got := dialAddress(tc.bound, tc.server); got != tc.want {
			t.Errorf("dialAddress(%q, %q) = %q, want %q", tc.bound, tc.server, got, tc.want)
		}
	}
}

func TestPrintReportDetailLevels(t *testing.T) {
	rep := checkReport{Server: "http://x", Checks: []checkResult{
		{Name: "listeners", Status: statusOK, Message: "1 of 1", Items: []checkResult{{Name: "mqtt", Status: statusOK, Message: "fine", Details: map[string]any{"latencyMs": 0.3}}}},
		{Name: "selftest", Status: statusFail, Message: "failing", Hint: "look at the log"},
	}}.finish()
	for _, tc := range []struct {
		detail       int
		unicode      bool
		want, absent []string
	}{
		{0, false, []string{"[fail] http://x: 1 passed, 0 warning(s), 1 failed (selftest)"}, []string{"listeners", "hint"}},
		{1, false, []string{"[ok]   listeners  1 of 1", "[fail] selftest   failing", "hint: look at the log"}, []string{"mqtt", "latencyMs"}},
		{2, true, []string{"✔ listeners", "✔ mqtt", "latencyMs: 0.3", "✖ selftest"}, []string{"[ok]"}},
	} {
		var buf bytes.Buffer
		printReport(&buf, rep, tc.detail, tc.unicode)
		out := buf.String()
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("detail %d lacks %q:\n%s", tc.detail, w, out)
			}
		}
		for _, a := range tc.absent {
			if strings.Contains(out, a) {
				t.Errorf("detail %d shows %q:\n%s", tc.detail, a, out)
			}
		}
	}
}

func TestRoundDuration(t *testing.T) {
	for in, want := range map[time.Duration]string{
		1234 * time.Nanosecond:    "1µs",
		1234567 * time.Nanosecond: "1.23ms",
		2345678901:                "2.346s",
	} {
		if got := roundDuration(in).String(); got != want {
			t.Errorf("roundDuration(%v) = %s, want %s", in, got, want)
		}
	}
}
