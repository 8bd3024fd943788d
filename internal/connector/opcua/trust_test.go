package opcua

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
}

var serialNo int64 = 100

func issue(t *testing.T, cn string, parent *testCA, isCA bool, notBefore, notAfter time.Time) *testCA {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	serialNo++
	u, _ := url.Parse("urn:" + cn)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serialNo), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: isCA, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign | x509.KeyUsageCRLSign, URIs: []*url.URL{u},
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key}
}

func TestTrustList(t *testing.T) {
	now := time.Now()
	from, to := now.Add(-time.Hour), now.Add(time.Hour)
	root := issue(t, "root", nil, true, from, to)
	inter := issue(t, "inter", root, true, from, to)
	leaf := issue(t, "leaf", inter, false, from, to)
	revoked := issue(t, "revoked", inter, false, from, to)
	expired := issue(t, "expired", nil, false, now.Add(-2*time.Hour), now.Add(-time.Hour))
	self := issue(t, "self", nil, false, from, to)

	tl, err := OpenTrustList(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	changed := tl.Changed()

	// Nothing is trusted yet: the CA-issued leaf is rejected and listed.
	var ue *UntrustedError
	if _, err := tl.Verify(leaf.cert.Raw, "opc.tcp://a:1", now); !errors.As(err, &ue) || ue.Endpoint != "opc.tcp://a:1" || ue.Subject != "CN=leaf" {
		t.Fatalf("Verify before trust = %v", err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("a new rejected certificate did not signal a change")
	}

	// Trusting the root CA and holding the intermediate as an issuer admits
	// every leaf the intermediate signed...
	if _, err := tl.Add(root.cert.Raw, false); err != nil {
		t.Fatal(err)
	}
	if _, err := tl.Add(inter.cert.Raw, true); err != nil {
		t.Fatal(err)
	}
	if _, err := tl.Verify(leaf.cert.Raw, "opc.tcp://a:1", now); err != nil {
		t.Fatalf("leaf under a trusted CA: %v", err)
	}
	// ...also when the server sends the intermediate with its certificate
	// instead of it being in the issuers list.
	tl2, _ := OpenTrustList(t.TempDir())
	tl2.Add(root.cert.Raw, false)
	if _, err := tl2.Verify(append(append([]byte{}, leaf.cert.Raw...), inter.cert.Raw...), "opc.tcp://a:1", now); err != nil {
		t.Fatalf("leaf with its chain: %v", err)
	}

	// ...except one the intermediate's CRL revokes.
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: from, NextUpdate: to,
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: revoked.cert.SerialNumber, RevocationTime: from}},
	}, inter.cert, inter.key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tl.Add(crl, true); err != nil {
		t.Fatal(err)
	}
	if _, err := tl.Verify(revoked.cert.Raw, "opc.tcp://a:1", now); !errors.Is(err, ErrCertRevoked) {
		t.Fatalf("revoked leaf: %v", err)
	}
	if _, err := tl.Verify(leaf.cert.Raw, "opc.tcp://a:1", now); err != nil {
		t.Fatalf("leaf after the CRL: %v", err)
	}

	// Expired certificates are refused even before the trust lookup.
	if _, err := tl.Verify(expired.cert.Raw, "opc.tcp://a:1", now); !errors.Is(err, ErrCertExpired) {
		t.Fatalf("expired: %v", err)
	}
	if _, err := tl.Verify(nil, "opc.tcp://a:1", now); !errors.Is(err, ErrNoCert) {
		t.Fatalf("no certificate: %v", err)
	}
	if _, err := tl.Verify([]byte("junk"), "opc.tcp://a:1", now); err == nil {
		t.Fatal("junk accepted")
	}

	// A self-signed server certificate: rejected, then trusted by prefix,
	// then rejected again, then removed.
	thumb := Thumbprint(self.cert.Raw)
	if _, err := tl.Verify(self.cert.Raw, "opc.tcp://b:2", now); !errors.As(err, &ue) || ue.Thumbprint != thumb {
		t.Fatalf("self-signed: %v", err)
	}
	if _, err := tl.Trust(thumb[:7]); err == nil || !strings.Contains(err.Error(), "at least 8") {
		t.Fatalf("short prefix: %v", err)
	}
	if _, err := tl.Trust("ffffffffff"); !errors.Is(err, ErrCertUnknown) {
		t.Fatalf("unknown: %v", err)
	}
	if e, err := tl.Trust(strings.ToUpper(thumb[:12])); err != nil || e.List != "trusted" {
		t.Fatalf("Trust = %+v, %v", e, err)
	}
	if _, err := tl.Verify(self.cert.Raw, "opc.tcp://b:2", now); err != nil {
		t.Fatalf("after trust: %v", err)
	}
	if e, err := tl.Reject(thumb); err != nil || e.List != "rejected" {
		t.Fatalf("Reject = %+v, %v", e, err)
	}
	if _, err := tl.Verify(self.cert.Raw, "opc.tcp://b:2", now); !errors.As(err, &ue) {
		t.Fatalf("after reject: %v", err)
	}
	list, _ := tl.List()
	var lists []string
	for _, e := range list {
		lists = append(lists, e.Subject+":"+e.List)
	}
	if got := strings.Join(lists, " "); !strings.Contains(got, "CN=root:trusted") || !strings.Contains(got, "CN=inter:issuers") ||
		!strings.Contains(got, "CN=self:rejected") || strings.Contains(got, "CN=leaf:rejected") {
		t.Fatalf("List = %s", got)
	}
	if _, err := tl.Remove(thumb); err != nil {
		t.Fatal(err)
	}
	if _, err := tl.Remove(thumb); !errors.Is(err, ErrCertUnknown) {
		t.Fatalf("second Remove: %v", err)
	}

	// A stray file in the trusted folder is ignored, not fatal.
	os.WriteFile(filepath.Join(tl.Dir(), "trusted", "certs", "notes.txt"), []byte("hello"), 0o644)
	if _, err := tl.Verify(leaf.cert.Raw, "opc.tcp://a:1", now); err != nil {
		t.Fatalf("with a stray file: %v", err)
	}
}

func TestAppCert(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	a, err := LoadOrCreateAppCert(dir, "urn:edgeport:host1", "host1", now)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Cert.URIs) != 1 || a.Cert.URIs[0].String() != "urn:edgeport:host1" || a.Cert.DNSNames[0] != "host1" {
		t.Fatalf("SAN: %v %v", a.Cert.URIs, a.Cert.DNSNames)
	}
	if a.Key.N.BitLen() != 2048 || a.Cert.SignatureAlgorithm != x509.SHA256WithRSA {
		t.Fatalf("key %d bits, %s", a.Key.N.BitLen(), a.Cert.SignatureAlgorithm)
	}
	b, err := LoadOrCreateAppCert(dir, "urn:edgeport:host1", "host1", now)
	if err != nil {
		t.Fatal(err)
	}
	if b.Thumbprint() != a.Thumbprint() {
		t.Fatal("second start made a new certificate")
	}
	if fi, err := os.Stat(filepath.Join(dir, appKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	c, err := LoadOrCreateAppCert(dir, "urn:edgeport:host2", "host2", now)
	if err != nil {
		t.Fatal(err)
	}
	if c.Thumbprint() == a.Thumbprint() {
		t.Fatal("a new application URI kept the old certificate")
	}
}
