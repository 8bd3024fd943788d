package opcua

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// AppCert is the application-instance certificate Edgeport presents to every
// OPC UA server: one per instance, generated on first start and kept under
// <data-dir>/opcua/pki/own so servers that trusted it keep trusting it.
type AppCert struct {
	// URI is the application URI, also the certificate's SAN URI: servers
	// compare it with the ApplicationURI the session announces.
	URI  string
	Cert *x509.Certificate
	DER  []byte
	Key  *rsa.PrivateKey
}

// Thumbprint is the certificate's SHA-1 thumbprint in lower-case hex, the
// identifier OPC UA tools show.
func (a *AppCert) Thumbprint() string { return Thumbprint(a.DER) }

// Thumbprint returns the SHA-1 of a DER certificate in lower-case hex.
func Thumbprint(der []byte) string {
	sum := sha1.Sum(der)
	return hex.EncodeToString(sum[:])
}

const (
	appCertFile = "own/certs/edgeport.der"
	appKeyFile  = "own/private/edgeport.pem"
	// appCertLife is long because a server's trust in it is a manual step;
	// renewing means trusting again on every server.
	appCertLife = 5 * 365 * 24 * time.Hour
)

// LoadOrCreateAppCert loads the application certificate from dir (the OPC UA
// PKI root, <data-dir>/opcua/pki) or creates a self-signed one for uri and
// hostname when none exists. A certificate whose SAN URI differs from uri is
// replaced, because servers would refuse every session with it.
func LoadOrCreateAppCert(dir, uri, hostname string, now time.Time) (*AppCert, error) {
	certPath := filepath.Join(dir, appCertFile)
	keyPath := filepath.Join(dir, appKeyFile)
	c, err := loadAppCert(certPath, keyPath)
	switch {
	case err == nil && len(c.Cert.URIs) == 1 && c.Cert.URIs[0].String() == uri:
		c.URI = uri
		return c, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	c, err = newAppCert(uri, hostname, now)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(certPath), 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", filepath.Dir(certPath), err)
	}
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", filepath.Dir(keyPath), err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(c.Key)})
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(certPath, c.DER, 0o644); err != nil {
		return nil, err
	}
	return c, nil
}

func loadAppCert(certPath, keyPath string) (*AppCert, error) {
	der, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, fmt.Errorf("parsing %s: no PEM block", keyPath)
	}
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", keyPath, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s does not match %s", keyPath, certPath)
	}
	return &AppCert{Cert: cert, DER: der, Key: key}, nil
}

func newAppCert(uri, hostname string, now time.Time) (*AppCert, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("parsing application URI %q: %w", uri, err)
	}
	// 2048-bit RSA with SHA-256 is what every policy from Basic256Sha256 to
	// Aes256_Sha256_RsaPss accepts.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "Edgeport", Organization: []string{"Edgeport"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(appCertLife),
		// OPC UA Part 6 6.2.2: an application instance certificate is used
		// for signatures and key exchange, and (self-signed) signs itself.
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
			x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
		DNSNames:              []string{hostname},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &AppCert{URI: uri, Cert: cert, DER: der, Key: key}, nil
}

// writeFileAtomic writes through a temporary file and a rename so a crash
// never leaves half a certificate or key behind.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
