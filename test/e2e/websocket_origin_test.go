package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// hijackPage is a web page that tries to use the visitor's browser
// against an MQTT broker over WebSocket: it connects (MQTT 3.1.1, no
// credentials) and subscribes to everything. Its title reports how far it
// got: "connected" once the CONNACK came, "refused" when the WebSocket
// failed to open.
const hijackPage = `<!doctype html><title>loading</title><script>
const ws = new WebSocket(%q, "mqtt");
ws.binaryType = "arraybuffer";
let opened = false;
ws.onopen = () => {
  opened = true;
  const id = "hijack";
  // CONNECT: protocol MQTT level 4, clean session, keep alive 60 s.
  ws.send(new Uint8Array([0x10, 12 + id.length, 0, 4, 77, 81, 84, 84, 4, 2, 0, 60, 0, id.length, ...new TextEncoder().encode(id)]));
};
ws.onmessage = (e) => {
  const b = new Uint8Array(e.data);
  if (b[0] === 0x20 && b[3] === 0) {
    document.title = "connected";
    ws.send(new Uint8Array([0x82, 6, 0, 1, 0, 1, 35, 0])); // SUBSCRIBE # QoS 0
  }
};
ws.onerror = ws.onclose = () => { if (!opened) document.title = "refused"; };
</script>`

// servePage serves hijackPage on host (an address of its own), for the
// WebSocket URL wsURL returns when the page is requested, and returns the
// page's origin.
func servePage(t *testing.T, host string, wsURL func() string) string {
	t.Helper()
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, hijackPage, wsURL())
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// browse opens url in a fresh headless Chromium and returns the page's
// title once the page has decided.
func browse(t *testing.T, url string) string {
	t.Helper()
	path := requirePeer(t, "chromium", "apt-get install -y chromium")
	dir := t.TempDir()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.UserDataDir(dir),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(cancelCtx)
	// The first run starts the browser, which lives as long as its
	// context: that one must have no deadline; later runs have one.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	tctx, cancelTimeout := context.WithTimeout(ctx, 30*time.Second)
	defer cancelTimeout()
	if err := chromedp.Do(tctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("chromium opening %s: %v", url, err)
	}
	if _, err := chromedp.Run(tctx, chromedp.Poll[bool](`document.title !== "loading"`, chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		t.Fatalf("waiting for the page on %s to decide: %v", url, err)
	}
	title, err := chromedp.Run(tctx, chromedp.Title())
	if err != nil {
		t.Fatalf("reading the title of %s: %v", url, err)
	}
	return title
}

// upgrade sends a raw WebSocket handshake and returns the HTTP status.
func upgrade(t *testing.T, addr, origin string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET /mqtt HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n"
	if origin != "" {
		req += "Origin: " + origin + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestWebSocketHijacking: a page of another origin cannot use a visitor's
// browser against the broker's WebSocket listener (issue 10, item 5),
// shown with raw handshakes and with a real headless Chromium.
func TestWebSocketHijacking(t *testing.T) {
	t.Parallel()
	// The pages: one from another loopback address (another origin), one
	// from the broker's own address, one from an origin the listener
	// lists. They exist before edgeport starts, so it can be told the
	// listed one.
	ws := ""
	wsURL := func() string { return "ws://" + ws + "/mqtt" }
	other := servePage(t, "127.0.0.2", wsURL)
	same := servePage(t, "127.0.0.1", wsURL)
	listed := servePage(t, "127.0.0.3", wsURL)
	e := startEdgeport(t, "--ws-allowed-origins", listed)
	ws = e.addr(t, "ws")

	// Raw handshakes: no Origin is a program; other origins get 403.
	for _, tc := range []struct {
		origin string
		want   int
	}{
		{"", http.StatusSwitchingProtocols},
		{other, http.StatusForbidden},
		{"https://evil.example", http.StatusForbidden},
		{"http://127.0.0.1:8080", http.StatusSwitchingProtocols},
		{listed, http.StatusSwitchingProtocols},
	} {
		if got := upgrade(t, ws, tc.origin); got != tc.want {
			t.Fatalf("handshake with Origin %q: %d, want %d", tc.origin, got, tc.want)
		}
	}

	// A real browser: the cross-origin page is refused; the broker's own
	// and the listed origin's pages connect.
	if got := browse(t, other+"/"); got != "refused" {
		t.Fatalf("cross-origin page: %q, want refused", got)
	}
	if got := browse(t, same+"/"); got != "connected" {
		t.Fatalf("same-host page: %q, want connected", got)
	}
	if got := browse(t, listed+"/"); got != "connected" {
		t.Fatalf("listed-origin page: %q, want connected", got)
	}

	// The refusals were the origin check's, counted as such: two raw
	// handshakes and the browser's.
	want := `edgeport_broker_connections_rejected_total{listener="ws",reason="origin"} 3`
	if code, body := httpGet(t, "http://"+e.addr(t, "http")+"/metrics"); code != http.StatusOK || !strings.Contains(body, want) {
		t.Fatalf("/metrics (status %d) lacks %s", code, want)
	}
}
