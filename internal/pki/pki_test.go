package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/testwait"
)

const wait = 5 * time.Second

// clock is a settable time source for the watch and renewal logic.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }
func testCA(t *testing.T) *CA        { return mustCA(t, t.TempDir()) }
func mustCA(t *testing.T, dataDir string) *CA {
	t.Helper()
	ca, _, err := LoadOrCreateCA(Dir(dataDir), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestLoadOrCreateCA(t *testing.T) {
	data := t.TempDir()
	if _, err := LoadCA(Dir(data)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadCA of a fresh dir = %v, want ErrNotExist", err)
	}
	now := time.Now()
	ca, created, err := LoadOrCreateCA(Dir(data), now)
	if err != nil || !created {
		t.Fatalf("LoadOrCreateCA = %v, created %v", err, created)
	}
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("not a CA certificate: IsCA %v usage %v", c.IsCA, c.KeyUsage)
	}
	if k, ok := ca.Key.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", ca.Key)
	}
	if got := c.NotAfter.Sub(now); got < CALifetime-time.Minute || got > CALifetime+time.Minute {
		t.Errorf("CA lifetime %v, want %v", got, CALifetime)
	}
	fi, err := os.Stat(filepath.Join(Dir(data), CAKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key file mode = %v (%v), want 0600", fi.Mode(), err)
	}
	again, created, err := LoadOrCreateCA(Dir(data), now)
	if err != nil || created || again.Cert.SerialNumber.Cmp(c.SerialNumber) != 0 {
		t.Fatalf("second LoadOrCreateCA: created %v, same %v, err %v", created, again.Cert.Equal(c), err)
	}
}

func TestConcurrentCreatorsShareOneCA(t *testing.T) {
	data := t.TempDir()
	const n = 4
	var wg sync.WaitGroup
	cas := make([]*CA, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { cas[i], _, errs[i] = LoadOrCreateCA(Dir(data), time.Now()) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("creator %d: %v", i, errs[i])
		}
		if !cas[i].Cert.Equal(cas[0].Cert) {
			t.Fatalf("creator %d got a different CA", i)
		}
	}
	left, _ := filepath.Glob(filepath.Join(data, ".pki-*"))
	if len(left) > 0 {
		t.Errorf("temporary directories left behind: %v", left)
	}
}

func TestIssue(t *testing.T) {
	ca := testCA(t)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	now := time.Now()
	tests := []struct {
		name    string
		req     Request
		verify  x509.VerifyOptions
		wantErr bool
	}{
		{"server dns", Request{DNSNames: []string{"edge.local"}}, x509.VerifyOptions{DNSName: "edge.local"}, false},
		{"server ip", Request{IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, Algorithm: Rsa2048}, x509.VerifyOptions{DNSName: "127.0.0.1"}, false},
		{"server ed25519", Request{DNSNames: []string{"a"}, Algorithm: Ed25519}, x509.VerifyOptions{DNSName: "a"}, false},
		{"client", Request{CommonName: "device-1", Client: true},
			x509.VerifyOptions{KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, false},
		{"no name", Request{}, x509.VerifyOptions{}, true},
		{"bad algorithm", Request{DNSNames: []string{"a"}, Algorithm: "Dsa"}, x509.VerifyOptions{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ca.Issue(tt.req, now)
			if tt.wantErr {
				if err == nil {
					t.Fatal("Issue succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.verify.Roots, tt.verify.CurrentTime = pool, now
			if _, err := c.Leaf.Verify(tt.verify); err != nil {
				t.Fatalf("verify: %v", err)
			}
			if got := c.Leaf.NotAfter.Sub(now); got < DefaultServerLifetime-time.Minute || got > DefaultServerLifetime {
				t.Errorf("lifetime %v", got)
			}
			cp, kp, err := EncodePEM(c)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tls.X509KeyPair(cp, kp); err != nil {
				t.Fatalf("PEM round trip: %v", err)
			}
		})
	}
	long, err := ca.Issue(Request{DNSNames: []string{"a"}, Lifetime: 2 * CALifetime}, now)
	if err != nil {
		t.Fatal(err)
	}
	if long.Leaf.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("certificate outlives its CA: %v > %v", long.Leaf.NotAfter, ca.Cert.NotAfter)
	}
}

// writePair writes a certificate for name to dir/tls.crt and dir/tls.key the
// way a careful operator replaces them: new files renamed over the old.
func writePair(t *testing.T, ca *CA, dir, name string) *tls.Certificate {
	t.Helper()
	c, err := ca.Issue(Request{DNSNames: []string{name}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cp, kp, err := EncodePEM(c)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "tls.key"), kp)
	writeFile(t, filepath.Join(dir, "tls.crt"), cp)
	return c
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func served(t *testing.T, get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) string {
	t.Helper()
	c, err := get(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.DNSNames[0]
}

func TestFileCertReloads(t *testing.T) {
	ca := testCA(t)
	dir := t.TempDir()
	writePair(t, ca, dir, "first")
	clk := newClock()
	fc, err := NewFileCert(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"),
		WatchOptions{Interval: time.Minute, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if got := served(t, fc.GetCertificate); got != "first" {
		t.Fatalf("served %q", got)
	}

	writePair(t, ca, dir, "second")
	if got := served(t, fc.GetCertificate); got != "first" {
		t.Fatalf("files looked at before the interval: served %q", got)
	}
	clk.Add(time.Minute)
	if got := served(t, fc.GetCertificate); got != "second" {
		t.Fatalf("after the interval served %q, want second", got)
	}

	// A certificate whose key does not match (the key is not replaced
	// yet) keeps the previous pair in use.
	other, _ := ca.Issue(Request{DNSNames: []string{"third"}}, time.Now())
	cp, _, _ := EncodePEM(other)
	writeFile(t, filepath.Join(dir, "tls.crt"), cp)
	clk.Add(time.Minute)
	if got := served(t, fc.GetCertificate); got != "second" {
		t.Fatalf("mismatched pair: served %q, want the previous second", got)
	}
	// Deleted files, too.
	os.Remove(filepath.Join(dir, "tls.key"))
	clk.Add(time.Minute)
	if got := served(t, fc.GetCertificate); got != "second" {
		t.Fatalf("missing key: served %q", got)
	}
	writePair(t, ca, dir, "fourth")
	clk.Add(time.Minute)
	if got := served(t, fc.GetCertificate); got != "fourth" {
		t.Fatalf("served %q, want fourth", got)
	}

	if _, err := NewFileCert(filepath.Join(dir, "nope.crt"), filepath.Join(dir, "tls.key"), WatchOptions{}); err == nil {
		t.Fatal("NewFileCert of a missing file succeeded")
	}
}

func TestAutoCertRenews(t *testing.T) {
	for _, keep := range []bool{false, true} {
		name := "rotate key"
		if keep {
			name = "keep key"
		}
		t.Run(name, func(t *testing.T) {
			ca := testCA(t)
			clk := newClock()
			a, err := NewAutoCert(ca, AutoOptions{
				Request: Request{DNSNames: []string{"edge"}, Lifetime: 3 * time.Hour},
				KeepKey: keep, Now: clk.Now,
			})
			if err != nil {
				t.Fatal(err)
			}
			first := a.Current()
			clk.Add(2*time.Hour - 2*time.Minute) // issued backdated by an hour: NotAfter is now+3h
			if c, _ := a.GetCertificate(nil); c != first {
				t.Fatal("renewed before two thirds of the lifetime")
			}
			clk.Add(2 * time.Minute)
			if c, _ := a.GetCertificate(nil); c != first {
				t.Fatal("the handshake that finds renewal due must not wait for it")
			}
			testwait.For(t, "renewal", func() bool { return a.Current() != first })
			second := a.Current()
			if !second.Leaf.NotAfter.After(first.Leaf.NotAfter) {
				t.Errorf("renewed certificate expires %v, not after %v", second.Leaf.NotAfter, first.Leaf.NotAfter)
			}
			sameKey := second.PrivateKey.(*ecdsa.PrivateKey).Equal(first.PrivateKey)
			if sameKey != keep {
				t.Errorf("key reused = %v, want %v", sameKey, keep)
			}
			// Expired (no handshake for a long time): renewed before serving.
			clk.Add(24 * time.Hour)
			c, _ := a.GetCertificate(nil)
			if c == second || !clk.Now().Before(c.Leaf.NotAfter) {
				t.Fatal("served an expired certificate")
			}
			testwait.For(t, "no renewal running", func() bool { return !a.renewing.Load() })
		})
	}
}

// handshake runs a TLS handshake over a real socket pair and returns the
// client's error and the server's view.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		st  tls.ConnectionState
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(wait))
		tc := tls.Server(c, server)
		err = tc.Handshake()
		if err == nil {
			// TLS 1.3 client certificates are checked after the client's
			// handshake returns: a byte from the server proves acceptance.
			_, err = tc.Write([]byte{1})
		}
		res <- result{tc.ConnectionState(), err}
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", ln.Addr().String(), client)
	if err == nil {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(wait))
		_, err = io.ReadFull(c, make([]byte, 1))
	}
	r := <-res
	if err == nil {
		err = r.err
	}
	return r.st, err
}

func TestServerConfig(t *testing.T) {
	ca := testCA(t)
	clientCA := testCA(t)
	strangers := testCA(t)
	srv, err := ca.Issue(Request{IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	get := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return srv, nil }
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	trusted := x509.NewCertPool()
	trusted.AddCert(clientCA.Cert)
	device, _ := clientCA.Issue(Request{CommonName: "device-1", Client: true}, time.Now())
	impostor, _ := strangers.Issue(Request{CommonName: "device-1", Client: true}, time.Now())

	tests := []struct {
		name       string
		clientAuth string
		min, max   uint16
		cert       *tls.Certificate
		wantErr    bool
		wantPeer   string
	}{
		{"tls 1.0 refused", ClientAuthNone, tls.VersionTLS10, tls.VersionTLS10, nil, true, ""},
		{"tls 1.1 refused", ClientAuthNone, tls.VersionTLS11, tls.VersionTLS11, nil, true, ""},
		{"tls 1.2", ClientAuthNone, tls.VersionTLS12, tls.VersionTLS12, nil, false, ""},
		{"tls 1.3", ClientAuthNone, tls.VersionTLS13, tls.VersionTLS13, nil, false, ""},
		{"request: any certificate", ClientAuthRequest, 0, 0, impostor, false, "device-1"},
		{"optional: none", ClientAuthOptional, 0, 0, nil, false, ""},
		{"optional: trusted", ClientAuthOptional, 0, 0, device, false, "device-1"},
		{"optional: untrusted", ClientAuthOptional, 0, 0, impostor, true, ""},
		{"required: none", ClientAuthRequired, 0, 0, nil, true, ""},
		{"required: trusted", ClientAuthRequired, 0, 0, device, false, "device-1"},
		{"required: trusted tls 1.2", ClientAuthRequired, tls.VersionTLS12, tls.VersionTLS12, device, false, "device-1"},
		{"required: untrusted", ClientAuthRequired, 0, 0, impostor, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, err := ServerConfig(ServerOptions{GetCertificate: get, ClientAuth: tt.clientAuth,
				ClientCAs: func() *x509.CertPool { return trusted }})
			if err != nil {
				t.Fatal(err)
			}
			cc := &tls.Config{RootCAs: roots, MinVersion: tt.min, MaxVersion: tt.max}
			if tt.cert != nil {
				cc.Certificates = []tls.Certificate{*tt.cert}
			}
			st, err := handshake(t, sc, cc)
			if (err != nil) != tt.wantErr {
				t.Fatalf("handshake error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if st.Version < tls.VersionTLS12 {
				t.Errorf("negotiated version %x", st.Version)
			}
			peer := ""
			if len(st.PeerCertificates) > 0 {
				peer = st.PeerCertificates[0].Subject.CommonName
			}
			if peer != tt.wantPeer {
				t.Errorf("peer = %q, want %q", peer, tt.wantPeer)
			}
			if tt.clientAuth != ClientAuthRequest && peer != "" && len(st.VerifiedChains) == 0 {
				t.Error("a verified client certificate has no verified chain")
			}
		})
	}

	if _, err := ServerConfig(ServerOptions{GetCertificate: get, ClientAuth: ClientAuthRequired}); err == nil {
		t.Error("Required without trusted CAs accepted")
	}
	if _, err := ServerConfig(ServerOptions{GetCertificate: get, ClientAuth: "Sometimes"}); err == nil {
		t.Error("unknown mode accepted")
	}
}

func TestCAFileReloadsTrustedClients(t *testing.T) {
	ca := testCA(t)
	first, second := testCA(t), testCA(t)
	srv, _ := ca.Issue(Request{IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}, time.Now())
	path := filepath.Join(t.TempDir(), "client_ca.pem")
	writeFile(t, path, first.CertPEM)
	clk := newClock()
	bundle, err := NewCAFile(path, WatchOptions{Interval: time.Second, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ServerConfig(ServerOptions{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return srv, nil },
		ClientAuth:     ClientAuthRequired, ClientCAs: bundle.Pool,
	})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	dev1, _ := first.Issue(Request{CommonName: "one", Client: true}, time.Now())
	dev2, _ := second.Issue(Request{CommonName: "two", Client: true}, time.Now())
	try := func(c *tls.Certificate) error {
		_, err := handshake(t, sc, &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{*c}})
		return err
	}
	if err := try(dev1); err != nil {
		t.Fatalf("trusted device refused: %v", err)
	}
	if err := try(dev2); err == nil {
		t.Fatal("untrusted device accepted")
	}
	writeFile(t, path, second.CertPEM)
	clk.Add(time.Second)
	if err := try(dev2); err != nil {
		t.Fatalf("device of the new bundle refused: %v", err)
	}
	if err := try(dev1); err == nil {
		t.Fatal("device of the old bundle still accepted")
	}
	writeFile(t, path, []byte("not pem"))
	clk.Add(time.Second)
	if err := try(dev2); err != nil {
		t.Fatalf("a broken bundle file must keep the previous one: %v", err)
	}
}

// TestAutoCertCloseOwnsRenewal: Close waits for a background renewal
// under way (it has finished when Close returns), and after Close a
// handshake that finds renewal due starts none.
func TestAutoCertCloseOwnsRenewal(t *testing.T) {
	ca := testCA(t)
	clk := newClock()
	a, err := NewAutoCert(ca, AutoOptions{
		Request: Request{DNSNames: []string{"edge"}, Lifetime: 3 * time.Hour},
		Now:     clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	first := a.Current()
	clk.Add(2 * time.Hour) // renewal due
	a.mu.Lock()            // hold the renewal that the handshake starts
	if c, _ := a.GetCertificate(nil); c != first {
		a.mu.Unlock()
		t.Fatal("the handshake waited for the renewal")
	}
	closed := make(chan struct{})
	go func() { a.Close(); close(closed) }()
	select {
	case <-closed:
		a.mu.Unlock()
		t.Fatal("Close returned while a renewal was running")
	default:
	}
	a.mu.Unlock()
	<-closed
	if a.Current() == first || a.renewing.Load() {
		t.Fatal("the renewal Close waited for did not finish")
	}
	second := a.Current()
	clk.Add(2 * time.Hour)
	if c, _ := a.GetCertificate(nil); c != second || a.renewing.Load() || a.Current() != second {
		t.Fatal("a renewal started after Close")
	}
}
