package listener

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/edgeport/edgeport/internal/testpki"
	"github.com/edgeport/edgeport/internal/testwait"
)

const testTimeout = 5 * time.Second

// startListener creates and starts a listener on 127.0.0.1:0 and stops it at
// the end of the test. tweaks adjust unexported knobs before Start.
func startListener(t testing.TB, cfg Config, h Handler, tweaks ...func(*Listener)) *Listener {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	l, err := New(cfg, h, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, tweak := range tweaks {
		tweak(l)
	}
	if err := l.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := l.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return l
}

func echoHandler() Handler {
	return HandlerFunc(func(conn net.Conn, _ string) {
		defer conn.Close()
		_, _ = io.Copy(conn, conn)
	})
}

// testTLS returns a server config with a fresh certificate for 127.0.0.1
// and a client config that trusts its CA.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	ca := testpki.NewCA(t, pkix.Name{CommonName: "edgeport test CA"})
	server = &tls.Config{
		Certificates: []tls.Certificate{ca.Server(t, "edgeport test").TLS()},
		// Proves the listener strips h2 for WSS.
		NextProtos: []string{"h2", "http/1.1"},
	}
	return server, &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"h2", "http/1.1"}}
}

// dialWS opens an MQTT-over-WebSocket client connection.
func dialWS(ctx context.Context, l *Listener, path string, tc *tls.Config, subprotocols ...string) (*websocket.Conn, *http.Response, error) {
	scheme, client := "ws", http.DefaultClient
	if tc != nil {
		scheme = "wss"
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	return websocket.Dial(ctx, scheme+"://"+l.Addr().String()+path, &websocket.DialOptions{
		HTTPClient:   client,
		Subprotocols: subprotocols,
	})
}

// dialStream connects to l and returns the MQTT byte stream as a net.Conn.
func dialStream(t *testing.T, l *Listener, tc *tls.Config) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var conn net.Conn
	switch l.cfg.Protocol {
	case ProtocolTCP:
		d := &net.Dialer{Timeout: testTimeout}
		var err error
		if tc != nil {
			conn, err = tls.DialWithDialer(d, "tcp", l.Addr().String(), tc)
		} else {
			conn, err = d.Dial("tcp", l.Addr().String())
		}
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
	case ProtocolWebSocket:
		c, _, err := dialWS(ctx, l, l.cfg.Path, tc, "mqtt")
		if err != nil {
			t.Fatalf("websocket dial: %v", err)
		}
		conn = websocket.NetConn(context.Background(), c, websocket.MessageBinary)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(testTimeout))
	return conn
}

