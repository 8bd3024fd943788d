package config

import (
	"encoding/base64"
	"net/url"
	"strconv"
	"strings"

	"github.com/edgeport/edgeport/internal/mqtt/topic"
)

// BrokerAuthenticationSpec is the BrokerAuthentication kind: how clients of
// the ports that reference it prove who they are. It follows Azure IoT
// Operations' BrokerAuthentication; UsernamePassword is Edgeport's. It is
// validated now and enforced once the security work lands.
type BrokerAuthenticationSpec struct {
	AuthenticationMethods []AuthenticationMethod `json:"authenticationMethods"`
}

// Authentication methods.
const (
	AuthnCustom              = "Custom"
	AuthnServiceAccountToken = "ServiceAccountToken"
	AuthnX509                = "X509"
	AuthnUsernamePassword    = "UsernamePassword"
)

// AuthenticationMethod is one method; the settings field matching Method
// may be set, the others not.
type AuthenticationMethod struct {
	Method                      string                    `json:"method"`
	CustomSettings              *CustomAuthSettings       `json:"customSettings,omitempty"`
	ServiceAccountTokenSettings *SATSettings              `json:"serviceAccountTokenSettings,omitempty"`
	X509Settings                *X509Settings             `json:"x509Settings,omitempty"`
	UsernamePasswordSettings    *UsernamePasswordSettings `json:"usernamePasswordSettings,omitempty"`
}

// CustomAuthSettings calls an HTTPS webhook compatible with Azure IoT
// Operations' custom authentication API.
type CustomAuthSettings struct {
	Endpoint        string            `json:"endpoint"`
	CACertConfigMap string            `json:"caCertConfigMap,omitempty"`
	Headers         map[string]string `json:"headers,omitempty"`
	Auth            *CustomAuthClient `json:"auth,omitempty"`
}

// CustomAuthClient is how the broker authenticates to the webhook.
type CustomAuthClient struct {
	X509 *SecretRef `json:"x509,omitempty"`
}

// SecretRef names a secret.
type SecretRef struct {
	SecretRef string `json:"secretRef"`
}

// SATSettings accepts Kubernetes service account tokens (MQTT 5 enhanced
// authentication K8S-SAT).
type SATSettings struct {
	Audiences []string `json:"audiences"`
}

// X509Settings accepts client certificates.
type X509Settings struct {
	TrustedClientCaCert     string                   `json:"trustedClientCaCert"`
	AuthorizationAttributes map[string]X509Attribute `json:"authorizationAttributes,omitempty"`
}

// X509Attribute gives clients whose certificate subject matches the
// attributes that authorization rules can refer to.
type X509Attribute struct {
	Subject    string            `json:"subject"`
	Attributes map[string]string `json:"attributes"`
}

// UsernamePasswordSettings checks MQTT username and password against a
// file of hashed passwords (argon2id or bcrypt).
type UsernamePasswordSettings struct {
	PasswordFile string `json:"passwordFile"`
}

// DefaultTrustedClientCaCert is Azure IoT Operations' default name of the
// client CA.
const DefaultTrustedClientCaCert = "client-ca"

func brokerAuthenticationKind() KindDef {
	d := Define("BrokerAuthentication", "brokerauthentications", []string{"authn", "authentication"}, defaultAuthn, validateAuthn)
	d.SpecRequired = true
	d.Columns = []Column{{"METHODS", func(o *Object) string {
		var out []string
		for _, m := range o.Spec.(*BrokerAuthenticationSpec).AuthenticationMethods {
			out = append(out, m.Method)
		}
		return strings.Join(out, ",")
	}}}
	return d
}

func defaultAuthn(s *BrokerAuthenticationSpec) {
	for i := range s.AuthenticationMethods {
		m := &s.AuthenticationMethods[i]
		if m.Method == AuthnX509 {
			if m.X509Settings == nil {
				m.X509Settings = &X509Settings{}
			}
			if m.X509Settings.TrustedClientCaCert == "" {
				m.X509Settings.TrustedClientCaCert = DefaultTrustedClientCaCert
			}
		}
	}
}

