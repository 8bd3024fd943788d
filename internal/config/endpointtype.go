package config

import "slices"

// endpointType is what the registry knows of one endpointType: how its
// endpoints and the assets read through them are defaulted and validated.
// Each protocol keeps its own in a file of its own (modbus.go, opcua.go).
type endpointType struct {
	defaultEndpoint  func(ep *InboundEndpoint)
	validateEndpoint func(ep *InboundEndpoint, path string, errs *Errors)
	// validateAsset checks the protocol-specific parts of an asset read
	// through an endpoint of this type.
	validateAsset func(s *AssetSpec, errs *Errors)
}

// endpointTypes returns the endpoint types the registry accepts. It builds
// the table on each call: it is small, and no package state is shared.
func endpointTypes() map[string]*endpointType {
	return map[string]*endpointType{
		EndpointTypeOpcUa:  opcuaEndpointType(),
		EndpointTypeModbus: modbusEndpointType(),
	}
}

func endpointTypeNames() []string {
	names := sortedKeys(endpointTypes())
	slices.Sort(names)
	return names
}

// Deadband types.
const (
	DeadbandAbsolute = "Absolute"
	DeadbandPercent  = "Percent"
)

// Deadband suppresses changes smaller than Value: an absolute amount, or a
// percentage (of the value last published for Modbus, of the EU range for
// OPC UA).
type Deadband struct {
	Type  string  `json:"type"`
	Value float64 `json:"value"`
}

func validateDeadband(d *Deadband, path string, errs *Errors) {
	if d == nil {
		return
	}
	if d.Type == "" {
		errs.Add(field(path, "type"), "required (Absolute or Percent)")
	} else {
		oneOf(errs, field(path, "type"), d.Type, DeadbandAbsolute, DeadbandPercent)
	}
	switch {
	case d.Value < 0:
		errs.Add(field(path, "value"), "must not be negative")
	case d.Type == DeadbandPercent && d.Value > 100:
		errs.Add(field(path, "value"), "must be at most 100 (percent)")
	}
}

// positive checks an optional integer setting.
func positive(v *int, min, max int, path string, errs *Errors) {
	if v != nil && (*v < min || *v > max) {
		errs.Add(path, "must be between %d and %d (got %d)", min, max, *v)
	}
}
