package config

import "strings"

// BrokerOTLP pushes Edgeport's own metrics (the names /metrics serves) and
// log records to an OpenTelemetry collector (Edgeport). Endpoint is
// host:port (OTLP/gRPC unless protocol is Http) or an http(s):// URL
// (OTLP/HTTP). It replaces the serve flags' --otlp-endpoint while the
// Broker resource has it.
type BrokerOTLP struct {
	Endpoint        string                  `json:"endpoint"`
	Protocol        string                  `json:"protocol,omitempty"` // Grpc or Http
	IntervalSeconds *int                    `json:"intervalSeconds"`
	Headers         map[string]string       `json:"headers,omitempty"`
	Logs            BrokerOTLPLogs          `json:"logs"`
	Authentication  *DataflowAuthentication `json:"authentication,omitempty"`
	TLS             *EndpointTLS            `json:"tls,omitempty"`
}

// BrokerOTLPLogs selects the log records pushed: Level and above, or none
// with "off".
type BrokerOTLPLogs struct {
	Level string `json:"level,omitempty"` // debug, info, warn, error or off
}

// DefaultOTLPIntervalSeconds is how often metrics are pushed.
const DefaultOTLPIntervalSeconds = 15

func defaultBrokerOTLP(o *BrokerOTLP) {
	if o == nil {
		return
	}
	setDefault(&o.IntervalSeconds, DefaultOTLPIntervalSeconds)
	o.Protocol = canonicalName(o.Protocol, OTelProtocolGrpc, OTelProtocolHttp)
	if o.Logs.Level == "" {
		o.Logs.Level = "info"
	}
	defaultAuth(&o.Authentication)
}

func validateBrokerOTLP(o *BrokerOTLP, errs *Errors) {
	if o == nil {
		return
	}
	const p = "spec.diagnostics.otlp"
	switch {
	case o.Endpoint == "":
		errs.Add(field(p, "endpoint"), "required: host:port of the collector's OTLP receiver (gRPC, e.g. otel:4317) or an http(s):// URL (OTLP/HTTP, e.g. http://otel:4318)")
	case strings.Contains(o.Endpoint, "://"):
		httpURL(errs, field(p, "endpoint"), o.Endpoint)
	default:
		hostPort(errs, field(p, "endpoint"), o.Endpoint)
	}
	if o.Protocol != "" {
		oneOf(errs, field(p, "protocol"), o.Protocol, OTelProtocolGrpc, OTelProtocolHttp)
	}
	between(errs, field(p, "intervalSeconds"), *o.IntervalSeconds, 1, 86400)
	validateHeaders(o.Headers, field(p, "headers"), errs)
	oneOf(errs, field(p, "logs.level"), o.Logs.Level, "debug", "info", "warn", "error", "off")
	validateAuth(o.Authentication, field(p, "authentication"), errs, AuthAnonymous, AuthAccessToken, AuthX509Certificate)
	validateEndpointTLS(o.TLS, field(p, "tls"), errs)
}
