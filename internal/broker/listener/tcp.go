package listener

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// acceptLoop owns ln's accept side until Stop closes ln. It refuses what
// the limits refuse at once, before a goroutine or a handshake is spent on
// it. Go enables TCP_NODELAY on every TCP connection by default, which is
// what MQTT wants: the broker already coalesces its writes.
func (l *Listener) acceptLoop(ln net.Listener) {
	defer close(l.done)
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			// Out of descriptors, the error repeats every backoff.
			l.errs.Log(slog.LevelWarn, "accept", "accept failed; retrying", "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-l.quit:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0

		ip := remoteIP(conn)
		if g := l.cfg.Guard; g != nil {
			if reason := g.admit(ip); reason != "" {
				// Counted before the close, so that a client seeing the
				// close also sees the count.
				l.log.Debug("connection refused", "reason", reason, "remote", conn.RemoteAddr().String())
				l.reject(reason, conn.RemoteAddr().String())
				_ = conn.Close()
				continue
			}
		}
		// A WebSocket port counts its connections once upgraded, when it
		// can still answer with an HTTP status.
		if l.cfg.Protocol == ProtocolTCP && !l.reserve() {
			l.log.Debug("connection limit reached; closing", "remote", conn.RemoteAddr().String())
			l.unguard(ip)
			l.reject(RejectListenerLimit, conn.RemoteAddr().String())
			_ = conn.Close()
			continue
		}
		go l.prepare(conn, ip)
	}
}

func (l *Listener) unguard(ip netip.Addr) {
	if g := l.cfg.Guard; g != nil {
		g.release(ip)
	}
}

// prepare completes the TLS handshake, bounded by the handshake timeout,
// and passes the connection on: to the Handler, or to the HTTP server for
// the WebSocket upgrade.
func (l *Listener) prepare(conn net.Conn, ip netip.Addr) {
	if l.cfg.Protocol == ProtocolWebSocket {
		// The HTTP server and the WebSocket library close the connection
		// on paths of their own; the guard's slot goes with that Close.
		conn = &guardedConn{Conn: conn, release: func() { l.unguard(ip) }}
	}
	if l.tls != nil {
		tc := tls.Server(conn, l.tls)
		_ = conn.SetDeadline(time.Now().Add(l.handshakeTimeout()))
		err := tc.Handshake()
		if err == nil {
			err = conn.SetDeadline(time.Time{})
		}
		if err != nil {
			l.log.Debug("TLS handshake failed", "remote", conn.RemoteAddr().String(), "err", err)
			l.reject(RejectTLSHandshake, conn.RemoteAddr().String())
			_ = conn.Close()
			if l.cfg.Protocol == ProtocolTCP {
				l.release()
				l.unguard(ip)
			}
			return
		}
		conn = tc
	}
	if l.cfg.Protocol == ProtocolWebSocket {
		l.queue.put(conn)
		return
	}
	l.handOff(conn, func() { l.unguard(ip) })
}

// remoteIP is the peer's address without port, IPv4-mapped IPv6 unmapped,
// so one host counts once however it connects.
func remoteIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// guardedConn gives back a Guard slot when the connection is closed, by
// whichever layer closes it.
type guardedConn struct {
	net.Conn
	release func()
	closed  atomic.Bool
}

func (c *guardedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		defer c.release()
	}
	return c.Conn.Close()
}

// connQueue is the net.Listener the WebSocket HTTP server serves: it yields
// the connections the accept loop prepared.
type connQueue struct {
	ch     chan net.Conn
	addr   net.Addr
	closed chan struct{}
	once   sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{ch: make(chan net.Conn), addr: addr, closed: make(chan struct{})}
}

// put hands conn to Accept, or closes it once the queue is closed.
func (q *connQueue) put(conn net.Conn) {
	select {
	case q.ch <- conn:
	case <-q.closed:
		_ = conn.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }
