//go:build !linux

package broker

import "net"

// inputWaiting is Linux-only; elsewhere a takeover never waits.
func inputWaiting(net.Conn) bool { return false }

// peerGone is Linux-only; elsewhere a CONNECT is claimed for whatever its
// connection's state.
func peerGone(net.Conn) bool { return false }
