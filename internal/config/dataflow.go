package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/expr"
	"github.com/edgeport/edgeport/internal/mqtt/topic"
)

// DataflowSpec is the Dataflow kind: a source, an optional built-in
// transformation and a destination, after Azure IoT Operations' Dataflow
// (connectivity.iotoperations.azure.com/v1). The retry and deadLetter
// fields are Edgeport's.
type DataflowSpec struct {
	// ProfileRef names the DataflowProfile whose instances run the flow.
	ProfileRef string `json:"profileRef"`
	// Mode is Enabled or Disabled; a disabled flow keeps its buffer.
	Mode       string              `json:"mode"`
	Operations []DataflowOperation `json:"operations"`
	// Retry paces the attempts at a destination that is away (Edgeport).
	Retry DataflowRetry `json:"retry"`
	// DeadLetter, when set, receives messages that fail the transformation
	// or that the destination rejects permanently, with the error in user
	// properties; without it such messages are counted, logged and
	// acknowledged (Edgeport).
	DeadLetter *DataflowDestination `json:"deadLetter,omitempty"`
}

// Dataflow modes.
const (
	ModeEnabled  = "Enabled"
	ModeDisabled = "Disabled"
)

// Dataflow operation types.
const (
	OperationSource                = "Source"
	OperationBuiltInTransformation = "BuiltInTransformation"
	OperationDestination           = "Destination"
)

// DataflowOperation is one stage of a flow.
type DataflowOperation struct {
	OperationType                 string                  `json:"operationType"`
	Name                          string                  `json:"name,omitempty"`
	SourceSettings                *DataflowSource         `json:"sourceSettings,omitempty"`
	BuiltInTransformationSettings *DataflowTransformation `json:"builtInTransformationSettings,omitempty"`
	DestinationSettings           *DataflowDestination    `json:"destinationSettings,omitempty"`
}

// DataflowSource says where messages come from: topic filters (MQTT) or
// topics (Kafka) of an endpoint, or an Asset's datasets.
type DataflowSource struct {
	EndpointRef         string   `json:"endpointRef"`
	AssetRef            string   `json:"assetRef,omitempty"`
	DataSources         []string `json:"dataSources,omitempty"`
	SerializationFormat string   `json:"serializationFormat,omitempty"`
	SchemaRef           string   `json:"schemaRef,omitempty"`
}

// Serialization formats.
const (
	FormatJSON    = "Json"
	FormatParquet = "Parquet"
	// FormatDelta writes a Delta Lake table (Parquet files and a
	// transaction log) to a LocalStorage destination.
	FormatDelta = "Delta"
)

// DataflowTransformation enriches, filters and maps messages.
type DataflowTransformation struct {
	// SerializationFormat is the output's: Json, or Parquet or Delta (a
	// Delta Lake table; schemaRef required) for LocalStorage destinations.
	SerializationFormat string            `json:"serializationFormat,omitempty"`
	SchemaRef           string            `json:"schemaRef,omitempty"`
	Datasets            []DataflowDataset `json:"datasets,omitempty"`
	Filter              []DataflowFilter  `json:"filter,omitempty"`
	Map                 []DataflowMap     `json:"map,omitempty"`
}

// DataflowDataset joins a state store record to each message: Key is
// "<state store key> as <alias>"; the first JSON Lines record for which
// Expression is true is read as $context(alias).
type DataflowDataset struct {
	Key         string   `json:"key"`
	Description string   `json:"description,omitempty"`
	SchemaRef   string   `json:"schemaRef,omitempty"`
	Inputs      []string `json:"inputs"`
	Expression  string   `json:"expression"`
}

// DataflowFilter drops the messages for which Expression is true; several
// filters are OR-ed.
type DataflowFilter struct {
	Type        string   `json:"type,omitempty"` // Filter
	Description string   `json:"description,omitempty"`
	Inputs      []string `json:"inputs"`
	Expression  string   `json:"expression"`
}

// Map rule types.
const (
	MapNewProperties   = "NewProperties"
	MapRename          = "Rename"
	MapCompute         = "Compute"
	MapPassThrough     = "PassThrough"
	MapBuiltInFunction = "BuiltInFunction"
)

// DataflowMap is one mapping rule.
type DataflowMap struct {
	Type        string   `json:"type,omitempty"`
	Description string   `json:"description,omitempty"`
	Inputs      []string `json:"inputs"`
	Expression  string   `json:"expression,omitempty"`
	Output      string   `json:"output"`
}

// DataflowDestination says where messages go: DataDestination is a topic
// (MQTT, Kafka; ${inputTopic} and ${inputTopic.N} substitute the source
// topic or one of its levels), a subdirectory (LocalStorage), or a path
// appended to the URL (Http).
type DataflowDestination struct {
	EndpointRef     string `json:"endpointRef"`
	DataDestination string `json:"dataDestination"`
}

// DataflowRetry paces retries: the wait doubles from InitialBackoffMs up
// to MaxBackoffMs. A message is retried until the destination accepts it or
// rejects it permanently; meanwhile the source buffers.
type DataflowRetry struct {
	InitialBackoffMs *int `json:"initialBackoffMs"`
	MaxBackoffMs     *int `json:"maxBackoffMs"`
}

