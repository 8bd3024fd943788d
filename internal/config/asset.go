package config

import (
	"strconv"
	"strings"

	"github.com/edgeport/edgeport/internal/mqtt/topic"
)

// AssetSpec is the Asset kind: what to read from a device endpoint and
// where to send it. It follows Azure Device Registry's namespaces/assets
// (API 2025-10-01): datasets of data points, event groups of events, and
// destinations. Protocol-specific settings (datasetConfiguration,
// dataPointConfiguration, ...) are JSON objects whose keys the device
// endpoint's type defines (docs/connectors.md).
type AssetSpec struct {
	DeviceRef       DeviceRef `json:"deviceRef"`
	Enabled         *bool     `json:"enabled,omitempty"`
	DisplayName     string    `json:"displayName,omitempty"`
	Description     string    `json:"description,omitempty"`
	ExternalAssetID string    `json:"externalAssetId,omitempty"`
	Manufacturer    string    `json:"manufacturer,omitempty"`
	Model           string    `json:"model,omitempty"`
	SerialNumber    string    `json:"serialNumber,omitempty"`
	Attributes      JSON      `json:"attributes,omitempty"`

	DefaultDatasetsConfiguration JSON          `json:"defaultDatasetsConfiguration,omitempty"`
	DefaultDatasetsDestinations  []Destination `json:"defaultDatasetsDestinations,omitempty"`
	DefaultEventsConfiguration   JSON          `json:"defaultEventsConfiguration,omitempty"`
	DefaultEventsDestinations    []Destination `json:"defaultEventsDestinations,omitempty"`

	Datasets    []Dataset    `json:"datasets,omitempty"`
	EventGroups []EventGroup `json:"eventGroups,omitempty"`
}

// IsEnabled reports whether the asset is to be read.
func (s *AssetSpec) IsEnabled() bool { return s.Enabled == nil || *s.Enabled }

// DeviceRef names the device endpoint an asset is read through.
type DeviceRef struct {
	DeviceName   string `json:"deviceName"`
	EndpointName string `json:"endpointName"`
}

// Dataset is a group of data points published together: one message per
// publication, each data point a member of it.
type Dataset struct {
	Name                 string        `json:"name"`
	DataSource           string        `json:"dataSource,omitempty"`
	TypeRef              string        `json:"typeRef,omitempty"`
	DatasetConfiguration JSON          `json:"datasetConfiguration,omitempty"`
	Destinations         []Destination `json:"destinations,omitempty"`
	DataPoints           []DataPoint   `json:"dataPoints,omitempty"`
}

// DataPoint is one value read from the device; DataSource addresses it in
// the protocol's terms (an OPC UA node id, a Modbus register).
type DataPoint struct {
	Name                   string `json:"name"`
	DataSource             string `json:"dataSource"`
	TypeRef                string `json:"typeRef,omitempty"`
	DataPointConfiguration JSON   `json:"dataPointConfiguration,omitempty"`
}

// EventGroup groups events of one notifier (DataSource).
type EventGroup struct {
	Name                    string        `json:"name"`
	DataSource              string        `json:"dataSource,omitempty"`
	TypeRef                 string        `json:"typeRef,omitempty"`
	EventGroupConfiguration JSON          `json:"eventGroupConfiguration,omitempty"`
	DefaultDestinations     []Destination `json:"defaultDestinations,omitempty"`
	Events                  []AssetEvent  `json:"events,omitempty"`
}

// AssetEvent is one kind of event the device raises.
type AssetEvent struct {
	Name               string        `json:"name"`
	DataSource         string        `json:"dataSource,omitempty"`
	TypeRef            string        `json:"typeRef,omitempty"`
	EventConfiguration JSON          `json:"eventConfiguration,omitempty"`
	Destinations       []Destination `json:"destinations,omitempty"`
	DataPoints         []DataPoint   `json:"dataPoints,omitempty"`
}

