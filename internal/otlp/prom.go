package otlp

import (
	"math"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// FromPrometheus converts gathered metric families into OTLP metrics with
// the same names, help texts and labels (as attributes), so that a
// dashboard reads the same series from /metrics and from a collector.
// Counters become monotonic cumulative sums starting at start, gauges and
// untyped metrics gauges, histograms cumulative histograms (the +Inf
// bucket is implicit in OTLP), summaries summaries.
func FromPrometheus(mfs []*dto.MetricFamily, sm pmetric.ScopeMetrics, start, now time.Time) {
	st, ts := pcommon.NewTimestampFromTime(start), pcommon.NewTimestampFromTime(now)
	for _, mf := range mfs {
		if len(mf.GetMetric()) == 0 {
			continue
		}
		m := sm.Metrics().AppendEmpty()
		m.SetName(mf.GetName())
		m.SetDescription(mf.GetHelp())
		at := func(pm *dto.Metric) pcommon.Timestamp {
			if pm.TimestampMs != nil {
				return pcommon.NewTimestampFromTime(time.UnixMilli(pm.GetTimestampMs()))
			}
			return ts
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			s := m.SetEmptySum()
			s.SetIsMonotonic(true)
			s.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
			for _, pm := range mf.GetMetric() {
				dp := s.DataPoints().AppendEmpty()
				labels(dp.Attributes(), pm)
				dp.SetStartTimestamp(st)
				dp.SetTimestamp(at(pm))
				dp.SetDoubleValue(pm.GetCounter().GetValue())
			}
		case dto.MetricType_GAUGE, dto.MetricType_UNTYPED:
			g := m.SetEmptyGauge()
			for _, pm := range mf.GetMetric() {
				dp := g.DataPoints().AppendEmpty()
				labels(dp.Attributes(), pm)
				dp.SetTimestamp(at(pm))
				if mf.GetType() == dto.MetricType_GAUGE {
					dp.SetDoubleValue(pm.GetGauge().GetValue())
				} else {
					dp.SetDoubleValue(pm.GetUntyped().GetValue())
				}
			}
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			h := m.SetEmptyHistogram()
			h.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
			for _, pm := range mf.GetMetric() {
				ph := pm.GetHistogram()
				dp := h.DataPoints().AppendEmpty()
				labels(dp.Attributes(), pm)
				dp.SetStartTimestamp(st)
				dp.SetTimestamp(at(pm))
				dp.SetCount(ph.GetSampleCount())
				dp.SetSum(ph.GetSampleSum())
				var bounds []float64
				var counts []uint64
				var prev uint64
				for _, b := range ph.GetBucket() {
					if math.IsInf(b.GetUpperBound(), 1) {
						continue
					}
					bounds = append(bounds, b.GetUpperBound())
					c := b.GetCumulativeCount()
					counts = append(counts, c-min(prev, c))
					prev = c
				}
				// The last OTLP bucket is (last bound, +Inf).
				counts = append(counts, ph.GetSampleCount()-min(prev, ph.GetSampleCount()))
				dp.ExplicitBounds().FromRaw(bounds)
				dp.BucketCounts().FromRaw(counts)
			}
		case dto.MetricType_SUMMARY:
			s := m.SetEmptySummary()
			for _, pm := range mf.GetMetric() {
				ps := pm.GetSummary()
				dp := s.DataPoints().AppendEmpty()
				labels(dp.Attributes(), pm)
				dp.SetStartTimestamp(st)
				dp.SetTimestamp(at(pm))
				dp.SetCount(ps.GetSampleCount())
				dp.SetSum(ps.GetSampleSum())
				for _, q := range ps.GetQuantile() {
					qv := dp.QuantileValues().AppendEmpty()
					qv.SetQuantile(q.GetQuantile())
					qv.SetValue(q.GetValue())
				}
			}
		}
	}
}

func labels(m pcommon.Map, pm *dto.Metric) {
	for _, l := range pm.GetLabel() {
		m.PutStr(l.GetName(), l.GetValue())
	}
}