// DataflowEndpointSpec is the DataflowEndpoint kind: a system flows read
// from or write to.
type DataflowEndpointSpec struct {
	EndpointType          string                 `json:"endpointType"`
	MqttSettings          *MqttEndpointSettings  `json:"mqttSettings,omitempty"`
	KafkaSettings         *KafkaEndpointSettings `json:"kafkaSettings,omitempty"`
	LocalStorageSettings  *LocalStorageSettings  `json:"localStorageSettings,omitempty"`
	HttpSettings          *HttpEndpointSettings  `json:"httpSettings,omitempty"`
	OpenTelemetrySettings *OTelEndpointSettings  `json:"openTelemetrySettings,omitempty"`
}

// Endpoint types.
const (
	EndpointMqtt          = "Mqtt"
	EndpointKafka         = "Kafka"
	EndpointLocalStorage  = "LocalStorage"
	EndpointHttp          = "Http"
	EndpointOpenTelemetry = "OpenTelemetry"
)

// Endpoint authentication methods.
const (
	// AuthAnonymous and AuthUsernamePassword (Edgeport: MQTT and HTTP
	// basic) are shared with Device endpoints.
	AuthX509Certificate = "X509Certificate"
	AuthSasl            = "Sasl"
	AuthAccessToken     = "AccessToken" // Edgeport: HTTP and OTLP bearer token
)

// DataflowAuthentication names how to authenticate and the secret that
// holds the credentials: a folder <data-dir>/secrets/<secretRef>/ with
// files username and password, token, or tls.crt and tls.key.
type DataflowAuthentication struct {
	Method                   string        `json:"method"`
	UsernamePasswordSettings *SecretRef    `json:"usernamePasswordSettings,omitempty"`
	X509CertificateSettings  *SecretRef    `json:"x509CertificateSettings,omitempty"`
	AccessTokenSettings      *SecretRef    `json:"accessTokenSettings,omitempty"`
	SaslSettings             *SaslSettings `json:"saslSettings,omitempty"`
}

// SASL mechanisms.
const (
	SaslPlain       = "Plain"
	SaslScramSha256 = "ScramSha256"
	SaslScramSha512 = "ScramSha512"
)

// SaslSettings are Kafka SASL credentials: the secret holds username and
// password.
type SaslSettings struct {
	SaslType  string `json:"saslType"`
	SecretRef string `json:"secretRef"`
}

// EndpointTLS turns TLS on towards a remote endpoint. The trusted CA
// bundle is every PEM file of <data-dir>/configmaps/<name>/; without it the
// system roots are used.
type EndpointTLS struct {
	Mode                             string `json:"mode"` // Enabled or Disabled
	TrustedCaCertificateConfigMapRef string `json:"trustedCaCertificateConfigMapRef,omitempty"`
}

// TLS is on for the endpoint.
func (t *EndpointTLS) Enabled() bool { return t != nil && t.Mode == "Enabled" }

// MqttEndpointSettings connect to an MQTT broker. Without Host the
// endpoint is Edgeport's own broker, reached in-process.
type MqttEndpointSettings struct {
	Host                 string                  `json:"host,omitempty"`
	Protocol             string                  `json:"protocol,omitempty"` // Mqtt or WebSockets
	Authentication       *DataflowAuthentication `json:"authentication,omitempty"`
	ClientIDPrefix       string                  `json:"clientIdPrefix,omitempty"`
	KeepAliveSeconds     *int                    `json:"keepAliveSeconds"`
	MaxInflightMessages  *int                    `json:"maxInflightMessages"`
	Qos                  *int                    `json:"qos"`
	Retain               string                  `json:"retain,omitempty"` // Keep or Never
	SessionExpirySeconds *int64                  `json:"sessionExpirySeconds"`
	TLS                  *EndpointTLS            `json:"tls,omitempty"`
}

// Local reports whether the endpoint is Edgeport's own broker.
func (m *MqttEndpointSettings) Local() bool { return m.Host == "" }

// Batching bounds how long and how much a destination collects before it
// sends; latency 0 sends at once.
type Batching struct {
	Mode        string `json:"mode,omitempty"` // Enabled or Disabled
	LatencyMs   *int   `json:"latencyMs"`
	MaxMessages *int   `json:"maxMessages"`
	MaxBytes    *int   `json:"maxBytes"`
}

// KafkaEndpointSettings connect to a Kafka cluster.
type KafkaEndpointSettings struct {
	Host               string                  `json:"host"` // host:port[,host:port...]
	Authentication     *DataflowAuthentication `json:"authentication,omitempty"`
	Batching           Batching                `json:"batching"`
	Compression        string                  `json:"compression,omitempty"` // None, Gzip, Snappy, Lz4
	CopyMqttProperties string                  `json:"copyMqttProperties,omitempty"`
	ConsumerGroupID    string                  `json:"consumerGroupId,omitempty"`
	KafkaAcks          string                  `json:"kafkaAcks,omitempty"`         // Zero, One, All
	PartitionStrategy  string                  `json:"partitionStrategy,omitempty"` // Default, Static, Topic, Property
	// PartitionKeyProperty names the user property used as the record key
	// with partitionStrategy Property (Edgeport).
	PartitionKeyProperty string       `json:"partitionKeyProperty,omitempty"`
	TLS                  *EndpointTLS `json:"tls,omitempty"`
}

// LocalStorageSettings write files to a folder (Edgeport: a path instead
// of Azure IoT Operations' persistentVolumeClaimRef). Files are JSON Lines
// or Parquet, after the flow's serialization format, and are closed and
// renamed into place when they reach MaxBytes or MaxAgeSeconds.
type LocalStorageSettings struct {
	// Path is absolute, or relative to the data directory.
	Path     string       `json:"path"`
	Rotation FileRotation `json:"rotation"`
}

