package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReservedClientIDs: the built binary refuses network clients that
// claim an internal client's identifier (issue 10, item 3), with a real
// MQTT 5 and 3.1.1 client, and the state store keeps answering.
func TestReservedClientIDs(t *testing.T) {
	t.Parallel()
	e := startEdgeport(t)
	host, port := "127.0.0.1", e.port(t, "mqtt")
	for _, v := range []struct{ flag, want string }{
		{"mqttv5", "client identifier not valid"},
		{"mqttv311", "identifier rejected"},
	} {
		out, code := mosq(t, "mosquitto_pub", "-h", host, "-p", port, "-V", v.flag,
			"-i", "$edgeport/statestore", "-t", "x", "-m", "steal")
		if code == 0 || !strings.Contains(strings.ToLower(out), v.want) {
			t.Fatalf("%s with the state store's identifier: exit %d, %q; want refused (%s)", v.flag, code, out, v.want)
		}
	}
	// The state store's own session is untouched: it still answers.
	ss := dialStateStore(t, e.addr(t, "mqtt"), "reserved-check")
	if got, _ := ss.call(nil, "SET", "k", "v"); got != "+OK\r\n" {
		t.Fatalf("SET answered %q", got)
	}
}

// TestStatuszAccess: /statusz follows the REST API's token rules and
// reading it writes nothing in the data directory (issue 10, item 7).
func TestStatuszAccess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := startEdgeport(t, "--data-dir", dir)
	url := "http://" + e.addr(t, "http") + "/statusz"
	get := func(host, token string) int {
		t.Helper()
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(dir, old, old); err != nil {
		t.Fatal(err)
	}
	if code := get("", ""); code != http.StatusOK {
		t.Fatalf("loopback without a token: %d", code)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.ModTime().Equal(old) {
		t.Fatalf("GET /statusz wrote in the data directory (modified %v, err %v)", fi.ModTime(), err)
	}
	// A page that rebinds its own name to 127.0.0.1 is refused, as by the API.
	if code := get("evil.example:8080", ""); code != http.StatusForbidden {
		t.Fatalf("rebinding host without a token: %d", code)
	}
	tok, err := os.ReadFile(filepath.Join(dir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))

	// With the token required (as on any address beyond loopback).
	dir2 := t.TempDir()
	e2 := startEdgeport(t, "--data-dir", dir2, "--api-require-token")
	url = "http://" + e2.addr(t, "http") + "/statusz"
	if code := get("", ""); code != http.StatusUnauthorized {
		t.Fatalf("token required, none given: %d", code)
	}
	if code := get("", token); code != http.StatusUnauthorized {
		t.Fatalf("token required, another instance's given: %d", code)
	}
	tok2, err := os.ReadFile(filepath.Join(dir2, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	if code := get("", strings.TrimSpace(string(tok2))); code != http.StatusOK {
		t.Fatalf("token required and given: %d", code)
	}
}

// isCertificate reports whether path is a certificate (public, unlike
// the keys and data around it).
func isCertificate(path string) bool {
	return strings.HasSuffix(path, ".crt") || strings.HasSuffix(path, ".der")
}

// TestDataPrivate: the built binary keeps its data private (issue 10,
// item 6): the store is 0700 with 0600 files whatever the umask, nothing
// under the data directory but certificates is readable by others, and a
// data directory open to other users is reported at start.
func TestDataPrivate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e := startEdgeport(t, "--data-dir", dir)
	if _, err := e.logs.waitFor(5*time.Second, func(l string) bool {
		return strings.Contains(l, "data directory is accessible to other users") && strings.Contains(l, "mode=0755")
	}); err != nil {
		t.Fatalf("no warning about the 0755 data directory: %v", err)
	}
	if out, code := mosq(t, "mosquitto_pub", "-h", "127.0.0.1", "-p", e.port(t, "mqtt"), "-q", "1", "-r",
		"-t", "secret/retained", "-m", "confidential"); code != 0 {
		t.Fatalf("mosquitto_pub: %d %s", code, out)
	}
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	files := 0
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		mode := fi.Mode().Perm()
		inStore := strings.HasPrefix(path, filepath.Join(dir, "store"))
		switch {
		case d.IsDir() && inStore && mode != 0o700:
			t.Errorf("%s: mode %#o, want 0700", path, mode)
		case !d.IsDir() && inStore && mode != 0o600:
			t.Errorf("%s: mode %#o, want 0600", path, mode)
		case !d.IsDir() && mode&0o077 != 0 && !isCertificate(path):
			t.Errorf("%s: mode %#o is open to other users", path, mode)
		}
		if !d.IsDir() {
			files++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 4 {
		t.Fatalf("only %d files under %s", files, dir)
	}
}
