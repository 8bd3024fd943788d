package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testpki"
)

// webhookServer serves Azure IoT Operations' custom authentication API
// 0.5.0 the way the sample server does: users starting with deny are
// refused with reason 135, others pass with attributes; expire* users get
// an expiry.
type webhookServer struct {
	srv  *httptest.Server
	down atomic.Bool // answers 503
	mu   sync.Mutex
	reqs []map[string]any
	hdr  http.Header

	release   chan struct{} // closed by close: slow answers may go
	closeOnce sync.Once
}

func newWebhookServer(t *testing.T) *webhookServer {
	t.Helper()
	ws := &webhookServer{release: make(chan struct{})}
	ws.srv = httptest.NewTLSServer(http.HandlerFunc(ws.handle))
	t.Cleanup(ws.close)
	return ws
}

// close lets slow answers go and stops the server (whose Close waits for
// every handler).
func (ws *webhookServer) close() {
	ws.closeOnce.Do(func() { close(ws.release) })
	ws.srv.Close()
}

func (ws *webhookServer) handle(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Query().Get("api-version") != WebhookAPIVersion {
		w.WriteHeader(http.StatusUnprocessableEntity)
		_ = json.NewEncoder(w).Encode(map[string]any{"supportedVersions": []string{"0.5.0"}})
		return
	}
	var req map[string]any
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ws.mu.Lock()
	ws.reqs = append(ws.reqs, req)
	ws.hdr = r.Header.Clone()
	ws.mu.Unlock()
	if ws.down.Load() {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
		return
	}
	user, _ := req["username"].(string)
	pass, _ := req["password"].(string)
	if m, _ := req["authenticationMethod"].(string); m != "" {
		// The test's own enhanced method: the data is the user name.
		data, _ := base64.StdEncoding.DecodeString(req["authenticationData"].(string))
		user = string(data)
		pass = base64.StdEncoding.EncodeToString([]byte("pw"))
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case strings.HasPrefix(user, "deny"):
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string]any{"reason": 135, "message": "denied by policy"})
	case strings.HasPrefix(user, "ban"):
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string]any{"reason": 0x8A})
	case strings.HasPrefix(user, "odd"):
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string]any{"reason": 3}) // not a CONNACK error code
	case strings.HasPrefix(user, "slow"):
		// Answers only after the caller gave up: when the server stops (or
		// at the test's bound), so that the caller's timeout is what ends
		// the call however slow the machine is.
		select {
		case <-ws.release:
		case <-time.After(wait):
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"attributes": map[string]any{}})
	case pass != base64.StdEncoding.EncodeToString([]byte("pw")):
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string]any{"reason": 134})
	default:
		resp := map[string]any{"attributes": map[string]any{"group": "g1", "floor": 3}}
		if strings.HasPrefix(user, "expire") {
			resp["expiry"] = time.Now().Add(90 * time.Minute).UTC().Format(time.RFC3339)
		}
		_ = json.NewEncoder(w).Encode(resp)
	}
}

func (ws *webhookServer) last() map[string]any {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.reqs[len(ws.reqs)-1]
}

