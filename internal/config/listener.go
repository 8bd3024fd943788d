package config

import (
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// BrokerListenerSpec is the BrokerListener kind: MQTT ports the broker
// accepts clients on, each with its protocol, address, TLS and references
// to authentication and authorization. It follows Azure IoT Operations'
// BrokerListener where that makes sense on one machine; address, path and
// maxConnections are Edgeport's.
type BrokerListenerSpec struct {
	// BrokerRef names the Broker; there is one, "default" (accepted for
	// compatibility with Azure IoT Operations manifests).
	BrokerRef string `json:"brokerRef,omitempty"`
	// ServiceName is informational on a single machine (in Kubernetes it
	// names the Service).
	ServiceName string         `json:"serviceName,omitempty"`
	Ports       []ListenerPort `json:"ports"`
}

// Listener protocols.
const (
	ProtocolMqtt       = "Mqtt"
	ProtocolWebSockets = "WebSockets"
)

// ListenerPort is one port of a BrokerListener.
type ListenerPort struct {
	// Port is the TCP port; 0 picks a free one (see status.ports).
	Port *int `json:"port"`
	// Protocol is Mqtt (MQTT over TCP or TLS) or WebSockets.
	Protocol string `json:"protocol"`
	// Address is the local address to bind; 0.0.0.0 or :: for every
	// interface.
	Address string `json:"address"`
	// Path is the HTTP path of a WebSockets port.
	Path              string       `json:"path,omitempty"`
	AuthenticationRef string       `json:"authenticationRef,omitempty"`
	AuthorizationRef  string       `json:"authorizationRef,omitempty"`
	TLS               *ListenerTLS `json:"tls,omitempty"`
	// MaxConnections bounds open connections on the port; 0: unlimited.
	MaxConnections int `json:"maxConnections,omitempty"`
	// AllowAnonymous admits clients that present no credentials any
	// method of AuthenticationRef applies to (Edgeport). Without
	// AuthenticationRef, a port on a loopback address admits everyone; on
	// any other address it admits nobody unless AllowAnonymous is true.
	AllowAnonymous bool `json:"allowAnonymous,omitempty"`
	// AllowedOrigins lists the web origins (scheme://host[:port]) whose
	// pages may open connections to a WebSockets port, besides pages
	// served from the IP address or localhost the browser addressed; "*"
	// allows every page (Edgeport). Programs, which send no Origin, are
	// not concerned.
	AllowedOrigins []string `json:"allowedOrigins,omitempty"`
}

// TLS modes.
const (
	TLSAutomatic = "Automatic" // certificate generated and renewed by Edgeport
	TLSManual    = "Manual"    // certificate from a secret
)

// ListenerTLS turns a port into TLS (or WebSockets into WSS).
type ListenerTLS struct {
	Mode                       string           `json:"mode"`
	CertManagerCertificateSpec *CertificateSpec `json:"certManagerCertificateSpec,omitempty"`
	Manual                     *ManualTLS       `json:"manual,omitempty"`
	// ClientAuth asks clients for certificates (Edgeport).
	ClientAuth *ClientAuthTLS `json:"clientAuth,omitempty"`
}

// ManualTLS takes the certificate from a secret, or from two files
// (Edgeport). On a single machine a secret is the directory
// <data-dir>/secrets/<name> holding tls.crt and tls.key (the file names of
// a Kubernetes TLS secret). Either way the files are reloaded when they
// change.
type ManualTLS struct {
	SecretRef string `json:"secretRef,omitempty"`
	CertFile  string `json:"certFile,omitempty"`
	KeyFile   string `json:"keyFile,omitempty"`
}

// Client certificate modes.
const (
	ClientAuthNone     = "None"
	ClientAuthOptional = "Optional" // verified when a client sends one
	ClientAuthRequired = "Required" // no certificate, no connection
)

// DefaultTrustedCaCert names the ConfigMap of trusted client CAs, as
// Azure IoT Operations' X.509 authentication does.
const DefaultTrustedCaCert = "client-ca"

// ClientAuthTLS verifies client certificates during the TLS handshake
// against trusted CAs: the ConfigMap TrustedCaCert (on a single machine
// the file client_ca.pem in <data-dir>/configmaps/<name>/) or the file
// TrustedCaCertFile.
type ClientAuthTLS struct {
	Mode              string `json:"mode"`
	TrustedCaCert     string `json:"trustedCaCert,omitempty"`
	TrustedCaCertFile string `json:"trustedCaCertFile,omitempty"`
}

// CertificateSpec describes a generated certificate (mode Automatic).
type CertificateSpec struct {
	Duration    string          `json:"duration,omitempty"`
	RenewBefore string          `json:"renewBefore,omitempty"`
	SecretName  string          `json:"secretName,omitempty"`
	San         *SubjectAltName `json:"san,omitempty"`
	PrivateKey  *PrivateKeySpec `json:"privateKey,omitempty"`
}

// SubjectAltName lists the names a generated certificate is valid for.
type SubjectAltName struct {
	DNS []string `json:"dns,omitempty"`
	IP  []string `json:"ip,omitempty"`
}

// PrivateKeySpec chooses a generated key.
type PrivateKeySpec struct {
	Algorithm      string `json:"algorithm,omitempty"`
	RotationPolicy string `json:"rotationPolicy,omitempty"`
}

// DefaultListenerAddress keeps a port private to the machine unless the
// user says otherwise.
const DefaultListenerAddress = "127.0.0.1"

// DefaultWebSocketPath is the path of a WebSockets port.
const DefaultWebSocketPath = "/mqtt"

func brokerListenerKind() KindDef {
	d := Define("BrokerListener", "brokerlisteners", []string{"listener", "listeners", "bl"}, defaultListener, validateListener)
	d.SpecRequired = true
	d.Columns = []Column{
		{"PORTS", func(o *Object) string {
			var out []string
			for _, p := range o.Spec.(*BrokerListenerSpec).Ports {
				s := itoa(p.Port) + "/" + p.Protocol
				if p.TLS != nil {
					s += "+TLS"
				}
				out = append(out, s)
			}
			return strings.Join(out, ",")
		}},
		{"ADDRESSES", func(o *Object) string {
			if o.Status == nil {
				return ""
			}
			var out []string
			for _, p := range o.Status.Ports {
				if p.Address != "" {
					out = append(out, p.Address)
				}
			}
			return strings.Join(out, ",")
		}},
	}
	return d
}

func defaultListener(s *BrokerListenerSpec) {
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.Protocol == "" {
			p.Protocol = ProtocolMqtt
		}
		if p.Address == "" {
			p.Address = DefaultListenerAddress
		}
		if p.Protocol == ProtocolWebSockets && p.Path == "" {
			p.Path = DefaultWebSocketPath
		}
		if p.TLS != nil {
			if ca := p.TLS.ClientAuth; ca != nil && (ca.Mode == ClientAuthOptional || ca.Mode == ClientAuthRequired) &&
				ca.TrustedCaCert == "" && ca.TrustedCaCertFile == "" {
				ca.TrustedCaCert = DefaultTrustedCaCert
			}
		}
	}
}

