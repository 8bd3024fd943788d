package listener

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/edgeport/edgeport/internal/testwait"
)

// mqttPublish encodes a QoS 0 MQTT 3.1.1 PUBLISH packet.
func mqttPublish(topic string, payload []byte) []byte {
	body := make([]byte, 0, 2+len(topic)+len(payload))
	body = append(body, byte(len(topic)>>8), byte(len(topic)))
	body = append(body, topic...)
	body = append(body, payload...)
	pkt := []byte{0x30}
	for n := len(body); ; {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		pkt = append(pkt, b)
		if n == 0 {
			break
		}
	}
	return append(pkt, body...)
}

// mqttConnect is an MQTT 3.1.1 CONNECT with clean session, keep-alive 60 s
// and client id "edge-1".
var mqttConnect = []byte{
	0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c,
	0x00, 0x06, 'e', 'd', 'g', 'e', '-', '1',
}

var mqttPingreq = []byte{0xc0, 0x00}

// readResult is what a test handler saw on its connection.
type readResult struct {
	remote string
	data   []byte
	err    error
}

func TestWebSocketStream(t *testing.T) {
	big := mqttPublish("sensors/bulk", bytes.Repeat([]byte{0xa5}, 100<<10))
	small := mqttPublish("a/b", []byte("hi"))
	messages := [][]byte{
		mqttConnect[:1], mqttConnect[1:7], mqttConnect[7:], // one packet over three messages
		append(append([]byte{}, mqttPingreq...), small...), // two packets in one message
		big, // larger than the library's default 32 KiB read limit
	}
	want := bytes.Join(messages, nil)
	reply := []byte{0x20, 0x02, 0x00, 0x00, 0xd0, 0x00} // CONNACK + PINGRESP in one Write

	got := make(chan readResult, 1)
	h := HandlerFunc(func(conn net.Conn, _ string) {
		defer conn.Close()
		buf := make([]byte, len(want))
		_, err := io.ReadFull(conn, buf)
		if err == nil {
			_, err = conn.Write(reply)
		}
		got <- readResult{data: buf, err: err}
		_, _ = io.Copy(io.Discard, conn)
	})
	l := startListener(t, Config{Protocol: ProtocolWebSocket}, h)

	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	c, _, err := dialWS(ctx, l, "/mqtt", nil, "mqtt")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	if c.Subprotocol() != "mqtt" {
		t.Fatalf("subprotocol = %q, want mqtt", c.Subprotocol())
	}
	for i, m := range messages {
		if err := c.Write(ctx, websocket.MessageBinary, m); err != nil {
			t.Fatalf("write message %d: %v", i, err)
		}
	}
	typ, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	if typ != websocket.MessageBinary || !bytes.Equal(msg, reply) {
		t.Fatalf("reply = %v %x, want one binary message %x", typ, msg, reply)
	}
	r := <-got
	if r.err != nil {
		t.Fatalf("handler: %v", r.err)
	}
	if !bytes.Equal(r.data, want) {
		t.Fatalf("handler read %d bytes differing from the %d sent", len(r.data), len(want))
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close: %v", err)
	}
	testwait.For(t, "handler to return", func() bool { return l.Stats().Open == 0 })
}

func TestWebSocketSubprotocol(t *testing.T) {
	l := startListener(t, Config{Protocol: ProtocolWebSocket}, echoHandler())
	tests := []struct {
		offered []string
		want    string
	}{
		{[]string{"mqtt"}, "mqtt"},
		{[]string{"mqttv3.1"}, "mqttv3.1"},
		{[]string{"chat", "mqtt"}, "mqtt"},
		{nil, ""},
		{[]string{"chat"}, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.offered), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			c, _, err := dialWS(ctx, l, "/mqtt", nil, tt.offered...)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.CloseNow()
			if c.Subprotocol() != tt.want {
				t.Fatalf("subprotocol = %q, want %q", c.Subprotocol(), tt.want)
			}
		})
	}
}

func TestWebSocketTextFrameRejected(t *testing.T) {
	got := make(chan error, 1)
	h := HandlerFunc(func(conn net.Conn, _ string) {
		defer conn.Close()
		_, err := io.Copy(io.Discard, conn)
		got <- err
	})
	l := startListener(t, Config{Protocol: ProtocolWebSocket}, h)

	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	c, _, err := dialWS(ctx, l, "/mqtt", nil, "mqtt")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("CONNECT")); err != nil {
		t.Fatalf("write: %v", err)
	}
	_, _, err = c.Read(ctx)
	if status := websocket.CloseStatus(err); status != websocket.StatusUnsupportedData {
		t.Fatalf("client read error = %v (status %v), want close 1003", err, status)
	}
	if herr := <-got; herr == nil {
		t.Fatal("handler read a text frame without error")
	}
}

