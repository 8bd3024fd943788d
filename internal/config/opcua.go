package config

import "strings"

// OpcUaDatasetConfiguration is a dataset's datasetConfiguration on an
// OPC UA endpoint (milliseconds, as Azure IoT Operations' connector).
type OpcUaDatasetConfiguration struct {
	SamplingInterval   *int `json:"samplingInterval,omitempty"`
	PublishingInterval *int `json:"publishingInterval,omitempty"`
	QueueSize          *int `json:"queueSize,omitempty"`
	// KeyFrameCount: every Nth message carries every data point (0: only
	// changes).
	KeyFrameCount *int `json:"keyFrameCount,omitempty"`
	// HeartbeatInterval re-publishes a data point's last value when it has
	// not changed for this many milliseconds (0: off).
	HeartbeatInterval *int `json:"heartbeatInterval,omitempty"`
}

// OpcUaDataPointConfiguration is a data point's dataPointConfiguration on
// an OPC UA endpoint.
type OpcUaDataPointConfiguration struct {
	SamplingInterval *int      `json:"samplingInterval,omitempty"`
	QueueSize        *int      `json:"queueSize,omitempty"`
	Deadband         *Deadband `json:"deadband,omitempty"`
	// HeartbeatInterval overrides the dataset's.
	HeartbeatInterval *int `json:"heartbeatInterval,omitempty"`
}

// OpcUaEventConfiguration is an event's eventConfiguration (or an event
// group's eventGroupConfiguration, or the asset's
// defaultEventsConfiguration) on an OPC UA endpoint.
type OpcUaEventConfiguration struct {
	PublishingInterval *int `json:"publishingInterval,omitempty"`
	QueueSize          *int `json:"queueSize,omitempty"`
	// TypeDefinition keeps only events of this type or its subtypes (a node
	// id such as i=2041, BaseEventType).
	TypeDefinition string `json:"typeDefinition,omitempty"`
	// MinSeverity keeps only events of at least this severity (1-1000).
	MinSeverity *int `json:"minSeverity,omitempty"`
}

// OpcUaEndpointConfiguration is a Microsoft.OpcUa device endpoint's
// additionalConfiguration.
type OpcUaEndpointConfiguration struct {
	// SecurityPolicy is None, Basic256Sha256, Aes128_Sha256_RsaOaep or
	// Aes256_Sha256_RsaPss, by name or URI
	// (http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256).
	SecurityPolicy string `json:"securityPolicy,omitempty"`
	// SecurityMode is None, Sign or SignAndEncrypt (any case).
	SecurityMode string        `json:"securityMode,omitempty"`
	Session      *OpcUaSession `json:"session,omitempty"`
}

// OpcUaSession tunes the session (milliseconds).
type OpcUaSession struct {
	TimeoutMilliseconds                     *int `json:"timeoutMilliseconds,omitempty"`
	KeepAliveIntervalMilliseconds           *int `json:"keepAliveIntervalMilliseconds,omitempty"`
	ReconnectPeriodMilliseconds             *int `json:"reconnectPeriodMilliseconds,omitempty"`
	ReconnectExponentialBackOffMilliseconds *int `json:"reconnectExponentialBackOffMilliseconds,omitempty"`
	// WatchdogKeepAlives: the session is rebuilt when a subscription got
	// no publish response for this many keep-alive intervals (default 3).
	WatchdogKeepAlives *int `json:"watchdogKeepAlives,omitempty"`
}

var (
	opcuaPolicies = []string{"None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"}
	opcuaModes    = []string{"None", "Sign", "SignAndEncrypt"}
)

func canonical(v string, allowed []string) (string, bool) {
	if i := strings.LastIndexByte(v, '#'); i >= 0 {
		v = v[i+1:]
	}
	for _, a := range allowed {
		if strings.EqualFold(a, v) {
			return a, true
		}
	}
	return v, false
}