// Destination targets.
const (
	TargetMqtt             = "Mqtt"
	TargetBrokerStateStore = "BrokerStateStore"
	TargetStorage          = "Storage"
)

// QoS and retain values of an MQTT destination.
const (
	Qos0        = "Qos0"
	Qos1        = "Qos1"
	RetainKeep  = "Keep"
	RetainNever = "Never"
)

// Destination says where a dataset's or event's messages go: an MQTT
// topic of the broker, or a key of the state store (the latest value).
type Destination struct {
	Target        string                   `json:"target"`
	Configuration DestinationConfiguration `json:"configuration"`
}

// DestinationConfiguration holds the fields of every target; which apply
// depends on Target.
type DestinationConfiguration struct {
	Topic  string `json:"topic,omitempty"`
	Qos    string `json:"qos,omitempty"`
	Retain string `json:"retain,omitempty"`
	// TTL is the MQTT Message Expiry Interval in seconds (0: none).
	TTL  int64  `json:"ttl,omitempty"`
	Key  string `json:"key,omitempty"`
	Path string `json:"path,omitempty"`
}

// DatasetDestinations returns where dataset i goes: its own destinations,
// or the asset's defaults.
func (s *AssetSpec) DatasetDestinations(i int) []Destination {
	if d := s.Datasets[i].Destinations; len(d) > 0 {
		return d
	}
	return s.DefaultDatasetsDestinations
}

// EventDestinations returns where event j of group g goes.
func (s *AssetSpec) EventDestinations(g, j int) []Destination {
	grp := &s.EventGroups[g]
	switch {
	case len(grp.Events[j].Destinations) > 0:
		return grp.Events[j].Destinations
	case len(grp.DefaultDestinations) > 0:
		return grp.DefaultDestinations
	}
	return s.DefaultEventsDestinations
}

// DatasetConfiguration returns dataset i's configuration, or the asset's
// default.
func (s *AssetSpec) DatasetConfiguration(i int) JSON {
	if c := s.Datasets[i].DatasetConfiguration; len(c) > 0 {
		return c
	}
	return s.DefaultDatasetsConfiguration
}

func assetKind() KindDef {
	d := Define("Asset", "assets", nil, defaultAsset, validateAsset)
	d.SpecRequired = true
	d.ValidateRefs = validateAssetRefs
	d.Columns = []Column{
		{"DEVICE", func(o *Object) string {
			r := o.Spec.(*AssetSpec).DeviceRef
			return r.DeviceName + "/" + r.EndpointName
		}},
		{"DATASETS", func(o *Object) string { return strconv.Itoa(len(o.Spec.(*AssetSpec).Datasets)) }},
		{"POINTS", func(o *Object) string {
			n, ok := 0, 0
			for _, ds := range o.Spec.(*AssetSpec).Datasets {
				n += len(ds.DataPoints)
			}
			if o.Status != nil {
				for _, ds := range o.Status.Datasets {
					for _, p := range ds.DataPoints {
						if p.Error == "" && p.LastValueTime != nil {
							ok++
						}
					}
				}
			}
			return strconv.Itoa(ok) + "/" + strconv.Itoa(n)
		}},
		{"SAMPLES", func(o *Object) string {
			var n uint64
			if o.Status != nil {
				for _, ds := range o.Status.Datasets {
					n += ds.Samples
				}
			}
			return strconv.FormatUint(n, 10)
		}},
		{"LAST-VALUE", func(o *Object) string {
			if o.Status == nil {
				return ""
			}
			var last string
			for _, ds := range o.Status.Datasets {
				if ds.LastValueTime != nil {
					if s := ds.LastValueTime.UTC().Format("15:04:05Z"); s > last {
						last = s
					}
				}
			}
			return last
		}},
		{"LAST-ERROR", func(o *Object) string {
			if o.Status == nil {
				return ""
			}
			for _, ds := range o.Status.Datasets {
				if ds.Error != "" {
					return ds.Name + ": " + truncate(ds.Error, 60)
				}
				for _, p := range ds.DataPoints {
					if p.Error != "" {
						return ds.Name + "." + p.Name + ": " + truncate(p.Error, 60)
					}
				}
			}
			return ""
		}},
	}
	return d
}

