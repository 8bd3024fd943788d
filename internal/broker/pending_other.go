//go:build !linux

package broker

import "net"

// inputWaiting is Linux-only; elsewhere a takeover never waits.
func inputWaiting(net.Conn) bool { return false }
