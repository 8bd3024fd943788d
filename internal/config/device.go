package config

import (
	"regexp"
	"strconv"
	"strings"
)

// Endpoint types (endpointType of a device's inbound endpoint), as Azure
// Device Registry names them.
const (
	EndpointTypeOpcUa  = "Microsoft.OpcUa"
	EndpointTypeModbus = "Microsoft.Modbus"
)

// DeviceSpec is the Device kind: something Edgeport connects to, with one
// or more inbound endpoints. It follows Azure Device Registry's
// namespaces/devices (API 2025-10-01); outbound endpoints and discovery
// references are not supported yet.
type DeviceSpec struct {
	// Enabled: a disabled device is not connected (default true).
	Enabled                *bool           `json:"enabled,omitempty"`
	Manufacturer           string          `json:"manufacturer,omitempty"`
	Model                  string          `json:"model,omitempty"`
	OperatingSystem        string          `json:"operatingSystem,omitempty"`
	OperatingSystemVersion string          `json:"operatingSystemVersion,omitempty"`
	ExternalDeviceID       string          `json:"externalDeviceId,omitempty"`
	Attributes             JSON            `json:"attributes,omitempty"`
	Endpoints              DeviceEndpoints `json:"endpoints"`
}

// IsEnabled reports whether the device is to be connected.
func (s *DeviceSpec) IsEnabled() bool { return s.Enabled == nil || *s.Enabled }

// DeviceEndpoints are a device's endpoints by name.
type DeviceEndpoints struct {
	Inbound map[string]InboundEndpoint `json:"inbound"`
}

// InboundEndpoint is one way to reach a device: a protocol (EndpointType),
// an address and credentials by secret reference.
type InboundEndpoint struct {
	EndpointType   string                  `json:"endpointType"`
	Address        string                  `json:"address"`
	Version        string                  `json:"version,omitempty"`
	Authentication *EndpointAuthentication `json:"authentication,omitempty"`
	TrustSettings  *TrustSettings          `json:"trustSettings,omitempty"`
	// AdditionalConfiguration is the endpoint type's own settings.
	AdditionalConfiguration JSON `json:"additionalConfiguration,omitempty"`
}

// Authentication methods.
const (
	AuthAnonymous        = "Anonymous"
	AuthUsernamePassword = "UsernamePassword"
	AuthCertificate      = "Certificate"
)

// EndpointAuthentication says how Edgeport proves who it is to the device.
// Credentials are secret references: on a single machine the secret
// "name/key" is the file <data-dir>/secrets/name/key (a Kubernetes secret
// mounted as files has the same layout); "name" alone is the file
// <data-dir>/secrets/name.
type EndpointAuthentication struct {
	Method                      string                       `json:"method"`
	UsernamePasswordCredentials *UsernamePasswordCredentials `json:"usernamePasswordCredentials,omitempty"`
	X509Credentials             *X509Credentials             `json:"x509Credentials,omitempty"`
}

// UsernamePasswordCredentials reference a username and a password.
type UsernamePasswordCredentials struct {
	UsernameSecretName string `json:"usernameSecretName"`
	PasswordSecretName string `json:"passwordSecretName"`
}

// X509Credentials reference a client certificate (PEM) and its key.
type X509Credentials struct {
	CertificateSecretName              string `json:"certificateSecretName"`
	KeySecretName                      string `json:"keySecretName,omitempty"`
	IntermediateCertificatesSecretName string `json:"intermediateCertificatesSecretName,omitempty"`
}

// TrustSettings name the trust list the device's certificate is checked
// against (a secret or ConfigMap of CA certificates; OPC UA keeps its own
// trust store as well).
type TrustSettings struct {
	TrustList string `json:"trustList,omitempty"`
}

func deviceKind() KindDef {
	d := Define("Device", "devices", []string{"dev"}, defaultDevice, validateDevice)
	d.SpecRequired = true
	d.Columns = []Column{
		{"ENDPOINTS", func(o *Object) string {
			s := o.Spec.(*DeviceSpec)
			var out []string
			for _, name := range sortedKeys(s.Endpoints.Inbound) {
				out = append(out, name+"/"+strings.TrimPrefix(s.Endpoints.Inbound[name].EndpointType, "Microsoft."))
			}
			return strings.Join(out, ",")
		}},
		{"CONNECTED", func(o *Object) string {
			s := o.Spec.(*DeviceSpec)
			if !s.IsEnabled() {
				return "disabled"
			}
			n := 0
			if o.Status != nil {
				for _, e := range o.Status.Endpoints {
					if e.Connected {
						n++
					}
				}
			}
			return strconv.Itoa(n) + "/" + strconv.Itoa(len(s.Endpoints.Inbound))
		}},
		{"LAST-ERROR", func(o *Object) string {
			if o.Status == nil {
				return ""
			}
			for _, name := range sortedKeys(o.Status.Endpoints) {
				if e := o.Status.Endpoints[name]; e.LastError != "" && !e.Connected {
					return name + ": " + truncate(e.LastError, 60)
				}
			}
			return ""
		}},
	}
	return d
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func defaultDevice(s *DeviceSpec) {
	for name, ep := range s.Endpoints.Inbound {
		if ep.Authentication == nil {
			ep.Authentication = &EndpointAuthentication{Method: AuthAnonymous}
		}
		if t := endpointTypes()[ep.EndpointType]; t != nil && t.defaultEndpoint != nil {
			t.defaultEndpoint(&ep)
		}
		s.Endpoints.Inbound[name] = ep
	}
}

// endpointNameRE: endpoint names appear in topics, metrics and paths.
var endpointNameRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)

