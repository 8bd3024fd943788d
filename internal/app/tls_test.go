package app

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/pki"
	"github.com/edgeport/edgeport/internal/testwait"
)

// dialTLS connects over TLS and completes CONNECT; the error is the
// handshake's or the connection's end before CONNACK.
func dialTLS(t *testing.T, addr string, tc *tls.Config, id string) (*client, *x509.Certificate, error) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", addr, tc)
	if err != nil {
		return nil, nil, err
	}
	c := newClient(t, conn)
	cp := packet.Connect{ProtocolName: "MQTT", Version: packet.V5, CleanStart: true, ClientID: id}
	_ = conn.SetWriteDeadline(time.Now().Add(wait))
	if _, err := conn.Write(cp.Append(nil, packet.V5)); err != nil {
		return nil, nil, err
	}
	select {
	case p, ok := <-c.in:
		if ack, isAck := p.(*packet.ConnAck); ok && isAck && ack.ReasonCode == 0 {
			return c, conn.ConnectionState().PeerCertificates[0], nil
		}
		return nil, nil, fmt.Errorf("no CONNACK success: %v", p)
	case <-time.After(wait):
		return nil, nil, fmt.Errorf("no CONNACK within %v", wait)
	}
}

func mustDialTLS(t *testing.T, addr string, tc *tls.Config, id string) (*client, *x509.Certificate) {
	t.Helper()
	c, leaf, err := dialTLS(t, addr, tc, id)
	if err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	return c, leaf
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// writeSecret stores a TLS secret the way an operator replaces one: each
// file written aside and renamed into place.
func writeSecret(t *testing.T, dir string, c *tls.Certificate) {
	t.Helper()
	crt, key, err := pki.EncodePEM(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"tls.key": key, "tls.crt": crt} {
		tmp := filepath.Join(dir, "."+name)
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func issue(t *testing.T, ca *pki.CA, req pki.Request) *tls.Certificate {
	t.Helper()
	c, err := ca.Issue(req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTLSManualSecretReloaded(t *testing.T) {
	data := t.TempDir()
	a := startApp(t, Config{DataDir: data, InMemory: true})
	ca, _, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	k := config.Key{Kind: "BrokerListener", Name: "secure"}

	// The secret does not exist yet: the port fails and is retried.
	apply(t, a, listenerYAML("secure", "{port: 0, tls: {mode: Manual, manual: {secretRef: server-cert}}}"))
	o := waitStatus(t, a, k, config.ConditionFalse)
	if c := o.Ready(); c.Reason != "TLSError" || !strings.Contains(c.Message, "server-cert") {
		t.Fatalf("ready %+v", c)
	}
	first := issue(t, ca, pki.Request{CommonName: "first", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	writeSecret(t, filepath.Join(data, "secrets", "server-cert"), first)
	o = waitStatus(t, a, k, config.ConditionTrue)
	addr := portAddr(t, o, 0)

	tc := &tls.Config{RootCAs: poolOf(ca.Cert)}
	held, leaf := mustDialTLS(t, addr, tc, "held")
	if leaf.Subject.CommonName != "first" {
		t.Fatalf("served %s", leaf.Subject.CommonName)
	}

	second := issue(t, ca, pki.Request{CommonName: "second", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	writeSecret(t, filepath.Join(data, "secrets", "server-cert"), second)
	testwait.For(t, "new handshakes to get the new certificate", func() bool {
		_, leaf, err := dialTLS(t, addr, tc, "probe")
		return err == nil && leaf.Subject.CommonName == "second"
	})
	held.alive()
	if o, _ := a.Resources().Get(k); o.Ready().Status != config.ConditionTrue {
		t.Fatalf("ready after the reload: %+v", o.Ready())
	}

	// TLS 1.1 is refused.
	old := &tls.Config{RootCAs: poolOf(ca.Cert), MaxVersion: tls.VersionTLS11}
	if _, _, err := dialTLS(t, addr, old, "old"); err == nil {
		t.Fatal("TLS 1.1 accepted")
	}
}

func TestTLSAutomaticAndClientCertificates(t *testing.T) {
	data := t.TempDir()
	a := startApp(t, Config{DataDir: data, InMemory: true})
	devices, _, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "devices"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(data, "configmaps", "client-ca"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "configmaps", "client-ca", "client_ca.pem"), devices.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	k := config.Key{Kind: "BrokerListener", Name: "auto"}
	apply(t, a, listenerYAML("auto",
		"{port: 0, tls: {mode: Automatic, certManagerCertificateSpec: {san: {dns: [edge.plant]}}}}",
		"{port: 1, tls: {mode: Automatic, clientAuth: {mode: Required}}}"))
	o := waitStatus(t, a, k, config.ConditionTrue)

	ca, err := pki.LoadCA(pki.Dir(data))
	if err != nil {
		t.Fatalf("no CA in the data directory: %v", err)
	}
	tc := &tls.Config{RootCAs: poolOf(ca.Cert)}
	_, leaf := mustDialTLS(t, portAddr(t, o, 0), tc, "auto")
	for _, name := range []string{"localhost", "edge.plant", "127.0.0.1"} {
		if err := leaf.VerifyHostname(name); err != nil {
			t.Errorf("generated certificate: %v", err)
		}
	}
	if _, _, err := dialTLS(t, portAddr(t, o, 0), &tls.Config{RootCAs: poolOf(devices.Cert)}, "wrong-ca"); err == nil {
		t.Error("a client trusting another CA connected")
	}

	required := portAddr(t, o, 1)
	if _, _, err := dialTLS(t, required, tc, "no-cert"); err == nil {
		t.Fatal("connected without a client certificate")
	}
	device := issue(t, devices, pki.Request{CommonName: "press-7", Client: true})
	withCert := &tls.Config{RootCAs: poolOf(ca.Cert), Certificates: []tls.Certificate{*device}}
	mustDialTLS(t, required, withCert, "press-7")
	stranger := issue(t, ca, pki.Request{CommonName: "press-8", Client: true})
	if _, _, err := dialTLS(t, required, &tls.Config{RootCAs: poolOf(ca.Cert), Certificates: []tls.Certificate{*stranger}}, "press-8"); err == nil {
		t.Fatal("a certificate from an untrusted CA was accepted")
	}
	rejected := a.Broker().Counters().Listeners["auto:1"].Rejected["tls_handshake"]
	if rejected == 0 {
		t.Error("refused handshakes are not counted")
	}
}

func TestBrokerConnectionLimitsLive(t *testing.T) {
	a := startApp(t, Config{})
	addr := a.Addrs()["mqtt"].String()
	first, _ := dial(t, addr, "first")
	apply(t, a, `apiVersion: edgeport.io/v1
kind: Broker
metadata: {name: default}
spec:
  advanced:
    connections: {maxConnectionsPerAddress: 1}
`)
	waitStatus(t, a, config.Key{Kind: "Broker", Name: "default"}, config.ConditionTrue)
	first.alive() // open connections stay
	conn, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	if _, err := conn.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Fatalf("second connection from the address: %v, want it closed", err)
	}
	if n := a.Broker().Counters().Listeners["mqtt"].Rejected["address_limit"]; n != 1 {
		t.Fatalf("address_limit rejections = %d", n)
	}
	if _, err := a.Resources().Delete(config.Key{Kind: "Broker", Name: "default"}, ""); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "limits lifted", func() bool { return a.guard.Limits().MaxConnectionsPerAddress == 0 })
	dial(t, addr, "second")
}
