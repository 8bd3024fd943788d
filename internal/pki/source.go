package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCheckInterval is how often, at most, certificate files are looked
// at for changes. The check rides on handshakes, so an idle port costs
// nothing and there is no goroutine to stop.
const DefaultCheckInterval = time.Second

// WatchOptions tune how files are watched; the zero value is ready to use.
type WatchOptions struct {
	Log      *slog.Logger     // nil discards
	Interval time.Duration    // default DefaultCheckInterval
	Now      func() time.Time // default time.Now; tests move the clock
}

func (o WatchOptions) withDefaults() WatchOptions {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Interval <= 0 {
		o.Interval = DefaultCheckInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// watched is a value loaded from files and loaded again when one of them
// changes. A change that does not load (a certificate replaced before its
// key) keeps the previous value in force until the files change again.
type watched[T any] struct {
	paths []string
	load  func(data [][]byte) (*T, error)
	what  string
	o     WatchOptions

	cur  atomic.Pointer[T]
	next atomic.Int64 // UnixNano after which the files are looked at again

	mu      sync.Mutex    // one look at a time; handshakes meanwhile use cur
	stamps  []os.FileInfo // of the files as last read
	lastErr string        // logged once, not at every look
}

func newWatched[T any](what string, paths []string, o WatchOptions, load func([][]byte) (*T, error)) (*watched[T], error) {
	w := &watched[T]{paths: paths, load: load, what: what, o: o.withDefaults()}
	stamps, data, err := w.read()
	if err != nil {
		return nil, err
	}
	v, err := load(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	w.cur.Store(v)
	w.stamps = stamps
	w.next.Store(w.o.Now().Add(w.o.Interval).UnixNano())
	return w, nil
}

func (w *watched[T]) read() ([]os.FileInfo, [][]byte, error) {
	stamps := make([]os.FileInfo, len(w.paths))
	data := make([][]byte, len(w.paths))
	for i, p := range w.paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", w.what, err)
		}
		stamps[i] = fi
		if data[i], err = os.ReadFile(p); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", w.what, err)
		}
	}
	return stamps, data, nil
}

// get returns the current value, first reloading it if a file changed.
func (w *watched[T]) get() *T {
	if now := w.o.Now(); now.UnixNano() >= w.next.Load() && w.mu.TryLock() {
		w.next.Store(now.Add(w.o.Interval).UnixNano())
		w.check()
		w.mu.Unlock()
	}
	return w.cur.Load()
}

func (w *watched[T]) check() {
	changed := false
	for i, p := range w.paths {
		fi, err := os.Stat(p)
		if err != nil {
			w.fail(err)
			return
		}
		old := w.stamps[i]
		if !os.SameFile(fi, old) || !fi.ModTime().Equal(old.ModTime()) || fi.Size() != old.Size() {
			changed = true
		}
	}
	if !changed {
		return
	}
	stamps, data, err := w.read()
	if err != nil {
		w.fail(err)
		return
	}
	// Remembered even when loading fails: the same files would fail again.
	w.stamps = stamps
	v, err := w.load(data)
	if err != nil {
		w.fail(fmt.Errorf("%s: %w", w.what, err))
		return
	}
	w.cur.Store(v)
	w.lastErr = ""
	w.o.Log.Info("reloaded "+w.what, "files", w.paths)
}

func (w *watched[T]) fail(err error) {
	if msg := err.Error(); msg != w.lastErr {
		w.lastErr = msg
		w.o.Log.Warn("not reloaded; the previous "+w.what+" stays in use", "err", err)
	}
}

// FileCert serves a certificate and key from PEM files, reloading them when
// they change: new handshakes get the new certificate, established
// connections keep theirs.
type FileCert struct{ w *watched[tls.Certificate] }

