package cluster

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/pki"
)

// Files of a node's credentials directory (InitCredentials, and a
// Kubernetes TLS Secret's key names for the certificate).
const (
	SecretFileName = "secret"
	CAFileName     = "ca.crt"
	CertFileName   = "tls.crt"
	KeyFileName    = "tls.key"
)

// RouteTLSName is the DNS name every route certificate carries and every
// node checks when it dials a route. Routes are checked against the
// cluster CA and this name, not against the address dialled: NATS learns
// most routes by gossip, as IP addresses, which a certificate would have
// to list in advance.
const RouteTLSName = "route.edgeport.cluster"

// routeUser is the user name routes authenticate as (the secret is the
// password): nats-server's cluster authorization takes a user and a
// password, and the secret alone is what is shared.
const routeUser = "edgeport-route"

// minSecretLen bounds how weak a cluster secret may be.
const minSecretLen = 16

// TLSFiles are a TLS identity and the CA its peers are checked against,
// as PEM files.
type TLSFiles struct {
	CA   string // the CA certificates peers must chain to
	Cert string // this end's certificate (chain)
	Key  string // its private key
}

func (f TLSFiles) set() bool  { return f.CA != "" || f.Cert != "" || f.Key != "" }
func (f TLSFiles) full() bool { return f.CA != "" && f.Cert != "" && f.Key != "" }

// readSecret reads a secret file, trimmed of surrounding white space. Its
// errors name the flag and the file, never the content.
func readSecret(flag, path string, minLen int) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < minLen {
		return "", fmt.Errorf("%s %s: must hold at least %d characters", flag, path, minLen)
	}
	return s, nil
}

// routeTLSConfig is the embedded server's route TLS: TLS 1.3 only (both
// ends are Edgeport), this node's certificate on both sides of a route
// (reloaded when its files change), the peer's certificate required and
// verified against the cluster CA, and RouteTLSName checked on routes this
// node dials.
func routeTLSConfig(f TLSFiles, o pki.WatchOptions) (*tls.Config, *pki.FileCert, error) {
	cert, err := pki.NewFileCert(f.Cert, f.Key, o)
	if err != nil {
		return nil, nil, fmt.Errorf("--cluster-tls-cert/--cluster-tls-key: %w", err)
	}
	pool, err := loadPool(f.CA)
	if err != nil {
		return nil, nil, fmt.Errorf("--cluster-tls-ca: %w", err)
	}
	leaf, _ := cert.GetCertificate(nil)
	if err := checkRouteCert(leaf, pool); err != nil {
		return nil, nil, fmt.Errorf("--cluster-tls-cert %s: %w", f.Cert, err)
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: cert.GetCertificate,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert.GetCertificate(nil)
		},
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  pool,
		RootCAs:    pool,
		ServerName: RouteTLSName,
	}, cert, nil
}

// checkRouteCert refuses at start a certificate the other nodes would
// refuse at every handshake, saying why.
func checkRouteCert(c *tls.Certificate, pool *x509.CertPool) error {
	if c == nil || c.Leaf == nil {
		return errors.New("no certificate")
	}
	// Once per usage: VerifyOptions.KeyUsages accepts any one of those
	// listed, and a route needs both ends.
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: RouteTLSName, Roots: pool, KeyUsages: []x509.ExtKeyUsage{u}})
		if err != nil {
			return fmt.Errorf("not usable for routes (it must be signed by the cluster CA, name %s and allow server and client authentication): %w", RouteTLSName, err)
		}
	}
	return nil
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return pool, nil
}

// isLoopback says whether host (of a listen or dial address) is only
// reachable from this machine: "localhost" or a loopback IP. A name that
// is not "localhost", an unspecified address ("", 0.0.0.0, ::) and any
// other IP are not.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// InitResult says what InitCredentials made and kept.
type InitResult struct {
	CreatedCA     bool
	CreatedSecret bool
	Created       []string // nodes given a credentials directory now
	Kept          []string // nodes that already had one (left as they are)
}

// InitCredentials makes the route credentials of a cluster under dir: the
// cluster CA (dir/ca) and the shared secret (dir/secret), both made once
// and reused on later runs, and for each node a directory dir/<node>
// holding what that node needs and nothing more — ca.crt, the node's
// tls.crt and tls.key (issued by the CA, valid as long as the CA, for
// server and client authentication with the name RouteTLSName) and a copy
// of secret. The CA's key stays in dir/ca: copy a node's directory to its
// machine, keep dir itself to add nodes later. Nodes whose directory
// exists are left alone.
func InitCredentials(dir string, nodes []string, now time.Time) (InitResult, error) {
	var res InitResult
	for _, n := range nodes {
		if !validName(n) {
			return res, fmt.Errorf("node name %q: must be 1-64 letters, digits, '-', '_'", n)
		}
		if n == "ca" {
			return res, errors.New(`node name "ca": the CA's directory has that name`)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, err
	}
	ca, created, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"), now)
	if err != nil {
		return res, err
	}
	res.CreatedCA = created
	secretPath := filepath.Join(dir, SecretFileName)
	secret, err := os.ReadFile(secretPath)
	if errors.Is(err, fs.ErrNotExist) {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return res, err
		}
		secret = []byte(base64.RawURLEncoding.EncodeToString(raw) + "\n")
		if err := writeNew(secretPath, secret, 0o600); err != nil {
			return res, err
		}
		res.CreatedSecret = true
	} else if err != nil {
		return res, err
	}
	for _, n := range nodes {
		nd := filepath.Join(dir, n)
		if _, err := os.Stat(nd); err == nil {
			res.Kept = append(res.Kept, n)
			continue
		}
		cert, err := ca.Issue(pki.Request{CommonName: n, DNSNames: []string{RouteTLSName, n}, Lifetime: pki.CALifetime, Peer: true}, now)
		if err != nil {
			return res, err
		}
		certPEM, keyPEM, err := pki.EncodePEM(cert)
		if err != nil {
			return res, err
		}
		// Built aside and renamed, so a node never sees half a directory.
		tmp, err := os.MkdirTemp(dir, "."+n+"-")
		if err != nil {
			return res, err
		}
		for _, f := range []struct {
			name string
			data []byte
			perm os.FileMode
		}{{CAFileName, ca.CertPEM, 0o644}, {CertFileName, certPEM, 0o644}, {KeyFileName, keyPEM, 0o600}, {SecretFileName, secret, 0o600}} {
			if err == nil {
				err = writeNew(filepath.Join(tmp, f.name), f.data, f.perm)
			}
		}
		if err == nil {
			err = os.Rename(tmp, nd)
		}
		if err != nil {
			os.RemoveAll(tmp)
			return res, err
		}
		res.Created = append(res.Created, n)
	}
	return res, nil
}

func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// redactURLs returns NATS URLs (comma-separated) fit for a log or an
// error: passwords and tokens replaced, an unparsable URL left out.
func redactURLs(s string) string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil {
			out = append(out, "(unparsable URL)")
			continue
		}
		if p.User != nil {
			if _, has := p.User.Password(); has {
				p.User = url.UserPassword(p.User.Username(), "xxxxx")
			} else {
				p.User = url.User("xxxxx") // a token
			}
		}
		out = append(out, p.String())
	}
	return strings.Join(out, ",")
}
