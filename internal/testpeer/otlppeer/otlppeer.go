// Package otlppeer runs the OpenTelemetry Collector's own OTLP receiver
// (go.opentelemetry.io/collector/receiver/otlpreceiver) in-process as a test peer.
//
// The receiver is the collector's production code, not a look-alike: it
// decodes OTLP/HTTP (protobuf and JSON) and OTLP/gRPC exactly as a deployed
// collector does and answers with the collector's status codes. Behind it
// sits a recording consumer that can be told to fail, and the receiver can
// be stopped and started again on the same ports to stage an outage.
// Imported by tests only.
package otlppeer

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/edgeport/edgeport/internal/testserve"
	"go.opentelemetry.io/collector/client"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configtls"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
)

// Options configure the receiver.
type Options struct {
	// CertFile and KeyFile turn TLS on for both protocols.
	CertFile, KeyFile string
	// ClientCAFile, with TLS, requires client certificates signed by it.
	ClientCAFile string
}

// Request is one export the receiver accepted, with the request's
// metadata (HTTP headers or gRPC metadata, keys in lower case).
type Request struct {
	Metrics  pmetric.Metrics // set for a metrics export
	Logs     plog.Logs       // set for a logs export
	IsLogs   bool
	Metadata map[string][]string
}

// Receiver is a running (or stopped) collector OTLP receiver.
type Receiver struct {
	t    testing.TB
	opts Options
	// HTTPAddr and GRPCAddr are host:port of the two listeners.
	HTTPAddr, GRPCAddr string

	mu      sync.Mutex // guards the fields below
	got     []Request
	fail    error // returned by the consumer while set
	metrics receiver.Metrics
	logs    receiver.Logs
}

// Start starts the receiver on two free loopback ports; t.Cleanup stops it.
func Start(t testing.TB, opts Options) *Receiver {
	t.Helper()
	r := &Receiver{t: t, opts: opts, HTTPAddr: freeAddr(t), GRPCAddr: freeAddr(t)}
	r.Restart()
	t.Cleanup(r.Stop)
	return r
}

// freeAddr finds a free loopback port. The collector's receiver binds its
// own listener from an address and does not report the port it got, so
// the port is one testserve.FreePort found free.
func freeAddr(t testing.TB) string { return testserve.FreeAddr(t) }

// HTTPURL is the base URL for OTLP/HTTP exporters (http or https).
func (r *Receiver) HTTPURL() string {
	if r.opts.CertFile != "" {
		return "https://" + r.HTTPAddr
	}
	return "http://" + r.HTTPAddr
}

func (r *Receiver) config() *otlpreceiver.Config {
	f := otlpreceiver.NewFactory()
	cfg := f.CreateDefaultConfig().(*otlpreceiver.Config)
	grpc := cfg.Protocols.GRPC.GetOrInsertDefault()
	grpc.NetAddr.Endpoint = r.GRPCAddr
	grpc.IncludeMetadata = true
	http := cfg.Protocols.HTTP.GetOrInsertDefault()
	http.ServerConfig.NetAddr.Endpoint = r.HTTPAddr
	http.ServerConfig.IncludeMetadata = true
	if r.opts.CertFile != "" {
		tls := configtls.NewDefaultServerConfig()
		tls.CertFile, tls.KeyFile = r.opts.CertFile, r.opts.KeyFile
		tls.ClientCAFile = r.opts.ClientCAFile
		grpc.TLS = configoptional.Some(tls)
		http.ServerConfig.TLS = configoptional.Some(tls)
	}
	return cfg
}

// Restart starts the receiver again (after Stop) on the same ports.
func (r *Receiver) Restart() {
	r.t.Helper()
	f := otlpreceiver.NewFactory()
	cfg := r.config()
	ctx := context.Background()
	set := receivertest.NewNopSettings(f.Type())
	mc, err := consumer.NewMetrics(func(ctx context.Context, md pmetric.Metrics) error {
		return r.record(ctx, Request{Metrics: md})
	})
	if err != nil {
		r.t.Fatal(err)
	}
	lc, err := consumer.NewLogs(func(ctx context.Context, ld plog.Logs) error {
		return r.record(ctx, Request{Logs: ld, IsLogs: true})
	})
	if err != nil {
		r.t.Fatal(err)
	}
	// The factory shares one receiver (and its listeners) between the
	// signals created from the same config pointer.
	m, err := f.CreateMetrics(ctx, set, cfg, mc)
	if err != nil {
		r.t.Fatal(err)
	}
	l, err := f.CreateLogs(ctx, set, cfg, lc)
	if err != nil {
		r.t.Fatal(err)
	}
	host := componenttest.NewNopHost()
	if err := m.Start(ctx, host); err != nil {
		r.t.Fatal(err)
	}
	if err := l.Start(ctx, host); err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.metrics, r.logs = m, l
	r.mu.Unlock()
}

// Stop shuts the receiver down: its ports refuse connections until
// Restart. Stopping a stopped receiver does nothing.
func (r *Receiver) Stop() {
	r.mu.Lock()
	m, l := r.metrics, r.logs
	r.metrics, r.logs = nil, nil
	r.mu.Unlock()
	if m == nil {
		return
	}
	ctx := context.Background()
	err := errors.Join(m.Shutdown(ctx), l.Shutdown(ctx))
	if err != nil {
		r.t.Errorf("stopping the OTLP receiver: %v", err)
	}
}

