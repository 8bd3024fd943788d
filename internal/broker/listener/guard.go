package listener

import (
	"errors"
	"math"
	"net/netip"
	"sync"
	"time"
)

// Limits are connection limits shared by the listeners of one Guard; zero
// values mean unlimited (or, for HandshakeTimeout, the default).
type Limits struct {
	// MaxConnections bounds the open connections of all guarded
	// listeners together.
	MaxConnections int
	// MaxConnectionsPerAddress bounds the open connections from one IP
	// address.
	MaxConnectionsPerAddress int
	// ConnectRate is how many new connections per second all guarded
	// listeners accept together, on average; ConnectBurst how many may
	// arrive at once (default: the rate, at least 1).
	ConnectRate  float64
	ConnectBurst int
	// HandshakeTimeout bounds each TLS handshake.
	HandshakeTimeout time.Duration
}

// Validate reports a negative limit.
func (l Limits) Validate() error {
	if l.MaxConnections < 0 || l.MaxConnectionsPerAddress < 0 || l.ConnectRate < 0 ||
		l.ConnectBurst < 0 || l.HandshakeTimeout < 0 || math.IsNaN(l.ConnectRate) {
		return errors.New("connection limits must not be negative")
	}
	return nil
}

// Guard enforces Limits on the connections of every listener given it in
// Config.Guard. It is checked once per accepted socket, before any
// goroutine, buffer or handshake is spent on it; a refused socket is closed
// at once. Changing the limits affects new connections only.
type Guard struct {
	now func() time.Time

	mu      sync.Mutex
	lim     Limits
	open    int
	perAddr map[netip.Addr]int
	tokens  float64 // token bucket of the connect rate
	last    time.Time
}

// NewGuard returns a Guard enforcing l.
func NewGuard(l Limits) (*Guard, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	g := &Guard{now: time.Now, perAddr: make(map[netip.Addr]int)}
	g.lim = l
	g.tokens = g.burst()
	g.last = g.now()
	return g, nil
}

// SetLimits replaces the limits; connections already open stay.
func (g *Guard) SetLimits(l Limits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lim = l
	g.tokens = min(g.tokens, g.burst())
	return nil
}

// Limits returns the limits in force.
func (g *Guard) Limits() Limits {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lim
}

// Open returns how many guarded connections are open.
func (g *Guard) Open() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

func (g *Guard) burst() float64 {
	if g.lim.ConnectBurst > 0 {
		return float64(g.lim.ConnectBurst)
	}
	return max(1, g.lim.ConnectRate)
}

// admit takes a slot for a connection from ip, or returns the reason it is
// refused. The rate is checked last so that refused connections spend no
// tokens.
func (g *Guard) admit(ip netip.Addr) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	l := &g.lim
	if l.MaxConnections > 0 && g.open >= l.MaxConnections {
		return RejectTotalLimit
	}
	if l.MaxConnectionsPerAddress > 0 && g.perAddr[ip] >= l.MaxConnectionsPerAddress {
		return RejectAddressLimit
	}
	if l.ConnectRate > 0 {
		now := g.now()
		g.tokens = min(g.burst(), g.tokens+now.Sub(g.last).Seconds()*l.ConnectRate)
		g.last = now
		if g.tokens < 1 {
			return RejectRateLimit
		}
		g.tokens--
	}
	g.open++
	g.perAddr[ip]++
	return ""
}

// release gives back the slot of a connection from ip.
func (g *Guard) release(ip netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open--
	if n := g.perAddr[ip] - 1; n > 0 {
		g.perAddr[ip] = n
	} else {
		delete(g.perAddr, ip)
	}
}