func validateAuthn(s *BrokerAuthenticationSpec, errs *Errors) {
	if len(s.AuthenticationMethods) == 0 {
		errs.Add("spec.authenticationMethods", "at least one method is required")
	}
	seen := map[string]int{}
	for i := range s.AuthenticationMethods {
		m := &s.AuthenticationMethods[i]
		path := index("spec.authenticationMethods", i)
		if j, dup := seen[m.Method]; dup && m.Method != "" {
			errs.Add(field(path, "method"), "duplicate of spec.authenticationMethods[%d].method", j)
		} else {
			seen[m.Method] = i
		}
		settings := map[string]bool{
			AuthnCustom:              m.CustomSettings != nil,
			AuthnServiceAccountToken: m.ServiceAccountTokenSettings != nil,
			AuthnX509:                m.X509Settings != nil,
			AuthnUsernamePassword:    m.UsernamePasswordSettings != nil,
		}
		names := map[string]string{
			AuthnCustom:              "customSettings",
			AuthnServiceAccountToken: "serviceAccountTokenSettings",
			AuthnX509:                "x509Settings",
			AuthnUsernamePassword:    "usernamePasswordSettings",
		}
		if m.Method == "" {
			errs.Add(field(path, "method"), "required (Custom, ServiceAccountToken, X509 or UsernamePassword)")
		} else if _, ok := settings[m.Method]; !ok {
			errs.Add(field(path, "method"), "must be one of Custom, ServiceAccountToken, X509 or UsernamePassword (got %q)", m.Method)
		}
		for _, meth := range []string{AuthnCustom, AuthnServiceAccountToken, AuthnX509, AuthnUsernamePassword} {
			if settings[meth] && meth != m.Method {
				errs.Add(field(path, names[meth]), "only allowed with method %s", meth)
			}
		}
		switch m.Method {
		case AuthnCustom:
			validateCustom(m.CustomSettings, field(path, "customSettings"), errs)
		case AuthnServiceAccountToken:
			p := field(path, "serviceAccountTokenSettings.audiences")
			if m.ServiceAccountTokenSettings == nil || len(m.ServiceAccountTokenSettings.Audiences) == 0 {
				errs.Add(p, "at least one audience is required")
			} else {
				for j, a := range m.ServiceAccountTokenSettings.Audiences {
					if strings.TrimSpace(a) == "" {
						errs.Add(index(p, j), "must not be empty")
					}
				}
			}
		case AuthnX509:
			x := m.X509Settings
			validateName(x.TrustedClientCaCert, field(path, "x509Settings.trustedClientCaCert"), errs)
			for _, k := range sortedKeys(x.AuthorizationAttributes) {
				a := x.AuthorizationAttributes[k]
				ap := key(field(path, "x509Settings.authorizationAttributes"), k)
				if strings.TrimSpace(a.Subject) == "" {
					errs.Add(field(ap, "subject"), "required (the certificate subject, e.g. CN = Contoso Root CA)")
				}
				if len(a.Attributes) == 0 {
					errs.Add(field(ap, "attributes"), "at least one attribute is required")
				}
			}
		case AuthnUsernamePassword:
			p := field(path, "usernamePasswordSettings.passwordFile")
			if m.UsernamePasswordSettings == nil || m.UsernamePasswordSettings.PasswordFile == "" {
				errs.Add(p, "required (path of a file of username:hash lines)")
			} else if !strings.HasPrefix(m.UsernamePasswordSettings.PasswordFile, "/") {
				errs.Add(p, "must be an absolute path")
			}
		}
	}
}

