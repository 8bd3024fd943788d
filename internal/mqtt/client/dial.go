package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/coder/websocket"
)

// A Dialer opens the connection a Client speaks MQTT over. Dial must give
// up when ctx ends.
type Dialer interface {
	Dial(ctx context.Context) (net.Conn, error)
}

// DialFunc adapts a function to a Dialer.
type DialFunc func(ctx context.Context) (net.Conn, error)

// Dial calls f.
func (f DialFunc) Dial(ctx context.Context) (net.Conn, error) { return f(ctx) }

// TCP dials addr (host:port) over TCP, with TLS when tlsConf is not nil.
func TCP(addr string, tlsConf *tls.Config) Dialer {
	return DialFunc(func(ctx context.Context) (net.Conn, error) {
		if tlsConf != nil {
			d := tls.Dialer{Config: tlsConf}
			return d.DialContext(ctx, "tcp", addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	})
}

// WebSocket dials a ws:// or wss:// URL and speaks MQTT in binary messages
// with the "mqtt" subprotocol (MQTT 5.0 §6). tlsConf applies to wss://; nil
// means the system's roots.
func WebSocket(u string, tlsConf *tls.Config) Dialer {
	return DialFunc(func(ctx context.Context) (net.Conn, error) {
		opts := &websocket.DialOptions{Subprotocols: []string{"mqtt"}}
		if tlsConf != nil {
			opts.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
		}
		ws, resp, err := websocket.Dial(ctx, u, opts)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err != nil {
			return nil, err
		}
		if ws.Subprotocol() != "mqtt" {
			ws.Close(websocket.StatusProtocolError, "the mqtt subprotocol is required")
			return nil, fmt.Errorf("websocket %s: the server did not accept the mqtt subprotocol", u)
		}
		ws.SetReadLimit(-1) // MQTT's own Maximum Packet Size applies
		// NetConn's context bounds the connection's life, not the dial:
		// Close ends it.
		return websocket.NetConn(context.WithoutCancel(ctx), ws, websocket.MessageBinary), nil
	})
}

// Schemes accepted by URL.
var schemes = map[string]string{
	"mqtt": "tcp", "tcp": "tcp", "mqtts": "tls", "ssl": "tls", "tls": "tls", "ws": "ws", "wss": "wss",
}

// URL returns the Dialer for an address: mqtt://host:port (also tcp://),
// mqtts://host:port (also ssl:// and tls://), ws://host:port/path or
// wss://host:port/path. The port defaults to 1883, 8883, 80 and 443. tlsConf
// is used for mqtts:// and wss://; nil means the system's roots and the
// URL's host as server name.
func URL(raw string, tlsConf *tls.Config) (Dialer, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing %q: %w", raw, err)
	}
	kind, ok := schemes[strings.ToLower(u.Scheme)]
	if !ok {
		return nil, fmt.Errorf("%q: the scheme must be mqtt, mqtts, ws or wss", raw)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%q: no host", raw)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[string]string{"tcp": "1883", "tls": "8883", "ws": "80", "wss": "443"}[kind])
	}
	switch kind {
	case "tcp":
		if u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("%q: an mqtt:// address has no path", raw)
		}
		return TCP(host, nil), nil
	case "tls":
		if u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("%q: an mqtts:// address has no path", raw)
		}
		if tlsConf == nil {
			tlsConf = &tls.Config{}
		}
		return TCP(host, tlsConf), nil
	case "wss":
		if tlsConf == nil {
			tlsConf = &tls.Config{}
		}
		fallthrough
	default:
		w := *u
		w.Host = host
		if kind == "ws" {
			tlsConf = nil
		}
		return WebSocket(w.String(), tlsConf), nil
	}
}

// InProcess dials the broker without a socket: each Dial makes a Pipe and
// hands its far end to serve (the broker's ServeConn with its internal
// listener) on a new goroutine. Wait waits for those goroutines; the Client
// that owns the dialer calls it when it stops.
type InProcess struct {
	serve func(net.Conn)
	wg    sync.WaitGroup
	// closed refuses Dial once the owner is done with it.
	mu     sync.Mutex // guards closed
	closed bool
}

// NewInProcess returns an in-process dialer serving connections with serve.
func NewInProcess(serve func(net.Conn)) *InProcess { return &InProcess{serve: serve} }

// ErrDialerClosed is returned by a Dial after Wait.
var ErrDialerClosed = errors.New("mqtt client: in-process dialer closed")

// Dial implements Dialer.
func (d *InProcess) Dial(ctx context.Context) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrDialerClosed
	}
	c, s := Pipe()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.serve(s)
	}()
	return c, nil
}

// Wait refuses further dials and waits until serve has returned for every
// connection dialed; close the connections first.
func (d *InProcess) Wait() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.wg.Wait()
}
