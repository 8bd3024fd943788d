package opcua

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// The trust list lives in the OPC UA PKI folder in the layout OPC UA stacks
// share (Part 12 F.1): trusted/certs and trusted/crl, issuers/certs and
// issuers/crl, rejected/certs. A person can drop DER or PEM files into
// trusted/ or issuers/ by hand; the CLI and API move them for them.
const (
	listTrusted  = "trusted"
	listIssuers  = "issuers"
	listRejected = "rejected"
)

// Errors a certificate check returns besides *UntrustedError.
var (
	ErrCertExpired = errors.New("server certificate is outside its validity period")
	ErrCertRevoked = errors.New("server certificate is revoked")
	ErrNoCert      = errors.New("server sent no certificate")
	ErrCertUnknown = errors.New("no such certificate")
	ErrAmbiguous   = errors.New("thumbprint prefix matches more than one certificate")
)

// UntrustedError says a server presented a certificate nobody trusted yet. It
// was stored in the rejected list, where `certs trust` picks it up.
type UntrustedError struct {
	Thumbprint string
	Subject    string
	Endpoint   string
}

func (e *UntrustedError) Error() string {
	return fmt.Sprintf("server certificate not trusted: run `edgeport connector opcua certs trust %s` (subject %q, endpoint %s)",
		e.Thumbprint, e.Subject, e.Endpoint)
}

// CertEntry describes one certificate in the trust list.
type CertEntry struct {
	Thumbprint     string    `json:"thumbprint"`
	List           string    `json:"list"` // trusted, issuers or rejected
	Subject        string    `json:"subject"`
	Issuer         string    `json:"issuer"`
	ApplicationURI string    `json:"applicationUri,omitempty"`
	NotBefore      time.Time `json:"notBefore"`
	NotAfter       time.Time `json:"notAfter"`
	IsCA           bool      `json:"isCA,omitempty"`
	// Endpoint and RejectedAt say where and when a rejected certificate was
	// seen last.
	Endpoint   string    `json:"endpoint,omitempty"`
	RejectedAt time.Time `json:"rejectedAt,omitzero"`

	path string
	cert *x509.Certificate
}

// TrustList decides which OPC UA server certificates Edgeport accepts. gopcua
// checks nothing itself, so every session asks Verify before it opens a
// secure channel. The files are read on every check: a certificate trusted
// through the CLI, the API or by hand counts at the next connection attempt.
type TrustList struct {
	dir string

	// mu serialises changes (moves between lists, rejected metadata) with
	// each other and guards changed.
	mu sync.Mutex
	// changed is closed and replaced whenever the lists change, so sessions
	// waiting to retry an untrusted server retry at once.
	changed chan struct{}
}

// OpenTrustList opens (creating the folders of) the trust list under dir.
func OpenTrustList(dir string) (*TrustList, error) {
	for _, sub := range []string{"trusted/certs", "trusted/crl", "issuers/certs", "issuers/crl", "rejected/certs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("creating trust list: %w", err)
		}
	}
	return &TrustList{dir: dir, changed: make(chan struct{})}, nil
}

// Dir is the PKI folder the trust list lives in.
func (t *TrustList) Dir() string { return t.dir }

// Changed returns a channel closed at the next change of the lists.
func (t *TrustList) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

