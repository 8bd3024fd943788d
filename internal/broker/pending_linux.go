package broker

import (
	"net"

	"golang.org/x/sys/unix"
)

// inputWaiting reports whether a TCP connection (or a TLS connection over
// one) has unread input or its peer's close waiting in the kernel, by
// peeking at the socket without consuming anything. Other connections
// report false.
func inputWaiting(conn net.Conn) bool {
	for {
		nc, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		conn = nc.NetConn()
	}
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	waiting := false
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		// n > 0: data; n == 0 without error: the peer closed its side.
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		waiting = err == nil
	})
	return waiting
}