// FileRotation bounds one file.
type FileRotation struct {
	MaxBytes      *int64 `json:"maxBytes"`
	MaxAgeSeconds *int   `json:"maxAgeSeconds"`
}

// HttpEndpointSettings POST messages to a URL (Edgeport): one message per
// request, or a JSON array of up to batching.maxMessages.
type HttpEndpointSettings struct {
	URL            string                  `json:"url"`
	Headers        map[string]string       `json:"headers,omitempty"`
	Authentication *DataflowAuthentication `json:"authentication,omitempty"`
	Batching       Batching                `json:"batching"`
	TimeoutSeconds *int                    `json:"timeoutSeconds"`
	TLS            *EndpointTLS            `json:"tls,omitempty"`
}

// OTelEndpointSettings export messages as OpenTelemetry metrics and logs
// over OTLP. Host is host:port (Azure IoT Operations' form, OTLP/gRPC
// unless protocol is Http) or an http(s):// URL (OTLP/HTTP; /v1/metrics
// and /v1/logs are appended to its path).
type OTelEndpointSettings struct {
	Host string `json:"host"`
	// Protocol is Grpc or Http (Edgeport); empty: Grpc for host:port,
	// Http for a URL.
	Protocol       string                  `json:"protocol,omitempty"`
	Headers        map[string]string       `json:"headers,omitempty"` // Edgeport
	Authentication *DataflowAuthentication `json:"authentication,omitempty"`
	Batching       Batching                `json:"batching"`
	TimeoutSeconds *int                    `json:"timeoutSeconds"` // Edgeport: one export
	TLS            *EndpointTLS            `json:"tls,omitempty"`
}

// OTLP protocols of an OpenTelemetry endpoint.
const (
	OTelProtocolGrpc = "Grpc"
	OTelProtocolHttp = "Http"
)

// DataflowProfileSpec is the DataflowProfile kind: how many instances run
// each of its flows, and their diagnostics. Instances of a flow share its
// MQTT source through a shared subscription.
type DataflowProfileSpec struct {
	InstanceCount *int               `json:"instanceCount"`
	Diagnostics   ProfileDiagnostics `json:"diagnostics"`
}

// ProfileDiagnostics configures the flows' logging.
type ProfileDiagnostics struct {
	Logs ProfileLogs `json:"logs"`
}

// ProfileLogs sets the log level of the profile's flows.
type ProfileLogs struct {
	Level string `json:"level,omitempty"` // debug, info, warn or error
}

// DataflowStatus is what a running flow reports (status.dataflow).
type DataflowStatus struct {
	Received     uint64 `json:"received"`
	Sent         uint64 `json:"sent"`
	Filtered     uint64 `json:"filtered"`
	Expired      uint64 `json:"expired,omitempty"`
	Errors       uint64 `json:"errors"`
	Retries      uint64 `json:"retries"`
	DeadLettered uint64 `json:"deadLettered"`
	// BufferedMessages and BufferedBytes are what waits in the flow's
	// persistent session at the broker: the outage buffer's fill level.
	BufferedMessages int64      `json:"bufferedMessages"`
	BufferedBytes    int64      `json:"bufferedBytes"`
	LastError        string     `json:"lastError,omitempty"`
	LastErrorTime    *time.Time `json:"lastErrorTime,omitempty"`
}

// Dataflow defaults.
const (
	DefaultProfile            = "default"
	DefaultEndpoint           = "default"
	DefaultRetryInitialMs     = 100
	DefaultRetryMaxMs         = 30_000
	DefaultMqttKeepAlive      = 60
	DefaultMqttMaxInflight    = 100
	DefaultMqttSessionExpiry  = 3600
	DefaultBatchLatencyMs     = 5
	DefaultBatchMaxMessages   = 1000
	DefaultBatchMaxBytes      = 1_000_000
	DefaultFileMaxBytes       = 64 << 20
	DefaultFileMaxAgeSeconds  = 300
	DefaultHTTPTimeoutSeconds = 30
	DefaultProfileInstances   = 1
	maxProfileInstances       = 64
)

func dataflowKind() KindDef {
	d := Define("Dataflow", "dataflows", []string{"df", "flow"}, defaultDataflow, validateDataflow)
	d.SpecRequired = true
	d.ValidateRefs = validateDataflowRefs
	d.RefsNeedRegistry = true
	d.Columns = []Column{
		{"MODE", func(o *Object) string { return o.Spec.(*DataflowSpec).Mode }},
		{"SOURCE", func(o *Object) string {
			if s := o.Spec.(*DataflowSpec).Source(); s != nil {
				return s.EndpointRef
			}
			return ""
		}},
		{"DESTINATION", func(o *Object) string {
			if d := o.Spec.(*DataflowSpec).Destination(); d != nil {
				return d.EndpointRef + ":" + d.DataDestination
			}
			return ""
		}},
		{"SENT", func(o *Object) string {
			if o.Status != nil && o.Status.Dataflow != nil {
				return strconv.FormatUint(o.Status.Dataflow.Sent, 10)
			}
			return ""
		}},
		{"BUFFERED", func(o *Object) string {
			if o.Status != nil && o.Status.Dataflow != nil {
				return strconv.FormatInt(o.Status.Dataflow.BufferedMessages, 10)
			}
			return ""
		}},
	}
	return d
}

