package otel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// payload is the message shape the destination takes, after Azure IoT
// Operations' OpenTelemetry endpoint: {"metrics": [...], "logs": [...]}.
// Edgeport also takes "metrics" as an object keyed by metric name and
// "attributes" as an object, the shapes the mapping language can write
// (map rules output paths, not array elements).
type payload struct {
	Metrics json.RawMessage `json:"metrics"`
	Logs    json.RawMessage `json:"logs"`
}

type metricIn struct {
	Name        string          `json:"name"`
	Type        string          `json:"type"`
	Value       json.RawMessage `json:"value"`
	Description string          `json:"description"`
	Unit        string          `json:"unit"`
	Timestamp   json.RawMessage `json:"timestamp"`
	Attributes  json.RawMessage `json:"attributes"`
	Temporality string          `json:"temporality"`
}

type logIn struct {
	Value       json.RawMessage `json:"value"`
	Level       string          `json:"level"`
	Description string          `json:"description"`
	Timestamp   json.RawMessage `json:"timestamp"`
	Attributes  json.RawMessage `json:"attributes"`
}

// Metric types (case-insensitive in messages).
const (
	TypeGauge         = "gauge"
	TypeCounter       = "counter"
	TypeUpDownCounter = "updowncounter"
	TypeHistogram     = "histogram"
)

// histogramBounds are the OpenTelemetry SDK's default explicit bucket
// boundaries, used for a histogram recording.
var histogramBounds = []float64{0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000}

// levels maps a log level to its OpenTelemetry severity number.
var levels = map[string]plog.SeverityNumber{
	"trace": plog.SeverityNumberTrace, "debug": plog.SeverityNumberDebug, "info": plog.SeverityNumberInfo,
	"warn": plog.SeverityNumberWarn, "warning": plog.SeverityNumberWarn, "error": plog.SeverityNumberError,
	"fatal": plog.SeverityNumberFatal,
}

// batch collects the metrics and logs of several messages into one
// export of each signal.
type batch struct {
	metrics pmetric.Metrics
	logs    plog.Logs
	ms      pmetric.MetricSlice
	ls      plog.LogRecordSlice
	nm, nl  int
}

func newBatch(resource map[string]string, scope string) *batch {
	b := &batch{metrics: pmetric.NewMetrics(), logs: plog.NewLogs()}
	rm := b.metrics.ResourceMetrics().AppendEmpty()
	rl := b.logs.ResourceLogs().AppendEmpty()
	keys := make([]string, 0, len(resource))
	for k := range resource {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		rm.Resource().Attributes().PutStr(k, resource[k])
		rl.Resource().Attributes().PutStr(k, resource[k])
	}
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName(scope)
	sl := rl.ScopeLogs().AppendEmpty()
	sl.Scope().SetName(scope)
	b.ms, b.ls = sm.Metrics(), sl.LogRecords()
	return b
}

// add converts one message payload; on error nothing of it is added.
// now is the time of data without a timestamp.
func (b *batch) add(p []byte, now time.Time) error {
	var in payload
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	if err := dec.Decode(&in); err != nil {
		return fmt.Errorf("payload is not a JSON object with metrics and/or logs: %w", err)
	}
	if isNull(in.Metrics) && isNull(in.Logs) {
		return errors.New(`payload has neither "metrics" nor "logs"`)
	}
	metrics, err := decodeMetrics(in.Metrics)
	if err != nil {
		return err
	}
	var logs []logIn
	if !isNull(in.Logs) {
		if err := strictDecode(in.Logs, &logs); err != nil {
			return fmt.Errorf("logs: must be an array of log objects: %w", err)
		}
	}
	// Convert into scratch slices first so that a bad entry adds nothing.
	ms := pmetric.NewMetricSlice()
	for i, m := range metrics {
		if err := addMetric(ms, m, now); err != nil {
			return fmt.Errorf("metrics[%d]: %w", i, err)
		}
	}
	ls := plog.NewLogRecordSlice()
	for i, l := range logs {
		if err := addLog(ls, l, now); err != nil {
			return fmt.Errorf("logs[%d]: %w", i, err)
		}
	}
	b.nm += ms.Len()
	b.nl += ls.Len()
	ms.MoveAndAppendTo(b.ms)
	ls.MoveAndAppendTo(b.ls)
	return nil
}