// NewFileCert loads the pair now; an error names what is wrong with it.
func NewFileCert(certFile, keyFile string, o WatchOptions) (*FileCert, error) {
	o = o.withDefaults()
	w, err := newWatched("certificate", []string{certFile, keyFile}, o, func(data [][]byte) (*tls.Certificate, error) {
		c, err := tls.X509KeyPair(data[0], data[1])
		if err != nil {
			return nil, err
		}
		if now := o.Now(); now.After(c.Leaf.NotAfter) {
			o.Log.Warn("the certificate has expired", "subject", c.Leaf.Subject.String(), "not_after", c.Leaf.NotAfter)
		}
		return &c, nil
	})
	if err != nil {
		return nil, err
	}
	return &FileCert{w}, nil
}

// GetCertificate is a tls.Config.GetCertificate.
func (f *FileCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f.w.get(), nil
}

// CAFile is a bundle of trusted CA certificates from a PEM file, reloaded
// when it changes.
type CAFile struct{ w *watched[x509.CertPool] }

// NewCAFile loads the bundle now; it must hold at least one certificate.
func NewCAFile(path string, o WatchOptions) (*CAFile, error) {
	w, err := newWatched("CA bundle", []string{path}, o, func(data [][]byte) (*x509.CertPool, error) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data[0]) {
			return nil, errors.New("no PEM certificate found")
		}
		return pool, nil
	})
	if err != nil {
		return nil, err
	}
	return &CAFile{w}, nil
}

// Pool returns the current bundle; the same pointer until the file changes.
func (c *CAFile) Pool() *x509.CertPool { return c.w.get() }

// AutoOptions configure certificates issued and renewed by an AutoCert.
type AutoOptions struct {
	Request Request
	// RenewBefore is how long before expiry a certificate is replaced;
	// default a third of the lifetime.
	RenewBefore time.Duration
	// KeepKey reuses the private key at renewal (rotationPolicy Never).
	KeepKey bool
	Log     *slog.Logger
	Now     func() time.Time
}

// renewRetry spaces attempts after a renewal failed.
const renewRetry = time.Minute

// AutoCert serves a server certificate issued by a CA and renews it before
// it expires. Renewal is triggered by the handshakes that find it due and
// runs aside, so they keep getting the current certificate meanwhile.
type AutoCert struct {
	ca       *CA
	o        AutoOptions
	cur      atomic.Pointer[issued]
	renewing atomic.Bool
	mu       sync.Mutex // serializes issuing

	// bgMu guards closed and orders bg.Add before Close's bg.Wait.
	bgMu   sync.Mutex
	closed bool
	bg     sync.WaitGroup // background renewals
}

// Close waits for a background renewal under way and starts no more:
// handshakes after Close renew in their own goroutine when the certificate
// has expired, and otherwise keep the current one. The port that serves
// the certificate closes it when it stops.
func (a *AutoCert) Close() {
	a.bgMu.Lock()
	a.closed = true
	a.bgMu.Unlock()
	a.bg.Wait()
}

type issued struct {
	cert    *tls.Certificate
	renewAt time.Time
}

// NewAutoCert issues the first certificate now.
func NewAutoCert(ca *CA, o AutoOptions) (*AutoCert, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Request.Lifetime <= 0 {
		o.Request.Lifetime = DefaultServerLifetime
	}
	if o.RenewBefore <= 0 || o.RenewBefore >= o.Request.Lifetime {
		o.RenewBefore = o.Request.Lifetime / 3
	}
	a := &AutoCert{ca: ca, o: o}
	if err := a.issue(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *AutoCert) issue() error {
	req := a.o.Request
	if a.o.KeepKey {
		if cur := a.cur.Load(); cur != nil {
			req.Key, _ = cur.cert.PrivateKey.(crypto.Signer)
		}
	}
	now := a.o.Now()
	c, err := a.ca.Issue(req, now)
	if err != nil {
		return err
	}
	renewAt := c.Leaf.NotAfter.Add(-a.o.RenewBefore)
	if life := c.Leaf.NotAfter.Sub(now); life < a.o.Request.Lifetime {
		// Clamped by the CA's own expiry: renew at two thirds of what is left.
		renewAt = now.Add(life * 2 / 3)
	}
	a.cur.Store(&issued{cert: c, renewAt: renewAt})
	a.o.Log.Info("server certificate issued", "subject", c.Leaf.Subject.CommonName,
		"dns", c.Leaf.DNSNames, "ip", c.Leaf.IPAddresses, "not_after", c.Leaf.NotAfter, "renew_at", renewAt)
	return nil
}

// renew issues a new certificate unless another renewal already did.
func (a *AutoCert) renew(due *issued) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cur.Load() != due {
		return
	}
	if err := a.issue(); err != nil {
		a.o.Log.Error("renewing the server certificate failed; retrying", "err", err, "retry", renewRetry)
		a.cur.Store(&issued{cert: due.cert, renewAt: a.o.Now().Add(renewRetry)})
	}
}

