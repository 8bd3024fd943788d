package otel

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	"github.com/edgeport/edgeport/internal/testpeer/otlppeer"
)

// issue writes a certificate and key signed by ca (self-signed when ca is
// nil) and returns the certificate and its key.
func issue(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, server bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if ca == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		ca, caKey = tmpl, key
	} else if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kb, _ := x509.MarshalECPrivateKey(key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// Over TLS with a client certificate (X509Certificate authentication by
// secret reference) and the collector's CA from a config map, both
// protocols deliver to the collector's receiver, which requires the client
// certificate; without the CA the server certificate is refused.
func TestSendOverMutualTLS(t *testing.T) {
	data := t.TempDir()
	caDir := filepath.Join(data, "configmaps", "otel-ca")
	ca, caKey := issue(t, caDir, "test CA", nil, nil, false)
	issue(t, filepath.Join(data, "server"), "collector", ca, caKey, true)
	issue(t, filepath.Join(data, "secrets", "otel-client"), "edgeport", ca, caKey, false)
	rcv := otlppeer.Start(t, otlppeer.Options{
		CertFile: filepath.Join(data, "server", "tls.crt"), KeyFile: filepath.Join(data, "server", "tls.key"),
		ClientCAFile: filepath.Join(caDir, "tls.crt"),
	})
	msg := []*stage.Message{{SourceTopic: "t", Payload: []byte(`{"metrics": [{"name": "secure", "value": 1}]}`)}}
	for _, proto := range []string{config.OTelProtocolHttp, config.OTelProtocolGrpc} {
		host := rcv.GRPCAddr
		if proto == config.OTelProtocolHttp {
			host = rcv.HTTPURL()
		}
		s := settings(t, host, func(s *config.OTelEndpointSettings) {
			s.TLS = &config.EndpointTLS{Mode: "Enabled", TrustedCaCertificateConfigMapRef: "otel-ca"}
			s.Authentication = &config.DataflowAuthentication{Method: config.AuthX509Certificate, X509CertificateSettings: &config.SecretRef{SecretRef: "otel-client"}}
		})
		d, err := New(s, &config.DataflowDestination{DataDestination: "s"}, Options{Env: stage.Env{DataDir: data}})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Send(context.Background(), msg); err != nil {
			t.Fatalf("%s over mutual TLS: %v", proto, err)
		}
		_ = d.Close(context.Background())

		// The system roots do not know the test CA.
		s.TLS.TrustedCaCertificateConfigMapRef = ""
		d, err = New(s, &config.DataflowDestination{DataDestination: "s"}, Options{Env: stage.Env{DataDir: data}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := d.Send(ctx, msg); err == nil {
			t.Fatalf("%s: a server certificate from an unknown CA was accepted", proto)
		}
		cancel()
		_ = d.Close(context.Background())
	}
	if n := len(rcv.DataPoints()); n != 2 {
		t.Fatalf("%d data points, want one per protocol", n)
	}
}
