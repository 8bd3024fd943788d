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
// Operations' BrokerAuthentication; UsernamePassword is Edgeport's. The
// methods are tried in order: the first whose credentials the client
// presented decides (see docs/security.md).
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

// SATSettings accepts Kubernetes service account tokens and other JWTs
// (MQTT 5 enhanced authentication K8S-SAT, or user name K8S-SAT with the
// token as password). Azure IoT Operations asks the Kubernetes API to
// review tokens; on a single machine Edgeport verifies their signature
// with the issuer's keys: JwksFile, JwksURI, or the OIDC discovery of
// Issuer (Edgeport's fields).
type SATSettings struct {
	Audiences []string `json:"audiences"`
	// Issuer, when set, must be the tokens' iss claim; without JwksFile
	// and JwksURI its OIDC discovery document names the keys.
	Issuer   string `json:"issuer,omitempty"`
	JwksURI  string `json:"jwksUri,omitempty"`
	JwksFile string `json:"jwksFile,omitempty"`
	// UsernameClaim names the claim that becomes the principal's user
	// name; default "sub".
	UsernameClaim string `json:"usernameClaim,omitempty"`
	// AttributeClaims maps authorization attribute names to claims; a
	// nested claim is a path of keys separated by "/", such as
	// kubernetes.io/namespace.
	AttributeClaims map[string]string `json:"attributeClaims,omitempty"`
}

// X509Settings accepts client certificates that chain to a trusted CA:
// the ConfigMap TrustedClientCaCert (on a single machine every PEM file in
// <data-dir>/configmaps/<name>/) or the file TrustedClientCaCertFile
// (Edgeport).
type X509Settings struct {
	TrustedClientCaCert     string                   `json:"trustedClientCaCert,omitempty"`
	TrustedClientCaCertFile string                   `json:"trustedClientCaCertFile,omitempty"`
	AuthorizationAttributes map[string]X509Attribute `json:"authorizationAttributes,omitempty"`
}

// X509Attribute gives clients whose certificate subject matches the
// attributes that authorization rules can refer to.
type X509Attribute struct {
	Subject    string            `json:"subject"`
	Attributes map[string]string `json:"attributes"`
}

// UsernamePasswordSettings checks MQTT username and password against
// hashed passwords (argon2id or bcrypt, as edgeport passwd prints them):
// lines "username:hash[:attr=value,...]" of PasswordFile, reloaded when it
// changes, and Users. A user in both is taken from the file.
type UsernamePasswordSettings struct {
	PasswordFile string         `json:"passwordFile,omitempty"`
	Users        []PasswordUser `json:"users,omitempty"`
	// Portal lets these users log in to the operations portal (the web
	// UI on the HTTP address) as well, with the same passwords. Edgeport's
	// own field; the API token always may.
	Portal bool `json:"portal,omitempty"`
}

// PasswordUser is one user given in the resource itself.
type PasswordUser struct {
	Username     string            `json:"username"`
	PasswordHash string            `json:"passwordHash"`
	Attributes   map[string]string `json:"attributes,omitempty"`
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
			if m.X509Settings.TrustedClientCaCert == "" && m.X509Settings.TrustedClientCaCertFile == "" {
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
			validateSAT(m.ServiceAccountTokenSettings, field(path, "serviceAccountTokenSettings"), errs)
		case AuthnX509:
			x := m.X509Settings
			if x.TrustedClientCaCert != "" {
				validateName(x.TrustedClientCaCert, field(path, "x509Settings.trustedClientCaCert"), errs)
			}
			if x.TrustedClientCaCertFile != "" {
				if x.TrustedClientCaCert != "" {
					errs.Add(field(path, "x509Settings.trustedClientCaCertFile"), "trustedClientCaCert or trustedClientCaCertFile, not both")
				}
				absFile(errs, field(path, "x509Settings.trustedClientCaCertFile"), x.TrustedClientCaCertFile)
			}
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
			validateUsernamePassword(m.UsernamePasswordSettings, field(path, "usernamePasswordSettings"), errs)
		}
	}
}