func testWebhook(t *testing.T, ws *webhookServer, logs io.Writer, timeout time.Duration) *Webhook {
	t.Helper()
	tc := &tls.Config{RootCAs: x509.NewCertPool()}
	tc.RootCAs.AddCert(ws.srv.Certificate())
	w, err := NewWebhook(WebhookOptions{Endpoint: ws.srv.URL + "/auth", Headers: map[string]string{"X-Site": "berlin"},
		TLS: tc, Timeout: timeout, Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

func TestWebhook(t *testing.T) {
	ws := newWebhookServer(t)
	var logs bytes.Buffer
	// The timeout only bounds a failing test: every answer below comes
	// at once, but a TLS handshake under a loaded -race run was seen to
	// take longer than the 250 ms this test once allowed every call.
	w := testWebhook(t, ws, &logs, wait)
	ctx := context.Background()
	p, err := w.Verify(ctx, connectInfo("alice", "pw"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Username != "alice" || p.Attributes["group"] != "g1" || p.Attributes["floor"] != "3" || !p.Expiry.IsZero() {
		t.Fatalf("principal %+v", p)
	}
	req := ws.last()
	if req["type"] != "connect" || req["username"] != "alice" || req["password"] != base64.StdEncoding.EncodeToString([]byte("pw")) {
		t.Fatalf("request %v", req)
	}
	if ws.hdr.Get("X-Site") != "berlin" || ws.hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("headers %v", ws.hdr)
	}
	p, err = w.Verify(ctx, connectInfo("expire-bob", "pw"))
	if err != nil || p.Expiry.IsZero() || time.Until(p.Expiry) > 91*time.Minute {
		t.Fatalf("expiry: %+v %v", p, err)
	}
	for user, code := range map[string]packet.ReasonCode{
		"deny-carol": packet.NotAuthorized, "ban-dave": packet.Banned, "odd-erin": packet.NotAuthorized,
	} {
		_, err := w.Verify(ctx, connectInfo(user, "pw"))
		wantCode(t, err, code)
	}
	_, err = w.Verify(ctx, connectInfo("frank", "wrong"))
	wantCode(t, err, packet.BadUserNameOrPassword)

	// Client certificates travel as PEM.
	ca := newTestCA(t, "Webhook CA")
	leaf := ca.issue(t, "dev-7", time.Hour, ca.Cert.Cert)
	ci := connectInfo("alice", "pw")
	ci.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
	if _, err := w.Verify(ctx, ci); err != nil {
		t.Fatal(err)
	}
	if certs, _ := ws.last()["certs"].(string); !strings.Contains(certs, "BEGIN CERTIFICATE") {
		t.Fatalf("certs %q", certs)
	}
	// Re-authentication sends an auth request with the enhanced fields.
	re := &broker.ConnectInfo{ClientID: "c", AuthMethod: "CUSTOM-TOKEN", AuthData: []byte("alice"), Reauth: true}
	if _, err := w.Verify(ctx, re); err != nil {
		t.Fatal(err)
	}
	if req := ws.last(); req["type"] != "auth" || req["authenticationMethod"] != "CUSTOM-TOKEN" || req["username"] != nil {
		t.Fatalf("auth request %v", req)
	}

	if strings.Contains(logs.String(), "webhook unavailable") {
		t.Fatalf("the webhook answered every call, yet the log says it was unavailable:\n%s", logs.String())
	}

	// Too slow: the timeout makes it unavailable, and the log says so
	// once. The server holds a slow answer until it stops, so the timeout
	// fires whatever the machine's speed.
	var slowLogs bytes.Buffer
	slow := testWebhook(t, ws, &slowLogs, 50*time.Millisecond)
	if _, err := slow.Verify(ctx, connectInfo("slow-sam", "pw")); !errors.Is(err, broker.ErrAuthUnavailable) {
		t.Fatalf("slow webhook: %v", err)
	}
	// Down: unavailable, and the clients' credentials are not in the log.
	ws.close()
	for range 3 {
		if _, err := slow.Verify(ctx, connectInfo("alice", "pw-secret-123")); !errors.Is(err, broker.ErrAuthUnavailable) {
			t.Fatalf("webhook down: %v", err)
		}
	}
	out := slowLogs.String()
	if n := strings.Count(out, "webhook unavailable"); n != 1 {
		t.Fatalf("%d unavailability warnings, want 1:\n%s", n, out)
	}
	if strings.Contains(out, "pw-secret-123") || strings.Contains(out, base64.StdEncoding.EncodeToString([]byte("pw-secret-123"))) {
		t.Fatalf("a password reached the log:\n%s", out)
	}
}

// TestWebhookAPIVersion: a webhook that does not speak 0.5.0 cannot decide.
func TestWebhookAPIVersion(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = w.Write([]byte(`{"supportedVersions":["9.9.9"]}`))
	}))
	t.Cleanup(srv.Close)
	var logs bytes.Buffer
	w, err := NewWebhook(WebhookOptions{Endpoint: srv.URL, Transport: srv.Client().Transport, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Verify(context.Background(), connectInfo("a", "b")); !errors.Is(err, broker.ErrAuthUnavailable) {
		t.Fatalf("422: %v", err)
	}
	if !strings.Contains(logs.String(), "9.9.9") {
		t.Fatalf("the log does not say which versions the webhook speaks:\n%s", logs.String())
	}
}

// testCA issues certificates for tests.
type testCA struct{ *testpki.Cert }

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	return &testCA{testpki.NewCA(t, pkix.Name{CommonName: cn, Organization: []string{"Contoso"}})}
}

// issue signs a client certificate for cn, valid for d.
func (ca *testCA) issue(t *testing.T, cn string, d time.Duration, _ *x509.Certificate) *x509.Certificate {
	t.Helper()
	cert, _ := ca.issueWithKey(t, cn, d)
	return cert
}

func (ca *testCA) issueWithKey(t *testing.T, cn string, d time.Duration) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	c := ca.Issue(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{"Line 1"}}, NotAfter: time.Now().Add(d),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return c.Cert, c.Key
}

func (ca *testCA) writePEM(t *testing.T, path string) {
	t.Helper()
	testpki.WriteFile(t, path, ca.CertPEM())
}

func TestCertificates(t *testing.T) {
	ca := newTestCA(t, "Contoso Root CA")
	dir := filepath.Join(t.TempDir(), "client-ca")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ca.writePEM(t, filepath.Join(dir, "ca.pem"))
	m, err := NewCertificates(dir, []SubjectAttributes{
		{Subject: "CN = Contoso Root CA, O = Contoso", Attributes: map[string]string{"organization": "contoso"}},
		{Subject: "OU=Line 1, CN=smart-fan", Attributes: map[string]string{"building": "17"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	present := func(certs ...*x509.Certificate) *broker.ConnectInfo {
		return &broker.ConnectInfo{ClientID: "c", TLS: &tls.ConnectionState{PeerCertificates: certs}}
	}
	fan := ca.issue(t, "smart-fan", 2*time.Hour, nil)
	p, err := m.Verify(ctx, present(fan))
	if err != nil {
		t.Fatal(err)
	}
	// The leaf matches first: it gets its own attributes, not the root's.
	if p.Username != "smart-fan" || p.Attributes["building"] != "17" || p.Attributes["organization"] != "" {
		t.Fatalf("principal %+v", p)
	}
	if !p.Expiry.Equal(fan.NotAfter) {
		t.Fatalf("expiry %v, want the certificate's %v", p.Expiry, fan.NotAfter)
	}
	lock := ca.issue(t, "smart-lock", time.Hour, nil)
	p, err = m.Verify(ctx, present(lock))
	if err != nil || p.Attributes["organization"] != "contoso" {
		t.Fatalf("root's attributes: %+v %v", p, err)
	}
	stranger := newTestCA(t, "Other CA").issue(t, "smart-fan", time.Hour, nil)
	_, err = m.Verify(ctx, present(stranger))
	wantCode(t, err, packet.NotAuthorized)
	expired := ca.issue(t, "old", -time.Minute, nil)
	_, err = m.Verify(ctx, present(expired))
	wantCode(t, err, packet.NotAuthorized)
	if m.Applies(&broker.ConnectInfo{}) || !m.Applies(present(fan)) {
		t.Error("Applies")
	}
	// An empty CA directory: the method cannot decide, and says why.
	empty, _ := NewCertificates(t.TempDir(), nil)
	if _, err := empty.Verify(ctx, present(fan)); !errors.Is(err, broker.ErrAuthUnavailable) || empty.Status() == nil {
		t.Fatalf("no CAs: %v / %v", err, empty.Status())
	}
}
