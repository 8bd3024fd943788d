package auth

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Throttle slows authentication attempts from addresses that recently
// failed: each attempt waits base × 2^(failures−1), at most max, and an
// address's failures are forgotten after window without one. It keeps at
// most maxEntries addresses, so a flood of sources cannot grow it without
// bound. IPv6 addresses count per /64, which one host usually owns whole.
// A nil *Throttle never waits.
type Throttle struct {
	base, max, window time.Duration
	maxEntries        int
	now               func() time.Time

	mu sync.Mutex
	m  map[netip.Addr]*penalty
}

type penalty struct {
	n    int
	last time.Time
}

// Throttle defaults.
const (
	DefaultThrottleBase   = 100 * time.Millisecond
	DefaultThrottleMax    = 5 * time.Second
	DefaultThrottleWindow = time.Minute
	defaultMaxEntries     = 10000
)

// NewThrottle returns a Throttle; zero durations take the defaults.
func NewThrottle(base, max time.Duration) *Throttle {
	if base <= 0 {
		base = DefaultThrottleBase
	}
	if max <= 0 {
		max = DefaultThrottleMax
	}
	return &Throttle{base: base, max: max, window: DefaultThrottleWindow, maxEntries: defaultMaxEntries,
		now: time.Now, m: make(map[netip.Addr]*penalty)}
}

// key maps a remote address to what failures are counted by.
func throttleKey(addr net.Addr) (netip.Addr, bool) {
	if addr == nil {
		return netip.Addr{}, false
	}
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		ap, err := netip.ParseAddrPort(addr.String())
		if err != nil {
			return netip.Addr{}, false
		}
		ip = ap.Addr()
	}
	ip = ip.Unmap()
	if !ip.IsValid() {
		return ip, false
	}
	if ip.Is6() {
		pfx, _ := ip.Prefix(64)
		ip = pfx.Addr()
	}
	return ip, true
}

// Delay is how long the next attempt from addr waits.
func (t *Throttle) Delay(addr net.Addr) time.Duration {
	if t == nil {
		return 0
	}
	k, ok := throttleKey(addr)
	if !ok {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.m[k]
	if p == nil {
		return 0
	}
	if t.now().Sub(p.last) > t.window {
		delete(t.m, k)
		return 0
	}
	d := t.base << min(p.n-1, 30)
	if d > t.max || d <= 0 {
		d = t.max
	}
	return d
}

// Wait sleeps for Delay(addr), or until ctx ends.
func (t *Throttle) Wait(ctx context.Context, addr net.Addr) error {
	d := t.Delay(addr)
	if d == 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Failed records a failed attempt from addr.
func (t *Throttle) Failed(addr net.Addr) {
	if t == nil {
		return
	}
	k, ok := throttleKey(addr)
	if !ok {
		return
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.m[k]
	if p != nil && now.Sub(p.last) > t.window {
		p.n = 0
	}
	if p == nil {
		if len(t.m) >= t.maxEntries {
			t.evictLocked(now)
		}
		p = &penalty{}
		t.m[k] = p
	}
	p.n++
	p.last = now
}

// evictLocked makes room: forgotten entries go first, then arbitrary ones
// (map order is random, so an attacker cannot pick which).
func (t *Throttle) evictLocked(now time.Time) {
	for k, p := range t.m {
		if now.Sub(p.last) > t.window {
			delete(t.m, k)
		}
	}
	for k := range t.m {
		if len(t.m) < t.maxEntries {
			break
		}
		delete(t.m, k)
	}
}

// Len returns how many addresses are being slowed down (for tests and
// metrics).
func (t *Throttle) Len() int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}