func validateSAT(s *SATSettings, path string, errs *Errors) {
	p := field(path, "audiences")
	if s == nil || len(s.Audiences) == 0 {
		errs.Add(p, "at least one audience is required")
		return
	}
	for j, a := range s.Audiences {
		if strings.TrimSpace(a) == "" {
			errs.Add(index(p, j), "must not be empty")
		}
	}
	for _, u := range []struct{ name, v string }{{"issuer", s.Issuer}, {"jwksUri", s.JwksURI}} {
		if u.v == "" {
			continue
		}
		if pu, err := url.Parse(u.v); err != nil || pu.Scheme != "https" || pu.Host == "" {
			errs.Add(field(path, u.name), "must be an https:// URL (got %q)", u.v)
		}
	}
	if s.JwksFile != "" {
		absFile(errs, field(path, "jwksFile"), s.JwksFile)
		if s.JwksURI != "" {
			errs.Add(field(path, "jwksFile"), "jwksFile or jwksUri, not both")
		}
	}
	for _, k := range sortedKeys(s.AttributeClaims) {
		if k == "" || s.AttributeClaims[k] == "" || strings.Trim(s.AttributeClaims[k], "/") != s.AttributeClaims[k] {
			errs.Add(key(field(path, "attributeClaims"), k), "must map an attribute name to a claim (a path such as kubernetes.io/namespace)")
		}
	}
}

func validateUsernamePassword(s *UsernamePasswordSettings, path string, errs *Errors) {
	if s == nil || (s.PasswordFile == "" && len(s.Users) == 0) {
		errs.Add(field(path, "passwordFile"), "required (path of a file of username:hash lines), or users")
		return
	}
	if s.PasswordFile != "" && !strings.HasPrefix(s.PasswordFile, "/") {
		errs.Add(field(path, "passwordFile"), "must be an absolute path")
	}
	seen := map[string]int{}
	for i, u := range s.Users {
		p := index(field(path, "users"), i)
		switch {
		case u.Username == "":
			errs.Add(field(p, "username"), "required")
		case strings.ContainsAny(u.Username, ":\r\n"):
			errs.Add(field(p, "username"), "must not contain a colon or a line break")
		default:
			if j, dup := seen[u.Username]; dup {
				errs.Add(field(p, "username"), "duplicate of %s", field(index(field(path, "users"), j), "username"))
			}
			seen[u.Username] = i
		}
		if !strings.HasPrefix(u.PasswordHash, "$argon2id$") && !strings.HasPrefix(u.PasswordHash, "$2a$") &&
			!strings.HasPrefix(u.PasswordHash, "$2b$") && !strings.HasPrefix(u.PasswordHash, "$2y$") {
			errs.Add(field(p, "passwordHash"), "must be an argon2id or bcrypt hash (edgeport passwd prints one)")
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
// Operations' BrokerAuthorization; a port that references one denies
// whatever no rule allows.
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
// set matches (client IDs and usernames may use * for any characters; an
// attribute set matches when every one of its keys matches).
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

// BrokerResource allows an MQTT operation: Connect (for client IDs
// matching ClientIDs, * for any characters, all when empty), or Publish
// and Subscribe on Topics (MQTT filters; a SUBSCRIBE filter must be
// covered by one of them).
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
		for i, id := range b.ClientIDs {
			if msg := checkSubstitutions(id); msg != "" {
				errs.Add(index(field(path, "clientIds"), i), "%s", msg)
			}
		}
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

// checkSubstitutions checks the {…} tokens of a client ID or key pattern,
// where braces are reserved for them.
func checkSubstitutions(s string) string {
	for rest := s; ; {
		open := strings.IndexByte(rest, '{')
		close := strings.IndexByte(rest, '}')
		switch {
		case open < 0 && close < 0:
			return ""
		case open < 0 || close < open:
			return "{ and } are reserved for substitutions such as {principal.clientId}"
		}
		tok := rest[open+1 : close]
		if tok != "principal.clientId" && tok != "principal.username" &&
			(!strings.HasPrefix(tok, "principal.attributes.") || len(tok) == len("principal.attributes.") || strings.ContainsAny(tok, "{")) {
			return "unknown substitution {" + tok + "} (use {principal.clientId}, {principal.username} or {principal.attributes.NAME})"
		}
		rest = rest[close+1:]
	}
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
		case s.KeyType == KeyTypePattern:
			if msg := checkSubstitutions(k); msg != "" {
				errs.Add(p, "%s", msg)
			}
		}
	}
}