func validateCustom(c *CustomAuthSettings, path string, errs *Errors) {
	if c == nil || c.Endpoint == "" {
		errs.Add(field(path, "endpoint"), "required (an https:// URL)")
		return
	}
	if u, err := url.Parse(c.Endpoint); err != nil || u.Scheme != "https" || u.Host == "" {
		errs.Add(field(path, "endpoint"), "must be an https:// URL (got %q)", c.Endpoint)
	}
	if c.CACertConfigMap != "" {
		validateName(c.CACertConfigMap, field(path, "caCertConfigMap"), errs)
	}
	for _, k := range sortedKeys(c.Headers) {
		if k == "" || strings.ContainsAny(k, " :\r\n\t") {
			errs.Add(key(field(path, "headers"), k), "must be an HTTP header name")
		}
	}
	if c.Auth != nil && c.Auth.X509 != nil {
		validateName(c.Auth.X509.SecretRef, field(path, "auth.x509.secretRef"), errs)
	}
}

// BrokerAuthorizationSpec is the BrokerAuthorization kind: allow-only
// rules of principals and what they may do. It follows Azure IoT
// Operations' BrokerAuthorization; validated now, enforced once the
// security work lands.
type BrokerAuthorizationSpec struct {
	AuthorizationPolicies AuthorizationPolicies `json:"authorizationPolicies"`
}

// AuthorizationPolicies is the rule set.
type AuthorizationPolicies struct {
	// Cache (Enabled or Disabled) caches decisions per client.
	Cache string              `json:"cache"`
	Rules []AuthorizationRule `json:"rules"`
}

// AuthorizationRule allows its principals what its resources list.
type AuthorizationRule struct {
	Principals          Principals           `json:"principals"`
	BrokerResources     []BrokerResource     `json:"brokerResources,omitempty"`
	StateStoreResources []StateStoreResource `json:"stateStoreResources,omitempty"`
}

// Principals match clients; any listed client ID, username or attribute
// set matches.
type Principals struct {
	ClientIDs  []string            `json:"clientIds,omitempty"`
	Usernames  []string            `json:"usernames,omitempty"`
	Attributes []map[string]string `json:"attributes,omitempty"`
}

// Broker resource methods.
const (
	MethodConnect   = "Connect"
	MethodPublish   = "Publish"
	MethodSubscribe = "Subscribe"
)

// BrokerResource allows an MQTT operation.
type BrokerResource struct {
	Method    string   `json:"method"`
	Topics    []string `json:"topics,omitempty"`
	ClientIDs []string `json:"clientIds,omitempty"`
}

// StateStoreResource allows state store operations on keys.
type StateStoreResource struct {
	KeyType string   `json:"keyType"`
	Keys    []string `json:"keys"`
	Method  string   `json:"method"`
}

func brokerAuthorizationKind() KindDef {
	d := Define("BrokerAuthorization", "brokerauthorizations", []string{"authz", "authorization"}, defaultAuthz, validateAuthz)
	d.SpecRequired = true
	d.Columns = []Column{{"RULES", func(o *Object) string {
		return strconv.Itoa(len(o.Spec.(*BrokerAuthorizationSpec).AuthorizationPolicies.Rules))
	}}}
	return d
}

func defaultAuthz(s *BrokerAuthorizationSpec) {
	if s.AuthorizationPolicies.Cache == "" {
		s.AuthorizationPolicies.Cache = "Enabled"
	}
}