// GetCertificate is a tls.Config.GetCertificate.
func (a *AutoCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cur := a.cur.Load()
	now := a.o.Now()
	switch {
	case now.Before(cur.renewAt):
	case !now.Before(cur.cert.Leaf.NotAfter):
		// Expired (nobody connected for a long time): a new one is needed
		// before this handshake can succeed.
		a.renew(cur)
		return a.cur.Load().cert, nil
	case a.renewing.CompareAndSwap(false, true):
		a.bgMu.Lock()
		defer a.bgMu.Unlock()
		if a.closed {
			a.renewing.Store(false)
			break
		}
		a.bg.Add(1)
		go func() {
			defer a.bg.Done()
			defer a.renewing.Store(false)
			a.renew(cur)
		}()
	}
	return cur.cert, nil
}

// Current returns the certificate new handshakes get.
func (a *AutoCert) Current() *tls.Certificate { return a.cur.Load().cert }

// Client certificate modes of a TLS port.
const (
	ClientAuthNone     = "None"     // no certificate asked
	ClientAuthRequest  = "Request"  // asked, not verified here: authentication checks it
	ClientAuthOptional = "Optional" // verified when the client sends one
	ClientAuthRequired = "Required" // required and verified
)

// ServerOptions describe a TLS server.
type ServerOptions struct {
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	ClientAuth     string // default ClientAuthNone
	// ClientCAs returns the CAs client certificates must chain to
	// (Optional and Required); called on each handshake, it may change.
	ClientCAs func() *x509.CertPool
}

// cipherSuites are TLS 1.2's forward-secret AEAD suites; TLS 1.3 suites
// are not configurable and all good.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ServerConfig builds a TLS 1.2+ server configuration.
func ServerConfig(o ServerOptions) (*tls.Config, error) {
	if o.GetCertificate == nil {
		return nil, errors.New("tls: no certificate source")
	}
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   cipherSuites,
		GetCertificate: o.GetCertificate,
	}
	switch o.ClientAuth {
	case "", ClientAuthNone:
		return base, nil
	case ClientAuthRequest:
		base.ClientAuth = tls.RequestClientCert
		return base, nil
	case ClientAuthOptional:
		base.ClientAuth = tls.VerifyClientCertIfGiven
	case ClientAuthRequired:
		base.ClientAuth = tls.RequireAndVerifyClientCert
	default:
		return nil, fmt.Errorf("tls: unknown client authentication mode %q", o.ClientAuth)
	}
	if o.ClientCAs == nil {
		return nil, fmt.Errorf("tls: client authentication %s needs trusted CAs", o.ClientAuth)
	}
	cc := &clientCAs{base: base.Clone(), pool: o.ClientCAs}
	outer := base.Clone()
	outer.GetConfigForClient = cc.config
	return outer, nil
}

// clientCAs hands each handshake a configuration with the current CA pool,
// rebuilt only when the pool changed.
type clientCAs struct {
	base   *tls.Config
	pool   func() *x509.CertPool
	cached atomic.Pointer[poolConfig]
}

type poolConfig struct {
	pool *x509.CertPool
	cfg  *tls.Config
}

func (c *clientCAs) config(*tls.ClientHelloInfo) (*tls.Config, error) {
	p := c.pool()
	if pc := c.cached.Load(); pc != nil && pc.pool == p {
		return pc.cfg, nil
	}
	cfg := c.base.Clone()
	cfg.ClientCAs = p
	c.cached.Store(&poolConfig{pool: p, cfg: cfg})
	return cfg, nil
}
