package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/api"
	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/telemetry"
	"github.com/edgeport/edgeport/internal/testserve"
)

// A listener whose port failed to bind fails the check, naming the
// address it should have and why it has none.
func TestCheckUnboundListenerFails(t *testing.T) {
	l := telemetry.ListenerInfo{Name: "plant:1883", Protocol: "tcp", Configured: "0.0.0.0:1883",
		Error: "listen tcp 0.0.0.0:1883: bind: address already in use"}
	res := checkListeners(context.Background(), []telemetry.ListenerInfo{l}, "127.0.0.1", time.Second, &mqttFlags{version: "5"})
	if res.Status != statusFail || len(res.Items) != 1 {
		t.Fatalf("%+v", res)
	}
	if m := res.Items[0].Message; !strings.Contains(m, "0.0.0.0:1883") || !strings.Contains(m, "address already in use") {
		t.Fatalf("message %q: want the configured address and the bind error", m)
	}
}

// startCheckBroker serves a broker on a TCP port under listener name.
func startCheckBroker(t *testing.T, name string) (*broker.Broker, string) {
	b, err := broker.New(broker.Options{SysInterval: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ln := testserve.Loopback(t, func(c net.Conn) { b.ServeConn(c, name) })
	t.Cleanup(func() {
		ln.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = b.Stop(sctx)
		cancel()
		ln.Wait()
	})
	return b, ln.Addr()
}

// Against a real broker: an open port passes; a port that refuses every
// client by configuration is a warning that says so, not a failure and not
// "anonymous access"; with credentials the check connects as a client
// would.
func TestCheckListenerVerdicts(t *testing.T) {
	b, addr := startCheckBroker(t, "port")
	info := telemetry.ListenerInfo{Name: "port", Protocol: "tcp", Address: addr}
	creds := &mqttFlags{version: "5"}

	info.Admits = string(b.ListenerAdmission("port"))
	if it := checkListener(context.Background(), info, "", 2*time.Second, creds); it.Status != statusOK || info.Admits != "everyone" {
		t.Fatalf("open port: %s %q (admits %s)", it.Status, it.Message, info.Admits)
	}
	b.SetListenerSecurity("port", nil, nil, false)
	info.Admits = string(b.ListenerAdmission("port"))
	it := checkListener(context.Background(), info, "", 2*time.Second, creds)
	if info.Admits != "nobody" || it.Status != statusWarn || !strings.Contains(it.Message, "refuses every client") || it.Hint == "" {
		t.Fatalf("closed port: %s %q (admits %s)", it.Status, it.Message, info.Admits)
	}
	authn, _ := checkSecurity([]telemetry.ListenerInfo{info})
	if strings.Contains(authn.Message, "anonymous") || authn.Status == statusFail {
		t.Fatalf("a closed port reported as %s: %q", authn.Status, authn.Message)
	}
}

// fakeServer answers /statusz and the API like a token-protected Edgeport.
func fakeServer(t *testing.T, token string, st telemetry.Status) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		switch {
		case r.URL.Path == "/statusz":
			_ = json.NewEncoder(w).Encode(st)
		case strings.HasPrefix(r.URL.Path, "/api/v1/"):
			_, _ = w.Write([]byte(`{"items":[]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// The check finds its server and token as every other command does:
// $EDGEPORT_SERVER, --token, $EDGEPORT_TOKEN, the api-token file in
// --data-dir. Without a token, a token-protected API fails the check.
func TestCheckServerAndTokenDiscovery(t *testing.T) {
	srv := fakeServer(t, "s3cret-token-0123456789", telemetry.Status{Version: "test", Broker: telemetry.BrokerStatus{Accepting: true}})
	run := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		code := Main(append([]string{"check", "-o", "json", "--data-dir", t.TempDir()}, args...), &out, &errb)
		return out.String() + errb.String(), code
	}
	t.Setenv(envServer, srv.URL)
	t.Setenv(envToken, "")
	out, code := run()
	var rep checkReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if code != 1 || rep.Server != srv.URL || rep.Checks[0].Status != statusFail || !strings.Contains(rep.Checks[0].Hint, "--token") {
		t.Fatalf("without a token: exit %d, %s", code, out)
	}
	// The token from the environment, then from the data directory.
	t.Setenv(envToken, "s3cret-token-0123456789")
	if out, _ := run(); !strings.Contains(out, `"version": "test"`) && !strings.Contains(out, "edgeport test") {
		t.Fatalf("with $EDGEPORT_TOKEN: %s", out)
	}
	t.Setenv(envToken, "")
	dir := t.TempDir()
	if err := writeTestToken(dir, "s3cret-token-0123456789"); err != nil {
		t.Fatal(err)
	}
	var outb, errb bytes.Buffer
	Main([]string{"check", "-o", "json", "--data-dir", dir}, &outb, &errb)
	if err := json.Unmarshal(outb.Bytes(), &rep); err != nil || rep.Checks[0].Status != statusOK {
		t.Fatalf("with the token file: %v %s %s", err, outb.String(), errb.String())
	}
}

// With /statusz readable but the API refusing the token, the resources
// check fails instead of warning.
func TestCheckResourcesNeedToken(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	}))
	defer srv.Close()
	res := checkResources(context.Background(), srv.Client(), srv.URL, "")
	if res.Status != statusFail || !strings.Contains(res.Hint, "token") {
		t.Fatalf("%+v", res)
	}
}

func writeTestToken(dir, tok string) error {
	return os.WriteFile(filepath.Join(dir, api.TokenFile), []byte(tok+"\n"), 0o600)
}