func validateAuthz(s *BrokerAuthorizationSpec, errs *Errors) {
	const base = "spec.authorizationPolicies"
	oneOf(errs, base+".cache", s.AuthorizationPolicies.Cache, "Enabled", "Disabled")
	if len(s.AuthorizationPolicies.Rules) == 0 {
		errs.Add(base+".rules", "at least one rule is required (rules only allow; with none every operation is denied)")
	}
	for i := range s.AuthorizationPolicies.Rules {
		r := &s.AuthorizationPolicies.Rules[i]
		path := index(base+".rules", i)
		pr := &r.Principals
		if len(pr.ClientIDs)+len(pr.Usernames)+len(pr.Attributes) == 0 {
			errs.Add(field(path, "principals"), "at least one of clientIds, usernames or attributes is required")
		}
		nonEmpty(errs, field(path, "principals.clientIds"), pr.ClientIDs)
		nonEmpty(errs, field(path, "principals.usernames"), pr.Usernames)
		for j, a := range pr.Attributes {
			if len(a) == 0 {
				errs.Add(index(field(path, "principals.attributes"), j), "must not be empty")
			}
		}
		if len(r.BrokerResources)+len(r.StateStoreResources) == 0 {
			errs.Add(path, "at least one of brokerResources or stateStoreResources is required")
		}
		for j := range r.BrokerResources {
			validateBrokerResource(&r.BrokerResources[j], index(field(path, "brokerResources"), j), errs)
		}
		for j := range r.StateStoreResources {
			validateStateStoreResource(&r.StateStoreResources[j], index(field(path, "stateStoreResources"), j), errs)
		}
	}
}

func nonEmpty(errs *Errors, path string, vs []string) {
	for i, v := range vs {
		if v == "" {
			errs.Add(index(path, i), "must not be empty")
		}
	}
}

func validateBrokerResource(b *BrokerResource, path string, errs *Errors) {
	oneOf(errs, field(path, "method"), b.Method, MethodConnect, MethodPublish, MethodSubscribe)
	switch b.Method {
	case MethodConnect:
		if len(b.Topics) > 0 {
			errs.Add(field(path, "topics"), "not allowed with method Connect")
		}
		nonEmpty(errs, field(path, "clientIds"), b.ClientIDs)
	case MethodPublish, MethodSubscribe:
		if len(b.ClientIDs) > 0 {
			errs.Add(field(path, "clientIds"), "only allowed with method Connect")
		}
		if len(b.Topics) == 0 {
			errs.Add(field(path, "topics"), "at least one topic is required with method %s", b.Method)
		}
		for i, t := range b.Topics {
			if msg := checkTopicPattern(t); msg != "" {
				errs.Add(index(field(path, "topics"), i), "%s", msg)
			}
		}
	}
}

// checkTopicPattern validates a topic filter that may hold substitution
// tokens ({principal.clientId}, {principal.username},
// {principal.attributes.NAME}), each filling a whole topic level.
func checkTopicPattern(t string) string {
	levels := strings.Split(t, "/")
	for i, l := range levels {
		if !strings.ContainsAny(l, "{}") {
			continue
		}
		switch {
		case l == "{principal.clientId}", l == "{principal.username}":
		case strings.HasPrefix(l, "{principal.attributes.") && strings.HasSuffix(l, "}") &&
			len(l) > len("{principal.attributes.}") && !strings.ContainsAny(l[1:len(l)-1], "{}"):
		default:
			return "a substitution must be a whole topic level and one of {principal.clientId}, {principal.username} or {principal.attributes.NAME}"
		}
		levels[i] = "x"
	}
	if err := topic.ValidFilter(strings.Join(levels, "/")); err != nil {
		return err.Error()
	}
	return ""
}

// State store key types and methods.
const (
	KeyTypePattern = "Pattern"
	KeyTypeString  = "String"
	KeyTypeBinary  = "Binary"
)

func validateStateStoreResource(s *StateStoreResource, path string, errs *Errors) {
	oneOf(errs, field(path, "keyType"), s.KeyType, KeyTypePattern, KeyTypeString, KeyTypeBinary)
	oneOf(errs, field(path, "method"), s.Method, "Read", "Write", "ReadWrite")
	if len(s.Keys) == 0 {
		errs.Add(field(path, "keys"), "at least one key is required")
	}
	for i, k := range s.Keys {
		p := index(field(path, "keys"), i)
		switch {
		case k == "":
			errs.Add(p, "must not be empty")
		case s.KeyType == KeyTypeBinary:
			if _, err := base64.StdEncoding.DecodeString(k); err != nil {
				errs.Add(p, "must be base64 with keyType Binary")
			}
		}
	}
}