// Source returns the flow's source settings, or nil.
func (s *DataflowSpec) Source() *DataflowSource {
	for i := range s.Operations {
		if s.Operations[i].OperationType == OperationSource {
			return s.Operations[i].SourceSettings
		}
	}
	return nil
}

// Transformation returns the flow's transformation settings, or nil.
func (s *DataflowSpec) Transformation() *DataflowTransformation {
	for i := range s.Operations {
		if s.Operations[i].OperationType == OperationBuiltInTransformation {
			return s.Operations[i].BuiltInTransformationSettings
		}
	}
	return nil
}

// Destination returns the flow's destination settings, or nil.
func (s *DataflowSpec) Destination() *DataflowDestination {
	for i := range s.Operations {
		if s.Operations[i].OperationType == OperationDestination {
			return s.Operations[i].DestinationSettings
		}
	}
	return nil
}

// OperationIndex returns the index of the first operation of type t, or -1.
func (s *DataflowSpec) OperationIndex(t string) int {
	for i := range s.Operations {
		if s.Operations[i].OperationType == t {
			return i
		}
	}
	return -1
}

func defaultDataflow(s *DataflowSpec) {
	if s.ProfileRef == "" {
		s.ProfileRef = DefaultProfile
	}
	if s.Mode == "" {
		s.Mode = ModeEnabled
	}
	for i := range s.Operations {
		op := &s.Operations[i]
		op.OperationType = canonicalName(op.OperationType, OperationSource, OperationBuiltInTransformation, OperationDestination)
		if src := op.SourceSettings; src != nil {
			if src.EndpointRef == "" {
				src.EndpointRef = DefaultEndpoint
			}
			if src.SerializationFormat == "" {
				src.SerializationFormat = FormatJSON
			}
		}
		if t := op.BuiltInTransformationSettings; t != nil {
			if t.SerializationFormat == "" {
				t.SerializationFormat = FormatJSON
			}
			for j := range t.Filter {
				if t.Filter[j].Type == "" {
					t.Filter[j].Type = "Filter"
				}
			}
			for j := range t.Map {
				if t.Map[j].Type == "" {
					t.Map[j].Type = MapNewProperties
				}
			}
		}
	}
	setDefault(&s.Retry.InitialBackoffMs, DefaultRetryInitialMs)
	setDefault(&s.Retry.MaxBackoffMs, DefaultRetryMaxMs)
}

// canonicalName accepts AIO's lower-camel spellings (source,
// builtInTransformation) and returns the canonical one.
func canonicalName(v string, allowed ...string) string {
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	return v
}

func validateDataflow(s *DataflowSpec, errs *Errors) {
	validateName(s.ProfileRef, "spec.profileRef", errs)
	oneOf(errs, "spec.mode", s.Mode, ModeEnabled, ModeDisabled)
	const ops = "spec.operations"
	if len(s.Operations) == 0 {
		errs.Add(ops, "required: a Source, an optional BuiltInTransformation and a Destination")
	}
	seen := map[string]int{}
	for i := range s.Operations {
		op := &s.Operations[i]
		p := index(ops, i)
		if prev, dup := seen[op.OperationType]; dup {
			errs.Add(field(p, "operationType"), "a flow has one %s (operations[%d] is one already)", op.OperationType, prev)
			continue
		}
		seen[op.OperationType] = i
		want := map[string]bool{}
		switch op.OperationType {
		case OperationSource:
			want["sourceSettings"] = true
			if i != 0 {
				errs.Add(field(p, "operationType"), "the Source must be the first operation")
			}
			validateSource(op.SourceSettings, field(p, "sourceSettings"), errs)
		case OperationBuiltInTransformation:
			want["builtInTransformationSettings"] = true
			validateTransformation(op.BuiltInTransformationSettings, field(p, "builtInTransformationSettings"), errs)
		case OperationDestination:
			want["destinationSettings"] = true
			if i != len(s.Operations)-1 {
				errs.Add(field(p, "operationType"), "the Destination must be the last operation")
			}
			validateDestination(op.DestinationSettings, field(p, "destinationSettings"), errs)
		default:
			errs.Add(field(p, "operationType"), "must be one of Source, BuiltInTransformation or Destination (got %q)", op.OperationType)
			continue
		}
		for name, set := range map[string]bool{
			"sourceSettings":                op.SourceSettings != nil,
			"builtInTransformationSettings": op.BuiltInTransformationSettings != nil,
			"destinationSettings":           op.DestinationSettings != nil,
		} {
			if set && !want[name] {
				errs.Add(field(p, name), "not allowed with operationType %s", op.OperationType)
			}
		}
	}
	if len(s.Operations) > 0 {
		for _, t := range []string{OperationSource, OperationDestination} {
			if _, ok := seen[t]; !ok {
				errs.Add(ops, "a %s operation is required", t)
			}
		}
	}
	between(errs, "spec.retry.initialBackoffMs", *s.Retry.InitialBackoffMs, 1, 3_600_000)
	between(errs, "spec.retry.maxBackoffMs", *s.Retry.MaxBackoffMs, *s.Retry.InitialBackoffMs, 3_600_000)
	if s.DeadLetter != nil {
		validateDestination(s.DeadLetter, "spec.deadLetter", errs)
	}
}

