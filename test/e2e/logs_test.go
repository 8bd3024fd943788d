package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// startWithLogFormat runs edgeport serve with debug logs in format and
// returns its log, the MQTT address of each listener by name, and a
// function that stops it (also called at cleanup). startEdgeport reads
// text logs only; this one understands both formats.
func startWithLogFormat(t *testing.T, format, dataDir string, extraArgs ...string) (*lines, map[string]string, func()) {
	t.Helper()
	cmd := exec.Command(edgeportBin, append([]string{"serve", "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off", "--http-addr", "127.0.0.1:0",
		"--data-dir", dataDir, "--log-level", "debug", "--log-format", format, "--selftest-interval", "100ms"}, extraArgs...)...)
	logs := newLines()
	cmd.Stderr = logs
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		logs.finish()
		close(done)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
				if waitErr != nil {
					t.Errorf("edgeport exit: %v", waitErr)
				}
			case <-time.After(stopTimeout):
				_ = cmd.Process.Kill()
				<-done
				t.Errorf("edgeport did not stop within %v", stopTimeout)
			}
		})
	}
	t.Cleanup(stop)
	addrs := map[string]string{}
	_, err := logs.waitFor(15*time.Second, func(l string) bool {
		if format == "json" {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) != nil {
				t.Errorf("not a JSON log line: %q", l)
				return false
			}
			if name, _ := rec["listener"].(string); rec["msg"] == "listening" && addrs[name] == "" {
				addrs[name], _ = rec["addr"].(string)
			}
			return rec["msg"] == "edgeport started"
		}
		if m := listeningRE.FindStringSubmatch(l); m != nil && addrs[m[1]] == "" {
			addrs[m[1]] = m[2]
		}
		return strings.Contains(l, `msg="edgeport started"`)
	})
	if err != nil || addrs["mqtt"] == "" {
		t.Fatalf("edgeport did not start (addresses %v): %v\n%s", addrs, err, logs)
	}
	return logs, addrs, stop
}