func defaultDestinations(ds []Destination) {
	for i := range ds {
		c := &ds[i].Configuration
		if ds[i].Target == TargetMqtt {
			if c.Qos == "" {
				c.Qos = Qos1
			}
			if c.Retain == "" {
				c.Retain = RetainNever
			}
		}
	}
}

func defaultAsset(s *AssetSpec) {
	defaultDestinations(s.DefaultDatasetsDestinations)
	defaultDestinations(s.DefaultEventsDestinations)
	for i := range s.Datasets {
		defaultDestinations(s.Datasets[i].Destinations)
	}
	for i := range s.EventGroups {
		g := &s.EventGroups[i]
		defaultDestinations(g.DefaultDestinations)
		for j := range g.Events {
			defaultDestinations(g.Events[j].Destinations)
		}
	}
}

func validateAsset(s *AssetSpec, errs *Errors) {
	if s.DeviceRef.DeviceName == "" {
		errs.Add("spec.deviceRef.deviceName", "required")
	} else {
		validateName(s.DeviceRef.DeviceName, "spec.deviceRef.deviceName", errs)
	}
	if s.DeviceRef.EndpointName == "" {
		errs.Add("spec.deviceRef.endpointName", "required")
	}
	validateDestinations(s.DefaultDatasetsDestinations, "spec.defaultDatasetsDestinations", errs)
	validateDestinations(s.DefaultEventsDestinations, "spec.defaultEventsDestinations", errs)
	if len(s.Datasets) == 0 && len(s.EventGroups) == 0 {
		errs.Add("spec.datasets", "an asset needs at least one dataset or event group")
	}
	seen := map[string]int{}
	for i := range s.Datasets {
		ds := &s.Datasets[i]
		path := index("spec.datasets", i)
		uniqueName(ds.Name, field(path, "name"), "spec.datasets", seen, i, errs)
		validateDestinations(ds.Destinations, field(path, "destinations"), errs)
		if len(ds.Destinations) == 0 && len(s.DefaultDatasetsDestinations) == 0 {
			errs.Add(field(path, "destinations"), "required (or spec.defaultDatasetsDestinations)")
		}
		if len(ds.DataPoints) == 0 {
			errs.Add(field(path, "dataPoints"), "at least one data point is required")
		}
		validateDataPoints(ds.DataPoints, field(path, "dataPoints"), errs)
	}
	groups := map[string]int{}
	for i := range s.EventGroups {
		g := &s.EventGroups[i]
		path := index("spec.eventGroups", i)
		uniqueName(g.Name, field(path, "name"), "spec.eventGroups", groups, i, errs)
		validateDestinations(g.DefaultDestinations, field(path, "defaultDestinations"), errs)
		if len(g.Events) == 0 {
			errs.Add(field(path, "events"), "at least one event is required")
		}
		events := map[string]int{}
		for j := range g.Events {
			e := &g.Events[j]
			epath := index(field(path, "events"), j)
			uniqueName(e.Name, field(epath, "name"), field(path, "events"), events, j, errs)
			validateDestinations(e.Destinations, field(epath, "destinations"), errs)
			if len(e.Destinations) == 0 && len(g.DefaultDestinations) == 0 && len(s.DefaultEventsDestinations) == 0 {
				errs.Add(field(epath, "destinations"), "required (or the group's defaultDestinations, or spec.defaultEventsDestinations)")
			}
			validateDataPoints(e.DataPoints, field(epath, "dataPoints"), errs)
		}
	}
}

func validateDataPoints(dps []DataPoint, path string, errs *Errors) {
	seen := map[string]int{}
	for j := range dps {
		p := &dps[j]
		ppath := index(path, j)
		uniqueName(p.Name, field(ppath, "name"), path, seen, j, errs)
		if p.DataSource == "" {
			errs.Add(field(ppath, "dataSource"), "required")
		}
	}
}