// Fail makes the consumer behind the receiver refuse every export with
// err until Fail(nil): a plain error is retryable (the receiver answers
// 503 Unavailable / gRPC Unavailable), one wrapped with Permanent is not
// (400 Bad Request / gRPC InvalidArgument).
func (r *Receiver) Fail(err error) {
	r.mu.Lock()
	r.fail = err
	r.mu.Unlock()
}

// Permanent wraps err as the collector's permanent consumer error.
func Permanent(err error) error { return consumererror.NewPermanent(err) }

func (r *Receiver) record(ctx context.Context, req Request) error {
	info := client.FromContext(ctx)
	req.Metadata = map[string][]string{}
	for k := range info.Metadata.Keys() {
		req.Metadata[k] = info.Metadata.Get(k)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	// The receiver reuses nothing after the consumer returns, but copy so
	// the recording is independent of the pipeline.
	if req.IsLogs {
		c := plog.NewLogs()
		req.Logs.CopyTo(c)
		req.Logs = c
	} else {
		c := pmetric.NewMetrics()
		req.Metrics.CopyTo(c)
		req.Metrics = c
	}
	r.got = append(r.got, req)
	return nil
}

// Requests returns the exports accepted so far.
func (r *Receiver) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.got...)
}

// DataPoint is one metric data point flattened for assertions.
type DataPoint struct {
	Name, Type  string // Type: Gauge, Sum, Histogram, Summary
	Monotonic   bool
	Value       float64 // gauge or sum value; histogram/summary sum
	Count       uint64  // histogram/summary count
	Attributes  map[string]any
	Resource    map[string]any
	TimeUnixNs  uint64
	Description string
	Unit        string
}

// DataPoints flattens every accepted metrics export.
func (r *Receiver) DataPoints() []DataPoint {
	var out []DataPoint
	for _, req := range r.Requests() {
		if req.IsLogs {
			continue
		}
		rms := req.Metrics.ResourceMetrics()
		for i := range rms.Len() {
			rm := rms.At(i)
			res := rm.Resource().Attributes().AsRaw()
			sms := rm.ScopeMetrics()
			for j := range sms.Len() {
				ms := sms.At(j).Metrics()
				for k := range ms.Len() {
					out = append(out, flatten(ms.At(k), res)...)
				}
			}
		}
	}
	return out
}

func flatten(m pmetric.Metric, res map[string]any) []DataPoint {
	base := DataPoint{Name: m.Name(), Type: m.Type().String(), Resource: res, Description: m.Description(), Unit: m.Unit()}
	var out []DataPoint
	num := func(dps pmetric.NumberDataPointSlice) {
		for i := range dps.Len() {
			dp := dps.At(i)
			p := base
			p.Attributes = dp.Attributes().AsRaw()
			p.TimeUnixNs = uint64(dp.Timestamp())
			if dp.ValueType() == pmetric.NumberDataPointValueTypeInt {
				p.Value = float64(dp.IntValue())
			} else {
				p.Value = dp.DoubleValue()
			}
			out = append(out, p)
		}
	}
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		num(m.Gauge().DataPoints())
	case pmetric.MetricTypeSum:
		base.Monotonic = m.Sum().IsMonotonic()
		num(m.Sum().DataPoints())
	case pmetric.MetricTypeHistogram:
		dps := m.Histogram().DataPoints()
		for i := range dps.Len() {
			dp := dps.At(i)
			p := base
			p.Attributes = dp.Attributes().AsRaw()
			p.TimeUnixNs = uint64(dp.Timestamp())
			p.Value, p.Count = dp.Sum(), dp.Count()
			out = append(out, p)
		}
	case pmetric.MetricTypeSummary:
		dps := m.Summary().DataPoints()
		for i := range dps.Len() {
			dp := dps.At(i)
			p := base
			p.Attributes = dp.Attributes().AsRaw()
			p.TimeUnixNs = uint64(dp.Timestamp())
			p.Value, p.Count = dp.Sum(), dp.Count()
			out = append(out, p)
		}
	}
	return out
}

// LogRecord is one log record flattened for assertions.
type LogRecord struct {
	Body         string
	SeverityText string
	Severity     int32
	Attributes   map[string]any
	Resource     map[string]any
	TimeUnixNs   uint64
}

// LogRecords flattens every accepted logs export.
func (r *Receiver) LogRecords() []LogRecord {
	var out []LogRecord
	for _, req := range r.Requests() {
		if !req.IsLogs {
			continue
		}
		rls := req.Logs.ResourceLogs()
		for i := range rls.Len() {
			rl := rls.At(i)
			res := rl.Resource().Attributes().AsRaw()
			sls := rl.ScopeLogs()
			for j := range sls.Len() {
				lrs := sls.At(j).LogRecords()
				for k := range lrs.Len() {
					lr := lrs.At(k)
					out = append(out, LogRecord{
						Body: lr.Body().AsString(), SeverityText: lr.SeverityText(), Severity: int32(lr.SeverityNumber()),
						Attributes: lr.Attributes().AsRaw(), Resource: res, TimeUnixNs: uint64(lr.Timestamp()),
					})
				}
			}
		}
	}
	return out
}

var _ component.Host = componenttest.NewNopHost()