func validateSource(s *DataflowSource, p string, errs *Errors) {
	if s == nil {
		errs.Add(p, "required with operationType Source")
		return
	}
	validateName(s.EndpointRef, field(p, "endpointRef"), errs)
	if s.AssetRef != "" {
		validateName(s.AssetRef, field(p, "assetRef"), errs)
	}
	if s.AssetRef == "" && len(s.DataSources) == 0 {
		errs.Add(field(p, "dataSources"), "at least one topic filter is required (or an assetRef)")
	}
	for i, f := range s.DataSources {
		if err := topic.ValidFilter(f); err != nil {
			errs.Add(index(field(p, "dataSources"), i), "%v", err)
		}
	}
	oneOf(errs, field(p, "serializationFormat"), s.SerializationFormat, FormatJSON)
	validateSchemaRefSyntax(s.SchemaRef, field(p, "schemaRef"), errs)
}

func validateSchemaRefSyntax(ref, p string, errs *Errors) {
	if ref == "" {
		return
	}
	if _, err := ParseSchemaRef(ref); err != nil {
		errs.Add(p, "%v", err)
	}
}

func validateTransformation(t *DataflowTransformation, p string, errs *Errors) {
	if t == nil {
		errs.Add(p, "required with operationType BuiltInTransformation")
		return
	}
	oneOf(errs, field(p, "serializationFormat"), t.SerializationFormat, FormatJSON, FormatParquet, FormatDelta)
	validateSchemaRefSyntax(t.SchemaRef, field(p, "schemaRef"), errs)
	if t.SerializationFormat == FormatDelta && t.SchemaRef == "" {
		errs.Add(field(p, "schemaRef"), "required with serializationFormat Delta: a Delta table's columns come from a schema")
	}
	before := len(*errs)
	for i, d := range t.Datasets {
		dp := index(field(p, "datasets"), i)
		k, alias, ok := strings.Cut(d.Key, " as ")
		switch {
		case strings.TrimSpace(d.Key) == "":
			errs.Add(field(dp, "key"), "required (\"<state store key> as <alias>\")")
		case ok && (strings.TrimSpace(k) == "" || !isIdent(strings.TrimSpace(alias))):
			errs.Add(field(dp, "key"), "must be \"<state store key> as <alias>\" with an alias of letters, digits and '_' (got %q)", d.Key)
		}
		if len(d.Inputs) == 0 {
			errs.Add(field(dp, "inputs"), "at least one input is required")
		}
		if strings.TrimSpace(d.Expression) == "" {
			errs.Add(field(dp, "expression"), "required")
		}
	}
	for i, f := range t.Filter {
		fp := index(field(p, "filter"), i)
		oneOf(errs, field(fp, "type"), f.Type, "Filter")
		if len(f.Inputs) == 0 {
			errs.Add(field(fp, "inputs"), "at least one input is required")
		}
		if strings.TrimSpace(f.Expression) == "" {
			errs.Add(field(fp, "expression"), "required")
		}
	}
	for i, m := range t.Map {
		mp := index(field(p, "map"), i)
		oneOf(errs, field(mp, "type"), m.Type, MapNewProperties, MapRename, MapCompute, MapPassThrough, MapBuiltInFunction)
		if len(m.Inputs) == 0 {
			errs.Add(field(mp, "inputs"), "at least one input is required")
		}
		if len(m.Inputs) > 1 && strings.TrimSpace(m.Expression) == "" {
			errs.Add(field(mp, "expression"), "required with more than one input")
		}
	}
	if len(*errs) > before {
		return // the structure is wrong: compiling would repeat it
	}
	// Compile every rule now, so that an apply names the position of a
	// mistake (map[3].expression: 5: unknown function "ctof").
	if _, err := expr.Compile(exprSpec(t), noDatasets{}); err != nil {
		var es expr.Errors
		if errors.As(err, &es) {
			for _, e := range es {
				errs.Add(field(p, e.Field), "%s", e.Detail())
			}
		} else {
			errs.Add(p, "%v", err)
		}
	}
}

// noDatasets stands in for the state store when rules are only compiled.
type noDatasets struct{}

func (noDatasets) Records(string) []any { return nil }

// exprSpec converts the transformation to the mapping language's spec.
func exprSpec(t *DataflowTransformation) expr.Spec {
	var s expr.Spec
	for _, d := range t.Datasets {
		s.Datasets = append(s.Datasets, expr.DatasetRule{Key: d.Key, Inputs: d.Inputs, Expression: d.Expression, Description: d.Description})
	}
	for _, f := range t.Filter {
		s.Filter = append(s.Filter, expr.FilterRule{Inputs: f.Inputs, Expression: f.Expression, Description: f.Description})
	}
	for _, m := range t.Map {
		s.Map = append(s.Map, expr.MapRule{Inputs: m.Inputs, Output: m.Output, Expression: m.Expression, Description: m.Description})
	}
	return s
}

// ExprSpec returns the mapping-language spec of a transformation.
func (t *DataflowTransformation) ExprSpec() expr.Spec { return exprSpec(t) }

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func validateDestination(d *DataflowDestination, p string, errs *Errors) {
	if d == nil {
		errs.Add(p, "required with operationType Destination")
		return
	}
	validateName(d.EndpointRef, field(p, "endpointRef"), errs)
	if d.DataDestination == "" {
		errs.Add(field(p, "dataDestination"), "required (a topic, folder or path)")
	} else if err := ValidateDestinationTemplate(d.DataDestination); err != nil {
		errs.Add(field(p, "dataDestination"), "%v", err)
	}
}