func assertEcho(t *testing.T, conn net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(conn, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

func TestNewValidation(t *testing.T) {
	serverTLS, _ := testTLS(t)
	tests := []struct {
		name    string
		cfg     Config
		h       Handler
		wantErr string
	}{
		{"tcp ok", Config{Addr: "127.0.0.1:0", Protocol: ProtocolTCP}, echoHandler(), ""},
		{"websocket ok", Config{Addr: ":0", Protocol: ProtocolWebSocket}, echoHandler(), ""},
		{"tls ok", Config{Addr: ":0", Protocol: ProtocolTCP, TLS: serverTLS}, echoHandler(), ""},
		{"nil handler", Config{Addr: ":0", Protocol: ProtocolTCP}, nil, "nil handler"},
		{"unknown protocol", Config{Addr: ":0", Protocol: "udp"}, echoHandler(), "unknown protocol"},
		{"empty protocol", Config{Addr: ":0"}, echoHandler(), "unknown protocol"},
		{"bad addr", Config{Addr: "localhost", Protocol: ProtocolTCP}, echoHandler(), "address"},
		{"bad path", Config{Addr: ":0", Protocol: ProtocolWebSocket, Path: "mqtt"}, echoHandler(), "must start with /"},
		{"negative limit", Config{Addr: ":0", Protocol: ProtocolTCP, MaxConnections: -1}, echoHandler(), "negative"},
		{"tls without cert", Config{Addr: ":0", Protocol: ProtocolTCP, TLS: &tls.Config{}}, echoHandler(), "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := New(tt.cfg, tt.h, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if l.cfg.Name != tt.cfg.Protocol {
					t.Errorf("default name = %q, want %q", l.cfg.Name, tt.cfg.Protocol)
				}
				if tt.cfg.Protocol == ProtocolWebSocket && l.cfg.Path != DefaultWebSocketPath {
					t.Errorf("default path = %q", l.cfg.Path)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestStartTwiceAndStopBeforeStart(t *testing.T) {
	l, err := New(Config{Addr: "127.0.0.1:0", Protocol: ProtocolTCP}, echoHandler(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Stop(t.Context()); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	if l.Addr() != nil {
		t.Fatalf("Addr before Start = %v", l.Addr())
	}
	if err := l.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Stop(context.Background()) })
	if err := l.Start(t.Context()); err == nil {
		t.Fatal("second Start succeeded")
	}
}

// transports are the four ways a client reaches a listener, for tests
// that run over each.
var transports = []struct {
	name     string
	protocol string
	tls      bool
}{
	{"tcp", ProtocolTCP, false},
	{"tls", ProtocolTCP, true},
	{"websocket", ProtocolWebSocket, false},
	{"wss", ProtocolWebSocket, true},
}

func TestEcho(t *testing.T) {
	serverTLS, clientTLS := testTLS(t)
	for _, tt := range transports {
		t.Run(tt.name, func(t *testing.T) {
			type seen struct {
				name   string
				remote net.Addr
			}
			seenc := make(chan seen, 1)
			h := HandlerFunc(func(conn net.Conn, name string) {
				seenc <- seen{name, conn.RemoteAddr()}
				echoHandler().ServeConn(conn, name)
			})
			cfg := Config{Name: "edge-" + tt.name, Protocol: tt.protocol}
			var ctls *tls.Config
			if tt.tls {
				cfg.TLS, ctls = serverTLS, clientTLS
			}
			l := startListener(t, cfg, h)
			conn := dialStream(t, l, ctls)
			assertEcho(t, conn, "hello mqtt")

			s := <-seenc
			if s.name != cfg.Name {
				t.Errorf("handler got listener name %q, want %q", s.name, cfg.Name)
			}
			if ta, ok := s.remote.(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
				t.Errorf("RemoteAddr = %#v, want a loopback *net.TCPAddr", s.remote)
			}
			if st := l.Stats(); st.Accepted != 1 || st.Open != 1 {
				t.Errorf("Stats while open = %+v", st)
			}
			conn.Close()
			testwait.For(t, "handler to return", func() bool { return l.Stats().Open == 0 })
		})
	}
}

func TestConnectionLimit(t *testing.T) {
	for _, protocol := range []string{ProtocolTCP, ProtocolWebSocket} {
		t.Run(protocol, func(t *testing.T) {
			l := startListener(t, Config{Protocol: protocol, MaxConnections: 1}, echoHandler())

			first := dialStream(t, l, nil)
			testwait.For(t, "first connection", func() bool { return l.Stats().Open == 1 })

			switch protocol {
			case ProtocolTCP:
				conn, err := net.Dial("tcp", l.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				_ = conn.SetReadDeadline(time.Now().Add(testTimeout))
				if n, err := conn.Read(make([]byte, 1)); err == nil {
					t.Fatalf("over-limit conn read %d bytes, want it closed", n)
				} else if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("over-limit conn not closed: %v", err)
				}
			case ProtocolWebSocket:
				_, resp, err := dialWS(t.Context(), l, l.cfg.Path, nil, "mqtt")
				if err == nil {
					t.Fatal("over-limit websocket dial succeeded")
				}
				if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
					t.Fatalf("over-limit response = %v, want 503", resp)
				}
			}
			testwait.For(t, "rejection to be counted", func() bool { return l.Stats().Rejected == 1 })

			assertEcho(t, first, "still served")
			first.Close()
			testwait.For(t, "first handler to return", func() bool { return l.Stats().Open == 0 })

			assertEcho(t, dialStream(t, l, nil), "room again")
			if st := l.Stats(); st.Accepted != 2 || st.Rejected != 1 {
				t.Fatalf("Stats = %+v, want 2 accepted, 1 rejected", st)
			}
		})
	}
}

func TestStopClosesListenerButNotConnections(t *testing.T) {
	for _, protocol := range []string{ProtocolTCP, ProtocolWebSocket} {
		t.Run(protocol, func(t *testing.T) {
			l, err := New(Config{Addr: "127.0.0.1:0", Protocol: protocol}, echoHandler(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			conn := dialStream(t, l, nil)
			assertEcho(t, conn, "before stop")

			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			if err := l.Stop(ctx); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if err := l.Stop(ctx); err != nil {
				t.Fatalf("second Stop: %v", err)
			}
			if c, err := net.DialTimeout("tcp", l.Addr().String(), testTimeout); err == nil {
				c.Close()
				t.Fatal("dial after Stop succeeded")
			}
			// The broker, not the listener, drains accepted connections.
			assertEcho(t, conn, "after stop")
			conn.Close()
			testwait.For(t, "handler to return", func() bool { return l.Stats().Open == 0 })
		})
	}
}
