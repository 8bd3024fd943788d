package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// rawConnKey carries the accepted socket from http.Server.ConnContext to the
// upgrade handler; the WebSocket library hijacks it without exposing it.
type rawConnKey struct{}

func (l *Listener) newWebSocketServer() *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	return &http.Server{
		Handler:           http.HandlerFunc(l.serveWebSocket),
		Protocols:         &protos,
		ReadHeaderTimeout: wsReadHeaderTimeout,
		// ReadTimeout and WriteTimeout stay zero: their deadlines survive
		// the hijack and would cut long-lived MQTT connections.
		IdleTimeout:    wsIdleTimeout,
		MaxHeaderBytes: wsMaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, rawConnKey{}, c)
		},
	}
}

func (l *Listener) serveHTTP(ln net.Listener, srv *http.Server) {
	defer close(l.httpDone)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Error("websocket server stopped", "err", err)
	}
}

func (l *Listener) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != l.cfg.Path {
		http.NotFound(w, r)
		return
	}
	// Refusing before the upgrade lets the client see why.
	if !originAllowed(r, l.cfg.AllowedOrigins) {
		l.log.Debug("websocket upgrade from a page of another origin refused", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"), "host", r.Host)
		l.reject(RejectOrigin, r.RemoteAddr)
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	if !l.reserve() {
		l.log.Debug("connection limit reached; refusing upgrade", "remote", r.RemoteAddr)
		l.reject(RejectListenerLimit, r.RemoteAddr)
		http.Error(w, "connection limit reached", http.StatusServiceUnavailable)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// MQTT §6 names "mqtt"; "mqttv3.1" is what MQTT 3.1 era clients
		// send. A client offering neither is still accepted with none
		// selected: being lenient costs nothing and helps odd clients.
		Subprotocols: []string{"mqtt", "mqttv3.1"},
		// The Origin was checked above, by rules of our own (the
		// library's would accept any DNS name that matches Host).
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		l.release()
		l.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	raw, _ := r.Context().Value(rawConnKey{}).(net.Conn)
	if raw != nil {
		// The HTTP server may leave header-read deadlines on the socket.
		_ = raw.SetDeadline(time.Time{})
	}

	// NetConn treats consecutive binary messages as one byte stream, so MQTT
	// packets may span messages and share them; a text message fails the
	// read and closes with 1003. It also lifts the 32 KiB message read limit,
	// which is safe because messages are streamed rather than buffered: the
	// broker's packet decoder enforces the MQTT maximum packet size. The
	// context is Background because the connection outlives this request;
	// its lifetime ends with Close.
	nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
	l.handOff(&wsConn{Conn: nc, raw: raw, closeGrace: l.closeGrace}, nil)
}

// wsConn bounds the WebSocket close handshake and reports the TCP peer's
// addresses.
type wsConn struct {
	net.Conn            // websocket.NetConn
	raw        net.Conn // the hijacked socket (a *tls.Conn for WSS); may be nil
	closeGrace time.Duration
	closed     atomic.Bool
}

// Close sends a close frame and waits at most closeGrace for the peer's
// answer; the socket deadline unblocks both the handshake and any Read or
// Write still in flight.
func (c *wsConn) Close() error {
	first := c.closed.CompareAndSwap(false, true)
	if c.raw != nil && first {
		_ = c.raw.SetDeadline(time.Now().Add(c.closeGrace))
	}
	err := c.Conn.Close()
	// After the peer's close frame the library has already closed the
	// socket; like a TCP conn after a FIN, our first Close still succeeds.
	if first && errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// DeadlineEndsConn tells the broker that a read deadline firing during a
// Read closes this connection (coder/websocket's NetConn does), rather
// than only interrupting the Read as a TCP socket does.
func (c *wsConn) DeadlineEndsConn() bool { return true }

// TLSConnectionState implements TLSStater: the WebSocket layer hides the
// *tls.Conn of a WSS connection.
func (c *wsConn) TLSConnectionState() (tls.ConnectionState, bool) {
	if tc, ok := c.raw.(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

func (c *wsConn) RemoteAddr() net.Addr {
	if c.raw != nil {
		return c.raw.RemoteAddr()
	}
	return c.Conn.RemoteAddr()
}

func (c *wsConn) LocalAddr() net.Addr {
	if c.raw != nil {
		return c.raw.LocalAddr()
	}
	return c.Conn.LocalAddr()
}