// ValidateDestinationTemplate checks the ${inputTopic} and ${inputTopic.N}
// substitutions of a dataDestination.
func ValidateDestinationTemplate(s string) error {
	for rest := s; ; {
		i := strings.Index(rest, "${")
		if i < 0 {
			return nil
		}
		end := strings.IndexByte(rest[i:], '}')
		if end < 0 {
			return fmt.Errorf("unterminated ${ at byte %d", len(s)-len(rest)+i+1)
		}
		v := rest[i+2 : i+end]
		switch {
		case v == "inputTopic":
		case strings.HasPrefix(v, "inputTopic."):
			n, err := strconv.Atoi(strings.TrimPrefix(v, "inputTopic."))
			if err != nil || n < 1 {
				return fmt.Errorf("${%s}: the level must be a number from 1", v)
			}
		default:
			return fmt.Errorf("unknown variable ${%s} (${inputTopic} or ${inputTopic.N})", v)
		}
		rest = rest[i+end+1:]
	}
}

func dataflowEndpointKind() KindDef {
	d := Define("DataflowEndpoint", "dataflowendpoints", []string{"dfe"}, defaultEndpoint, validateEndpoint)
	d.SpecRequired = true
	d.Columns = []Column{
		{"TYPE", func(o *Object) string { return o.Spec.(*DataflowEndpointSpec).EndpointType }},
		{"HOST", func(o *Object) string { return o.Spec.(*DataflowEndpointSpec).Address() }},
	}
	return d
}

// Address describes where the endpoint points, for listings.
func (s *DataflowEndpointSpec) Address() string {
	switch {
	case s.MqttSettings != nil:
		if s.MqttSettings.Local() {
			return "(local broker)"
		}
		return s.MqttSettings.Host
	case s.KafkaSettings != nil:
		return s.KafkaSettings.Host
	case s.LocalStorageSettings != nil:
		return s.LocalStorageSettings.Path
	case s.HttpSettings != nil:
		return s.HttpSettings.URL
	case s.OpenTelemetrySettings != nil:
		return s.OpenTelemetrySettings.Host
	}
	return ""
}

func defaultBatching(b *Batching, latency int) {
	if b.Mode == "" {
		b.Mode = "Enabled"
	}
	setDefault(&b.LatencyMs, latency)
	setDefault(&b.MaxMessages, DefaultBatchMaxMessages)
	setDefault(&b.MaxBytes, DefaultBatchMaxBytes)
}

func defaultEndpoint(s *DataflowEndpointSpec) {
	s.EndpointType = canonicalName(s.EndpointType, EndpointMqtt, EndpointKafka, EndpointLocalStorage, EndpointHttp, EndpointOpenTelemetry)
	if m := s.MqttSettings; m != nil {
		if m.Protocol == "" {
			m.Protocol = ProtocolMqtt
		}
		setDefault(&m.KeepAliveSeconds, DefaultMqttKeepAlive)
		setDefault(&m.MaxInflightMessages, DefaultMqttMaxInflight)
		setDefault(&m.Qos, 1)
		if m.Retain == "" {
			m.Retain = "Keep"
		}
		setDefault(&m.SessionExpirySeconds, DefaultMqttSessionExpiry)
		defaultAuth(&m.Authentication)
	}
	if k := s.KafkaSettings; k != nil {
		defaultBatching(&k.Batching, DefaultBatchLatencyMs)
		if k.Compression == "" {
			k.Compression = "None"
		}
		if k.CopyMqttProperties == "" {
			k.CopyMqttProperties = "Enabled"
		}
		if k.KafkaAcks == "" {
			k.KafkaAcks = "All"
		}
		if k.PartitionStrategy == "" {
			k.PartitionStrategy = "Default"
		}
		defaultAuth(&k.Authentication)
	}
	if l := s.LocalStorageSettings; l != nil {
		setDefault(&l.Rotation.MaxBytes, DefaultFileMaxBytes)
		setDefault(&l.Rotation.MaxAgeSeconds, DefaultFileMaxAgeSeconds)
	}
	if h := s.HttpSettings; h != nil {
		defaultBatching(&h.Batching, 0)
		setDefault(&h.TimeoutSeconds, DefaultHTTPTimeoutSeconds)
		defaultAuth(&h.Authentication)
	}
	if o := s.OpenTelemetrySettings; o != nil {
		defaultBatching(&o.Batching, 1000)
		setDefault(&o.TimeoutSeconds, DefaultHTTPTimeoutSeconds)
		defaultAuth(&o.Authentication)
		o.Protocol = canonicalName(o.Protocol, OTelProtocolGrpc, OTelProtocolHttp)
	}
}

func defaultAuth(a **DataflowAuthentication) {
	if *a == nil {
		*a = &DataflowAuthentication{}
	}
	if (*a).Method == "" {
		(*a).Method = AuthAnonymous
	}
}

