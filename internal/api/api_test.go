package api

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
)

const testToken = "0123456789abcdef0123456789abcdef"

type fixture struct {
	t     *testing.T
	url   string
	store *config.Store
	token string
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	store := config.NewStore(config.Builtin(), t.TempDir(), nil)
	api := New(store, opts, nil)
	mux := http.NewServeMux()
	mux.Handle("/", api)
	// An endpoint outside the API under its access rules, as /statusz is.
	mux.Handle("/protected", api.Protect(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("status"))
	})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &fixture{t: t, url: srv.URL, store: store}
}

type response struct {
	code   int
	header http.Header
	body   string
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("response is not JSON: %v\n%s", err, r.body)
	}
}

func (r response) errorBody(t *testing.T) ErrorBody {
	t.Helper()
	var e ErrorBody
	r.json(t, &e)
	if e.Error == "" {
		t.Fatalf("error response without message: %s", r.body)
	}
	return e
}

func (f *fixture) do(method, path, contentType, body string, hdr ...string) response {
	f.t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if f.token != "" {
		req.Header.Set("Authorization", "Bearer "+f.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, string(b)}
}

func listener(name string, port int, labels string) string {
	return "apiVersion: edgeport.io/v1\nkind: BrokerListener\nmetadata:\n  name: " + name +
		"\n  labels: {" + labels + "}\nspec:\n  ports:\n  - port: " + strconv.Itoa(port) + "\n"
}

const yamlCT = "application/yaml"

func TestCRUD(t *testing.T) {
	f := newFixture(t, Options{})
	const base = "/api/v1/brokerlisteners"

	r := f.do("POST", base, yamlCT, listener("a", 1883, "env: prod"))
	if r.code != http.StatusCreated || r.header.Get(ResultHeader) != "created" || r.header.Get("Location") != base+"/a" {
		t.Fatalf("create: %d %v %s", r.code, r.header, r.body)
	}
	var obj map[string]any
	r.json(t, &obj)
	if spec := obj["spec"].(map[string]any)["ports"].([]any)[0].(map[string]any); spec["address"] != "127.0.0.1" || spec["protocol"] != "Mqtt" {
		t.Fatalf("defaults not visible in the response: %v", spec)
	}
	if r := f.do("POST", base, yamlCT, listener("a", 1883, "")); r.code != http.StatusConflict {
		t.Fatalf("second create: %d %s", r.code, r.body)
	}

	// PUT: create, unchanged, configured (JSON body this time).
	r = f.do("PUT", base+"/b", yamlCT, listener("b", 1884, "env: dev"))
	if r.code != http.StatusCreated || r.header.Get(ResultHeader) != "created" {
		t.Fatalf("put create: %d %s", r.code, r.body)
	}
	if r = f.do("PUT", base+"/b", yamlCT, listener("b", 1884, "env: dev")); r.code != http.StatusOK || r.header.Get(ResultHeader) != "unchanged" {
		t.Fatalf("put same: %d %v", r.code, r.header)
	}
	jsonBody := `{"apiVersion":"edgeport.io/v1","kind":"BrokerListener","metadata":{"name":"b"},"spec":{"ports":[{"port":1885}]}}`
	r = f.do("PUT", base+"/b", "application/json; charset=utf-8", jsonBody)
	var got config.Object
	r.json(t, &got)
	if r.code != http.StatusOK || r.header.Get(ResultHeader) != "configured" || got.Metadata.Generation != 2 {
		t.Fatalf("put changed: %d %v %s", r.code, r.header, r.body)
	}
	if r = f.do("PUT", base+"/b?dryRun=All", yamlCT, listener("b", 9999, "")); r.code != http.StatusOK || r.header.Get(ResultHeader) != "configured" {
		t.Fatalf("dry run: %d %s", r.code, r.body)
	}
	if o, _ := f.store.Get(config.Key{Kind: "BrokerListener", Name: "b"}); *o.Spec.(*config.BrokerListenerSpec).Ports[0].Port != 1885 {
		t.Fatal("dry run changed the store")
	}

	// List with label selectors.
	for sel, want := range map[string]string{"": "a,b", "env%3Dprod": "a", "env!%3Dprod": "b", "missing": ""} {
		r = f.do("GET", base+"?labelSelector="+sel, "", "")
		var l struct {
			Kind  string
			Items []config.Object
		}
		r.json(t, &l)
		var names []string
		for _, it := range l.Items {
			names = append(names, it.Metadata.Name)
		}
		if r.code != http.StatusOK || l.Kind != "BrokerListenerList" || strings.Join(names, ",") != want {
			t.Errorf("list %q: %d %v, want %s", sel, r.code, names, want)
		}
	}
	if r = f.do("GET", base+"?labelSelector=a%3Db%20c", "", ""); r.code != http.StatusBadRequest {
		t.Fatalf("bad selector: %d", r.code)
	}

	// Status and events.
	r = f.do("GET", base+"/a/status", "", "")
	var st config.Status
	r.json(t, &st)
	if r.code != http.StatusOK || st.Conditions[0].Reason != "Pending" {
		t.Fatalf("status: %d %s", r.code, r.body)
	}
	r = f.do("GET", base+"/b/events", "", "")
	var evs struct{ Items []config.Event }
	r.json(t, &evs)
	if r.code != http.StatusOK || len(evs.Items) != 2 || evs.Items[0].Reason != "Created" || evs.Items[1].Reason != "Updated" {
		t.Fatalf("events: %d %s", r.code, r.body)
	}

	if r = f.do("DELETE", base+"/a", "", ""); r.code != http.StatusOK {
		t.Fatalf("delete: %d %s", r.code, r.body)
	}
	for _, p := range []string{base + "/a", base + "/a/status", base + "/a/events"} {
		if r = f.do("GET", p, "", ""); r.code != http.StatusNotFound || !strings.Contains(r.errorBody(t).Error, "not found") {
			t.Fatalf("GET %s after delete: %d %s", p, r.code, r.body)
		}
	}
	if r = f.do("DELETE", base+"/a", "", ""); r.code != http.StatusNotFound {
		t.Fatalf("second delete: %d", r.code)
	}
}

func TestBadRequests(t *testing.T) {
	f := newFixture(t, Options{MaxBody: 4096})
	const base = "/api/v1/brokerlisteners"
	bad := "apiVersion: edgeport.io/v1\nkind: BrokerListener\nmetadata: {name: x}\nspec:\n  ports:\n  - port: 1883\n  - port: 70000\n    protocol: Tcp\n    colour: red\n"
	for _, tc := range []struct {
		name, method, path, ct, body string
		code                         int
		msg                          string
		details                      []string
	}{
		{"invalid", "PUT", base + "/x", yamlCT, bad, 422, `BrokerListener "x" is invalid`, []string{
			"spec.ports[1].colour: unknown field",
			"spec.ports[1].port: must be between 0 and 65535 (0 picks a free port)",
			`spec.ports[1].protocol: must be one of Mqtt or WebSockets (got "Tcp")`,
		}},
		{"syntax", "PUT", base + "/x", yamlCT, "kind: [", 400, "yaml:", nil},
		{"json syntax", "POST", base, "application/json", `{"kind": `, 400, "yaml:", nil},
		{"empty", "POST", base, yamlCT, "", 400, "no resource", nil},
		{"two documents", "POST", base, yamlCT, listener("x", 1, "") + "---\n" + listener("y", 2, ""), 400, "2 documents", nil},
		{"kind mismatch", "PUT", "/api/v1/brokers/x", yamlCT, listener("x", 1, ""), 400, "kind BrokerListener does not belong under /api/v1/brokers", nil},
		{"name mismatch", "PUT", base + "/y", yamlCT, listener("x", 1, ""), 400, `metadata.name "x" does not match`, nil},
		{"no content type", "PUT", base + "/x", "", listener("x", 1, ""), 415, "Content-Type", nil},
		{"form post", "POST", base, "application/x-www-form-urlencoded", "a=b", 415, "Content-Type", nil},
		{"too large", "PUT", base + "/x", yamlCT, listener("x", 1, "") + "#" + strings.Repeat("x", 5000) + "\n", 413, "larger than 4096", nil},
		{"unknown type", "GET", "/api/v1/widgets", "", "", 404, `unknown resource type "widgets"`, nil},
		{"singular in URL", "GET", "/api/v1/brokerlistener", "", "", 404, "unknown resource type", nil},
		{"unknown subresource", "GET", base + "/x/logs", "", "", 404, "unknown subresource", nil},
		{"too deep", "GET", base + "/x/status/y", "", "", 404, "not found", nil},
		{"method", "PATCH", base + "/x", yamlCT, "", 405, "method not allowed", nil},
		{"method on list", "DELETE", base, "", "", 405, "method not allowed", nil},
		{"singleton", "PUT", "/api/v1/brokers/main", yamlCT, "apiVersion: edgeport.io/v1\nkind: Broker\nmetadata: {name: main}\n", 422, "invalid",
			[]string{`metadata.name: must be "default": there is one Broker per instance`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(tc.method, tc.path, tc.ct, tc.body)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d: %s", r.code, tc.code, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			e := r.errorBody(t)
			if !strings.Contains(e.Error, tc.msg) || strings.Join(e.Details, "\n") != strings.Join(tc.details, "\n") {
				t.Fatalf("error %q details %q", e.Error, e.Details)
			}
		})
	}
	if r := f.do("PATCH", base+"/x", yamlCT, ""); r.header.Get("Allow") != "GET, PUT, DELETE" {
		t.Fatalf("Allow: %q", r.header.Get("Allow"))
	}
}

func TestConfigOwned(t *testing.T) {
	f := newFixture(t, Options{})
	obj, err := config.Builtin().Decode([]byte(listener("owned", 1883, "")))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.store.Apply(obj, config.ApplyOptions{Source: "/etc/edgeport/l.yaml"}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []response{
		f.do("PUT", "/api/v1/brokerlisteners/owned", yamlCT, listener("owned", 1884, "")),
		f.do("DELETE", "/api/v1/listeners/owned", "", ""), // short names are not URL segments
		f.do("DELETE", "/api/v1/brokerlisteners/owned", "", ""),
	} {
		if r.code != http.StatusConflict && r.code != http.StatusNotFound {
			t.Fatalf("%d %s", r.code, r.body)
		}
		if r.code == http.StatusConflict && !strings.Contains(r.errorBody(t).Error, "defined by config file /etc/edgeport/l.yaml") {
			t.Fatalf("conflict message: %s", r.body)
		}
	}
}

func TestAuthorization(t *testing.T) {
	for _, tc := range []struct {
		name    string
		require bool
		token   string
		host    string
		code    int
	}{
		{"loopback without token", false, "", "", 200},
		{"loopback with token", false, testToken, "", 200},
		{"loopback with wrong token", false, "wrong-token-wrong-token", "", 401},
		{"localhost name", false, "", "localhost:8080", 200},
		{"rebinding host", false, "", "evil.example:8080", 403},
		{"rebinding host with token", false, testToken, "evil.example:8080", 200},
		{"required, missing", true, "", "", 401},
		{"required, wrong", true, "nope-nope-nope-nope", "", 401},
		{"required, right", true, testToken, "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Options{Token: testToken, RequireToken: tc.require})
			f.token = tc.token
			var hdr []string
			if tc.host != "" {
				hdr = []string{"Host", tc.host}
			}
			for _, path := range []string{"/api/v1/brokers", "/protected"} {
				r := f.do("GET", path, "", "", hdr...)
				if r.code != tc.code {
					t.Fatalf("%s: status %d, want %d: %s", path, r.code, tc.code, r.body)
				}
				if r.code == 401 && r.header.Get("WWW-Authenticate") == "" {
					t.Fatalf("%s: 401 without WWW-Authenticate", path)
				}
			}
		})
	}
	f := newFixture(t, Options{Token: testToken})
	if r := f.do("GET", "/api/v1/brokers", "", "", "Authorization", "Basic Zm9vOmJhcg=="); r.code != 401 {
		t.Fatalf("basic auth: %d", r.code)
	}
}

func TestDiscoveryAndConfigDir(t *testing.T) {
	f := newFixture(t, Options{})
	var d struct{ Kinds []KindInfo }
	f.do("GET", "/api/v1", "", "").json(t, &d)
	if len(d.Kinds) != len(config.Builtin().All()) || d.Kinds[1].Plural != "brokerlisteners" || d.Kinds[1].Singular != "brokerlistener" {
		t.Fatalf("discovery: %+v", d)
	}
	if r := f.do("GET", "/api/v1/configdir", "", ""); r.code != 404 {
		t.Fatalf("configdir without dir: %d", r.code)
	}

	cfg := t.TempDir()
	if err := os.WriteFile(filepath.Join(cfg, "bad.yaml"), []byte("kind: Broker\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	store := config.NewStore(config.Builtin(), "", nil)
	dir, err := config.NewDir(cfg, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir.Sync()
	srv := httptest.NewServer(New(store, Options{Dir: dir}, nil))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	var cd struct {
		Path     string
		Problems []config.Problem
	}
	f.do("GET", "/api/v1/configdir", "", "").json(t, &cd)
	if cd.Path != cfg || len(cd.Problems) != 2 || cd.Problems[0].Message != "apiVersion: required (edgeport.io/v1)" {
		t.Fatalf("configdir: %+v", cd)
	}
}

func TestToken(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadToken(dir); err == nil {
		t.Fatal("token read from an empty dir")
	}
	tok, err := EnsureToken(dir)
	if err != nil || len(tok) != 64 {
		t.Fatalf("token %q %v", tok, err)
	}
	fi, err := os.Stat(filepath.Join(dir, TokenFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file %v %v", fi, err)
	}
	again, err := EnsureToken(dir)
	if err != nil || again != tok {
		t.Fatalf("second start made a new token: %q %v", again, err)
	}
	if err := os.WriteFile(filepath.Join(dir, TokenFile), []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureToken(dir); err == nil {
		t.Fatal("a too short token was accepted")
	}
}

// An Azure IoT Operations BrokerListener is accepted with its
// Kubernetes-only fields; each ignored one comes back as a Warning header,
// as the Kubernetes API sends them.
func TestApplyWarnsIgnoredFields(t *testing.T) {
	f := newFixture(t, Options{})
	doc := `apiVersion: mqttbroker.iotoperations.azure.com/v1
kind: BrokerListener
metadata: {name: lb, namespace: azure-iot-operations}
spec:
  serviceType: LoadBalancer
  ports:
  - {port: 1883, nodePort: 31883}
`
	r := f.do(http.MethodPut, Prefix+"/brokerlisteners/lb", yamlCT, doc)
	if r.code != http.StatusCreated {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	want := []string{
		`299 - "spec.serviceType: ignored: Edgeport has no such field"`,
		`299 - "spec.ports[0].nodePort: ignored: Edgeport has no such field"`,
	}
	if got := r.header.Values("Warning"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("Warning headers:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The same fields under Edgeport's own apiVersion are mistakes.
	r = f.do(http.MethodPut, Prefix+"/brokerlisteners/lb", yamlCT, strings.Replace(doc, "mqttbroker.iotoperations.azure.com/v1", "edgeport.io/v1", 1))
	if r.code != http.StatusUnprocessableEntity || !strings.Contains(r.body, "spec.serviceType: unknown field") {
		t.Fatalf("edgeport.io/v1 with serviceType: %d %s", r.code, r.body)
	}
}
