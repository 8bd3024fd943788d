package auth

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// SubjectAttributes gives the attributes to clients whose certificate
// chain holds a certificate with Subject (OpenSSL's one-line form, such
// as "CN = Contoso Root CA, O = Contoso"; the order of its parts does not
// matter).
type SubjectAttributes struct {
	Subject    string
	Attributes map[string]string
}

// Certificates is the X509 method: a TLS client certificate that chains to
// a trusted CA. The subject CN becomes the user name; attributes come from
// the first certificate of the chain, leaf first, whose subject one of the
// configured ones names (Azure IoT Operations' rule). The earliest expiry
// in the chain is the credential's: the client is disconnected then.
type Certificates struct {
	ca    *caPool
	attrs []subjectRule
}

type subjectRule struct {
	rdns  []rdn
	attrs map[string]string
}

type rdn struct{ typ, value string }

var _ Method = (*Certificates)(nil)

// NewCertificates builds the method with the trusted CAs from path: a PEM
// file, or a directory whose files are all read (a ConfigMap's). The CAs
// are read again when they change.
func NewCertificates(path string, attrs []SubjectAttributes) (*Certificates, error) {
	c := &Certificates{ca: &caPool{path: path}}
	for _, a := range attrs {
		rdns, err := parseSubject(a.Subject)
		if err != nil {
			return nil, err
		}
		c.attrs = append(c.attrs, subjectRule{rdns: rdns, attrs: a.Attributes})
	}
	return c, nil
}

// Name implements Method.
func (*Certificates) Name() string { return MethodX509 }

// Applies implements Method: a client that presented a certificate during
// the TLS handshake.
func (*Certificates) Applies(ci *broker.ConnectInfo) bool {
	return ci.AuthMethod == "" && ci.TLS != nil && len(ci.TLS.PeerCertificates) > 0
}

// Status reports a problem with the trusted CAs, if any.
func (c *Certificates) Status() error {
	_, err := c.ca.get()
	return err
}

// Verify implements Method.
func (c *Certificates) Verify(_ context.Context, ci *broker.ConnectInfo) (*broker.Principal, error) {
	roots, err := c.ca.get()
	if err != nil {
		return nil, unavailable(fmt.Errorf("trusted client CAs: %w", err))
	}
	certs := ci.TLS.PeerCertificates
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, deny(MethodX509, packet.NotAuthorized, "client certificate: "+err.Error())
	}
	chain := chains[0]
	p := &broker.Principal{Username: certs[0].Subject.CommonName, Expiry: chain[0].NotAfter}
	for _, cert := range chain {
		if cert.NotAfter.Before(p.Expiry) {
			p.Expiry = cert.NotAfter
		}
	}
	// Leaf first, the first match wins.
	for _, cert := range chain {
		have := certRDNs(cert.Subject)
		for _, r := range c.attrs {
			if sameRDNs(r.rdns, have) {
				p.Attributes = r.attrs
				return p, nil
			}
		}
	}
	return p, nil
}

// Short names of subject attribute types, as OpenSSL prints them.
var rdnNames = map[string]string{
	"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.9": "STREET",
	"2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.5": "SERIALNUMBER", "2.5.4.17": "POSTALCODE",
	"0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID", "1.2.840.113549.1.9.1": "EMAILADDRESS",
}

func certRDNs(name pkix.Name) []rdn {
	var out []rdn
	for _, atv := range name.Names {
		typ := atv.Type.String()
		if short, ok := rdnNames[typ]; ok {
			typ = short
		}
		v, _ := atv.Value.(string)
		out = append(out, rdn{typ, v})
	}
	sortRDNs(out)
	return out
}

// parseSubject parses "CN = a, O = b" (spaces around = optional).
func parseSubject(s string) ([]rdn, error) {
	var out []rdn
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, fmt.Errorf("subject %q: %q is not TYPE = value", s, part)
		}
		typ := strings.ToUpper(k)
		if typ == "E" {
			typ = "EMAILADDRESS"
		}
		out = append(out, rdn{typ, v})
	}
	sortRDNs(out)
	return out, nil
}

func sortRDNs(r []rdn) {
	sort.Slice(r, func(i, j int) bool {
		if r[i].typ != r[j].typ {
			return r[i].typ < r[j].typ
		}
		return r[i].value < r[j].value
	})
}

func sameRDNs(a, b []rdn) bool { return slices.Equal(a, b) }

// caPool holds trusted CAs read from a file or a directory, read again
// when they change (checked at most every caRecheck).
type caPool struct {
	path string

	mu      sync.Mutex
	pool    *x509.CertPool
	err     error
	stamp   string
	checked time.Time
}

const caRecheck = 2 * time.Second

func (c *caPool) get() (*x509.CertPool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.checked.IsZero() || now.Sub(c.checked) >= caRecheck {
		c.checked = now
		stamp, files, err := pathStamp(c.path)
		if err != nil {
			c.pool, c.err = nil, err
		} else if stamp != c.stamp || c.pool == nil {
			c.pool, c.err = loadPool(files)
			c.stamp = stamp
		}
	}
	return c.pool, c.err
}

// pathStamp lists the regular files of path (itself when it is a file)
// and summarizes their versions, so a change to any is noticed.
func pathStamp(path string) (string, []string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", nil, err
	}
	files := []string{path}
	if fi.IsDir() {
		files = nil
		ents, err := os.ReadDir(path)
		if err != nil {
			return "", nil, err
		}
		for _, e := range ents {
			// ..data and other dot entries are a mounted ConfigMap's links.
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			files = append(files, filepath.Join(path, e.Name()))
		}
	}
	var b strings.Builder
	kept := files[:0]
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		kept = append(kept, f)
		fmt.Fprintf(&b, "%s|%d|%d;", f, st.ModTime().UnixNano(), st.Size())
	}
	return b.String(), kept, nil
}

func loadPool(files []string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for _, f := range files {
		data, err := readLimited(f)
		if err != nil {
			return nil, err
		}
		for {
			var blk *pem.Block
			blk, data = pem.Decode(data)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				continue
			}
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			pool.AddCert(cert)
			n++
		}
	}
	if n == 0 {
		return nil, errors.New("no PEM certificates found")
	}
	return pool, nil
}

// readLimited reads a configuration file of at most a few megabytes.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 4<<20+1))
	if err != nil {
		return nil, err
	}
	if len(data) > 4<<20 {
		return nil, fmt.Errorf("%s: larger than 4 MiB", path)
	}
	return data, nil
}