func isNull(r json.RawMessage) bool {
	t := bytes.TrimSpace(r)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

func strictDecode(r json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(r))
	dec.UseNumber()
	return dec.Decode(v)
}

// decodeMetrics reads AIO's array, or Edgeport's object keyed by name.
func decodeMetrics(r json.RawMessage) ([]metricIn, error) {
	if isNull(r) {
		return nil, nil
	}
	var arr []metricIn
	if bytes.TrimSpace(r)[0] == '[' {
		if err := strictDecode(r, &arr); err != nil {
			return nil, fmt.Errorf("metrics: must be an array of metric objects: %w", err)
		}
		return arr, nil
	}
	var obj map[string]metricIn
	if err := strictDecode(r, &obj); err != nil {
		return nil, fmt.Errorf("metrics: must be an array of metric objects or an object of them by name: %w", err)
	}
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		m := obj[k]
		if m.Name == "" {
			m.Name = k
		}
		arr = append(arr, m)
	}
	return arr, nil
}

func addMetric(ms pmetric.MetricSlice, in metricIn, now time.Time) error {
	if in.Name == "" {
		return errors.New("name: required")
	}
	v, err := number(in.Value)
	if err != nil {
		return fmt.Errorf("value: %w", err)
	}
	ts, err := timestamp(in.Timestamp, now)
	if err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	m := ms.AppendEmpty()
	m.SetName(in.Name)
	m.SetDescription(in.Description)
	m.SetUnit(in.Unit)
	setNumber := func(dp pmetric.NumberDataPoint) error {
		dp.SetTimestamp(ts)
		if v.isInt {
			dp.SetIntValue(v.i)
		} else {
			dp.SetDoubleValue(v.f)
		}
		return putAttributes(dp.Attributes(), in.Attributes)
	}
	typ := strings.ToLower(in.Type)
	if typ == "" {
		typ = TypeGauge
	}
	temporality := pmetric.AggregationTemporalityDelta
	switch strings.ToLower(in.Temporality) {
	case "", "delta":
	case "cumulative":
		temporality = pmetric.AggregationTemporalityCumulative
	default:
		return fmt.Errorf("temporality: must be delta or cumulative (got %q)", in.Temporality)
	}
	switch typ {
	case TypeGauge:
		return setNumber(m.SetEmptyGauge().DataPoints().AppendEmpty())
	case TypeCounter, TypeUpDownCounter:
		if typ == TypeCounter && v.float() < 0 {
			return fmt.Errorf("value: a counter cannot take a negative value (%v)", v.float())
		}
		s := m.SetEmptySum()
		s.SetIsMonotonic(typ == TypeCounter)
		s.SetAggregationTemporality(temporality)
		dp := s.DataPoints().AppendEmpty()
		if temporality == pmetric.AggregationTemporalityDelta {
			dp.SetStartTimestamp(ts)
		}
		return setNumber(dp)
	case TypeHistogram:
		h := m.SetEmptyHistogram()
		h.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
		dp := h.DataPoints().AppendEmpty()
		f := v.float()
		dp.SetStartTimestamp(ts)
		dp.SetTimestamp(ts)
		dp.SetCount(1)
		dp.SetSum(f)
		dp.SetMin(f)
		dp.SetMax(f)
		dp.ExplicitBounds().FromRaw(histogramBounds)
		counts := make([]uint64, len(histogramBounds)+1)
		counts[sort.SearchFloat64s(histogramBounds, f)]++
		dp.BucketCounts().FromRaw(counts)
		return putAttributes(dp.Attributes(), in.Attributes)
	}
	return fmt.Errorf("type: must be gauge, counter, updowncounter or histogram (got %q)", in.Type)
}

func addLog(ls plog.LogRecordSlice, in logIn, now time.Time) error {
	if isNull(in.Value) {
		return errors.New("value: required (the log message)")
	}
	ts, err := timestamp(in.Timestamp, now)
	if err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	lr := ls.AppendEmpty()
	lr.SetTimestamp(ts)
	lr.SetObservedTimestamp(pcommon.NewTimestampFromTime(now))
	level := strings.ToLower(in.Level)
	if level == "" {
		level = "info"
	}
	sev, ok := levels[level]
	if !ok {
		return fmt.Errorf("level: must be trace, debug, info, warn, error or fatal (got %q)", in.Level)
	}
	lr.SetSeverityNumber(sev)
	lr.SetSeverityText(strings.ToUpper(level))
	var body any
	if err := strictDecode(in.Value, &body); err != nil {
		return fmt.Errorf("value: %w", err)
	}
	if err := putValue(lr.Body(), body); err != nil {
		return fmt.Errorf("value: %w", err)
	}
	if in.Description != "" {
		lr.Attributes().PutStr("description", in.Description)
	}
	return putAttributes(lr.Attributes(), in.Attributes)
}

