package app

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/pki"
)

// On a single machine Kubernetes' secrets and config maps are directories
// of the data directory, one file per key.
const (
	secretsDir    = "secrets"
	configMapsDir = "configmaps"
	// clientCAKey is the config map key Azure IoT Operations reads trusted
	// client CAs from.
	clientCAKey = "client_ca.pem"
)

// tlsKey identifies a port's TLS settings: a port whose settings are the
// same keeps running (certificate files are reloaded in place).
func tlsKey(t *config.ListenerTLS) string {
	b, err := json.Marshal(t)
	if err != nil {
		return fmt.Sprint(t) // unreachable: the spec is plain data
	}
	return string(b)
}

// serverTLS builds a port's TLS configuration: certificates from files
// watched for changes, or issued by the data directory's CA and renewed;
// client certificates as the spec asks. nil when the port is plain. The
// port calls closeCert when it stops, or at once when serverTLS fails: it
// ends background renewals.
func (r *resources) serverTLS(name string, c portConfig) (_ *tls.Config, closeCert func(), _ error) {
	closeCert = func() {}
	t := c.tlsSpec
	if t == nil {
		return nil, closeCert, nil
	}
	log := r.log.With("listener", name)
	watch := pki.WatchOptions{Log: log}
	o := pki.ServerOptions{}
	switch t.Mode {
	case config.TLSManual:
		crt, key, err := r.manualFiles(t.Manual)
		if err != nil {
			return nil, closeCert, err
		}
		fc, err := pki.NewFileCert(crt, key, watch)
		if err != nil {
			return nil, closeCert, err
		}
		o.GetCertificate = fc.GetCertificate
	case config.TLSAutomatic:
		host, _, _ := net.SplitHostPort(c.addr)
		ac, err := r.autoCert(host, t.CertManagerCertificateSpec, log)
		if err != nil {
			return nil, closeCert, err
		}
		o.GetCertificate, closeCert = ac.GetCertificate, ac.Close
	default:
		return nil, closeCert, fmt.Errorf("tls mode %q", t.Mode)
	}
	mode := config.ClientAuthNone
	if t.ClientAuth != nil {
		mode = t.ClientAuth.Mode
	}
	switch mode {
	case config.ClientAuthOptional, config.ClientAuthRequired:
		path := t.ClientAuth.TrustedCaCertFile
		if path == "" {
			dir, err := r.dataSubdir(configMapsDir, t.ClientAuth.TrustedCaCert)
			if err != nil {
				return nil, closeCert, err
			}
			path = filepath.Join(dir, clientCAKey)
		}
		bundle, err := pki.NewCAFile(path, watch)
		if err != nil {
			return nil, closeCert, fmt.Errorf("trusted client CAs: %w", err)
		}
		o.ClientAuth, o.ClientCAs = mode, bundle.Pool
	default:
		if c.requestClientCert {
			o.ClientAuth = pki.ClientAuthRequest
		}
	}
	tc, err := pki.ServerConfig(o)
	return tc, closeCert, err
}

// manualFiles names the certificate and key files of mode Manual.
func (r *resources) manualFiles(m *config.ManualTLS) (crt, key string, err error) {
	if m.SecretRef == "" {
		return m.CertFile, m.KeyFile, nil
	}
	dir, err := r.dataSubdir(secretsDir, m.SecretRef)
	if err != nil {
		return "", "", err
	}
	return filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), nil
}

func (r *resources) dataSubdir(kind, name string) (string, error) {
	if r.a.cfg.DataDir == "" {
		return "", fmt.Errorf("%s need a data directory", kind)
	}
	return filepath.Join(r.a.cfg.DataDir, kind, name), nil
}

// autoCert issues a server certificate from the data directory's CA,
// creating the CA on first use.
func (r *resources) autoCert(host string, spec *config.CertificateSpec, log *slog.Logger) (*pki.AutoCert, error) {
	if r.a.cfg.DataDir == "" {
		return nil, errors.New("generated certificates need a data directory for their CA")
	}
	dir := pki.Dir(r.a.cfg.DataDir)
	ca, created, err := pki.LoadOrCreateCA(dir, time.Now())
	if err != nil {
		return nil, err
	}
	if created {
		r.log.Info("created the CA of TLS ports with generated certificates; clients trust it through `edgeport ca export`",
			"dir", dir, "subject", ca.Cert.Subject.CommonName, "not_after", ca.Cert.NotAfter)
	}
	o := pki.AutoOptions{Log: log}
	o.Request.DNSNames, o.Request.IPAddresses = defaultSANs(host)
	if spec != nil {
		// Validation has checked the durations.
		o.Request.Lifetime, _ = time.ParseDuration(spec.Duration)
		o.RenewBefore, _ = time.ParseDuration(spec.RenewBefore)
		if spec.San != nil {
			for _, d := range spec.San.DNS {
				if !slices.Contains(o.Request.DNSNames, d) {
					o.Request.DNSNames = append(o.Request.DNSNames, d)
				}
			}
			for _, s := range spec.San.IP {
				o.Request.IPAddresses = addIP(o.Request.IPAddresses, net.ParseIP(s))
			}
		}
		if k := spec.PrivateKey; k != nil {
			o.Request.Algorithm = k.Algorithm
			o.KeepKey = k.RotationPolicy == "Never"
		}
	}
	return pki.NewAutoCert(ca, o)
}

// defaultSANs are the names a generated certificate always carries: the
// machine's (localhost, loopback addresses, host name) and the bound
// address, or every interface address when bound to all of them.
func defaultSANs(host string) ([]string, []net.IP) {
	dns := []string{"localhost"}
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		dns = append(dns, h)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
	case ip.IsUnspecified():
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
				ips = addIP(ips, n.IP)
			}
		}
	default:
		ips = addIP(ips, ip)
	}
	return dns, ips
}

func addIP(ips []net.IP, ip net.IP) []net.IP {
	if ip == nil || slices.ContainsFunc(ips, ip.Equal) {
		return ips
	}
	return append(ips, ip)
}
