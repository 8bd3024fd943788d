package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
)

// A server certificate verifies against its CA for 127.0.0.1 and
// localhost, and its PEM forms load as a key pair.
func TestServerVerifies(t *testing.T) {
	ca := NewCA(t, pkix.Name{CommonName: "test CA"})
	srv := ca.Server(t, "edgeport")
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if _, err := srv.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: host}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := tls.X509KeyPair(srv.CertPEM(), srv.KeyPEM()); err != nil {
		t.Fatal(err)
	}
	other := NewCA(t, pkix.Name{CommonName: "other CA"})
	if _, err := srv.Cert.Verify(x509.VerifyOptions{Roots: other.Pool(), DNSName: "localhost"}); err == nil {
		t.Fatal("verified against a CA that did not sign it")
	}
	if srv.Cert.SerialNumber.Cmp(ca.Server(t, "edgeport").Cert.SerialNumber) == 0 {
		t.Fatal("two certificates with one serial number")
	}
}