type num struct {
	isInt bool
	i     int64
	f     float64
}

func (n num) float() float64 {
	if n.isInt {
		return float64(n.i)
	}
	return n.f
}

// number reads a JSON number, or a string holding one.
func number(r json.RawMessage) (num, error) {
	if isNull(r) {
		return num{}, errors.New("required (a number)")
	}
	var v any
	if err := strictDecode(r, &v); err != nil {
		return num{}, err
	}
	s := ""
	switch x := v.(type) {
	case json.Number:
		s = x.String()
	case string:
		s = strings.TrimSpace(x)
	case bool:
		if x {
			return num{isInt: true, i: 1}, nil
		}
		return num{isInt: true}, nil
	default:
		return num{}, fmt.Errorf("must be a number (got %s)", r)
	}
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return num{isInt: true, i: i}, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return num{}, fmt.Errorf("must be a finite number (got %s)", r)
	}
	return num{f: f}, nil
}

// timestamp reads Unix nanoseconds (AIO) or an RFC 3339 string.
func timestamp(r json.RawMessage, now time.Time) (pcommon.Timestamp, error) {
	if isNull(r) {
		return pcommon.NewTimestampFromTime(now), nil
	}
	var v any
	if err := strictDecode(r, &v); err != nil {
		return 0, err
	}
	switch x := v.(type) {
	case json.Number:
		n, err := strconv.ParseInt(x.String(), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("must be Unix nanoseconds or an RFC 3339 time (got %s)", r)
		}
		return pcommon.Timestamp(n), nil
	case string:
		t, err := time.Parse(time.RFC3339Nano, x)
		if err != nil {
			return 0, fmt.Errorf("must be Unix nanoseconds or an RFC 3339 time (got %q)", x)
		}
		return pcommon.NewTimestampFromTime(t), nil
	}
	return 0, fmt.Errorf("must be Unix nanoseconds or an RFC 3339 time (got %s)", r)
}

// putAttributes reads AIO's [{"key": k, "value": v}, ...] or an object.
func putAttributes(m pcommon.Map, r json.RawMessage) error {
	if isNull(r) {
		return nil
	}
	var v any
	if err := strictDecode(r, &v); err != nil {
		return fmt.Errorf("attributes: %w", err)
	}
	switch x := v.(type) {
	case []any:
		for i, e := range x {
			kv, ok := e.(map[string]any)
			k, kok := kv["key"].(string)
			if !ok || !kok || k == "" {
				return fmt.Errorf("attributes[%d]: must be {\"key\": <string>, \"value\": <value>}", i)
			}
			if err := putValue(m.PutEmpty(k), kv["value"]); err != nil {
				return fmt.Errorf("attributes[%d].value: %w", i, err)
			}
		}
		return nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := putValue(m.PutEmpty(k), x[k]); err != nil {
				return fmt.Errorf("attributes.%s: %w", k, err)
			}
		}
		return nil
	}
	return errors.New("attributes: must be an array of {key, value} or an object")
}

// putValue stores a decoded JSON value as an OpenTelemetry value.
func putValue(dst pcommon.Value, v any) error {
	switch x := v.(type) {
	case nil:
		// An empty value.
	case string:
		dst.SetStr(x)
	case bool:
		dst.SetBool(x)
	case json.Number:
		if i, err := x.Int64(); err == nil {
			dst.SetInt(i)
		} else if f, err := x.Float64(); err == nil {
			dst.SetDouble(f)
		} else {
			return fmt.Errorf("number %s out of range", x)
		}
	case []any:
		s := dst.SetEmptySlice()
		for _, e := range x {
			if err := putValue(s.AppendEmpty(), e); err != nil {
				return err
			}
		}
	case map[string]any:
		mm := dst.SetEmptyMap()
		for k, e := range x {
			if err := putValue(mm.PutEmpty(k), e); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unsupported value %T", v)
	}
	return nil
}
