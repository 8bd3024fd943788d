package broker

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

// inputWaiting reports whether a TCP connection (or a TLS connection over
// one) has unread input or its peer's close waiting in the kernel, by
// peeking at the socket without consuming anything. Other connections
// report false.
func inputWaiting(conn net.Conn) bool {
	waiting := false
	peek(conn, func(n int, err error) { waiting = err == nil })
	return waiting
}

// peerGone reports whether a TCP connection's peer has closed it (its FIN
// is next in the kernel, nothing unread before it) or reset it. A TLS
// connection's closing alert counts as input: false. Other connections
// report false.
func peerGone(conn net.Conn) bool {
	gone := false
	peek(conn, func(n int, err error) {
		gone = n == 0 && err == nil || errors.Is(err, unix.ECONNRESET)
	})
	return gone
}

// peek calls f with the result of a one-byte peek at conn's socket that
// neither waits nor consumes anything (n > 0: input; n == 0 without
// error: the peer closed its side). It does not call f for a connection
// that is not TCP (or TLS over TCP).
func peek(conn net.Conn, f func(n int, err error)) {
	for {
		nc, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		conn = nc.NetConn()
	}
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		f(n, err)
	})
}