func validateEndpoint(s *DataflowEndpointSpec, errs *Errors) {
	types := []string{EndpointMqtt, EndpointKafka, EndpointLocalStorage, EndpointHttp, EndpointOpenTelemetry}
	settings := map[string]bool{
		EndpointMqtt:          s.MqttSettings != nil,
		EndpointKafka:         s.KafkaSettings != nil,
		EndpointLocalStorage:  s.LocalStorageSettings != nil,
		EndpointHttp:          s.HttpSettings != nil,
		EndpointOpenTelemetry: s.OpenTelemetrySettings != nil,
	}
	name := map[string]string{
		EndpointMqtt: "mqttSettings", EndpointKafka: "kafkaSettings", EndpointLocalStorage: "localStorageSettings",
		EndpointHttp: "httpSettings", EndpointOpenTelemetry: "openTelemetrySettings",
	}
	oneOf(errs, "spec.endpointType", s.EndpointType, types...)
	for _, t := range types {
		switch {
		case t == s.EndpointType && !settings[t]:
			errs.Add("spec."+name[t], "required with endpointType %s", t)
		case t != s.EndpointType && settings[t] && settings[s.EndpointType]:
			errs.Add("spec."+name[t], "not allowed with endpointType %s", s.EndpointType)
		}
	}
	if m := s.MqttSettings; m != nil {
		p := "spec.mqttSettings"
		if m.Host != "" {
			hostPort(errs, field(p, "host"), m.Host)
		}
		oneOf(errs, field(p, "protocol"), m.Protocol, ProtocolMqtt, ProtocolWebSockets)
		between(errs, field(p, "keepAliveSeconds"), *m.KeepAliveSeconds, 0, 65535)
		between(errs, field(p, "maxInflightMessages"), *m.MaxInflightMessages, 1, 65535)
		between(errs, field(p, "qos"), *m.Qos, 0, 1)
		oneOf(errs, field(p, "retain"), m.Retain, "Keep", "Never")
		between(errs, field(p, "sessionExpirySeconds"), *m.SessionExpirySeconds, 0, 4294967295)
		if strings.ContainsAny(m.ClientIDPrefix, "+#/ ") {
			errs.Add(field(p, "clientIdPrefix"), "must not contain '+', '#', '/' or spaces")
		}
		validateAuth(m.Authentication, field(p, "authentication"), errs, AuthAnonymous, AuthUsernamePassword, AuthX509Certificate)
		if m.Local() && m.Authentication.Method != AuthAnonymous {
			errs.Add(field(p, "authentication.method"), "the local broker is reached in-process: only Anonymous (set host for a remote broker)")
		}
		validateEndpointTLS(m.TLS, field(p, "tls"), errs)
	}
	if k := s.KafkaSettings; k != nil {
		p := "spec.kafkaSettings"
		if k.Host == "" {
			errs.Add(field(p, "host"), "required (host:port, or several separated by commas)")
		}
		for _, h := range strings.Split(k.Host, ",") {
			if k.Host != "" {
				hostPort(errs, field(p, "host"), strings.TrimSpace(h))
			}
		}
		validateBatching(&k.Batching, field(p, "batching"), errs)
		oneOf(errs, field(p, "compression"), k.Compression, "None", "Gzip", "Snappy", "Lz4")
		oneOf(errs, field(p, "copyMqttProperties"), k.CopyMqttProperties, "Enabled", "Disabled")
		oneOf(errs, field(p, "kafkaAcks"), k.KafkaAcks, "Zero", "One", "All")
		oneOf(errs, field(p, "partitionStrategy"), k.PartitionStrategy, "Default", "Static", "Topic", "Property")
		if k.PartitionStrategy == "Property" && k.PartitionKeyProperty == "" {
			errs.Add(field(p, "partitionKeyProperty"), "required with partitionStrategy Property")
		}
		validateAuth(k.Authentication, field(p, "authentication"), errs, AuthAnonymous, AuthSasl, AuthX509Certificate)
		validateEndpointTLS(k.TLS, field(p, "tls"), errs)
	}
	if l := s.LocalStorageSettings; l != nil {
		p := "spec.localStorageSettings"
		if l.Path == "" {
			errs.Add(field(p, "path"), "required (a folder; relative paths are under the data directory)")
		} else if !filepath.IsAbs(l.Path) && strings.HasPrefix(filepath.Clean(l.Path), "..") {
			errs.Add(field(p, "path"), "a relative path must stay inside the data directory")
		}
		between(errs, field(p, "rotation.maxBytes"), *l.Rotation.MaxBytes, 1024, 1<<40)
		between(errs, field(p, "rotation.maxAgeSeconds"), *l.Rotation.MaxAgeSeconds, 1, 86400*31)
	}
	if h := s.HttpSettings; h != nil {
		p := "spec.httpSettings"
		httpURL(errs, field(p, "url"), h.URL)
		validateHeaders(h.Headers, field(p, "headers"), errs)
		validateBatching(&h.Batching, field(p, "batching"), errs)
		between(errs, field(p, "timeoutSeconds"), *h.TimeoutSeconds, 1, 3600)
		validateAuth(h.Authentication, field(p, "authentication"), errs, AuthAnonymous, AuthUsernamePassword, AuthAccessToken, AuthX509Certificate)
		validateEndpointTLS(h.TLS, field(p, "tls"), errs)
	}
	if o := s.OpenTelemetrySettings; o != nil {
		p := "spec.openTelemetrySettings"
		if strings.Contains(o.Host, "://") {
			httpURL(errs, field(p, "host"), o.Host)
		} else if o.Host == "" {
			errs.Add(field(p, "host"), "required: host:port of the collector's OTLP receiver (gRPC, e.g. otel:4317) or an http(s):// URL (OTLP/HTTP, e.g. http://otel:4318)")
		} else {
			hostPort(errs, field(p, "host"), o.Host)
		}
		if o.Protocol != "" {
			oneOf(errs, field(p, "protocol"), o.Protocol, OTelProtocolGrpc, OTelProtocolHttp)
		}
		validateHeaders(o.Headers, field(p, "headers"), errs)
		between(errs, field(p, "timeoutSeconds"), *o.TimeoutSeconds, 1, 3600)
		validateBatching(&o.Batching, field(p, "batching"), errs)
		validateAuth(o.Authentication, field(p, "authentication"), errs, AuthAnonymous, AuthAccessToken, AuthX509Certificate)
		validateEndpointTLS(o.TLS, field(p, "tls"), errs)
	}
}