func (t *TrustList) notifyLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// Verify checks a server certificate (DER, optionally followed by the rest
// of its chain, as OPC UA endpoint descriptions carry it) seen at endpoint.
// It is accepted when it is itself in the trusted list, or when it chains to
// a trusted CA through the issuers list; in both cases it must be within its
// validity period and not revoked by a CRL of its issuer. An unknown
// certificate is stored in the rejected list and reported as *UntrustedError.
func (t *TrustList) Verify(chainDER []byte, endpoint string, now time.Time) (*x509.Certificate, error) {
	if len(chainDER) == 0 {
		return nil, ErrNoCert
	}
	chain, err := x509.ParseCertificates(chainDER)
	if err != nil || len(chain) == 0 {
		return nil, fmt.Errorf("parsing server certificate: %w", err)
	}
	leaf := chain[0]
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("%w (valid %s to %s)", ErrCertExpired,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	trusted, err := t.load(listTrusted)
	if err != nil {
		return nil, err
	}
	issuers, err := t.load(listIssuers)
	if err != nil {
		return nil, err
	}
	crls, err := t.loadCRLs()
	if err != nil {
		return nil, err
	}
	thumb := Thumbprint(leaf.Raw)
	accepted := false
	var verified []*x509.Certificate
	for _, e := range trusted {
		if e.Thumbprint == thumb {
			accepted = true
			verified = []*x509.Certificate{leaf}
			break
		}
	}
	if !accepted {
		roots := x509.NewCertPool()
		anyCA := false
		for _, e := range trusted {
			if c := e.cert; c != nil && c.IsCA {
				roots.AddCert(c)
				anyCA = true
			}
		}
		if anyCA {
			inter := x509.NewCertPool()
			for _, e := range issuers {
				inter.AddCert(e.cert)
			}
			for _, c := range chain[1:] {
				inter.AddCert(c)
			}
			chains, err := leaf.Verify(x509.VerifyOptions{
				Roots: roots, Intermediates: inter, CurrentTime: now,
				// OPC UA certificates are used for both ends and often carry
				// no extended key usage at all.
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
			})
			if err == nil && len(chains) > 0 {
				accepted = true
				verified = chains[0]
			}
		}
	}
	if !accepted {
		if err := t.reject(leaf, endpoint, now); err != nil {
			return nil, err
		}
		return nil, &UntrustedError{Thumbprint: thumb, Subject: leaf.Subject.String(), Endpoint: endpoint}
	}
	// A certificate that chains to a trusted CA may have been listed as
	// rejected before the CA was trusted: the list should not show it.
	t.forgetRejected(thumb)
	// A CRL counts when its issuer's key signed it; a certificate listed in
	// it is refused even if the certificate itself is trusted.
	all := append(append([]*CertEntry{}, trusted...), issuers...)
	for _, c := range verified {
		for _, crl := range crls {
			if !nameEqual(crl.RawIssuer, c.RawIssuer) {
				continue
			}
			if !crlSignedByKnown(crl, all, chain) {
				continue
			}
			for _, r := range crl.RevokedCertificateEntries {
				if r.SerialNumber.Cmp(c.SerialNumber) == 0 {
					return nil, fmt.Errorf("%w: %s (serial %s)", ErrCertRevoked, c.Subject, c.SerialNumber)
				}
			}
		}
	}
	return leaf, nil
}

func nameEqual(a, b []byte) bool { return string(a) == string(b) }

func crlSignedByKnown(crl *x509.RevocationList, known []*CertEntry, chain []*x509.Certificate) bool {
	for _, e := range known {
		if e.cert != nil && crl.CheckSignatureFrom(e.cert) == nil {
			return true
		}
	}
	for _, c := range chain {
		if c.IsCA && crl.CheckSignatureFrom(c) == nil {
			return true
		}
	}
	return false
}

// rejectedMeta is stored beside a rejected certificate.
type rejectedMeta struct {
	Endpoint   string    `json:"endpoint"`
	RejectedAt time.Time `json:"rejectedAt"`
}

func (t *TrustList) reject(c *x509.Certificate, endpoint string, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	thumb := Thumbprint(c.Raw)
	base := filepath.Join(t.dir, listRejected, "certs", thumb)
	_, statErr := os.Stat(base + ".der")
	if err := writeFileAtomic(base+".der", c.Raw, 0o644); err != nil {
		return err
	}
	meta, _ := json.Marshal(rejectedMeta{Endpoint: endpoint, RejectedAt: now.UTC()})
	if err := writeFileAtomic(base+".json", meta, 0o644); err != nil {
		return err
	}
	if statErr != nil {
		t.notifyLocked()
	}
	return nil
}

func (t *TrustList) forgetRejected(thumb string) {
	base := filepath.Join(t.dir, listRejected, "certs", thumb)
	if _, err := os.Stat(base + ".der"); err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	os.Remove(base + ".der")
	os.Remove(base + ".json")
	t.notifyLocked()
}

// List returns every certificate of the three lists, trusted first.
func (t *TrustList) List() ([]CertEntry, error) {
	var out []CertEntry
	for _, l := range []string{listTrusted, listIssuers, listRejected} {
		es, err := t.load(l)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			out = append(out, *e)
		}
	}
	return out, nil
}

// Trust moves a rejected certificate (named by thumbprint or a unique prefix
// of at least 8 characters) into the trusted list.
func (t *TrustList) Trust(thumb string) (CertEntry, error) {
	return t.move(thumb, listTrusted)
}

// Reject moves a trusted certificate into the rejected list.
func (t *TrustList) Reject(thumb string) (CertEntry, error) {
	return t.move(thumb, listRejected)
}

// Remove deletes a certificate from whichever list holds it.
func (t *TrustList) Remove(thumb string) (CertEntry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, err := t.findLocked(thumb)
	if err != nil {
		return CertEntry{}, err
	}
	if err := os.Remove(e.path); err != nil {
		return CertEntry{}, fmt.Errorf("removing %s: %w", e.path, err)
	}
	os.Remove(strings.TrimSuffix(e.path, filepath.Ext(e.path)) + ".json")
	t.notifyLocked()
	return *e, nil
}

