package portal

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgeport/edgeport/internal/api"
	"github.com/edgeport/edgeport/internal/auth"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testToken = "0123456789abcdef0123456789abcdef"

// newPortal serves a portal over a resource store and the real API, with
// no broker (the pages that need one say so).
func newPortal(t *testing.T, require bool, tlsOn bool) (*Portal, *httptest.Server, *config.Store) {
	t.Helper()
	store := config.NewStore(config.Builtin(), "", nil)
	p, err := New(Options{
		Token: testToken, RequireToken: require,
		API:       api.New(store, api.Options{Token: testToken, RequireToken: require}, nil),
		Resources: store,
		Status:    func() telemetry.Status { return telemetry.Status{Version: "test"} },
		Logs:      NewLogRing(10, slog.LevelInfo),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var srv *httptest.Server
	if tlsOn {
		srv = httptest.NewTLSServer(p)
	} else {
		srv = httptest.NewServer(p)
	}
	t.Cleanup(func() {
		// The portal first: its streams end, so the server's Close does
		// not wait for them.
		_ = p.Stop(context.Background())
		srv.Close()
	})
	return p, srv, store
}

// browserClient keeps cookies and does not follow redirects.
func browserClient(t *testing.T, srv *httptest.Server) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	return &http.Client{Transport: srv.Client().Transport, Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func logIn(t *testing.T, c *http.Client, srv *httptest.Server, user, secret string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/login", strings.NewReader(url.Values{"username": {user}, "password": {secret}, "next": {"/topics"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", srv.URL)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// get GETs url, reads and closes the body.
func get(t *testing.T, c *http.Client, url string) *http.Response {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// csrfOf reads the CSRF token a page carries.
func csrfOf(t *testing.T, c *http.Client, srv *httptest.Server) string {
	t.Helper()
	resp, err := c.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_, rest, ok := strings.Cut(string(body), `<meta name="csrf-token" content="`)
	tok, _, _ := strings.Cut(rest, `"`)
	if !ok || len(tok) != 64 {
		t.Fatalf("no CSRF token in the page (status %d)", resp.StatusCode)
	}
	return tok
}

func TestLoginWithToken(t *testing.T) {
	_, srv, _ := newPortal(t, false, false)
	c := browserClient(t, srv)

	resp := get(t, c, srv.URL+"/clients")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=/clients" {
		t.Fatalf("page without login: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp = get(t, c, srv.URL+"/ui/clients")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("data without login: %d", resp.StatusCode)
	}

	if resp := logIn(t, c, srv, "", "wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", resp.StatusCode)
	}
	resp = logIn(t, c, srv, "", testToken)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/topics" {
		t.Fatalf("login: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == CookieName {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Secure || cookie.Path != "/" {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, not Secure over plain HTTP", cookie)
	}
	resp = get(t, c, srv.URL+"/ui/clients")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("data after login: %d", resp.StatusCode)
	}

	// Logging out ends the session on the server, not only in the browser.
	tok := csrfOf(t, c, srv)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/logout", strings.NewReader("csrf="+tok))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	stale := browserClient(t, srv)
	u, _ := url.Parse(srv.URL)
	stale.Jar.SetCookies(u, []*http.Cookie{{Name: CookieName, Value: cookie.Value}})
	if resp := get(t, stale, srv.URL+"/ui/clients"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the session outlived logout: %d", resp.StatusCode)
	}
}

func TestSecureCookieOverTLS(t *testing.T) {
	_, srv, _ := newPortal(t, true, true)
	c := browserClient(t, srv)
	resp := logIn(t, c, srv, "", testToken)
	var ok bool
	for _, ck := range resp.Cookies() {
		ok = ok || ck.Name == CookieName && ck.Secure && ck.HttpOnly && ck.SameSite == http.SameSiteStrictMode
	}
	if resp.StatusCode != http.StatusSeeOther || !ok {
		t.Fatalf("login over TLS: %d, cookies %v: want a Secure cookie", resp.StatusCode, resp.Cookies())
	}
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatal("no HSTS over TLS")
	}
}