func validateListener(s *BrokerListenerSpec, errs *Errors) {
	if s.BrokerRef != "" && s.BrokerRef != "default" {
		errs.Add("spec.brokerRef", `must be "default" (the only Broker)`)
	}
	if len(s.Ports) == 0 {
		errs.Add("spec.ports", "at least one port is required")
	}
	seen := map[int]int{}
	for i := range s.Ports {
		p := &s.Ports[i]
		path := index("spec.ports", i)
		switch {
		case p.Port == nil:
			errs.Add(field(path, "port"), "required")
		case *p.Port < 0 || *p.Port > 65535:
			errs.Add(field(path, "port"), "must be between 0 and 65535 (0 picks a free port)")
		default:
			if j, dup := seen[*p.Port]; dup {
				errs.Add(field(path, "port"), "duplicate of spec.ports[%d].port (one entry per port number)", j)
			} else {
				seen[*p.Port] = i
			}
		}
		oneOf(errs, field(path, "protocol"), p.Protocol, ProtocolMqtt, ProtocolWebSockets)
		if p.Address != "localhost" && net.ParseIP(p.Address) == nil {
			errs.Add(field(path, "address"), "must be an IP address or localhost (got %q)", p.Address)
		}
		if p.Protocol == ProtocolMqtt && p.Path != "" {
			errs.Add(field(path, "path"), "only allowed with protocol WebSockets")
		}
		if p.Protocol == ProtocolWebSockets && !strings.HasPrefix(p.Path, "/") {
			errs.Add(field(path, "path"), "must start with /")
		}
		if len(p.AllowedOrigins) > 0 && p.Protocol != ProtocolWebSockets {
			errs.Add(field(path, "allowedOrigins"), "only allowed with protocol WebSockets")
		}
		for j, o := range p.AllowedOrigins {
			if !validOrigin(o) {
				errs.Add(index(field(path, "allowedOrigins"), j), `must be "*" or scheme://host[:port] with scheme http or https (got %q)`, o)
			}
		}
		if p.AuthenticationRef != "" {
			validateName(p.AuthenticationRef, field(path, "authenticationRef"), errs)
		}
		if p.AuthorizationRef != "" {
			validateName(p.AuthorizationRef, field(path, "authorizationRef"), errs)
			if p.AuthenticationRef == "" {
				errs.Add(field(path, "authorizationRef"), "requires authenticationRef: authorization applies to authenticated clients")
			}
		}
		if p.MaxConnections < 0 {
			errs.Add(field(path, "maxConnections"), "must not be negative (0: unlimited)")
		}
		if p.TLS != nil {
			validateTLS(p.TLS, field(path, "tls"), errs)
		}
	}
}

