package crd

import (
	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/config"
)

// Hint is what a kind's Validate function enforces on one field and the
// Go type cannot say: the API server checks it too, so `kubectl apply`
// refuses such a mistake before Edgeport sees it, at the same field path.
// Only rules that hold whatever the other fields say are hints (an enum
// that applies with one endpointType only is left to Validate, which
// reports it in the resource's status).
type Hint struct {
	Required bool     // the field must be present (Validate says "required" and no default fills it)
	Enum     []string // allowed values once defaults are applied
	Min, Max *int64   // integer range
	MinItems *int64   // lists: at least this many items
	MinProps *int64   // maps: at least this many entries
	MaxLen   *int64
	Pattern  string
}

func (h Hint) apply(s *Schema) {
	if len(h.Enum) > 0 {
		s.Enum = h.Enum
	}
	if h.Min != nil {
		s.Minimum = h.Min
	}
	if h.Max != nil {
		s.Maximum = h.Max
	}
	if h.MinItems != nil {
		s.MinItems = h.MinItems
	}
	if h.MinProps != nil {
		s.MinProperties = h.MinProps
	}
	if h.MaxLen != nil {
		s.MaxLength = h.MaxLen
	}
	if h.Pattern != "" {
		s.Pattern = h.Pattern
	}
}

func enum(v ...string) Hint { return Hint{Enum: v} }

func between(lo, hi int64) Hint { return Hint{Min: &lo, Max: &hi} }

var (
	required = Hint{Required: true}
	nonEmpty = Hint{MinItems: ptr(int64(1))}
	// requiredList is a required list with at least one item.
	requiredList = Hint{Required: true, MinItems: ptr(int64(1))}
	// dnsLabel is the rule of resource names and of the references to them.
	dnsLabel = Hint{MaxLen: ptr(int64(63)), Pattern: `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`}
)

// bound mirrors a broker limit: 0 lifts the limits that can be lifted.
func bound(b broker.Bound) Hint {
	lo := b.Min
	if b.Liftable() {
		lo = 0
	}
	return between(lo, b.Max)
}

