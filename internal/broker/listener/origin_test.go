package listener

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/testwait"
)

// upgradeStatus sends a WebSocket handshake with the given Host and Origin
// ("" for none) and returns the HTTP status.
func upgradeStatus(t *testing.T, addr, host, origin string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(testTimeout))
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	req := fmt.Sprintf("GET /mqtt HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n",
		host, base64.StdEncoding.EncodeToString(key))
	if origin != "" {
		req += "Origin: " + origin + "\r\n"
	}
	if _, err := conn.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the upgrade response: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestWebSocketOrigin: a browser page of another origin cannot open an
// MQTT connection (cross-site WebSocket hijacking, issue 10 item 5); the
// refusal is a 403 before the upgrade, and the handler never sees it.
func TestWebSocketOrigin(t *testing.T) {
	var served atomic.Int64
	h := HandlerFunc(func(conn net.Conn, _ string) { served.Add(1); conn.Close() })
	def := startListener(t, Config{Name: "ws", Protocol: ProtocolWebSocket}, h)
	listed := startListener(t, Config{Name: "listed", Protocol: ProtocolWebSocket,
		AllowedOrigins: []string{"https://portal.example.com", "HTTP://Localhost:3000"}}, h)
	anyOrigin := startListener(t, Config{Name: "any", Protocol: ProtocolWebSocket, AllowedOrigins: []string{AnyOrigin}}, h)

	addr := def.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	for _, tc := range []struct {
		name         string
		l            *Listener
		host, origin string
		want         int
	}{
		{"no origin: a program, not a browser", def, addr, "", 101},
		{"page of another site", def, addr, "https://evil.example", 403},
		{"page of another site on loopback", def, addr, "http://127.0.0.2:8000", 403},
		{"page served by the same IP address", def, addr, "http://127.0.0.1:8080", 101},
		{"page served by localhost", def, "localhost:" + port, "http://localhost", 101},
		{"rebound DNS name", def, "evil.example:" + port, "http://evil.example", 403},
		{"sandboxed frame", def, addr, "null", 403},
		{"not an http origin", def, addr, "file://", 403},
		{"listed origin", listed, addr, "https://portal.example.com", 101},
		{"listed origin, case differs", listed, addr, "http://localhost:3000", 101},
		{"listed host, other scheme", listed, addr, "http://portal.example.com", 403},
		{"listed host, other port", listed, addr, "https://portal.example.com:8443", 403},
		{"listener allows any origin", anyOrigin, addr, "https://evil.example", 101},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := strings.Replace(tc.host, addr, tc.l.Addr().String(), 1)
			if got := upgradeStatus(t, tc.l.Addr().String(), host, tc.origin); got != tc.want {
				t.Fatalf("Host %s Origin %q: status %d, want %d", host, tc.origin, got, tc.want)
			}
		})
	}
	if got := def.Stats().Rejections.Origin; got != 5 {
		t.Errorf("default listener counted %d origin rejections, want 5", got)
	}
	testwait.For(t, "the admitted connections", func() bool { return served.Load() == 6 })
}

func TestCheckOrigins(t *testing.T) {
	got, err := CheckOrigins([]string{"*", "HTTPS://Portal.Example.com:8443/", "http://[::1]:3000"})
	if err != nil || strings.Join(got, " ") != "* https://portal.example.com:8443 http://[::1]:3000" {
		t.Fatalf("CheckOrigins = %q, %v", got, err)
	}
	for _, bad := range []string{"portal.example.com", "ftp://x", "https://x/path", "https://user@x", "null", ""} {
		if _, err := CheckOrigins([]string{bad}); err == nil {
			t.Errorf("CheckOrigins(%q) accepted", bad)
		}
	}
	if _, err := New(Config{Protocol: ProtocolTCP, Addr: "127.0.0.1:0", AllowedOrigins: []string{"*"}}, HandlerFunc(nil), nil); err == nil {
		t.Error("a TCP listener accepted allowed origins")
	}
}