// validOrigin accepts "*" and http(s)://host[:port]; the listener
// normalizes what it is given (listener.CheckOrigins).
func validOrigin(o string) bool {
	if o == "*" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.User == nil &&
		(u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.Fragment == ""
}

func validateTLS(t *ListenerTLS, path string, errs *Errors) {
	switch t.Mode {
	case TLSManual:
		m := t.Manual
		switch {
		case m == nil || (m.SecretRef == "" && m.CertFile == "" && m.KeyFile == ""):
			errs.Add(field(path, "manual.secretRef"), "required with mode Manual (or manual.certFile and manual.keyFile)")
		case m.SecretRef != "":
			validateName(m.SecretRef, field(path, "manual.secretRef"), errs)
			if m.CertFile != "" || m.KeyFile != "" {
				errs.Add(field(path, "manual"), "secretRef or certFile and keyFile, not both")
			}
		default:
			absFile(errs, field(path, "manual.certFile"), m.CertFile)
			absFile(errs, field(path, "manual.keyFile"), m.KeyFile)
		}
		if t.CertManagerCertificateSpec != nil {
			errs.Add(field(path, "certManagerCertificateSpec"), "only allowed with mode Automatic")
		}
	case TLSAutomatic:
		if t.Manual != nil {
			errs.Add(field(path, "manual"), "only allowed with mode Manual")
		}
		if c := t.CertManagerCertificateSpec; c != nil {
			validateCertSpec(c, field(path, "certManagerCertificateSpec"), errs)
		}
	case "":
		errs.Add(field(path, "mode"), "required (Automatic or Manual)")
	default:
		errs.Add(field(path, "mode"), "must be one of Automatic or Manual (got %q)", t.Mode)
	}
	if ca := t.ClientAuth; ca != nil {
		p := field(path, "clientAuth")
		if ca.Mode == "" {
			errs.Add(field(p, "mode"), "required (None, Optional or Required)")
		} else {
			oneOf(errs, field(p, "mode"), ca.Mode, ClientAuthNone, ClientAuthOptional, ClientAuthRequired)
		}
		if ca.TrustedCaCert != "" {
			validateName(ca.TrustedCaCert, field(p, "trustedCaCert"), errs)
			if ca.TrustedCaCertFile != "" {
				errs.Add(field(p, "trustedCaCertFile"), "trustedCaCert or trustedCaCertFile, not both")
			}
		}
		if ca.TrustedCaCertFile != "" {
			absFile(errs, field(p, "trustedCaCertFile"), ca.TrustedCaCertFile)
		}
	}
}

func absFile(errs *Errors, path, v string) {
	if v == "" {
		errs.Add(path, "required")
	} else if !filepath.IsAbs(v) {
		errs.Add(path, "must be an absolute path (got %q)", v)
	}
}

func validateCertSpec(c *CertificateSpec, path string, errs *Errors) {
	dur := func(name, v string) time.Duration {
		if v == "" {
			return 0
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs.Add(field(path, name), "must be a positive duration such as 720h (got %q)", v)
			return 0
		}
		return d
	}
	d, r := dur("duration", c.Duration), dur("renewBefore", c.RenewBefore)
	if d > 0 && r > 0 && r >= d {
		errs.Add(field(path, "renewBefore"), "must be shorter than duration")
	}
	if c.SecretName != "" {
		validateName(c.SecretName, field(path, "secretName"), errs)
	}
	if c.San != nil {
		for i, ip := range c.San.IP {
			if net.ParseIP(ip) == nil {
				errs.Add(index(field(path, "san.ip"), i), "must be an IP address (got %q)", ip)
			}
		}
		for i, n := range c.San.DNS {
			if n == "" || len(n) > 253 || strings.ContainsAny(n, " /:") {
				errs.Add(index(field(path, "san.dns"), i), "must be a DNS name (got %q)", n)
			}
		}
	}
	if k := c.PrivateKey; k != nil {
		if k.Algorithm != "" {
			oneOf(errs, field(path, "privateKey.algorithm"), k.Algorithm,
				"Ec256", "Ec384", "Ec521", "Ed25519", "Rsa2048", "Rsa4096", "Rsa8192")
		}
		if k.RotationPolicy != "" {
			oneOf(errs, field(path, "privateKey.rotationPolicy"), k.RotationPolicy, "Always", "Never")
		}
	}
}

// PortName is the listener name of a BrokerListener port, as it appears in
// metrics and logs: "<resource>:<port>".
func PortName(resource string, port int) string { return resource + ":" + strconv.Itoa(port) }