func TestWebSocketHTTPErrors(t *testing.T) {
	l := startListener(t, Config{Protocol: ProtocolWebSocket, Path: "/ws"}, echoHandler())
	tests := []struct {
		path string
		want int
	}{
		{"/mqtt", http.StatusNotFound},
		{"/ws/", http.StatusNotFound},
		{"/", http.StatusNotFound},
		{"/ws", http.StatusUpgradeRequired}, // plain GET without the upgrade headers
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := http.Get("http://" + l.Addr().String() + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("GET %s = %d, want %d", tt.path, resp.StatusCode, tt.want)
			}
		})
	}
	if st := l.Stats(); st != (Stats{}) {
		t.Fatalf("Stats after plain HTTP requests = %+v, want zero", st)
	}
}

// rawUpgrade performs the WebSocket handshake by hand so the test can then
// write arbitrary bytes on the socket.
func rawUpgrade(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(testTimeout))
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	fmt.Fprintf(conn, "GET /mqtt HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
		addr, base64.StdEncoding.EncodeToString(key))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read upgrade response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade status = %d", resp.StatusCode)
	}
	return conn, br
}

func TestWebSocketMalformedFrameClosesOnlyThatConnection(t *testing.T) {
	results := make(chan readResult, 2)
	h := HandlerFunc(func(conn net.Conn, _ string) {
		defer conn.Close()
		_, err := io.Copy(conn, conn)
		results <- readResult{remote: conn.RemoteAddr().String(), err: err}
	})
	// The bad client never answers the close frame; keep the wait short.
	l := startListener(t, Config{Protocol: ProtocolWebSocket}, h, func(l *Listener) { l.closeGrace = 50 * time.Millisecond })
	good := dialStream(t, l, nil)
	assertEcho(t, good, "before")

	bad, br := rawUpgrade(t, l.Addr().String())
	// FIN + reserved opcode 0x3, masked, empty payload: a protocol error.
	if _, err := bad.Write([]byte{0x83, 0x80, 1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("bad connection did not end cleanly: %v", err)
	}
	r := <-results
	if r.remote != bad.LocalAddr().String() {
		t.Fatalf("ended connection's RemoteAddr = %s, want the bad client %s", r.remote, bad.LocalAddr())
	}
	if r.err == nil {
		t.Fatal("handler saw no error for a malformed frame")
	}

	testwait.For(t, "bad connection's handler to return", func() bool { return l.Stats().Open == 1 })
	assertEcho(t, good, "after")
	if st := l.Stats(); st.Open != 1 || st.Accepted != 2 {
		t.Fatalf("Stats = %+v, want the good connection still open", st)
	}
}

func TestWebSocketCloseIsBounded(t *testing.T) {
	closed := make(chan time.Duration, 1)
	h := HandlerFunc(func(conn net.Conn, _ string) {
		start := time.Now()
		_ = conn.Close()
		closed <- time.Since(start)
	})
	l := startListener(t, Config{Protocol: ProtocolWebSocket}, h, func(l *Listener) { l.closeGrace = 50 * time.Millisecond })

	// The raw client never answers the close frame; without the grace
	// deadline the library would wait 5 s for it.
	rawUpgrade(t, l.Addr().String())
	select {
	case d := <-closed:
		if d > time.Second {
			t.Fatalf("Close took %v with a 50ms grace", d)
		}
	case <-time.After(testTimeout):
		t.Fatal("Close did not return")
	}
}

func TestWebSocketCloseAfterPeerClose(t *testing.T) {
	got := make(chan error, 1)
	h := HandlerFunc(func(conn net.Conn, _ string) {
		_, err := io.Copy(io.Discard, conn)
		if err == nil {
			err = conn.Close()
		}
		got <- err
	})
	l := startListener(t, Config{Protocol: ProtocolWebSocket}, h)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	c, _, err := dialWS(ctx, l, "/mqtt", nil, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("client close: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatalf("server read to EOF then Close = %v, want nil", err)
	}
}
