package otel

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	"github.com/edgeport/edgeport/internal/testpeer/otlppeer"
	"github.com/edgeport/edgeport/internal/testpki"
)

// issue writes a certificate and key (tls.crt, tls.key) into dir: a CA
// when ca is nil, else a server (for 127.0.0.1) or client certificate
// signed by ca.
func issue(t *testing.T, dir, name string, ca *testpki.Cert, server bool) *testpki.Cert {
	t.Helper()
	var c *testpki.Cert
	switch {
	case ca == nil:
		c = testpki.NewCA(t, pkix.Name{CommonName: name})
	case server:
		c = ca.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: name},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	default:
		c = ca.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: name},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	testpki.WriteFile(t, filepath.Join(dir, "tls.crt"), c.CertPEM())
	testpki.WriteFile(t, filepath.Join(dir, "tls.key"), c.KeyPEM())
	return c
}

// Over TLS with a client certificate (X509Certificate authentication by
// secret reference) and the collector's CA from a config map, both
// protocols deliver to the collector's receiver, which requires the client
// certificate; without the CA the server certificate is refused.
func TestSendOverMutualTLS(t *testing.T) {
	data := t.TempDir()
	caDir := filepath.Join(data, "configmaps", "otel-ca")
	ca := issue(t, caDir, "test CA", nil, false)
	issue(t, filepath.Join(data, "server"), "collector", ca, true)
	issue(t, filepath.Join(data, "secrets", "otel-client"), "edgeport", ca, false)
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
