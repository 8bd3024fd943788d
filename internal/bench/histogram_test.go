package bench

import (
	"math"
	"testing"
)

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name    string
		samples func(h *Histogram)
		q       float64
		want    int64
	}{
		{"exact small values", func(h *Histogram) {
			for v := int64(1); v <= 100; v++ {
				h.Record(v)
			}
		}, 0.5, 50},
		{"uniform 1..1e6 median", func(h *Histogram) {
			for v := int64(1); v <= 1_000_000; v++ {
				h.Record(v)
			}
		}, 0.5, 500_000},
		{"uniform 1..1e6 p99", func(h *Histogram) {
			for v := int64(1); v <= 1_000_000; v++ {
				h.Record(v)
			}
		}, 0.99, 990_000},
		{"uniform 1..1e6 p99.9", func(h *Histogram) {
			for v := int64(1); v <= 1_000_000; v++ {
				h.Record(v)
			}
		}, 0.999, 999_000},
		{"outlier is the max", func(h *Histogram) {
			for range 999 {
				h.Record(1000)
			}
			h.Record(5_000_000_000)
		}, 1, 5_000_000_000},
		{"p99 below a single outlier", func(h *Histogram) {
			for range 999 {
				h.Record(1000)
			}
			h.Record(5_000_000_000)
		}, 0.99, 1000},
		{"negative counts as zero", func(h *Histogram) { h.Record(-5) }, 0.5, 0},
		{"huge values", func(h *Histogram) { h.Record(math.MaxInt64) }, 0.5, math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHistogram()
			tt.samples(h)
			got := h.Quantile(tt.q)
			// Buckets are under 1/128 of their values wide.
			if diff := math.Abs(float64(got - tt.want)); diff > float64(tt.want)/128+1 {
				t.Errorf("Quantile(%v) = %d, want %d within 1/128", tt.q, got, tt.want)
			}
		})
	}
}

func TestHistogramBuckets(t *testing.T) {
	// Every value must land in a bucket whose range contains it, and bucket
	// ranges must be contiguous.
	prevHigh := int64(-1)
	for i := range histLen {
		hi := bucketHigh(i)
		if hi <= prevHigh && i < bucketOf(math.MaxInt64) {
			t.Fatalf("bucket %d high %d not above previous %d", i, hi, prevHigh)
		}
		if i <= bucketOf(math.MaxInt64) {
			if got := bucketOf(prevHigh + 1); got != i {
				t.Fatalf("value %d maps to bucket %d, want %d", prevHigh+1, got, i)
			}
			if got := bucketOf(hi); got != i {
				t.Fatalf("value %d maps to bucket %d, want %d", hi, got, i)
			}
		}
		prevHigh = hi
		if i == bucketOf(math.MaxInt64) {
			break
		}
	}
}

func TestHistogramMergeAndStats(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	for v := int64(1); v <= 10; v++ {
		a.Record(v)
		b.Record(v + 10)
	}
	a.Merge(b)
	a.Merge(NewHistogram())
	if a.Count() != 20 || a.Min() != 1 || a.Max() != 20 || a.Mean() != 10.5 {
		t.Fatalf("count %d min %d max %d mean %v, want 20 1 20 10.5", a.Count(), a.Min(), a.Max(), a.Mean())
	}
	if got := a.Quantile(0.5); got != 10 {
		t.Fatalf("median %d, want 10", got)
	}
	empty := NewHistogram()
	if empty.Quantile(0.5) != 0 || empty.Max() != 0 || empty.Min() != 0 || empty.Mean() != 0 {
		t.Fatal("empty histogram must report zeros")
	}
}

func TestHistogramRecordDoesNotAllocate(t *testing.T) {
	h := NewHistogram()
	v := int64(12345)
	if n := testing.AllocsPerRun(1000, func() { h.Record(v); v = v*7 + 3 }); n != 0 {
		t.Fatalf("Record allocates %v times per call", n)
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	h := NewHistogram()
	for i := 0; b.Loop(); i++ {
		h.Record(int64(i) * 977)
	}
}