// TestNoSecretsInLogs connects with passwords and authentication data
// through every CONNECT path that logs at debug level (accepted, refused,
// malformed) and requires that none of the secrets reaches the log, in text
// and in JSON.
func TestNoSecretsInLogs(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			var b [8]byte
			_, _ = rand.Read(b[:])
			secret := "pw-" + hex.EncodeToString(b[:])
			dir, cfg := t.TempDir(), t.TempDir()
			// A port with password authentication: refusals there log too.
			authn := "apiVersion: edgeport.io/v1\nkind: BrokerAuthentication\nmetadata: {name: users}\nspec:\n" +
				"  authenticationMethods:\n  - method: UsernamePassword\n    usernamePasswordSettings:\n      passwordFile: " +
				filepath.Join(cfg, "passwords") + "\n---\napiVersion: edgeport.io/v1\nkind: BrokerListener\nmetadata: {name: secure}\n" +
				"spec:\n  ports:\n  - {port: 0, authenticationRef: users}\n"
			if err := os.WriteFile(filepath.Join(cfg, "security.yaml"), []byte(authn), 0o600); err != nil {
				t.Fatal(err)
			}
			pwLine, _, code := cli(t, "right-"+secret+"\n", nil, "passwd", "alice")
			if code != 0 {
				t.Fatalf("edgeport passwd: exit %d", code)
			}
			if err := os.WriteFile(filepath.Join(cfg, "passwords"), []byte(pwLine), 0o600); err != nil {
				t.Fatal(err)
			}
			logs, addrs, stop := startWithLogFormat(t, format, dir, "--config", cfg)
			addr := addrs["mqtt"]

			withPassword := func(id string) *packet.Connect {
				return &packet.Connect{ClientID: id, CleanStart: true, HasUsername: true, Username: "alice",
					HasPassword: true, Password: []byte(secret)}
			}
			// Accepted (anonymous: the password is not checked yet, and must
			// not be logged either way).
			c, ack := dialMQTT(t, addr, withPassword("secret-ok"))
			if ack.ReasonCode != packet.Success {
				t.Fatalf("CONNACK %v", ack.ReasonCode)
			}
			c.subscribe(1, "s/#", 1)
			if err := c.publish(&packet.Publish{QoS: 1, PacketID: 2, Topic: "s/1", Payload: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			c.disconnect()
			// Refused: a will topic clients may not use.
			refused := withPassword("secret-will")
			refused.Will = &packet.Will{Topic: "$nope", Payload: []byte("w")}
			if _, ack := dialMQTT(t, addr, refused); ack.ReasonCode != packet.TopicNameInvalid {
				t.Fatalf("will refusal: CONNACK %v", ack.ReasonCode)
			}
			// Refused: an unsupported enhanced authentication method whose
			// data is secret too.
			enhanced := withPassword("secret-auth")
			enhanced.Properties.AuthMethod = "SCRAM-SHA-256"
			enhanced.Properties.AuthData = []byte(secret)
			enhanced.Properties.Set(packet.PropAuthMethod)
			enhanced.Properties.Set(packet.PropAuthData)
			if _, ack := dialMQTT(t, addr, enhanced); ack.ReasonCode != packet.BadAuthenticationMethod {
				t.Fatalf("auth refusal: CONNACK %v", ack.ReasonCode)
			}
			// Malformed: MQTT 3.1.1 forbids a password without a user name.
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			malformed := &packet.Connect{ClientID: "secret-bad", CleanStart: true, HasPassword: true, Password: []byte(secret)}
			_, _ = conn.Write(malformed.Append(nil, packet.V311))
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = conn.Read(make([]byte, 16)) // closed or refused
			conn.Close()

			// On the password port: a wrong password, the right one (whose
			// hash is in the log's reach only through the file), and a
			// K8S-SAT token no method serves.
			secure := addrs["secure:0"]
			if _, ack := dialMQTT(t, secure, withPassword("secret-wrong")); ack.ReasonCode != packet.BadUserNameOrPassword {
				t.Fatalf("wrong password: CONNACK %v", ack.ReasonCode)
			}
			right := withPassword("secret-right")
			right.Password = []byte("right-" + secret)
			if c, ack := dialMQTT(t, secure, right); ack.ReasonCode != packet.Success {
				t.Fatalf("right password: CONNACK %v", ack.ReasonCode)
			} else {
				c.disconnect()
			}
			sat := withPassword("secret-sat")
			sat.Properties.AuthMethod = "K8S-SAT"
			sat.Properties.AuthData = []byte("token-" + secret)
			sat.Properties.Set(packet.PropAuthMethod)
			sat.Properties.Set(packet.PropAuthData)
			if _, ack := dialMQTT(t, secure, sat); ack.ReasonCode != packet.BadAuthenticationMethod {
				t.Fatalf("K8S-SAT without a method: CONNACK %v", ack.ReasonCode)
			}

			// The debug log did record these connections, so the check below
			// is not vacuous.
			for _, want := range []string{"secret-ok", "secret-will", "secret-auth", "secret-wrong", "secret-right", "secret-sat"} {
				if _, err := logs.waitFor(5*time.Second, func(l string) bool { return strings.Contains(l, want) }); err != nil {
					t.Fatalf("no log line mentions client %s: %v\n%s", want, err, logs)
				}
			}
			stop() // shutdown logs are checked too
			secrets := []string{secret}
			// A token file in the data directory (the API's bearer token)
			// is a secret too.
			_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() && strings.Contains(strings.ToLower(d.Name()), "token") {
					if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= 8 {
						secrets = append(secrets, strings.TrimSpace(string(b)))
					}
				}
				return nil
			})
			for _, s := range secrets {
				if strings.Contains(logs.String(), s) {
					t.Errorf("a secret (%.6s…) reached the %s log:\n%s", s, format, logs)
				}
			}
			if format == "json" {
				for _, l := range strings.Split(logs.String(), "\n") {
					if l != "" && !json.Valid([]byte(l)) {
						t.Errorf("not a JSON log line: %q", l)
					}
				}
			}
		})
	}
}
