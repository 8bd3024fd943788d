package opcua

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector/connectortest"
	"github.com/edgeport/edgeport/internal/connector/opcua/testserver"
)

// userCert makes a self-signed RSA user certificate, as a person would with
// openssl for an OPC UA X509IdentityToken.
func userCert(t *testing.T, cn string) (der, certPEM, keyPEM []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Edgeport tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	return der, certPEM, keyPEM
}

func writeSecret(t *testing.T, dir, ref string, data []byte) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(ref))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func userDeviceYAML(name, url, auth string) string {
	return deviceAuthYAML(name, url, "Basic256Sha256", "SignAndEncrypt", auth)
}

// TestConnectorUserIdentity: the user identity tokens against a node-opcua
// server that refuses anonymous users and checks user certificates against
// its own user-certificate trust store. A Device whose
// authentication.method is Certificate, with a certificate the server
// trusts (certificate and key in one secret, as Azure Device Registry's
// certificateSecretName allows), connects and its data reaches mosquitto_sub;
// one with a certificate the server does not trust (key in keySecretName)
// says "user certificate rejected by the server: ..." in its status and the
// server files the certificate as rejected; a wrong password says which user
// the server refused. The failing devices disturb nothing.
func TestConnectorUserIdentity(t *testing.T) {
	trustedDER, trustedPEM, trustedKey := userCert(t, "edgeport-line-1")
	_, alienPEM, alienKey := userCert(t, "edgeport-intruder")
	srv := startServer(t, testserver.Config{
		AllowAnonymous:   false,
		Users:            map[string]string{"operator": "secret"},
		AutoAccept:       true,
		TrustedUserCerts: [][]byte{trustedDER},
	})
	env := startConnector(t)
	pemBytes, err := os.ReadFile(filepath.Join(srv.PKI(), "own", "certs", "certificate.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.conn.Trust().Add(pemBytes, false); err != nil {
		t.Fatal(err)
	}
	writeSecret(t, env.secrets, "line-1/cert", append(append([]byte{}, trustedPEM...), trustedKey...))
	writeSecret(t, env.secrets, "intruder/tls.crt", alienPEM)
	writeSecret(t, env.secrets, "intruder/tls.key", alienKey)
	writeSecret(t, env.secrets, "typo/username", []byte("operator\n"))
	writeSecret(t, env.secrets, "typo/password", []byte("not-the-password\n"))

	lines := mosquittoSub(t, env.addr, "plant/#")
	apply(t, env.store, userDeviceYAML("line-1", srv.URL, `          method: Certificate
          x509Credentials: {certificateSecretName: line-1/cert}`)+"---\n"+
		userDeviceYAML("intruder", srv.URL, `          method: Certificate
          x509Credentials: {certificateSecretName: intruder/tls.crt, keySecretName: intruder/tls.key}`)+"---\n"+
		userDeviceYAML("typo", srv.URL, `          method: UsernamePassword
          usernamePasswordCredentials: {usernameSecretName: typo/username, passwordSecretName: typo/password}`)+"---\n"+
		assetYAML("line-1a", "line-1"))

	deadline := time.After(30 * time.Second)
	for got := false; !got; {
		select {
		case l := <-lines:
			got = strings.HasPrefix(l, "plant/line-1a/line\t") && strings.Contains(l, `"counter":{`)
		case <-deadline:
			t.Fatal("no data from the device with the trusted user certificate")
		}
	}
	connectortest.Eventually(t, 10*time.Second, "line-1 connected in its status", func() bool {
		s := connectortest.Status(env.store, "Device", "line-1")
		return s != nil && s.Endpoints["opc"].Connected
	})

	wantIntruder := `user certificate rejected by the server: BadIdentityTokenRejected (subject "CN=edgeport-intruder,O=Edgeport tests"`
	wantTypo := `user "operator" rejected by the server: `
	connectortest.Eventually(t, 20*time.Second, "the user-rejected statuses", func() bool {
		i := connectortest.Status(env.store, "Device", "intruder")
		ty := connectortest.Status(env.store, "Device", "typo")
		return i != nil && strings.HasPrefix(i.Endpoints["opc"].LastError, wantIntruder) &&
			strings.Contains(i.Condition(config.ConditionReady).Message, wantIntruder) &&
			ty != nil && strings.HasPrefix(ty.Endpoints["opc"].LastError, wantTypo)
	})
	t.Logf("intruder: %s", connectortest.Status(env.store, "Device", "intruder").Endpoints["opc"].LastError)
	t.Logf("typo: %s", connectortest.Status(env.store, "Device", "typo").Endpoints["opc"].LastError)
	if s := connectortest.Status(env.store, "Device", "intruder"); s.Endpoints["opc"].Connected {
		t.Fatal("the device with the untrusted user certificate is connected")
	}
	// node-opcua files the refused user certificate for its administrator.
	connectortest.Eventually(t, 10*time.Second, "the refused user certificate in the server's userpki/rejected", func() bool {
		m, _ := filepath.Glob(filepath.Join(srv.UserPKI(), "rejected", "*"))
		return len(m) > 0
	})
	if s := connectortest.Status(env.store, "Device", "line-1"); s == nil || !s.Endpoints["opc"].Connected {
		t.Fatalf("line-1 disturbed by the failing devices: %+v", s)
	}
}