func TestSecurityHeaders(t *testing.T) {
	_, srv, _ := newPortal(t, false, false)
	for _, path := range []string{"/login", "/", "/static/app.js", "/ui/overview"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %s", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s: CSP %q allows inline code", path, csp)
		}
		if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: X-Frame-Options %q, X-Content-Type-Options %q", path, resp.Header.Get("X-Frame-Options"), resp.Header.Get("X-Content-Type-Options"))
		}
	}
}

// The pages contain no inline script or style: the CSP would block them.
func TestNoInlineCode(t *testing.T) {
	entries, err := webFS.ReadDir("web/templates")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, _ := webFS.ReadFile("web/templates/" + e.Name())
		s := string(b)
		if strings.Contains(s, "<style") || strings.Contains(s, " style=") || strings.Contains(s, " on") && strings.Contains(s, `onclick=`) ||
			strings.Contains(s, "<script>") || strings.Contains(s, "javascript:") {
			t.Errorf("%s has inline script or style", e.Name())
		}
	}
}

// On a loopback address, as for the API, only requests naming a loopback
// host are served: a page that rebinds its own name to 127.0.0.1 gets 403.
func TestDNSRebindingRefused(t *testing.T) {
	_, srv, _ := newPortal(t, false, false)
	for host, want := range map[string]int{"evil.example:80": http.StatusForbidden, "localhost:1": http.StatusOK, "127.0.0.1": http.StatusOK} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/login", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
	// Beyond loopback the token is required to log in anyway, and any
	// host name the operator uses is served.
	_, wide, _ := newPortal(t, true, false)
	req, _ := http.NewRequest(http.MethodGet, wide.URL+"/login", nil)
	req.Host = "edge-1.plant.example"
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("named host beyond loopback: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestCSRFRequiredOnWrites(t *testing.T) {
	_, srv, _ := newPortal(t, false, false)
	c := browserClient(t, srv)
	logIn(t, c, srv, "", testToken)
	tok := csrfOf(t, c, srv)
	body := `{"apiVersion":"edgeport.io/v1","kind":"Broker","metadata":{"name":"default"},"spec":{}}`
	put := func(csrf, origin string) int {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+"/ui/api/v1/brokers/default", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if csrf != "" {
			req.Header.Set(CSRFHeader, csrf)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put("", srv.URL); code != http.StatusForbidden {
		t.Errorf("write without CSRF token: %d", code)
	}
	if code := put(strings.Repeat("0", 64), srv.URL); code != http.StatusForbidden {
		t.Errorf("write with a wrong CSRF token: %d", code)
	}
	if code := put(tok, "http://evil.example"); code != http.StatusForbidden {
		t.Errorf("write from another origin: %d", code)
	}
	if code := put(tok, srv.URL); code != http.StatusCreated {
		t.Errorf("write with the token: %d", code)
	}
	// Logging in from another site is refused too (login CSRF).
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/login", strings.NewReader("password="+testToken))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	resp, err := browserClient(t, srv).Do(req)
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site login: %v %v", resp, err)
	}
	resp.Body.Close()
}

// Applying through the portal gives the API's validation errors, field
// paths included.
func TestApplyErrorsAreTheAPIs(t *testing.T) {
	_, srv, _ := newPortal(t, false, false)
	c := browserClient(t, srv)
	logIn(t, c, srv, "", testToken)
	tok := csrfOf(t, c, srv)
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/ui/api/v1/brokerlisteners/bad",
		strings.NewReader("apiVersion: edgeport.io/v1\nkind: BrokerListener\nmetadata:\n  name: bad\nspec:\n  ports:\n  - port: 70000\n"))
	req.Header.Set("Content-Type", "application/yaml")
	req.Header.Set(CSRFHeader, tok)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusUnprocessableEntity || len(e.Details) == 0 || !strings.Contains(e.Details[0], "spec.ports[0].port") {
		t.Fatalf("%d %+v", resp.StatusCode, e)
	}
}

func TestLoginThrottled(t *testing.T) {
	_, srv, _ := newPortal(t, false, false)
	c := browserClient(t, srv)
	for range maxFailures {
		if resp := logIn(t, c, srv, "", "wrong"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token: %d", resp.StatusCode)
		}
	}
	// Now even the right token waits: guessing is bounded.
	if resp := logIn(t, c, srv, "", testToken); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("after %d failures: %d", maxFailures, resp.StatusCode)
	}
}

