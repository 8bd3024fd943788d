package app

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/api"
	"github.com/edgeport/edgeport/internal/pki"
	"github.com/edgeport/edgeport/internal/portal"
)

// --http-tls-auto serves the HTTP address (API and portal) over HTTPS with
// a certificate of the data directory's CA; the portal's session cookie
// is then Secure.
func TestHTTPTLSAuto(t *testing.T) {
	dir := t.TempDir()
	a := startApp(t, Config{HTTPAddr: "127.0.0.1:0", DataDir: dir, HTTPTLSAuto: true})
	ca, err := pki.LoadCA(pki.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := "https://" + a.Addrs()["http"].String()

	resp, err := hc.Get(base + api.Prefix)
	if err != nil {
		t.Fatalf("API over HTTPS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("API over HTTPS: %d", resp.StatusCode)
	}
	tok, err := api.ReadToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/login", strings.NewReader(url.Values{"password": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	var secure bool
	for _, c := range resp.Cookies() {
		secure = secure || c.Name == portal.CookieName && c.Secure && c.HttpOnly
	}
	if resp.StatusCode != http.StatusSeeOther || !secure || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("portal login over HTTPS: %d, cookies %v, HSTS %q", resp.StatusCode, resp.Cookies(), resp.Header.Get("Strict-Transport-Security"))
	}

	// Plain HTTP on the port gets no answer it could mistake for the API.
	plain := &http.Client{}
	if resp, err := plain.Get("http://" + a.Addrs()["http"].String() + api.Prefix); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("the API answered plain HTTP on the TLS port")
		}
	}
	plain.CloseIdleConnections()
}