// uniqueName checks a list member's name: present, usable as a JSON key and
// in topics, and unique in its list.
func uniqueName(name, path, list string, seen map[string]int, i int, errs *Errors) {
	switch {
	case name == "":
		errs.Add(path, "required")
	case len(name) > 256 || strings.ContainsAny(name, "\x00/+#"):
		errs.Add(path, "must be at most 256 characters without '/', '+', '#' or NUL (got %q)", name)
	default:
		if j, dup := seen[name]; dup {
			errs.Add(path, "duplicate of %s[%d].name", list, j)
		} else {
			seen[name] = i
		}
	}
}

func validateDestinations(ds []Destination, path string, errs *Errors) {
	if len(ds) > 1 {
		errs.Add(path, "at most one destination (as in Azure Device Registry)")
	}
	for i := range ds {
		d := &ds[i]
		p := index(path, i)
		c := &d.Configuration
		cp := field(p, "configuration")
		switch d.Target {
		case TargetMqtt:
			if c.Topic == "" {
				errs.Add(field(cp, "topic"), "required with target Mqtt")
			} else if err := topic.ValidName(c.Topic); err != nil {
				errs.Add(field(cp, "topic"), "%v", err)
			}
			oneOf(errs, field(cp, "qos"), c.Qos, Qos0, Qos1)
			oneOf(errs, field(cp, "retain"), c.Retain, RetainKeep, RetainNever)
			if c.TTL < 0 || c.TTL > 1<<32-1 {
				errs.Add(field(cp, "ttl"), "must be between 0 and 4294967295 seconds")
			}
			if c.Key != "" || c.Path != "" {
				errs.Add(cp, "key and path are not used with target Mqtt")
			}
		case TargetBrokerStateStore:
			if c.Key == "" {
				errs.Add(field(cp, "key"), "required with target BrokerStateStore")
			}
			if c.Topic != "" || c.Qos != "" || c.Retain != "" || c.TTL != 0 || c.Path != "" {
				errs.Add(cp, "only key is used with target BrokerStateStore")
			}
		case TargetStorage:
			errs.Add(field(p, "target"), "Storage is not supported by Edgeport (use Mqtt, or BrokerStateStore)")
		case "":
			errs.Add(field(p, "target"), "required (Mqtt or BrokerStateStore)")
		default:
			errs.Add(field(p, "target"), "must be one of Mqtt or BrokerStateStore (got %q)", d.Target)
		}
	}
}

// validateAssetRefs checks an asset against the device endpoint it names,
// when that device is known: the endpoint must exist, and the endpoint
// type checks the protocol-specific configuration.
func validateAssetRefs(obj *Object, lookup func(Key) (*Object, bool), errs *Errors) {
	s := obj.Spec.(*AssetSpec)
	dev, ok := lookup(Key{Kind: "Device", Name: s.DeviceRef.DeviceName})
	if !ok {
		return // the connector reports it in the asset's status
	}
	ep, ok := dev.Spec.(*DeviceSpec).Endpoints.Inbound[s.DeviceRef.EndpointName]
	if !ok {
		errs.Add("spec.deviceRef.endpointName", "device %q has no inbound endpoint %q (it has %s)",
			s.DeviceRef.DeviceName, s.DeviceRef.EndpointName, strings.Join(sortedKeys(dev.Spec.(*DeviceSpec).Endpoints.Inbound), ", "))
		return
	}
	if t := endpointTypes()[ep.EndpointType]; t != nil && t.validateAsset != nil {
		t.validateAsset(s, errs)
	}
}

// ValidateAssetFor checks an asset's protocol-specific configuration for
// an endpoint type; connectors call it before running an asset whose
// device was applied after it.
func ValidateAssetFor(endpointType string, s *AssetSpec) Errors {
	var errs Errors
	if t := endpointTypes()[endpointType]; t != nil && t.validateAsset != nil {
		t.validateAsset(s, &errs)
	}
	return errs
}