// Users of a UsernamePassword method marked portal: true log in; users of
// a method without the mark do not.
func TestLoginWithPortalUser(t *testing.T) {
	_, srv, store := newPortal(t, false, false)
	hash, err := auth.HashPasswordBcrypt([]byte("s3cret"), 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{
		"apiVersion: edgeport.io/v1\nkind: BrokerAuthentication\nmetadata:\n  name: ops\nspec:\n  authenticationMethods:\n" +
			"  - method: UsernamePassword\n    usernamePasswordSettings:\n      portal: true\n      users:\n      - username: alice\n        passwordHash: \"" + hash + "\"\n",
		"apiVersion: edgeport.io/v1\nkind: BrokerAuthentication\nmetadata:\n  name: devices\nspec:\n  authenticationMethods:\n" +
			"  - method: UsernamePassword\n    usernamePasswordSettings:\n      users:\n      - username: bob\n        passwordHash: \"" + hash + "\"\n",
	} {
		obj, err := store.Kinds().Decode([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := store.Apply(obj, config.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		user, pass string
		want       int
	}{{"alice", "s3cret", http.StatusSeeOther}, {"alice", "wrong", http.StatusUnauthorized}, {"bob", "s3cret", http.StatusUnauthorized}} {
		if resp := logIn(t, browserClient(t, srv), srv, tc.user, tc.pass); resp.StatusCode != tc.want {
			t.Errorf("%s/%s: %d, want %d", tc.user, tc.pass, resp.StatusCode, tc.want)
		}
	}
}

// A live stream ends when the portal stops, so the HTTP server's graceful
// shutdown does not wait for it.
func TestStreamsEndAtStop(t *testing.T) {
	p, srv, _ := newPortal(t, false, false)
	c := browserClient(t, srv)
	logIn(t, c, srv, "", testToken)
	resp, err := c.Get(srv.URL + "/ui/events/overview")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	buf := make([]byte, 64)
	if n, err := resp.Body.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "event: init") {
		t.Fatalf("first event: %q %v", buf[:n], err)
	}
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(resp.Body); done <- err }()
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end at Stop")
	}
}

func TestRedact(t *testing.T) {
	objs := []*config.Object{}
	store := config.NewStore(config.Builtin(), "", nil)
	obj, err := store.Kinds().Decode([]byte("apiVersion: edgeport.io/v1\nkind: BrokerAuthentication\nmetadata:\n  name: a\nspec:\n  authenticationMethods:\n" +
		"  - method: UsernamePassword\n    usernamePasswordSettings:\n      passwordFile: /etc/edgeport/passwords\n      users:\n" +
		"      - username: alice\n        passwordHash: \"$2a$04$abcdefghijklmnopqrstuuL8x1DLRn6e5qOqk1VJ6yY7vE5yH8G3a\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	objs = append(objs, obj)
	y, err := redactedYAML(objs)
	if err != nil {
		t.Fatal(err)
	}
	s := string(y)
	if strings.Contains(s, "$2a$") || !strings.Contains(s, "passwordHash: "+Redacted) ||
		!strings.Contains(s, "username: alice") || !strings.Contains(s, "passwordFile: /etc/edgeport/passwords") {
		t.Fatalf("redacted:\n%s", s)
	}
}
