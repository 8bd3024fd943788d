package listener

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/pki"
	"github.com/edgeport/edgeport/internal/testwait"
)

// rejectLog records what the listener reported to its Handler.
type rejectLog struct {
	Handler
	mu      sync.Mutex
	reasons []string
}

func (r *rejectLog) ConnectionRejected(listener, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, listener+"/"+reason)
}

func (r *rejectLog) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.reasons...)
}

// dialFrom connects to l from a chosen loopback source address, so a test
// can play several hosts.
func dialFrom(t *testing.T, l *Listener, src string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: testTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	return c
}

// refused reports whether the server closed c without a word.
func refused(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	_, err := c.Read(make([]byte, 1))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("connection neither served nor closed")
	}
	return err != nil
}

func TestGuardLimits(t *testing.T) {
	tests := []struct {
		name   string
		limits Limits
		// dial from these sources in order; want says which get served
		from   []string
		want   []bool
		reason string
	}{
		{"total", Limits{MaxConnections: 2}, []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, []bool{true, true, false}, RejectTotalLimit},
		{"per address", Limits{MaxConnectionsPerAddress: 1},
			[]string{"127.0.0.1", "127.0.0.1", "127.0.0.2"}, []bool{true, false, true}, RejectAddressLimit},
		{"rate", Limits{ConnectRate: 0.001, ConnectBurst: 2}, []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, []bool{true, true, false}, RejectRateLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := NewGuard(tt.limits)
			if err != nil {
				t.Fatal(err)
			}
			h := &rejectLog{Handler: echoHandler()}
			l := startListener(t, Config{Name: "g", Protocol: ProtocolTCP, Guard: g}, h)
			var served []net.Conn
			for i, src := range tt.from {
				c := dialFrom(t, l, src)
				if tt.want[i] {
					assertEcho(t, c, "hi")
					served = append(served, c)
				} else if !refused(t, c) {
					t.Fatalf("connection %d from %s served, want refused", i, src)
				}
			}
			if got := h.got(); len(got) != 1 || got[0] != "g/"+tt.reason {
				t.Fatalf("reported rejections %v, want [g/%s]", got, tt.reason)
			}
			if st := l.Stats(); st.Rejected != 1 {
				t.Fatalf("Stats = %+v", st)
			}
			for _, c := range served {
				c.Close()
			}
			testwait.For(t, "slots given back", func() bool { return g.Open() == 0 })
		})
	}
}

func TestGuardRateRefills(t *testing.T) {
	g, err := NewGuard(Limits{ConnectRate: 10, ConnectBurst: 1})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	g.now = func() time.Time { return now }
	g.last = now
	ip := netip.MustParseAddr("192.0.2.1")
	if r := g.admit(ip); r != "" {
		t.Fatalf("first admit: %s", r)
	}
	if r := g.admit(ip); r != RejectRateLimit {
		t.Fatalf("second admit at once: %q, want rate_limit", r)
	}
	now = now.Add(100 * time.Millisecond)
	if r := g.admit(ip); r != "" {
		t.Fatalf("admit after 1/rate: %q", r)
	}
	if err := g.SetLimits(Limits{ConnectRate: -1}); err == nil {
		t.Fatal("negative rate accepted")
	}
	if err := g.SetLimits(Limits{}); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if r := g.admit(ip); r != "" {
			t.Fatalf("unlimited guard refused: %s", r)
		}
	}
}

func TestGuardSharedByListeners(t *testing.T) {
	g, err := NewGuard(Limits{MaxConnections: 1})
	if err != nil {
		t.Fatal(err)
	}
	tcp := startListener(t, Config{Name: "a", Protocol: ProtocolTCP, Guard: g}, echoHandler())
	ws := startListener(t, Config{Name: "b", Protocol: ProtocolWebSocket, Guard: g}, echoHandler())

	c := dialStream(t, ws, nil)
	assertEcho(t, c, "ws holds the only slot")
	if !refused(t, dialFrom(t, tcp, "127.0.0.1")) {
		t.Fatal("second connection served over a shared limit of 1")
	}
	c.Close()
	testwait.For(t, "the WebSocket slot given back", func() bool { return g.Open() == 0 })
	assertEcho(t, dialFrom(t, tcp, "127.0.0.1"), "room again")
	if st := tcp.Stats(); st.Rejections.TotalLimit != 1 {
		t.Fatalf("tcp Stats = %+v", st)
	}
}

func TestTLSHandshakeDeadline(t *testing.T) {
	serverTLS, clientTLS := testTLS(t)
	for _, protocol := range []string{ProtocolTCP, ProtocolWebSocket} {
		t.Run(protocol, func(t *testing.T) {
			g, err := NewGuard(Limits{HandshakeTimeout: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			h := &rejectLog{Handler: echoHandler()}
			l := startListener(t, Config{Name: "t", Protocol: protocol, TLS: serverTLS, Guard: g}, h)
			// Connected, silent: a slowloris before the handshake.
			silent := dialFrom(t, l, "127.0.0.1")
			if !refused(t, silent) {
				t.Fatal("silent connection not closed")
			}
			testwait.For(t, "the rejection", func() bool { return l.Stats().Rejections.TLSHandshake == 1 })
			if got := h.got(); len(got) != 1 || got[0] != "t/"+RejectTLSHandshake {
				t.Fatalf("reported %v", got)
			}
			testwait.For(t, "the slot given back", func() bool { return g.Open() == 0 && l.Stats().Open == 0 })
			// The real client's handshake gets the default bound: 100 ms is
			// shorter than a handshake takes on a loaded -race run (it
			// failed so), and the point here is the slot, not the deadline.
			if err := g.SetLimits(Limits{}); err != nil {
				t.Fatal(err)
			}
			assertEcho(t, dialStream(t, l, clientTLS), "a real client still gets in")
		})
	}
}

func TestTLSStateReachesHandler(t *testing.T) {
	ca, _, err := pki.LoadOrCreateCA(pki.Dir(t.TempDir()), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(pki.Request{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	device, err := ca.Issue(pki.Request{CommonName: "device-7", Client: true}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{*srv}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	clientTLS := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{*device}}

	for _, tt := range transports {
		t.Run(tt.name, func(t *testing.T) {
			type seen struct {
				st tls.ConnectionState
				ok bool
			}
			seenc := make(chan seen, 1)
			h := HandlerFunc(func(conn net.Conn, _ string) {
				// Before the first read: the handshake is already done.
				st, ok := TLSState(conn)
				seenc <- seen{st, ok}
				defer conn.Close()
				_, _ = io.Copy(conn, conn)
			})
			cfg := Config{Protocol: tt.protocol}
			var ctls *tls.Config
			if tt.tls {
				cfg.TLS, ctls = serverTLS, clientTLS
			}
			l := startListener(t, cfg, h)
			assertEcho(t, dialStream(t, l, ctls), "x")
			s := <-seenc
			if s.ok != tt.tls {
				t.Fatalf("TLSState ok = %v, want %v", s.ok, tt.tls)
			}
			if !tt.tls {
				return
			}
			if !s.st.HandshakeComplete || s.st.Version < tls.VersionTLS12 {
				t.Errorf("state %+v", s.st)
			}
			if len(s.st.PeerCertificates) != 1 || !s.st.PeerCertificates[0].Equal(device.Leaf) || len(s.st.VerifiedChains) == 0 {
				t.Errorf("peer certificates %d, verified chains %d", len(s.st.PeerCertificates), len(s.st.VerifiedChains))
			}
		})
	}
}