func validateDevice(s *DeviceSpec, errs *Errors) {
	if len(s.Endpoints.Inbound) == 0 {
		errs.Add("spec.endpoints.inbound", "at least one endpoint is required")
	}
	types := endpointTypes()
	for _, name := range sortedKeys(s.Endpoints.Inbound) {
		ep := s.Endpoints.Inbound[name]
		path := key("spec.endpoints.inbound", name)
		if len(name) > 63 || !endpointNameRE.MatchString(name) {
			errs.Add(path, "endpoint name must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")
		}
		t := types[ep.EndpointType]
		switch {
		case ep.EndpointType == "":
			errs.Add(field(path, "endpointType"), "required (one of %s)", joinOr(endpointTypeNames()))
		case t == nil:
			errs.Add(field(path, "endpointType"), "must be one of %s (got %q)", joinOr(endpointTypeNames()), ep.EndpointType)
		}
		if ep.Address == "" {
			errs.Add(field(path, "address"), "required")
		}
		validateAuthentication(ep.Authentication, field(path, "authentication"), errs)
		if ep.TrustSettings != nil && ep.TrustSettings.TrustList != "" {
			validateName(ep.TrustSettings.TrustList, field(path, "trustSettings.trustList"), errs)
		}
		if t != nil && t.validateEndpoint != nil {
			t.validateEndpoint(&ep, path, errs)
		}
	}
}

func validateAuthentication(a *EndpointAuthentication, path string, errs *Errors) {
	if a == nil {
		return
	}
	up, x := a.UsernamePasswordCredentials, a.X509Credentials
	switch a.Method {
	case AuthAnonymous:
		if up != nil || x != nil {
			errs.Add(path, "method Anonymous takes no credentials")
		}
	case AuthUsernamePassword:
		if up == nil {
			errs.Add(field(path, "usernamePasswordCredentials"), "required with method UsernamePassword")
		} else {
			validateSecretRef(up.UsernameSecretName, field(path, "usernamePasswordCredentials.usernameSecretName"), true, errs)
			validateSecretRef(up.PasswordSecretName, field(path, "usernamePasswordCredentials.passwordSecretName"), true, errs)
		}
		if x != nil {
			errs.Add(field(path, "x509Credentials"), "only allowed with method Certificate")
		}
	case AuthCertificate:
		if x == nil {
			errs.Add(field(path, "x509Credentials"), "required with method Certificate")
		} else {
			validateSecretRef(x.CertificateSecretName, field(path, "x509Credentials.certificateSecretName"), true, errs)
			validateSecretRef(x.KeySecretName, field(path, "x509Credentials.keySecretName"), false, errs)
			validateSecretRef(x.IntermediateCertificatesSecretName, field(path, "x509Credentials.intermediateCertificatesSecretName"), false, errs)
		}
		if up != nil {
			errs.Add(field(path, "usernamePasswordCredentials"), "only allowed with method UsernamePassword")
		}
	case "":
		errs.Add(field(path, "method"), "required (Anonymous, UsernamePassword or Certificate)")
	default:
		errs.Add(field(path, "method"), "must be one of Anonymous, UsernamePassword or Certificate (got %q)", a.Method)
	}
}

var secretKeyRE = regexp.MustCompile(`^[-._A-Za-z0-9]+$`)

// validateSecretRef checks "name" or "name/key".
func validateSecretRef(ref, path string, required bool, errs *Errors) {
	if ref == "" {
		if required {
			errs.Add(path, "required")
		}
		return
	}
	name, k, hasKey := strings.Cut(ref, "/")
	if len(name) > 63 || !nameRE.MatchString(name) || (hasKey && (k == "." || k == ".." || !secretKeyRE.MatchString(k))) {
		errs.Add(path, "must be a secret name, optionally followed by /key (got %q)", ref)
	}
}
