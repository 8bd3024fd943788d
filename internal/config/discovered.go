package config

import (
	"strings"
)

// DiscoveredDeviceSpec is the DiscoveredDevice kind: a device a connector
// found (an OPC UA server answering FindServers) that nobody approved yet.
// It follows Azure Device Registry's namespaces/discoveredDevices; `edgeport
// approve NAME` turns it into a Device of the same name.
type DiscoveredDeviceSpec struct {
	// DiscoveryID identifies the device across discoveries (for OPC UA, the
	// server's application URI).
	DiscoveryID  string `json:"discoveryId"`
	Version      int64  `json:"version,omitempty"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Model        string `json:"model,omitempty"`
	Attributes   JSON   `json:"attributes,omitempty"`
	Endpoints    struct {
		Inbound map[string]DiscoveredEndpoint `json:"inbound"`
	} `json:"endpoints"`
}

// DiscoveredEndpoint is one way to reach a discovered device.
type DiscoveredEndpoint struct {
	EndpointType                   string   `json:"endpointType"`
	Address                        string   `json:"address"`
	Version                        string   `json:"version,omitempty"`
	SupportedAuthenticationMethods []string `json:"supportedAuthenticationMethods,omitempty"`
	AdditionalConfiguration        JSON     `json:"additionalConfiguration,omitempty"`
}

func discoveredDeviceKind() KindDef {
	d := Define("DiscoveredDevice", "discovereddevices", []string{"discovered", "ddev"}, nil, validateDiscoveredDevice)
	d.SpecRequired = true
	d.Columns = []Column{
		{"DISCOVERY-ID", func(o *Object) string { return o.Spec.(*DiscoveredDeviceSpec).DiscoveryID }},
		{"ENDPOINTS", func(o *Object) string {
			s := o.Spec.(*DiscoveredDeviceSpec)
			var out []string
			for _, name := range sortedKeys(s.Endpoints.Inbound) {
				out = append(out, s.Endpoints.Inbound[name].Address)
			}
			return strings.Join(out, ",")
		}},
	}
	return d
}

func validateDiscoveredDevice(s *DiscoveredDeviceSpec, errs *Errors) {
	if s.DiscoveryID == "" {
		errs.Add("spec.discoveryId", "required")
	}
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
		if types[ep.EndpointType] == nil {
			errs.Add(field(path, "endpointType"), "%q is not one of %s", ep.EndpointType, strings.Join(endpointTypeNames(), ", "))
		}
		if ep.Address == "" {
			errs.Add(field(path, "address"), "required")
		}
	}
}
