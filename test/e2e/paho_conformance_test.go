package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPahoPythonConformance runs the MQTT 3.1.1 and 5.0 conformance
// scenarios of python/paho_conformance.py, each as a subtest, with Eclipse
// Paho Python against one Edgeport. The scenarios cover what the Eclipse
// Paho interoperability suite (client_test.py, client_test5.py) checks
// of a broker, written from the specifications' normative statements (cited
// in each scenario's docstring): retained messages and retain options,
// offline queueing, session expiry, wills and will delay, zero-length
// client identifiers, overlapping subscriptions and subscription
// identifiers, $ topics, subscribe and unsubscribe reason codes, user
// properties, payload format, message expiry, request/response, topic
// aliases both ways, maximum packet size, shared subscriptions, No Local
// and a refused authentication method. Each scenario asserts itself and
// prints PASS; a failure names the statement and what differed.
func TestPahoPythonConformance(t *testing.T) {
	t.Parallel()
	requirePahoPython(t)
	script, err := filepath.Abs("python/paho_conformance.py")
	if err != nil {
		t.Fatal(err)
	}
	e := startEdgeport(t)
	port := e.port(t, "mqtt")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, debianPython, script, "127.0.0.1", port, "list", "-").Output()
	if err != nil {
		t.Fatalf("listing scenarios: %v", err)
	}
	names := strings.Fields(string(out))
	if len(names) < 20 {
		t.Fatalf("only %d scenarios listed: %q", len(names), names)
	}
	for i, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// A short topic prefix per scenario: the maximum packet size
			// scenario counts bytes, and scenarios must not see each other.
			prefix := "c" + string(rune('a'+i%26)) + string(rune('a'+i/26))
			lines := runProc(t, 60*time.Second, "", debianPython, script, "127.0.0.1", port, name, prefix)
			if len(lines) == 0 || lines[len(lines)-1] != "PASS "+name {
				t.Fatalf("scenario %s did not pass:\n%s", name, strings.Join(lines, "\n"))
			}
		})
	}
}