func validateOpcUaEndpoint(ep *InboundEndpoint, path string, errs *Errors) {
	if ep.Address != "" && !strings.HasPrefix(ep.Address, "opc.tcp://") {
		errs.Add(field(path, "address"), "must be an opc.tcp:// URL (got %q)", ep.Address)
	}
	p := field(path, "additionalConfiguration")
	var c OpcUaEndpointConfiguration
	checkConfig(ep.AdditionalConfiguration, &c, p, errs, func(errs *Errors) {
		policy, mode := "None", ""
		if c.SecurityPolicy != "" {
			var ok bool
			if policy, ok = canonical(c.SecurityPolicy, opcuaPolicies); !ok {
				errs.Add(field(p, "securityPolicy"), "%q is not one of %s", c.SecurityPolicy, strings.Join(opcuaPolicies, ", "))
			}
		}
		if c.SecurityMode != "" {
			var ok bool
			if mode, ok = canonical(c.SecurityMode, opcuaModes); !ok {
				errs.Add(field(p, "securityMode"), "%q is not one of %s", c.SecurityMode, strings.Join(opcuaModes, ", "))
			}
		}
		if mode != "" && (policy == "None") != (mode == "None") {
			errs.Add(field(p, "securityMode"), "%s does not go with securityPolicy %s", mode, policy)
		}
		if s := c.Session; s != nil {
			sp := field(p, "session")
			positive(s.TimeoutMilliseconds, 1000, 86_400_000, field(sp, "timeoutMilliseconds"), errs)
			positive(s.KeepAliveIntervalMilliseconds, 1000, 3_600_000, field(sp, "keepAliveIntervalMilliseconds"), errs)
			positive(s.ReconnectPeriodMilliseconds, 10, 3_600_000, field(sp, "reconnectPeriodMilliseconds"), errs)
			positive(s.ReconnectExponentialBackOffMilliseconds, 10, 3_600_000, field(sp, "reconnectExponentialBackOffMilliseconds"), errs)
			positive(s.WatchdogKeepAlives, 1, 100, field(sp, "watchdogKeepAlives"), errs)
		}
	})
}

func opcuaEndpointType() *endpointType {
	return &endpointType{
		validateEndpoint: validateOpcUaEndpoint,
		validateAsset:    validateOpcUaAsset,
	}
}

func validateOpcUaAsset(s *AssetSpec, errs *Errors) {
	checkDS := func(j JSON, path string) {
		var c OpcUaDatasetConfiguration
		checkConfig(j, &c, path, errs, func(errs *Errors) {
			positive(c.SamplingInterval, -1, 86_400_000, field(path, "samplingInterval"), errs)
			positive(c.PublishingInterval, 0, 86_400_000, field(path, "publishingInterval"), errs)
			positive(c.QueueSize, 0, 1<<20, field(path, "queueSize"), errs)
			positive(c.KeyFrameCount, 0, 1<<20, field(path, "keyFrameCount"), errs)
			positive(c.HeartbeatInterval, 0, 86_400_000, field(path, "heartbeatInterval"), errs)
		})
	}
	checkDS(s.DefaultDatasetsConfiguration, "spec.defaultDatasetsConfiguration")
	for i := range s.Datasets {
		ds := &s.Datasets[i]
		path := index("spec.datasets", i)
		checkDS(ds.DatasetConfiguration, field(path, "datasetConfiguration"))
		for j := range ds.DataPoints {
			p := field(index(field(path, "dataPoints"), j), "dataPointConfiguration")
			var c OpcUaDataPointConfiguration
			checkConfig(ds.DataPoints[j].DataPointConfiguration, &c, p, errs, func(errs *Errors) {
				positive(c.SamplingInterval, -1, 86_400_000, field(p, "samplingInterval"), errs)
				positive(c.QueueSize, 0, 1<<20, field(p, "queueSize"), errs)
				validateDeadband(c.Deadband, field(p, "deadband"), errs)
				positive(c.HeartbeatInterval, 0, 86_400_000, field(p, "heartbeatInterval"), errs)
			})
		}
	}
	checkEvent := func(j JSON, path string) {
		var c OpcUaEventConfiguration
		checkConfig(j, &c, path, errs, func(errs *Errors) {
			positive(c.PublishingInterval, 0, 86_400_000, field(path, "publishingInterval"), errs)
			positive(c.QueueSize, 0, 1<<20, field(path, "queueSize"), errs)
			positive(c.MinSeverity, 0, 1000, field(path, "minSeverity"), errs)
		})
	}
	checkEvent(s.DefaultEventsConfiguration, "spec.defaultEventsConfiguration")
	for g := range s.EventGroups {
		gp := index("spec.eventGroups", g)
		checkEvent(s.EventGroups[g].EventGroupConfiguration, field(gp, "eventGroupConfiguration"))
		for e := range s.EventGroups[g].Events {
			checkEvent(s.EventGroups[g].Events[e].EventConfiguration, field(index(field(gp, "events"), e), "eventConfiguration"))
		}
	}
}
