package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/testserve"
)

const willPolicy = `apiVersion: edgeport.io/v1
kind: BrokerAuthentication
metadata: {name: plant-authn}
spec:
  authenticationMethods:
  - method: UsernamePassword
    usernamePasswordSettings:
      passwordFile: %s
---
apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: secure}
spec:
  ports:
  - {port: %s, authenticationRef: plant-authn, authorizationRef: plant-authz}
---
apiVersion: edgeport.io/v1
kind: BrokerAuthorization
metadata: {name: plant-authz}
spec:
  authorizationPolicies:
    rules:
    - principals: {usernames: [alice, mallory, watcher]}
      brokerResources:
      - method: Connect
      - method: Publish
        topics: ["wills/{principal.attributes.line}/#"]
      - method: Subscribe
        topics: ["wills/#"]
`

// willUsers writes willPolicy's password file into dir: alice on line 1,
// mallory on line 2, watcher on line 0. It returns each user's password.
func willUsers(t *testing.T, dir string) (secrets map[string]string, pwFile string) {
	t.Helper()
	secrets = map[string]string{"alice": "alice-pw-1", "mallory": "mallory-pw-2", "watcher": "watcher-pw-0"}
	pw := passwdLine(t, "alice", secrets["alice"], "line=1") + passwdLine(t, "mallory", secrets["mallory"], "line=2") +
		passwdLine(t, "watcher", secrets["watcher"], "line=0")
	pwFile = filepath.Join(dir, "passwords")
	if err := os.WriteFile(pwFile, []byte(pw), 0o600); err != nil {
		t.Fatal(err)
	}
	return secrets, pwFile
}

// TestWillsAcrossRestarts: the built binary authorises a delayed will,
// after kill -9 and a restart, for the principal that set it, under the
// policy in force, and publishes it once (issue 10, item 1). Before the
// fix a restored will had no owner and went out unchecked, retained, and
// again at every later start.
func TestWillsAcrossRestarts(t *testing.T) {
	t.Parallel()
	data, cfg, files := t.TempDir(), t.TempDir(), t.TempDir()
	secrets, pwFile := willUsers(t, files)
	// A fixed port, so that clients find the broker again after restarts.
	port := fmt.Sprint(testserve.FreePort(t, "127.0.0.1"))
	if err := os.WriteFile(filepath.Join(cfg, "security.yaml"), []byte(fmt.Sprintf(willPolicy, pwFile, port)), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() (*edgeport, *mosquitto) {
		e := startEdgeportAt(t, data, "--config", cfg)
		m := newMosquitto(t, e)
		m.port = port
		return e, m
	}
	as := func(user string) []string { return []string{"-V", "5", "-u", user, "-P", secrets[user]} }

	e, m := start()
	// Alice's will is hers to publish; Mallory's claims Alice's topic.
	// Both have a delay, persistent sessions, and lose their connection.
	willer := func(user, topic, payload string) *proc {
		return m.subscribe(append(as(user), "-i", user+"-dev", "-c", "-x", "3600", "-t", "wills/"+user+"/in",
			"--will-topic", topic, "--will-payload", payload, "--will-qos", "1", "--will-retain",
			"-D", "will", "will-delay-interval", "2")...)
	}
	for _, p := range []*proc{willer("alice", "wills/1/alice", "alice gone"), willer("mallory", "wills/1/alice", "forged")} {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	e.kill() // the broker crashes before the delays end

	// After the restart the delays end: Alice's will goes out, retained;
	// Mallory's is refused under the policy for Mallory's principal.
	e, m = start()
	watch := m.subscribe(append(as("watcher"), "-t", "wills/#", "-q", "1")...)
	watch.waitLine(t, lineWait, "Alice's will", func(l string) bool { return strings.HasSuffix(l, "|alice gone") })
	if _, err := e.logs.waitFor(lineWait, func(l string) bool {
		return strings.Contains(l, "will not authorized: dropped") && strings.Contains(l, "mallory-dev")
	}); err != nil {
		t.Fatalf("Mallory's will was not refused: %v", err)
	}
	m.publish(append(as("watcher"), "-q", "1", "-t", "wills/0/marker", "-m", "marker")...)
	watch.waitLine(t, lineWait, "the marker", func(l string) bool { return strings.HasSuffix(l, "|marker") })
	if all, _, _ := watch.out.snapshot(); strings.Contains(strings.Join(all, "\n"), "forged") {
		t.Fatalf("Mallory's will was published:\n%s", strings.Join(all, "\n"))
	}

	// A will that went out is not published again: clear the retained
	// copy, restart, and a new subscriber gets the marker first.
	m.publish(append(as("alice"), "-q", "1", "-r", "-n", "-t", "wills/1/alice")...)
	_ = e.stop()
	<-e.done
	_, m = start()
	watch = m.subscribe(append(as("watcher"), "-t", "wills/#", "-q", "1")...)
	m.publish(append(as("watcher"), "-q", "1", "-t", "wills/0/marker", "-m", "second marker")...)
	first := watch.waitLine(t, lineWait, "a message", func(l string) bool { return strings.HasPrefix(l, msgPrefix) })
	if !strings.HasSuffix(first, "|second marker") {
		t.Fatalf("first message after the second restart %q, want the marker (a will was published again)", first)
	}
}

// TestResumeAnotherUsersSession: a client connecting with another user's
// persistent client identifier, after a restart, gets a new empty session
// and none of the owner's queued messages (issue 10, item 2), MQTT 5 and
// 3.1.1, with mosquitto clients against the built binary.
func TestResumeAnotherUsersSession(t *testing.T) {
	t.Parallel()
	data, cfg, files := t.TempDir(), t.TempDir(), t.TempDir()
	secrets, pwFile := willUsers(t, files)
	if err := os.WriteFile(filepath.Join(cfg, "security.yaml"), []byte(fmt.Sprintf(willPolicy, pwFile, "0")), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() (*edgeport, *mosquitto) {
		e := startEdgeportAt(t, data, "--config", cfg)
		m := newMosquitto(t, e)
		m.port = e.port(t, "secure:0")
		return e, m
	}
	for _, v := range []string{"5", "mqttv311"} {
		as := func(user string) []string { return []string{"-V", v, "-u", user, "-P", secrets[user]} }
		id := "shared-" + v
		e, m := start()
		alice := m.subscribe(append(as("alice"), "-i", id, "-c", "-x", "3600", "-q", "1", "-t", "wills/1/"+id)...)
		_ = alice.cmd.Process.Kill()
		<-alice.done
		m.publish(append(as("alice"), "-q", "1", "-t", "wills/1/"+id, "-m", "secret")...)
		_ = e.stop()
		<-e.done

		e, m = start()
		mallory := m.subscribe(append(as("mallory"), "-i", id, "-c", "-x", "3600", "-q", "1", "-t", "wills/2/marker")...)
		m.publish(append(as("mallory"), "-q", "1", "-t", "wills/2/marker", "-m", "marker")...)
		first := mallory.waitLine(t, lineWait, "a message", func(l string) bool { return strings.HasPrefix(l, msgPrefix) })
		if !strings.HasSuffix(first, "|marker") {
			t.Fatalf("MQTT %s: the intruder's first message %q, want its own marker (alice's queue leaked)", v, first)
		}
		_ = e.stop()
		<-e.done
	}
}
