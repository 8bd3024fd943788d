package broker

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
)

// RejectConnectTimeout labels connections closed because no CONNECT
// arrived within Options.ConnectTimeout (slowloris); the listeners' reasons
// (listener.Reject*) share the metric.
const RejectConnectTimeout = "connect_timeout"

// rejectCounts are a listener's refused connections by reason. Refusals
// are rare next to publishes, or an attack already under way, so a map
// behind the listener's auth mutex is cheap enough.
type rejectCounts map[string]*atomic.Uint64

// ConnectionRejected counts a connection refused before it reached the
// broker (limits, TLS handshake); listeners call it.
func (b *Broker) ConnectionRejected(listener, reason string) {
	b.listenerStats(listener).countReject(reason)
}

func (ls *listenerStats) countReject(reason string) {
	ls.authMu.Lock()
	n := ls.rejects[reason]
	if n == nil {
		if ls.rejects == nil {
			ls.rejects = make(rejectCounts)
		}
		n = new(atomic.Uint64)
		ls.rejects[reason] = n
	}
	ls.authMu.Unlock()
	n.Add(1)
}

func (ls *listenerStats) rejectSnapshot() map[string]uint64 {
	ls.authMu.Lock()
	defer ls.authMu.Unlock()
	m := make(map[string]uint64, len(ls.rejects))
	for r, n := range ls.rejects {
		m[r] = n.Load()
	}
	return m
}

// countNoConnect counts a connection that ended before CONNECT because its
// deadline passed; other endings (the peer left, garbage) are not attacks
// on the broker's resources.
func (c *client) countNoConnect(err error) {
	// A WebSocket connection reports context.DeadlineExceeded.
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		c.ls.countReject(RejectConnectTimeout)
	}
}
