package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/pki"
	"github.com/edgeport/edgeport/internal/testwait"
)

const opensslPkg = "openssl (Debian)"

// tlsFixture is what a TLS test prepares on disk for edgeport and its
// clients: test CAs, a secret, a config map of trusted client CAs.
type tlsFixture struct {
	dir      string  // client-side files
	data     string  // edgeport's data directory
	serverCA *pki.CA // signs the Manual port's certificates
	devices  *pki.CA // signs client certificates; trusted by the Required port
}

func (f *tlsFixture) write(t *testing.T, path string, data []byte) string {
	t.Helper()
	if !filepath.IsAbs(path) {
		path = filepath.Join(f.dir, path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	// Renamed into place, as an operator replacing a certificate would.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// pair issues a certificate and writes it as crt and key files.
func (f *tlsFixture) pair(t *testing.T, ca *pki.CA, req pki.Request, crt, key string) (string, string) {
	t.Helper()
	c, err := ca.Issue(req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cp, kp, err := pki.EncodePEM(c)
	if err != nil {
		t.Fatal(err)
	}
	k := f.write(t, key, kp)
	return f.write(t, crt, cp), k
}

func testCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, _, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "pki"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

const tlsListeners = `apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: auto}
spec:
  ports:
  - {port: 0, tls: {mode: Automatic}}
---
apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: certs}
spec:
  ports:
  - {port: 0, tls: {mode: Automatic, clientAuth: {mode: Required}}}
---
apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: manual}
spec:
  ports:
  - {port: 0, tls: {mode: Manual, manual: {secretRef: plant-cert}}}
---
apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: wss}
spec:
  ports:
  - {port: 0, protocol: WebSockets, tls: {mode: Automatic}}
`

// failingProc runs a program that must fail and returns its output.
func failingProc(t *testing.T, name string, args ...string) string {
	t.Helper()
	p := startProc(t, procLimit, "", name, args...)
	select {
	case <-p.done:
	case <-time.After(procLimit):
		t.Fatalf("%s did not exit", name)
	}
	if p.err == nil {
		t.Fatalf("%s %s succeeded, want a failure\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), p.out, p.stderr)
	}
	return p.out.String() + "\n" + p.stderr.String()
}

func TestTLSWithRealPeers(t *testing.T) {
	t.Parallel()
	f := &tlsFixture{dir: t.TempDir(), data: t.TempDir(), serverCA: testCA(t), devices: testCA(t)}
	local := []net.IP{net.IPv4(127, 0, 0, 1)}
	f.pair(t, f.serverCA, pki.Request{CommonName: "first", IPAddresses: local},
		filepath.Join(f.data, "secrets", "plant-cert", "tls.crt"), filepath.Join(f.data, "secrets", "plant-cert", "tls.key"))
	f.write(t, filepath.Join(f.data, "configmaps", "client-ca", "client_ca.pem"), f.devices.CertPEM)
	serverCAFile := f.write(t, "server-ca.pem", f.serverCA.CertPEM)
	strangerCAFile := f.write(t, "stranger-ca.pem", testCA(t).CertPEM)
	devCrt, devKey := f.pair(t, f.devices, pki.Request{CommonName: "press-7", Client: true}, "press-7.crt", "press-7.key")
	cfgDir := t.TempDir()
	f.write(t, filepath.Join(cfgDir, "listeners.yaml"), []byte(tlsListeners))

	e := startEdgeport(t, "--data-dir", f.data, "--config", cfgDir)
	caFile := filepath.Join(f.dir, "edgeport-ca.pem")
	if out, errOut, code := cli(t, "", nil, "ca", "export", "--data-dir", f.data, "-o", caFile); code != 0 {
		t.Fatalf("edgeport ca export: exit %d\n%s%s", code, out, errOut)
	}
	exported, err := os.ReadFile(caFile)
	if err != nil || !strings.HasPrefix(string(exported), "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("exported CA: %q %v", exported, err)
	}

	mosq := func(t *testing.T, listener string) *mosquitto {
		m := newMosquitto(t, e)
		m.port = e.port(t, listener)
		return m
	}

	// The group returns once its parallel tests are done; the metrics are
	// read after them.
	t.Run("peers", func(t *testing.T) {
		t.Run("automatic CA exported to mosquitto", func(t *testing.T) {
			t.Parallel()
			m := mosq(t, "auto:0")
			for _, v := range []string{"mqttv5", "mqttv311"} {
				sub := m.subscribe("--cafile", caFile, "-V", v, "-q", "1", "-t", "tls/auto/"+v, "-C", "1")
				m.publish("--cafile", caFile, "-V", v, "-q", "1", "-t", "tls/auto/"+v, "-m", "over tls")
				if got, want := messages(sub.wait(t, lineWait)), []string{"tls/auto/" + v + "|1|0||over tls"}; !slices.Equal(got, want) {
					t.Fatalf("got %q, want %q", got, want)
				}
			}
			out := failingProc(t, m.pub, "-h", m.host, "-p", m.port, "--cafile", strangerCAFile, "-t", "tls/auto/x", "-m", "no")
			if !strings.Contains(out, "TLS error") {
				t.Fatalf("mosquitto_pub trusting another CA failed, but not in TLS: %s", out)
			}
		})

		t.Run("client certificate required", func(t *testing.T) {
			t.Parallel()
			m := mosq(t, "certs:0")
			with := []string{"--cafile", caFile, "--cert", devCrt, "--key", devKey}
			sub := m.subscribe(append(with, "-q", "1", "-t", "tls/certs", "-C", "1")...)
			m.publish(append(with, "-q", "1", "-t", "tls/certs", "-m", "from press-7")...)
			if got, want := messages(sub.wait(t, lineWait)), []string{"tls/certs|1|0||from press-7"}; !slices.Equal(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
			failingProc(t, m.pub, "-h", m.host, "-p", m.port, "--cafile", caFile, "-q", "1", "-t", "tls/certs", "-m", "no cert")
			// A certificate from a CA the port does not trust.
			otherCrt, otherKey := f.pair(t, f.serverCA, pki.Request{CommonName: "press-8", Client: true}, "press-8.crt", "press-8.key")
			failingProc(t, m.pub, "-h", m.host, "-p", m.port, "--cafile", caFile, "--cert", otherCrt, "--key", otherKey,
				"-q", "1", "-t", "tls/certs", "-m", "wrong issuer")
		})

		t.Run("openssl protocol versions", func(t *testing.T) {
			t.Parallel()
			openssl := requirePeer(t, "openssl", opensslPkg)
			addr := e.addr(t, "auto:0")
			for _, v := range []string{"-tls1_2", "-tls1_3"} {
				p := startProc(t, procLimit, "", openssl, "s_client", "-connect", addr, v, "-CAfile", caFile, "-verify_return_error", "-brief")
				p.wait(t, procLimit)
				if log := p.stderr.String(); !strings.Contains(log, "Protocol version: TLSv1."+v[len(v)-1:]) {
					t.Fatalf("openssl s_client %s: %s", v, log)
				}
			}
			// The client is allowed TLS 1.1 (Debian's default security level
			// forbids it client-side); the refusal must be the server's.
			for _, v := range []string{"-tls1_1", "-tls1"} {
				out := failingProc(t, openssl, "s_client", "-connect", addr, v, "-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile", caFile)
				if !strings.Contains(out, "alert protocol version") {
					t.Fatalf("openssl s_client %s failed without the server's protocol_version alert:\n%s", v, out)
				}
			}
		})

		t.Run("certificate file replaced while a client stays", func(t *testing.T) {
			t.Parallel()
			m := mosq(t, "manual:0")
			held := m.subscribe("--cafile", serverCAFile, "-q", "1", "-t", "tls/manual", "-C", "1")
			addr := e.addr(t, "manual:0")
			served := func() string {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: lineWait}, "tcp", addr, &tls.Config{RootCAs: pool(f.serverCA.Cert)})
				if err != nil {
					t.Fatalf("TLS dial: %v", err)
				}
				defer c.Close()
				return c.ConnectionState().PeerCertificates[0].Subject.CommonName
			}
			if cn := served(); cn != "first" {
				t.Fatalf("served %q before the replacement", cn)
			}
			f.pair(t, f.serverCA, pki.Request{CommonName: "second", IPAddresses: local},
				filepath.Join(f.data, "secrets", "plant-cert", "tls.crt"), filepath.Join(f.data, "secrets", "plant-cert", "tls.key"))
			if !testwait.Within(lineWait, func() bool { return served() == "second" }) {
				t.Fatal("new handshakes still get the old certificate")
			}
			m.publish("--cafile", serverCAFile, "-q", "1", "-t", "tls/manual", "-m", "after the swap")
			if got, want := messages(held.wait(t, lineWait)), []string{"tls/manual|1|0||after the swap"}; !slices.Equal(got, want) {
				t.Fatalf("the client connected before the swap got %q, want %q", got, want)
			}
		})

		t.Run("wss with MQTT.js", func(t *testing.T) {
			t.Parallel()
			dir := nodeDir(t)
			const count = 6
			cfg, err := json.Marshal(map[string]any{
				"url": "wss://" + e.addr(t, "wss:0") + "/mqtt", "ca": caFile, "protocolVersion": 5,
				"prefix": "js-wss", "count": count, "bigSize": 100 << 10,
			})
			if err != nil {
				t.Fatal(err)
			}
			out := runProc(t, 30*time.Second, dir, "node", "roundtrip.js", string(cfg))
			var got jsResult
			if len(out) != 1 || json.Unmarshal([]byte(out[0]), &got) != nil {
				t.Fatalf("MQTT.js output %q", out)
			}
			if len(got.Received) != count+1 || got.BigSHA256 != sha256Hex(bigPayload(100<<10)) {
				t.Fatalf("MQTT.js over WSS received %d messages (big %s), want %d", len(got.Received), got.BigSHA256, count+1)
			}
			// Without the CA the client refuses the server.
			cfg, _ = json.Marshal(map[string]any{"url": "wss://" + e.addr(t, "wss:0") + "/mqtt", "protocolVersion": 5, "prefix": "js-wss-no-ca", "count": 1})
			failingProc(t, "node", filepath.Join(dir, "roundtrip.js"), string(cfg))
		})

	})

	_, body := httpGet(t, "http://"+e.addr(t, "http")+"/metrics")
	if !strings.Contains(body, `edgeport_broker_connections_rejected_total{listener="certs:0",reason="tls_handshake"}`) {
		t.Errorf("refused handshakes of certs:0 are not in /metrics")
	}
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
