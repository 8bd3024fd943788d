package otel

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	"github.com/edgeport/edgeport/internal/testpeer/otlppeer"
	"github.com/edgeport/edgeport/internal/testwait"
)

func settings(t *testing.T, host string, mut func(*config.OTelEndpointSettings)) *config.OTelEndpointSettings {
	t.Helper()
	spec := &config.DataflowEndpointSpec{EndpointType: config.EndpointOpenTelemetry, OpenTelemetrySettings: &config.OTelEndpointSettings{Host: host}}
	if mut != nil {
		mut(spec.OpenTelemetrySettings)
	}
	obj := &config.Object{APIVersion: config.APIVersion, Kind: "DataflowEndpoint", Metadata: config.Metadata{Name: "o"}, Spec: spec}
	if err := config.Builtin().Check(obj); err != nil {
		t.Fatal(err)
	}
	return spec.OpenTelemetrySettings
}

func tokenSecret(t *testing.T) string {
	t.Helper()
	data := t.TempDir()
	if err := os.MkdirAll(filepath.Join(data, "secrets", "otel-token"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "secrets", "otel-token", "token"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return data
}

// The collector's own OTLP receiver (otlppeer) gets the metrics and logs of
// a batch in Azure IoT Operations' shape and in Edgeport's object shape,
// with headers and the bearer token from the secret, over OTLP/HTTP and
// OTLP/gRPC.
func TestSendToCollector(t *testing.T) {
	for _, proto := range []string{config.OTelProtocolHttp, config.OTelProtocolGrpc} {
		t.Run(proto, func(t *testing.T) {
			rcv := otlppeer.Start(t, otlppeer.Options{})
			host := rcv.GRPCAddr
			if proto == config.OTelProtocolHttp {
				host = rcv.HTTPURL()
			}
			data := tokenSecret(t)
			s := settings(t, host, func(s *config.OTelEndpointSettings) {
				s.Headers = map[string]string{"X-Site": "plant-1"}
				s.Authentication = &config.DataflowAuthentication{Method: config.AuthAccessToken, AccessTokenSettings: &config.SecretRef{SecretRef: "otel-token"}}
			})
			d, err := New(s, &config.DataflowDestination{DataDestination: "plant/${inputTopic.1}"}, Options{Dataflow: "plant", Env: stage.Env{DataDir: data}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.Close(context.Background()) })
			received := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
			batch := []*stage.Message{
				{SourceTopic: "line1/telemetry", Received: received, Payload: []byte(`{"metrics": [
					{"name": "temperature", "type": "gauge", "value": 72.5, "description": "boiler", "timestamp": 1754851200000000000,
					 "attributes": [{"key": "factoryId", "value": "factory1"}, {"key": "line", "value": 1}]},
					{"name": "parts", "type": "counter", "value": 3}
				], "logs": [{"value": "sensor malfunction", "level": "warn", "attributes": [{"key": "sensor", "value": "t1"}]}]}`)},
				{SourceTopic: "line2/telemetry", Received: received, Payload: []byte(`{"metrics": {
					"pressure": {"type": "histogram", "value": 7, "attributes": {"line": "2"}},
					"level": {"value": "41", "unit": "%", "timestamp": "2026-12-06T02:00:00Z"}}}`)},
			}
			if err := d.Send(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
			reqs := rcv.Requests()
			if len(reqs) != 2 {
				t.Fatalf("%d exports, want one of metrics and one of logs", len(reqs))
			}
			for _, r := range reqs {
				if got := r.Metadata["authorization"]; len(got) != 1 || got[0] != "Bearer s3cret" {
					t.Errorf("authorization %v", got)
				}
				if got := r.Metadata["x-site"]; len(got) != 1 || got[0] != "plant-1" {
					t.Errorf("x-site %v", got)
				}
			}
			byName := map[string]otlppeer.DataPoint{}
			for _, p := range rcv.DataPoints() {
				byName[p.Name] = p
				if p.Resource["edgeport.dataflow"] != "plant" || p.Resource["service.name"] != "edgeport" {
					t.Errorf("%s: resource %v", p.Name, p.Resource)
				}
			}
			if len(byName) != 4 {
				t.Fatalf("data points %v", byName)
			}
			tp := byName["temperature"]
			if tp.Type != "Gauge" || tp.Value != 72.5 || tp.TimeUnixNs != 1754851200000000000 || tp.Description != "boiler" ||
				tp.Attributes["factoryId"] != "factory1" || tp.Attributes["line"] != int64(1) {
				t.Errorf("temperature %+v", tp)
			}
			if p := byName["parts"]; p.Type != "Sum" || !p.Monotonic || p.Value != 3 || p.TimeUnixNs != uint64(received.UnixNano()) {
				t.Errorf("parts %+v", p)
			}
			if p := byName["pressure"]; p.Type != "Histogram" || p.Count != 1 || p.Value != 7 || p.Attributes["line"] != "2" {
				t.Errorf("pressure %+v", p)
			}
			if p := byName["level"]; p.Type != "Gauge" || p.Value != 41 || p.Unit != "%" ||
				p.TimeUnixNs != uint64(time.Date(2026, 12, 6, 2, 0, 0, 0, time.UTC).UnixNano()) {
				t.Errorf("level %+v", p)
			}
			logs := rcv.LogRecords()
			if len(logs) != 1 || logs[0].Body != "sensor malfunction" || logs[0].SeverityText != "WARN" || logs[0].Severity != 13 ||
				logs[0].Attributes["sensor"] != "t1" {
				t.Fatalf("logs %+v", logs)
			}
			// The scopes carry the expanded dataDestination.
			sm := reqs[0].Metrics.ResourceMetrics().At(0).ScopeMetrics()
			if reqs[0].IsLogs {
				sm = reqs[1].Metrics.ResourceMetrics().At(0).ScopeMetrics()
			}
			if sm.Len() != 2 || sm.At(0).Scope().Name() != "plant/line1" || sm.At(1).Scope().Name() != "plant/line2" {
				t.Errorf("scopes %d %q", sm.Len(), sm.At(0).Scope().Name())
			}
		})
	}
}

// The collector's refusals are classified as the OTLP specification says:
// a consumer that is temporarily failing (503 / Unavailable) and a stopped
// receiver are retried; a permanent refusal (400 / InvalidArgument) is not.
func TestCollectorRefusals(t *testing.T) {
	for _, proto := range []string{config.OTelProtocolHttp, config.OTelProtocolGrpc} {
		t.Run(proto, func(t *testing.T) {
			rcv := otlppeer.Start(t, otlppeer.Options{})
			host := rcv.GRPCAddr
			if proto == config.OTelProtocolHttp {
				host = rcv.HTTPURL()
			}
			d, err := New(settings(t, host, nil), &config.DataflowDestination{DataDestination: "s"}, Options{Dataflow: "f"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.Close(context.Background()) })
			msg := []*stage.Message{{SourceTopic: "t", Payload: []byte(`{"metrics": [{"name": "m", "type": "gauge", "value": 1}]}`)}}
			rcv.Fail(errors.New("queue is full"))
			if err := d.Send(context.Background(), msg); err == nil || errors.Is(err, stage.ErrPermanent) {
				t.Fatalf("failing consumer: %v, want a retryable error", err)
			}
			rcv.Fail(otlppeer.Permanent(errors.New("bad data")))
			if err := d.Send(context.Background(), msg); !errors.Is(err, stage.ErrPermanent) {
				t.Fatalf("permanent refusal: %v, want permanent", err)
			}
			rcv.Fail(nil)
			rcv.Stop()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := d.Send(ctx, msg); err == nil || errors.Is(err, stage.ErrPermanent) {
				t.Fatalf("stopped receiver: %v, want a retryable error", err)
			}
			rcv.Restart()
			// gRPC reconnects with backoff: the first sends may still fail.
			testwait.For(t, "a send accepted after the restart", func() bool { return d.Send(context.Background(), msg) == nil })
			if n := len(rcv.DataPoints()); n != 1 {
				t.Fatalf("%d data points accepted, want 1", n)
			}
		})
	}
}

// A partial success (the collector took the request but rejected some data
// points) rejects the batch permanently with the collector's message. The
// collector's OTLP receiver never answers with a partial success, so this
// is the one case served by a hand-written OTLP/HTTP server.
func TestPartialSuccess(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp := pmetricotlp.NewExportResponse()
		resp.PartialSuccess().SetRejectedDataPoints(1)
		resp.PartialSuccess().SetErrorMessage("name too long")
		b, _ := resp.MarshalProto()
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	d, err := New(settings(t, srv.URL, nil), &config.DataflowDestination{DataDestination: "s"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = d.Send(context.Background(), []*stage.Message{{Payload: []byte(`{"metrics": [{"name": "m", "value": 1}]}`)}})
	if !errors.Is(err, stage.ErrPermanent) || !strings.Contains(err.Error(), "rejected 1 items: name too long") {
		t.Fatalf("partial success: %v", err)
	}
}

// Messages that do not fit the shape are rejected permanently with the
// place of the fault, and add nothing.
func TestBadPayloads(t *testing.T) {
	for _, c := range []struct{ payload, err string }{
		{`not json`, "payload is not a JSON object"},
		{`{"temperature": 1}`, `payload has neither "metrics" nor "logs"`},
		{`{"metrics": [{"type": "gauge", "value": 1}]}`, "metrics[0]: name: required"},
		{`{"metrics": [{"name": "a", "value": 1}, {"name": "b", "value": "x"}]}`, `metrics[1]: value: must be a finite number (got "x")`},
		{`{"metrics": [{"name": "a", "type": "summary", "value": 1}]}`, `metrics[0]: type: must be gauge, counter, updowncounter or histogram (got "summary")`},
		{`{"metrics": [{"name": "a", "type": "counter", "value": -1}]}`, "metrics[0]: value: a counter cannot take a negative value (-1)"},
		{`{"metrics": [{"name": "a", "value": 1, "timestamp": "yesterday"}]}`, `metrics[0]: timestamp: must be Unix nanoseconds or an RFC 3339 time (got "yesterday")`},
		{`{"metrics": [{"name": "a", "value": 1, "attributes": [{"value": 1}]}]}`, `metrics[0]: attributes[0]: must be {"key": <string>, "value": <value>}`},
		{`{"metrics": 3}`, "metrics: must be an array of metric objects or an object of them by name"},
		{`{"logs": [{"level": "info"}]}`, "logs[0]: value: required (the log message)"},
		{`{"logs": [{"value": "x", "level": "loud"}]}`, `logs[0]: level: must be trace, debug, info, warn, error or fatal (got "loud")`},
	} {
		b := newBatch(nil, "s")
		err := b.add([]byte(c.payload), time.Now())
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: error %v, want %q", c.payload, err, c.err)
		}
		if b.nm != 0 || b.nl != 0 || b.ms.Len() != 0 {
			t.Errorf("%s: added %d metrics, %d logs", c.payload, b.nm, b.nl)
		}
	}
}

func TestTarget(t *testing.T) {
	for _, c := range []struct {
		host, protocol, tls   string
		wantProto, wantTarget string
	}{
		{"otel:4317", "", "", "grpc", "otel:4317"},
		{"otel:4318", "Http", "", "http", "http://otel:4318"},
		{"otel:4318", "Http", "Enabled", "http", "https://otel:4318"},
		{"http://otel:4318/prefix", "", "", "http", "http://otel:4318/prefix"},
		{"https://otel:4317", "Grpc", "Enabled", "grpc", "otel:4317"},
	} {
		s := settings(t, c.host, func(s *config.OTelEndpointSettings) {
			s.Protocol = c.protocol
			if c.tls != "" {
				s.TLS = &config.EndpointTLS{Mode: c.tls}
			}
		})
		p, target, _, err := Target(s)
		if err != nil || p != c.wantProto || target != c.wantTarget {
			t.Errorf("%s %s: %s %s %v, want %s %s", c.host, c.protocol, p, target, err, c.wantProto, c.wantTarget)
		}
	}
}

func FuzzConvert(f *testing.F) {
	f.Add([]byte(`{"metrics": [{"name": "t", "type": "histogram", "value": 3, "attributes": [{"key": "a", "value": [1, {"b": null}]}]}], "logs": [{"value": {"x": 1}}]}`))
	f.Add([]byte(`{"metrics": {"t": {"value": "1e3", "temporality": "cumulative", "type": "counter"}}}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		b := newBatch(map[string]string{"a": "b"}, "s")
		if err := b.add(p, time.Now()); err != nil {
			if b.nm != 0 || b.nl != 0 {
				t.Fatalf("error %v but added data", err)
			}
			return
		}
		if _, err := pmetricotlp.NewExportRequestFromMetrics(b.metrics).MarshalProto(); err != nil {
			t.Fatal(err)
		}
	})
}
