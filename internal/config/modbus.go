package config

import (
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Modbus tables, as a data point's dataSource names them
// ("holding:5000").
const (
	ModbusCoil          = "coil"
	ModbusDiscreteInput = "discreteInput"
	ModbusHolding       = "holding"
	ModbusInput         = "input"
)

// Modbus data types.
const (
	ModbusBool    = "bool"
	ModbusInt16   = "int16"
	ModbusUint16  = "uint16"
	ModbusInt32   = "int32"
	ModbusUint32  = "uint32"
	ModbusInt64   = "int64"
	ModbusUint64  = "uint64"
	ModbusFloat32 = "float32"
	ModbusFloat64 = "float64"
	ModbusString  = "string"
)

// Byte and word orders.
const (
	BigEndian    = "BigEndian"
	LittleEndian = "LittleEndian"
)

// DefaultModbusPort is Modbus TCP's registered port.
const DefaultModbusPort = 502

// ModbusMaxRegistersPerRead is the protocol's limit for one read of
// holding or input registers (coils and discrete inputs: 2000 bits).
const ModbusMaxRegistersPerRead = 125

// ModbusEndpointConfiguration is the additionalConfiguration of a
// Microsoft.Modbus endpoint. Durations are milliseconds.
type ModbusEndpointConfiguration struct {
	// UnitID addresses the device behind a gateway (default 1).
	UnitID *int `json:"unitId,omitempty"`
	// RequestTimeout bounds one request (default 2000; connecting is
	// bounded at 5 s by the Modbus library).
	RequestTimeout *int `json:"requestTimeout,omitempty"`
	// Concurrency is how many requests may be outstanding at once, each
	// on its own connection (default 1: many loggers serve one at a time).
	Concurrency *int `json:"concurrency,omitempty"`
	// MaxRegistersPerRead caps a merged read (default and maximum 125).
	MaxRegistersPerRead *int `json:"maxRegistersPerRead,omitempty"`
	// MaxGap is how many unused registers a merged read may span between
	// two data points (default 0: only adjacent registers merge).
	MaxGap *int `json:"maxGap,omitempty"`
	// DegradedAfter consecutive failed polls mark the device degraded and
	// slow its polling down with exponential backoff up to MaxBackoff
	// (defaults 3 and 60000).
	DegradedAfter *int `json:"degradedAfter,omitempty"`
	MaxBackoff    *int `json:"maxBackoff,omitempty"`
}

// WithDefaults returns c with every unset field at its default.
func (c ModbusEndpointConfiguration) WithDefaults() ModbusEndpointConfiguration {
	set := func(p **int, v int) {
		if *p == nil {
			*p = &v
		}
	}
	set(&c.UnitID, 1)
	set(&c.RequestTimeout, 2000)
	set(&c.Concurrency, 1)
	set(&c.MaxRegistersPerRead, ModbusMaxRegistersPerRead)
	set(&c.MaxGap, 0)
	set(&c.DegradedAfter, 3)
	set(&c.MaxBackoff, 60000)
	return c
}

// ModbusDatasetConfiguration is a dataset's datasetConfiguration on a
// Modbus endpoint. Durations are milliseconds.
type ModbusDatasetConfiguration struct {
	// SamplingInterval is the poll interval (default 1000).
	SamplingInterval *int `json:"samplingInterval,omitempty"`
	// PublishingInterval throttles: at most one message per interval
	// (default 0: a message per poll that changed something).
	PublishingInterval *int `json:"publishingInterval,omitempty"`
	// KeyFrameCount is the heartbeat: every Nth poll publishes every data
	// point, changed or not (default 0: never).
	KeyFrameCount *int `json:"keyFrameCount,omitempty"`
	// UnitID overrides the endpoint's unit id for this dataset.
	UnitID *int `json:"unitId,omitempty"`
}

// ModbusDataPointConfiguration is a data point's dataPointConfiguration on
// a Modbus endpoint; its dataSource is "<table>:<address>".
type ModbusDataPointConfiguration struct {
	// DataType defaults to bool on coils and discrete inputs, uint16 on
	// registers.
	DataType string `json:"dataType,omitempty"`
	// Count is the number of registers: implied by the data type, required
	// for string (two characters per register).
	Count *int `json:"count,omitempty"`
	// ByteOrder within a register, WordOrder between the registers of a
	// 32- or 64-bit value (defaults BigEndian: Modbus' own order, high
	// word first).
	ByteOrder string `json:"byteOrder,omitempty"`
	WordOrder string `json:"wordOrder,omitempty"`
	// Value = raw × Scale + Offset (defaults 1 and 0).
	Scale  *float64 `json:"scale,omitempty"`
	Offset *float64 `json:"offset,omitempty"`
	Unit   string   `json:"unit,omitempty"`
	// Writable allows writes through MQTT request/response (coils and
	// holding registers only).
	Writable bool      `json:"writable,omitempty"`
	Deadband *Deadband `json:"deadband,omitempty"`
}

// ModbusPoint is a data point resolved: where it lives and how to decode it.
type ModbusPoint struct {
	Table   string
	Address int // 0-based protocol address
	Count   int // registers, or bits (1) on coils and discrete inputs
	ModbusDataPointConfiguration
}

// ParseModbusPoint resolves a data point, recording problems under path
// (the data point's path).
func ParseModbusPoint(dp *DataPoint, path string, errs *Errors) (ModbusPoint, bool) {
	n := len(*errs)
	var p ModbusPoint
	cpath := field(path, "dataPointConfiguration")
	checkConfig(dp.DataPointConfiguration, &p.ModbusDataPointConfiguration, cpath, errs, func(errs *Errors) {
		checkModbusPoint(dp, &p, path, cpath, errs)
	})
	return p, len(*errs) == n
}

func checkModbusPoint(dp *DataPoint, p *ModbusPoint, path, cpath string, errs *Errors) {
	table, addr, ok := strings.Cut(dp.DataSource, ":")
	a, err := strconv.Atoi(addr)
	switch {
	case dp.DataSource == "":
		// (the asset's own validation says so too; connectors parse points directly)
		errs.Add(field(path, "dataSource"), "required")
	case !ok || err != nil || (table != ModbusCoil && table != ModbusDiscreteInput && table != ModbusHolding && table != ModbusInput):
		errs.Add(field(path, "dataSource"), "must be <table>:<address> with table coil, discreteInput, holding or input (got %q)", dp.DataSource)
	case a < 0 || a > 65535:
		errs.Add(field(path, "dataSource"), "address must be between 0 and 65535 (got %d)", a)
	}
	p.Table, p.Address = table, a
	bits := table == ModbusCoil || table == ModbusDiscreteInput
	c := &p.ModbusDataPointConfiguration
	if c.DataType == "" {
		c.DataType = ModbusUint16
		if bits {
			c.DataType = ModbusBool
		}
	}
	if c.ByteOrder == "" {
		c.ByteOrder = BigEndian
	}
	if c.WordOrder == "" {
		c.WordOrder = BigEndian
	}
	oneOf(errs, field(cpath, "byteOrder"), c.ByteOrder, BigEndian, LittleEndian)
	oneOf(errs, field(cpath, "wordOrder"), c.WordOrder, BigEndian, LittleEndian)
	want := ModbusRegisters(c.DataType)
	switch {
	case want < 0:
		errs.Add(field(cpath, "dataType"), "must be one of bool, int16, uint16, int32, uint32, int64, uint64, float32, float64 or string (got %q)", c.DataType)
	case bits && c.DataType != ModbusBool:
		errs.Add(field(cpath, "dataType"), "%ss hold single bits: must be bool (got %q)", tableNoun(table), c.DataType)
	case c.DataType == ModbusString && c.Count == nil:
		errs.Add(field(cpath, "count"), "required with dataType string (registers, two characters each)")
	case c.DataType == ModbusString:
		if *c.Count < 1 || *c.Count > ModbusMaxRegistersPerRead {
			errs.Add(field(cpath, "count"), "must be between 1 and %d registers (got %d)", ModbusMaxRegistersPerRead, *c.Count)
		}
		want = *c.Count
	case c.Count != nil && *c.Count != want:
		errs.Add(field(cpath, "count"), "%s takes %d register%s (got %d)", c.DataType, want, plural(want), *c.Count)
	}
	p.Count = max(want, 1)
	if ok && err == nil && a >= 0 && a <= 65535 && a+p.Count-1 > 65535 {
		errs.Add(field(path, "dataSource"), "%s %d to %d run past address 65535", tableNoun(table)+"s", a, a+p.Count-1)
	}
	if c.Writable && (table == ModbusInput || table == ModbusDiscreteInput) {
		errs.Add(field(cpath, "writable"), "%ss are read-only (only coils and holding registers can be written)", tableNoun(table))
	}
	if c.Scale != nil && *c.Scale == 0 {
		errs.Add(field(cpath, "scale"), "must not be 0")
	}
	if (c.Scale != nil || c.Offset != nil || c.Deadband != nil) && (c.DataType == ModbusString || c.DataType == ModbusBool) {
		errs.Add(cpath, "scale, offset and deadband apply to numbers, not %s", c.DataType)
	}
	validateDeadband(c.Deadband, field(cpath, "deadband"), errs)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func tableNoun(table string) string {
	switch table {
	case ModbusCoil:
		return "coil"
	case ModbusDiscreteInput:
		return "discrete input"
	case ModbusHolding:
		return "holding register"
	}
	return "input register"
}

// ModbusRegisters returns how many registers a data type takes (1 for
// bool; 0 for string, whose count is given), or -1 for an unknown type.
func ModbusRegisters(dataType string) int {
	switch dataType {
	case ModbusBool, ModbusInt16, ModbusUint16:
		return 1
	case ModbusInt32, ModbusUint32, ModbusFloat32:
		return 2
	case ModbusInt64, ModbusUint64, ModbusFloat64:
		return 4
	case ModbusString:
		return 0
	}
	return -1
}

// ParseModbusAddress splits a modbus-tcp://host[:port] address.
func ParseModbusAddress(addr string) (hostport string, err error) {
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != "modbus-tcp" || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return "", errModbusAddress
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = strconv.Itoa(DefaultModbusPort)
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", errModbusAddress
	}
	return net.JoinHostPort(host, port), nil
}

type configError string

func (e configError) Error() string { return string(e) }

const errModbusAddress = configError("must be modbus-tcp://host[:port]")

// ParseModbusDataset decodes a dataset's configuration (or the asset's
// default) with defaults applied.
func ParseModbusDataset(s *AssetSpec, i int, errs *Errors) ModbusDatasetConfiguration {
	var c ModbusDatasetConfiguration
	path := field(index("spec.datasets", i), "datasetConfiguration")
	if len(s.Datasets[i].DatasetConfiguration) == 0 {
		path = "spec.defaultDatasetsConfiguration"
	}
	checkConfig(s.DatasetConfiguration(i), &c, path, errs, func(errs *Errors) {
		positive(c.SamplingInterval, 10, 86_400_000, field(path, "samplingInterval"), errs)
		positive(c.PublishingInterval, 0, 86_400_000, field(path, "publishingInterval"), errs)
		positive(c.KeyFrameCount, 0, 1<<20, field(path, "keyFrameCount"), errs)
		positive(c.UnitID, 0, 255, field(path, "unitId"), errs)
	})
	if c.SamplingInterval == nil {
		c.SamplingInterval = ptrInt(1000)
	}
	if c.PublishingInterval == nil {
		c.PublishingInterval = ptrInt(0)
	}
	if c.KeyFrameCount == nil {
		c.KeyFrameCount = ptrInt(0)
	}
	return c
}

func ptrInt(v int) *int { return &v }

// ParseModbusEndpoint decodes a Modbus endpoint's address and
// additionalConfiguration with defaults applied.
func ParseModbusEndpoint(ep *InboundEndpoint, path string, errs *Errors) (hostport string, c ModbusEndpointConfiguration) {
	hostport, err := ParseModbusAddress(ep.Address)
	if err != nil && ep.Address != "" {
		errs.Add(field(path, "address"), "%v (got %q)", err, ep.Address)
	}
	cpath := field(path, "additionalConfiguration")
	checkConfig(ep.AdditionalConfiguration, &c, cpath, errs, func(errs *Errors) {
		positive(c.UnitID, 0, 255, field(cpath, "unitId"), errs)
		positive(c.RequestTimeout, 1, 600_000, field(cpath, "requestTimeout"), errs)
		positive(c.Concurrency, 1, 16, field(cpath, "concurrency"), errs)
		positive(c.MaxRegistersPerRead, 1, ModbusMaxRegistersPerRead, field(cpath, "maxRegistersPerRead"), errs)
		positive(c.MaxGap, 0, ModbusMaxRegistersPerRead, field(cpath, "maxGap"), errs)
		positive(c.DegradedAfter, 1, 1000, field(cpath, "degradedAfter"), errs)
		positive(c.MaxBackoff, 100, 3_600_000, field(cpath, "maxBackoff"), errs)
	})
	if a := ep.Authentication; a != nil && a.Method != AuthAnonymous && a.Method != "" {
		errs.Add(field(path, "authentication.method"), "Modbus TCP has no authentication: must be Anonymous (got %q)", a.Method)
	}
	return hostport, c.WithDefaults()
}

func modbusEndpointType() *endpointType {
	return &endpointType{
		validateEndpoint: func(ep *InboundEndpoint, path string, errs *Errors) {
			ParseModbusEndpoint(ep, path, errs)
		},
		validateAsset: func(s *AssetSpec, errs *Errors) {
			for i := range s.Datasets {
				ParseModbusDataset(s, i, errs)
				for j := range s.Datasets[i].DataPoints {
					ParseModbusPoint(&s.Datasets[i].DataPoints[j], index(field(index("spec.datasets", i), "dataPoints"), j), errs)
				}
			}
			for i := range s.EventGroups {
				errs.Add(field(index("spec.eventGroups", i), "name"), "Modbus has no events: read the registers in a dataset")
				break
			}
		},
	}
}