// hints are keyed by kind, then by field path: "." between fields, "[]"
// for the items of a list, "{}" for the values of a map. TestHintsNameFields
// fails when a path names no field (a field renamed or removed).
var hints = map[string]map[string]Hint{
	"Broker": {
		"spec.advanced.clients.maxSessionExpirySeconds":       bound(broker.BoundMaxSessionExpiry),
		"spec.advanced.clients.maxMessageExpirySeconds":       bound(broker.BoundMaxMessageExpiry),
		"spec.advanced.clients.maxPacketSizeBytes":            bound(broker.BoundMaxPacketSize),
		"spec.advanced.clients.maxReceiveMaximum":             bound(broker.BoundReceiveMaximum),
		"spec.advanced.clients.maxKeepAliveSeconds":           bound(broker.BoundMaxKeepAlive),
		"spec.advanced.clients.subscriberQueueLimit.length":   bound(broker.BoundMaxQueuedMessages),
		"spec.advanced.clients.subscriberQueueLimit.maxBytes": bound(broker.BoundMaxQueuedBytes),
		"spec.advanced.clients.subscriberQueueLimit.strategy": enum(config.QueueStrategyNone, config.QueueStrategyDropOldest),
		"spec.advanced.clients.maxInflight":                   bound(broker.BoundMaxInflight),
		"spec.advanced.clients.maxOutboundBytes":              bound(broker.BoundMaxOutboundBytes),
		"spec.advanced.clients.topicAliasMaximum":             bound(broker.BoundTopicAliasMaximum),
		"spec.advanced.clients.maxSubscriptionsPerClient":     bound(broker.BoundMaxSubscriptions),
		"spec.advanced.clients.connectTimeoutSeconds":         bound(broker.BoundConnectTimeout),
		"spec.advanced.topics.maxLength":                      bound(broker.BoundMaxTopicLength),
		"spec.advanced.topics.maxLevels":                      bound(broker.BoundMaxTopicLevels),
		"spec.advanced.connections.maxConnections":            between(0, 1<<30),
		"spec.advanced.connections.maxConnectionsPerAddress":  between(0, 1<<30),
		"spec.advanced.connections.connectRatePerSecond":      between(0, 1<<30),
		"spec.advanced.connections.connectBurst":              between(0, 1<<30),
		"spec.cluster.replicas":                               between(1, 5),
		"spec.cluster.shards":                                 between(1, 1024),
		"spec.persistence.syncPolicy":                         enum(config.SyncAlways, config.SyncBatch, config.SyncNone),
		"spec.diagnostics.sysIntervalSeconds":                 bound(broker.BoundSysInterval),
		"spec.stateStore.maxKeys":                             between(0, 1<<40),
		"spec.stateStore.maxBytes":                            between(0, 1<<50),
	},
	"BrokerListener": {
		"spec.brokerRef":                            enum("default"),
		"spec.ports":                                requiredList,
		"spec.ports[].port":                         {Required: true, Min: ptr(int64(0)), Max: ptr(int64(65535))},
		"spec.ports[].protocol":                     enum(config.ProtocolMqtt, config.ProtocolWebSockets),
		"spec.ports[].authenticationRef":            dnsLabel,
		"spec.ports[].authorizationRef":             dnsLabel,
		"spec.ports[].maxConnections":               {Min: ptr(int64(0))},
		"spec.ports[].tls.mode":                     {Required: true, Enum: []string{config.TLSAutomatic, config.TLSManual}},
		"spec.ports[].tls.clientAuth.mode":          {Required: true, Enum: []string{config.ClientAuthNone, config.ClientAuthOptional, config.ClientAuthRequired}},
		"spec.ports[].tls.clientAuth.trustedCaCert": dnsLabel,
		"spec.ports[].tls.certManagerCertificateSpec.privateKey.algorithm": enum(
			"Ec256", "Ec384", "Ec521", "Ed25519", "Rsa2048", "Rsa4096", "Rsa8192"),
		"spec.ports[].tls.certManagerCertificateSpec.privateKey.rotationPolicy": enum("Always", "Never"),
	},
	"BrokerAuthentication": {
		"spec.authenticationMethods": requiredList,
		"spec.authenticationMethods[].method": {Required: true, Enum: []string{config.AuthnCustom,
			config.AuthnServiceAccountToken, config.AuthnX509, config.AuthnUsernamePassword}},
		"spec.authenticationMethods[].serviceAccountTokenSettings.audiences":     nonEmpty,
		"spec.authenticationMethods[].usernamePasswordSettings.users[].username": required,
	},
	"BrokerAuthorization": {
		"spec.authorizationPolicies":                                       required,
		"spec.authorizationPolicies.cache":                                 enum("Enabled", "Disabled"),
		"spec.authorizationPolicies.rules":                                 requiredList,
		"spec.authorizationPolicies.rules[].brokerResources[].method":      {Required: true, Enum: []string{config.MethodConnect, config.MethodPublish, config.MethodSubscribe}},
		"spec.authorizationPolicies.rules[].stateStoreResources[].keyType": {Required: true, Enum: []string{config.KeyTypePattern, config.KeyTypeString, config.KeyTypeBinary}},
		"spec.authorizationPolicies.rules[].stateStoreResources[].method":  {Required: true, Enum: []string{"Read", "Write", "ReadWrite"}},
		"spec.authorizationPolicies.rules[].stateStoreResources[].keys":    requiredList,
	},
	"Device": {
		"spec.endpoints":                        required,
		"spec.endpoints.inbound":                {Required: true, MinProps: ptr(int64(1))},
		"spec.endpoints.inbound{}.endpointType": {Required: true, Enum: []string{config.EndpointTypeOpcUa, config.EndpointTypeModbus}},
		"spec.endpoints.inbound{}.address":      required,
		"spec.endpoints.inbound{}.authentication.method": {Required: true, Enum: []string{
			config.AuthAnonymous, config.AuthUsernamePassword, config.AuthCertificate}},
	},
	"Asset": {
		"spec.deviceRef":                          required,
		"spec.deviceRef.deviceName":               required,
		"spec.deviceRef.endpointName":             required,
		"spec.datasets[].name":                    required,
		"spec.datasets[].dataPoints":              requiredList,
		"spec.datasets[].dataPoints[].name":       required,
		"spec.datasets[].dataPoints[].dataSource": required,
		"spec.eventGroups[].name":                 required,
		"spec.eventGroups[].events":               requiredList,
		"spec.eventGroups[].events[].name":        required,
	},
	"DiscoveredDevice": {
		"spec.discoveryId":                 required,
		"spec.endpoints":                   required,
		"spec.endpoints.inbound":           {Required: true, MinProps: ptr(int64(1))},
		"spec.endpoints.inbound{}.address": required,
	},
	"Dataflow": {
		"spec.mode":       enum(config.ModeEnabled, config.ModeDisabled),
		"spec.operations": requiredList,
		"spec.operations[].sourceSettings.serializationFormat":                  enum(config.FormatJSON),
		"spec.operations[].builtInTransformationSettings.serializationFormat":   enum(config.FormatJSON, config.FormatParquet, config.FormatDelta),
		"spec.operations[].builtInTransformationSettings.datasets[].inputs":     requiredList,
		"spec.operations[].builtInTransformationSettings.datasets[].expression": required,
		"spec.operations[].builtInTransformationSettings.filter[].type":         enum("Filter"),
		"spec.operations[].builtInTransformationSettings.filter[].inputs":       requiredList,
		"spec.operations[].builtInTransformationSettings.filter[].expression":   required,
		"spec.operations[].builtInTransformationSettings.map[].type": enum(config.MapNewProperties, config.MapRename,
			config.MapCompute, config.MapPassThrough, config.MapBuiltInFunction),
		"spec.operations[].builtInTransformationSettings.map[].inputs": requiredList,
	},
	"DataflowEndpoint": {
		// endpointType is matched ignoring case (canonicalName), so no enum.
		"spec.endpointType":                                       required,
		"spec.mqttSettings.protocol":                              enum(config.ProtocolMqtt, config.ProtocolWebSockets),
		"spec.mqttSettings.keepAliveSeconds":                      between(0, 65535),
		"spec.mqttSettings.maxInflightMessages":                   between(1, 65535),
		"spec.mqttSettings.qos":                                   between(0, 1),
		"spec.mqttSettings.retain":                                enum("Keep", "Never"),
		"spec.mqttSettings.sessionExpirySeconds":                  between(0, 4294967295),
		"spec.kafkaSettings.host":                                 required,
		"spec.kafkaSettings.compression":                          enum("None", "Gzip", "Snappy", "Lz4"),
		"spec.kafkaSettings.copyMqttProperties":                   enum("Enabled", "Disabled"),
		"spec.kafkaSettings.kafkaAcks":                            enum("Zero", "One", "All"),
		"spec.kafkaSettings.partitionStrategy":                    enum("Default", "Static", "Topic", "Property"),
		"spec.kafkaSettings.batching.mode":                        enum("Enabled", "Disabled"),
		"spec.kafkaSettings.batching.latencyMs":                   between(0, 3_600_000),
		"spec.kafkaSettings.batching.maxMessages":                 between(1, 1_000_000),
		"spec.kafkaSettings.batching.maxBytes":                    between(1, 1<<30),
		"spec.httpSettings.batching.mode":                         enum("Enabled", "Disabled"),
		"spec.httpSettings.batching.latencyMs":                    between(0, 3_600_000),
		"spec.httpSettings.batching.maxMessages":                  between(1, 1_000_000),
		"spec.httpSettings.batching.maxBytes":                     between(1, 1<<30),
		"spec.openTelemetrySettings.batching.mode":                enum("Enabled", "Disabled"),
		"spec.openTelemetrySettings.batching.latencyMs":           between(0, 3_600_000),
		"spec.openTelemetrySettings.batching.maxMessages":         between(1, 1_000_000),
		"spec.openTelemetrySettings.batching.maxBytes":            between(1, 1<<30),
		"spec.mqttSettings.tls.mode":                              enum("Enabled", "Disabled"),
		"spec.kafkaSettings.tls.mode":                             enum("Enabled", "Disabled"),
		"spec.httpSettings.tls.mode":                              enum("Enabled", "Disabled"),
		"spec.openTelemetrySettings.tls.mode":                     enum("Enabled", "Disabled"),
		"spec.mqttSettings.authentication.saslSettings.saslType":  enum(config.SaslPlain, config.SaslScramSha256, config.SaslScramSha512),
		"spec.kafkaSettings.authentication.saslSettings.saslType": enum(config.SaslPlain, config.SaslScramSha256, config.SaslScramSha512),
	},
	"DataflowProfile": {
		"spec.diagnostics.logs.level": enum("debug", "info", "warn", "error"),
	},
	"Schema": {
		"spec.compatibility":            enum(config.CompatNone, config.CompatBackward, config.CompatForward, config.CompatFull),
		"spec.versions":                 requiredList,
		"spec.versions[].name":          required,
		"spec.versions[].schemaContent": required,
	},
}

