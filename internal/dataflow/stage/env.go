package stage

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgeport/edgeport/internal/config"
)

// Env is what building a stage needs from its surroundings: where secrets
// and config maps live. On a single machine a secret is the folder
// <data-dir>/secrets/<name>/ with one file per key (username, password,
// token, tls.crt, tls.key), and a config map <data-dir>/configmaps/<name>/.
type Env struct {
	DataDir string
}

// Secret reads one key of a secret, without a trailing newline.
func (e Env) Secret(name, key string) (string, error) {
	b, err := os.ReadFile(filepath.Join(e.DataDir, "secrets", name, key))
	if err != nil {
		return "", fmt.Errorf("reading secret %s: %w", name, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// TLS returns the TLS configuration of an endpoint: nil when TLS is off;
// client certificate from clientCert's secret (tls.crt, tls.key) when set.
func (e Env) TLS(t *config.EndpointTLS, clientCert *config.SecretRef, serverName string) (*tls.Config, error) {
	if !t.Enabled() {
		if clientCert != nil {
			return nil, errors.New("X509Certificate authentication needs tls.mode Enabled")
		}
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if ref := t.TrustedCaCertificateConfigMapRef; ref != "" {
		dir := filepath.Join(e.DataDir, "configmaps", ref)
		files, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("reading config map %s: %w", ref, err)
		}
		pool := x509.NewCertPool()
		for _, f := range files {
			if f.IsDir() {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, f.Name()))
			if err != nil {
				return nil, fmt.Errorf("reading config map %s: %w", ref, err)
			}
			if bytes.Contains(b, []byte("-----BEGIN CERTIFICATE-----")) {
				pool.AppendCertsFromPEM(b)
			}
		}
		c.RootCAs = pool
	}
	if clientCert != nil {
		dir := filepath.Join(e.DataDir, "secrets", clientCert.SecretRef)
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
		if err != nil {
			return nil, fmt.Errorf("reading client certificate secret %s: %w", clientCert.SecretRef, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