func validateHeaders(h map[string]string, p string, errs *Errors) {
	for _, k := range sortedKeys(h) {
		if k == "" || strings.ContainsAny(k, " :\r\n") {
			errs.Add(key(p, k), "not a valid header name")
		}
		if strings.ContainsAny(h[k], "\r\n") {
			errs.Add(key(p, k), "a header value must not contain line breaks")
		}
	}
}

func hostPort(errs *Errors, p, v string) {
	h, port, err := net.SplitHostPort(v)
	if err != nil || h == "" {
		errs.Add(p, "must be host:port (got %q)", v)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		errs.Add(p, "port must be 1-65535 (got %q)", port)
	}
}

func httpURL(errs *Errors, p, v string) {
	u, err := url.Parse(v)
	if v == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs.Add(p, "must be an http:// or https:// URL (got %q)", v)
	}
}

func validateBatching(b *Batching, p string, errs *Errors) {
	oneOf(errs, field(p, "mode"), b.Mode, "Enabled", "Disabled")
	between(errs, field(p, "latencyMs"), *b.LatencyMs, 0, 3_600_000)
	between(errs, field(p, "maxMessages"), *b.MaxMessages, 1, 1_000_000)
	between(errs, field(p, "maxBytes"), *b.MaxBytes, 1, 1<<30)
}

func validateAuth(a *DataflowAuthentication, p string, errs *Errors, methods ...string) {
	oneOf(errs, field(p, "method"), a.Method, methods...)
	need := map[string]bool{}
	switch a.Method {
	case AuthUsernamePassword:
		need["usernamePasswordSettings"] = true
		if a.UsernamePasswordSettings == nil {
			errs.Add(field(p, "usernamePasswordSettings.secretRef"), "required with method UsernamePassword")
		} else {
			validateName(a.UsernamePasswordSettings.SecretRef, field(p, "usernamePasswordSettings.secretRef"), errs)
		}
	case AuthX509Certificate:
		need["x509CertificateSettings"] = true
		if a.X509CertificateSettings == nil {
			errs.Add(field(p, "x509CertificateSettings.secretRef"), "required with method X509Certificate")
		} else {
			validateName(a.X509CertificateSettings.SecretRef, field(p, "x509CertificateSettings.secretRef"), errs)
		}
	case AuthAccessToken:
		need["accessTokenSettings"] = true
		if a.AccessTokenSettings == nil {
			errs.Add(field(p, "accessTokenSettings.secretRef"), "required with method AccessToken")
		} else {
			validateName(a.AccessTokenSettings.SecretRef, field(p, "accessTokenSettings.secretRef"), errs)
		}
	case AuthSasl:
		need["saslSettings"] = true
		if a.SaslSettings == nil {
			errs.Add(field(p, "saslSettings"), "required with method Sasl")
		} else {
			oneOf(errs, field(p, "saslSettings.saslType"), a.SaslSettings.SaslType, SaslPlain, SaslScramSha256, SaslScramSha512)
			validateName(a.SaslSettings.SecretRef, field(p, "saslSettings.secretRef"), errs)
		}
	}
	for name, set := range map[string]bool{
		"usernamePasswordSettings": a.UsernamePasswordSettings != nil,
		"x509CertificateSettings":  a.X509CertificateSettings != nil,
		"accessTokenSettings":      a.AccessTokenSettings != nil,
		"saslSettings":             a.SaslSettings != nil,
	} {
		if set && !need[name] {
			errs.Add(field(p, name), "not allowed with method %s", a.Method)
		}
	}
}

func validateEndpointTLS(t *EndpointTLS, p string, errs *Errors) {
	if t == nil {
		return
	}
	oneOf(errs, field(p, "mode"), t.Mode, "Enabled", "Disabled")
	if t.TrustedCaCertificateConfigMapRef != "" {
		validateName(t.TrustedCaCertificateConfigMapRef, field(p, "trustedCaCertificateConfigMapRef"), errs)
	}
}

func dataflowProfileKind() KindDef {
	d := Define("DataflowProfile", "dataflowprofiles", []string{"dfp"}, defaultProfile, validateProfile)
	d.Columns = []Column{
		{"INSTANCES", func(o *Object) string { return itoa(o.Spec.(*DataflowProfileSpec).InstanceCount) }},
	}
	return d
}

func defaultProfile(s *DataflowProfileSpec) {
	setDefault(&s.InstanceCount, DefaultProfileInstances)
	if s.Diagnostics.Logs.Level == "" {
		s.Diagnostics.Logs.Level = "info"
	}
}

func validateProfile(s *DataflowProfileSpec, errs *Errors) {
	between(errs, "spec.instanceCount", *s.InstanceCount, 1, maxProfileInstances)
	oneOf(errs, "spec.diagnostics.logs.level", s.Diagnostics.Logs.Level, "debug", "info", "warn", "error")
}