// columns give each `edgeport get` column of a kind (KindDef.Columns, by
// header) the JSONPath kubectl prints it from; "" marks a column computed
// from several fields that a JSONPath cannot express (kubectl shows the
// Ready condition and age instead). TestColumnsCovered fails when a kind
// gains a column without an entry here.
var columns = map[string]map[string]string{
	"Broker": {
		"MAX-PACKET":  ".spec.advanced.clients.maxPacketSizeBytes",
		"RECEIVE-MAX": ".spec.advanced.clients.maxReceiveMaximum",
		"QUEUE":       ".spec.advanced.clients.subscriberQueueLimit.length",
	},
	"BrokerListener": {
		"PORTS":     ".spec.ports[*].port",
		"ADDRESSES": ".status.ports[*].address",
	},
	"BrokerAuthentication": {"METHODS": ".spec.authenticationMethods[*].method"},
	"BrokerAuthorization":  {"RULES": ""},
	"Device": {
		"ENDPOINTS":  "",
		"CONNECTED":  "",
		"LAST-ERROR": "",
	},
	"Asset": {
		"DEVICE":     ".spec.deviceRef.deviceName",
		"DATASETS":   ".spec.datasets[*].name",
		"POINTS":     "",
		"SAMPLES":    "",
		"LAST-VALUE": "",
		"LAST-ERROR": "",
	},
	"DiscoveredDevice": {"DISCOVERY-ID": ".spec.discoveryId", "ENDPOINTS": ""},
	"Dataflow": {
		"MODE":        ".spec.mode",
		"SOURCE":      ".spec.operations[?(@.operationType==\"Source\")].sourceSettings.endpointRef",
		"DESTINATION": ".spec.operations[?(@.operationType==\"Destination\")].destinationSettings.endpointRef",
		"SENT":        ".status.dataflow.sent",
		"BUFFERED":    ".status.dataflow.bufferedMessages",
	},
	"DataflowEndpoint": {"TYPE": ".spec.endpointType", "HOST": ""},
	"DataflowProfile":  {"INSTANCES": ".spec.instanceCount"},
	"Schema": {
		"FORMAT":        ".spec.format",
		"COMPATIBILITY": ".spec.compatibility",
		"VERSIONS":      ".spec.versions[*].name",
		"LATEST-HASH":   "",
		"USED-BY":       "",
	},
}
