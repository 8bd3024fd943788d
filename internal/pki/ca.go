// Package pki makes and serves TLS certificates: the CA Edgeport generates in
// its data directory, server certificates issued from it and certificate files reloaded when they change.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names in the CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

const (
	// CALifetime is how long a generated CA is valid.
	CALifetime = 10 * 365 * 24 * time.Hour
	// DefaultServerLifetime is how long an issued server certificate is
	// valid unless the listener says otherwise.
	DefaultServerLifetime = 90 * 24 * time.Hour
	// backdate tolerates clients whose clocks run a little behind ours.
	backdate = time.Hour
)

// Key algorithms, named as in Azure IoT Operations' privateKey.algorithm.
const (
	Ec256   = "Ec256"
	Ec384   = "Ec384"
	Ec521   = "Ec521"
	Ed25519 = "Ed25519"
	Rsa2048 = "Rsa2048"
	Rsa4096 = "Rsa4096"
	Rsa8192 = "Rsa8192"
)

// Dir is where a data directory keeps its CA.
func Dir(dataDir string) string { return filepath.Join(dataDir, "pki") }

// GenerateKey makes a private key; "" means Ec256.
func GenerateKey(algorithm string) (crypto.Signer, error) {
	switch algorithm {
	case "", Ec256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case Ec384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case Ec521:
		return ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case Rsa2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case Rsa4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	case Rsa8192:
		return rsa.GenerateKey(rand.Reader, 8192)
	}
	return nil, fmt.Errorf("unknown key algorithm %q", algorithm)
}

// CA is a certificate authority whose key Edgeport holds.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
}

// LoadCA reads the CA kept in dir. When there is none the error wraps
// fs.ErrNotExist.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("reading the CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("reading the CA key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA in %s: %w", dir, err)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("CA in %s: the key cannot sign", dir)
	}
	if !pair.Leaf.IsCA {
		return nil, fmt.Errorf("CA in %s: %s is not a CA certificate", dir, CACertFile)
	}
	return &CA{Cert: pair.Leaf, CertPEM: certPEM, Key: key}, nil
}

// LoadOrCreateCA returns the CA kept in dir, generating one (ECDSA P-256,
// valid for CALifetime) when dir does not exist yet. Two processes
// creating it at once end up sharing the one that was renamed into place
// first.
func LoadOrCreateCA(dir string, now time.Time) (ca *CA, created bool, err error) {
	ca, err = LoadCA(dir)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return ca, false, err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return nil, false, fmt.Errorf("creating the CA directory: %w", err)
	}
	// The directory is built aside and renamed into place so that nobody
	// ever sees a certificate without its key.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".pki-")
	if err != nil {
		return nil, false, fmt.Errorf("creating the CA: %w", err)
	}
	defer os.RemoveAll(tmp)
	fresh, err := newCA(now)
	if err != nil {
		return nil, false, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(fresh.Key)
	if err != nil {
		return nil, false, fmt.Errorf("encoding the CA key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeSynced(filepath.Join(tmp, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, false, err
	}
	if err := writeSynced(filepath.Join(tmp, CACertFile), fresh.CertPEM, 0o644); err != nil {
		return nil, false, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Someone else's CA won the race (or dir holds something else,
		// which LoadCA reports).
		ca, lerr := LoadCA(dir)
		if lerr != nil {
			return nil, false, errors.Join(fmt.Errorf("installing the CA: %w", err), lerr)
		}
		return ca, false, nil
	}
	syncDir(filepath.Dir(dir))
	return fresh, true, nil
}

func newCA(now time.Time) (*CA, error) {
	key, err := GenerateKey(Ec256)
	if err != nil {
		return nil, fmt.Errorf("generating the CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Edgeport CA " + host, Organization: []string{"Edgeport"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CALifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("signing the CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the CA certificate: %w", err)
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Key: key}, nil
}

// Request describes a certificate to issue: a server certificate, or with
// Client a client certificate (for tests and for devices).
type Request struct {
	// CommonName defaults to the first DNS name or IP address.
	CommonName  string
	DNSNames    []string
	IPAddresses []net.IP
	// Lifetime defaults to DefaultServerLifetime; the certificate never
	// outlives the CA.
	Lifetime time.Duration
	// Key is the certificate's key; nil generates one of Algorithm.
	Key       crypto.Signer
	Algorithm string
	Client    bool
	// Peer issues a certificate for both ends of a connection (server and
	// client authentication), as cluster routes need: each node accepts
	// routes and dials them with the one certificate. It wins over Client.
	Peer bool
}

// Issue signs a certificate valid from now. The returned certificate has
// its Leaf set.
func (ca *CA) Issue(req Request, now time.Time) (*tls.Certificate, error) {
	cn := req.CommonName
	switch {
	case cn != "":
	case len(req.DNSNames) > 0:
		cn = req.DNSNames[0]
	case len(req.IPAddresses) > 0:
		cn = req.IPAddresses[0].String()
	default:
		return nil, errors.New("a certificate needs a common name, DNS name or IP address")
	}
	key := req.Key
	if key == nil {
		var err error
		if key, err = GenerateKey(req.Algorithm); err != nil {
			return nil, fmt.Errorf("generating the key for %s: %w", cn, err)
		}
	}
	life := req.Lifetime
	if life <= 0 {
		life = DefaultServerLifetime
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	ext := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	switch {
	case req.Peer:
		ext = append(ext, x509.ExtKeyUsageClientAuth)
	case req.Client:
		ext = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	usage := x509.KeyUsageDigitalSignature
	if _, isRSA := key.(*rsa.PrivateKey); isRSA {
		// TLS 1.2 RSA key exchange is off, but old verifiers still look
		// for this bit on RSA server certificates.
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Edgeport"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     minTime(now.Add(life), ca.Cert.NotAfter),
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPAddresses,
		KeyUsage:     usage,
		ExtKeyUsage:  ext,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing the certificate for %s: %w", cn, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate for %s: %w", cn, err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("making a serial number: %w", err)
	}
	return n, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func writeSynced(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	return nil
}

// syncDir makes a rename durable; where directories cannot be synced the
// rename is still atomic, which is what matters for readers.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// EncodePEM returns a certificate chain and its key in PEM, the form of
// tls.crt and tls.key files.
func EncodePEM(c *tls.Certificate) (certPEM, keyPEM []byte, err error) {
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the key: %w", err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}
