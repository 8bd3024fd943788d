package otlp

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeport/edgeport/internal/testpeer/otlppeer"
	"github.com/edgeport/edgeport/internal/testwait"
)

// A registry's counter, gauge, histogram and summary arrive at the
// collector's own OTLP receiver with their names, labels and values; log
// records with groups and attributes arrive too, and records logged while
// the receiver is stopped are kept and delivered once it is back.
func TestPusherToCollector(t *testing.T) {
	rcv := otlppeer.Start(t, otlppeer.Options{})
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_events_total", Help: "events"}, []string{"kind"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x_depth", Help: "depth"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x_latency_seconds", Help: "latency", Buckets: []float64{0.1, 1}})
	s := prometheus.NewSummary(prometheus.SummaryOpts{Name: "x_size_bytes", Help: "size", Objectives: map[float64]float64{0.5: 0.05}})
	reg.MustRegister(c, g, h, s)
	c.WithLabelValues("a").Add(3)
	g.Set(7)
	h.Observe(0.05)
	h.Observe(0.5)
	h.Observe(5)
	s.Observe(10)

	p := NewPusher(reg, map[string]string{"service.name": "t"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := p.Configure(&PushConfig{Options: Options{Protocol: ProtocolHTTP, Endpoint: rcv.HTTPURL()}, Interval: time.Hour, Logs: true, LogLevel: slog.LevelInfo}); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	testwait.For(t, "metrics pushed", func() bool { return len(rcv.DataPoints()) >= 4 })
	by := map[string]otlppeer.DataPoint{}
	for _, dp := range rcv.DataPoints() {
		by[dp.Name] = dp
	}
	if d := by["x_events_total"]; d.Type != "Sum" || !d.Monotonic || d.Value != 3 || d.Attributes["kind"] != "a" || d.Description != "events" {
		t.Errorf("counter %+v", d)
	}
	if d := by["x_depth"]; d.Type != "Gauge" || d.Value != 7 {
		t.Errorf("gauge %+v", d)
	}
	if d := by["x_latency_seconds"]; d.Type != "Histogram" || d.Count != 3 || d.Value != 5.55 {
		t.Errorf("histogram %+v", d)
	}
	if d := by["x_size_bytes"]; d.Type != "Summary" || d.Count != 1 || d.Value != 10 {
		t.Errorf("summary %+v", d)
	}
	// Bucket counts: OTLP's are per bucket, Prometheus's cumulative.
	for _, r := range rcv.Requests() {
		if r.IsLogs {
			continue
		}
		ms := r.Metrics.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
		for i := range ms.Len() {
			if ms.At(i).Name() == "x_latency_seconds" {
				dp := ms.At(i).Histogram().DataPoints().At(0)
				if got := dp.BucketCounts().AsRaw(); len(got) != 3 || got[0] != 1 || got[1] != 1 || got[2] != 1 {
					t.Errorf("bucket counts %v, bounds %v", got, dp.ExplicitBounds().AsRaw())
				}
			}
		}
	}

	log := slog.New(p.Handler(slog.NewTextHandler(io.Discard, nil))).With("component", "broker").WithGroup("req")
	log.Info("hello", "id", 7, slog.Group("peer", "addr", "1.2.3.4"))
	log.Debug("not exported")
	testwait.For(t, "log record pushed", func() bool {
		for _, l := range rcv.LogRecords() {
			if l.Body == "hello" && l.Attributes["component"] == "broker" && l.Attributes["req.id"] == int64(7) &&
				l.Attributes["req.peer.addr"] == "1.2.3.4" && l.Severity == 9 {
				return true
			}
		}
		return false
	})
	rcv.Stop()
	log.Warn("during the outage")
	rcv.Restart()
	testwait.For(t, "the outage's record delivered afterwards", func() bool {
		for _, l := range rcv.LogRecords() {
			if l.Body == "during the outage" {
				return true
			}
		}
		return false
	})
	for _, l := range rcv.LogRecords() {
		if l.Body == "not exported" {
			t.Fatal("a debug record was exported at level info")
		}
	}
}