// Add puts a certificate or CRL (DER or PEM) into the trusted list or, with
// issuer set, into the issuers list. It returns the certificate's entry, or
// a zero entry for a CRL.
func (t *TrustList) Add(data []byte, issuer bool) (CertEntry, error) {
	list := listTrusted
	if issuer {
		list = listIssuers
	}
	if block, _ := pem.Decode(data); block != nil {
		data = block.Bytes
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c, err := x509.ParseCertificate(data); err == nil {
		thumb := Thumbprint(c.Raw)
		path := filepath.Join(t.dir, list, "certs", thumb+".der")
		if err := writeFileAtomic(path, c.Raw, 0o644); err != nil {
			return CertEntry{}, err
		}
		for _, l := range []string{listTrusted, listIssuers, listRejected} {
			if l != list {
				if e, err := t.findInLocked(l, thumb); err == nil {
					os.Remove(e.path)
					os.Remove(strings.TrimSuffix(e.path, filepath.Ext(e.path)) + ".json")
				}
			}
		}
		t.notifyLocked()
		return entryFor(c, list, path), nil
	}
	crl, err := x509.ParseRevocationList(data)
	if err != nil {
		return CertEntry{}, fmt.Errorf("neither a certificate nor a CRL (DER or PEM)")
	}
	path := filepath.Join(t.dir, list, "crl", Thumbprint(crl.Raw)+".crl")
	if err := writeFileAtomic(path, crl.Raw, 0o644); err != nil {
		return CertEntry{}, err
	}
	t.notifyLocked()
	return CertEntry{}, nil
}

func (t *TrustList) move(thumb, to string) (CertEntry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, err := t.findLocked(thumb)
	if err != nil {
		return CertEntry{}, err
	}
	if e.List == to {
		return *e, nil
	}
	dst := filepath.Join(t.dir, to, "certs", e.Thumbprint+".der")
	if err := writeFileAtomic(dst, e.cert.Raw, 0o644); err != nil {
		return CertEntry{}, err
	}
	if to == listRejected {
		meta, _ := json.Marshal(rejectedMeta{RejectedAt: time.Now().UTC()})
		if err := writeFileAtomic(strings.TrimSuffix(dst, ".der")+".json", meta, 0o644); err != nil {
			return CertEntry{}, err
		}
	}
	if err := os.Remove(e.path); err != nil {
		return CertEntry{}, fmt.Errorf("removing %s: %w", e.path, err)
	}
	os.Remove(strings.TrimSuffix(e.path, filepath.Ext(e.path)) + ".json")
	t.notifyLocked()
	out := *e
	out.List, out.path = to, dst
	return out, nil
}

func (t *TrustList) findLocked(thumb string) (*CertEntry, error) {
	thumb = strings.ToLower(strings.TrimSpace(strings.ReplaceAll(thumb, ":", "")))
	if len(thumb) < 8 {
		return nil, fmt.Errorf("%w: thumbprint %q: give at least 8 characters", ErrCertUnknown, thumb)
	}
	var found []*CertEntry
	for _, l := range []string{listTrusted, listIssuers, listRejected} {
		es, err := t.load(l)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if strings.HasPrefix(e.Thumbprint, thumb) {
				found = append(found, e)
			}
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%w: %s", ErrCertUnknown, thumb)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%w: %s", ErrAmbiguous, thumb)
}

func (t *TrustList) findInLocked(list, thumb string) (*CertEntry, error) {
	es, err := t.load(list)
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		if e.Thumbprint == thumb {
			return e, nil
		}
	}
	return nil, ErrCertUnknown
}

// load reads every certificate file of one list. Files that do not parse are
// skipped: one stray file must not make every server untrusted.
func (t *TrustList) load(list string) ([]*CertEntry, error) {
	dir := filepath.Join(t.dir, list, "certs")
	des, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	var out []*CertEntry
	for _, de := range des {
		name := de.Name()
		if de.IsDir() || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".json") {
			continue
		}
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		if block, _ := pem.Decode(data); block != nil {
			data = block.Bytes
		}
		c, err := x509.ParseCertificate(data)
		if err != nil {
			continue
		}
		e := entryFor(c, list, path)
		if list == listRejected {
			if mb, err := os.ReadFile(strings.TrimSuffix(path, filepath.Ext(path)) + ".json"); err == nil {
				var m rejectedMeta
				if json.Unmarshal(mb, &m) == nil {
					e.Endpoint, e.RejectedAt = m.Endpoint, m.RejectedAt
				}
			}
		}
		out = append(out, &e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Thumbprint < out[j].Thumbprint })
	return out, nil
}

func entryFor(c *x509.Certificate, list, path string) CertEntry {
	e := CertEntry{
		Thumbprint: Thumbprint(c.Raw),
		List:       list,
		Subject:    c.Subject.String(),
		Issuer:     c.Issuer.String(),
		NotBefore:  c.NotBefore.UTC(),
		NotAfter:   c.NotAfter.UTC(),
		IsCA:       c.IsCA,
		path:       path,
		cert:       c,
	}
	if len(c.URIs) > 0 {
		e.ApplicationURI = c.URIs[0].String()
	}
	return e
}

func (t *TrustList) loadCRLs() ([]*x509.RevocationList, error) {
	var out []*x509.RevocationList
	for _, l := range []string{listTrusted, listIssuers} {
		dir := filepath.Join(t.dir, l, "crl")
		des, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading %s: %w", dir, err)
		}
		for _, de := range des {
			if de.IsDir() || strings.HasPrefix(de.Name(), ".") {
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, de.Name()))
			if err != nil {
				continue
			}
			if block, _ := pem.Decode(data); block != nil {
				data = block.Bytes
			}
			crl, err := x509.ParseRevocationList(data)
			if err != nil {
				continue
			}
			out = append(out, crl)
		}
	}
	return out, nil
}
