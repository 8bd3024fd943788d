package bench

import (
	"math"
	"math/bits"
)

// subBits sets the resolution: every power-of-two range is split into
// 1<<subBits linear buckets, so a bucket's width is under 1/128 of its
// values (relative error below 0.8%) at any magnitude.
const (
	subBits    = 7
	subCount   = 1 << subBits
	histLen    = (64-subBits)*subCount + subCount // covers every non-negative int64
	exactBelow = 2 * subCount                     // values below this have a bucket of their own
)

// Histogram records non-negative int64 samples (nanoseconds here) in
// logarithmic buckets, in the manner of HdrHistogram: recording is an index
// computation and an increment, with no allocation. It is not safe for
// concurrent use; give each goroutine its own and Merge them.
type Histogram struct {
	counts [histLen]uint64
	n      uint64
	sum    float64
	min    int64
	max    int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{min: math.MaxInt64} }

// bucketOf maps a value to its bucket: values below exactBelow map to
// themselves; above, the top subBits+1 significant bits select the bucket.
func bucketOf(v int64) int {
	if v < exactBelow {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits - 1
	return shift*subCount + int(uint64(v)>>shift)
}

// bucketHigh is the largest value that maps to bucket i.
func bucketHigh(i int) int64 {
	if i < exactBelow {
		return int64(i)
	}
	shift := i/subCount - 1
	sub := int64(i - shift*subCount)
	return (sub+1)<<shift - 1
}

// Record adds one sample; negative samples (clock steps) count as zero.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// Merge adds every sample of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count is the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest sample, exactly; 0 when empty.
func (h *Histogram) Max() int64 { return h.max }

// Min is the smallest sample, exactly; 0 when empty.
func (h *Histogram) Min() int64 {
	if h.n == 0 {
		return 0
	}
	return h.min
}

// Mean is the exact mean of the samples; 0 when empty.
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// Quantile returns the value at quantile q (0..1): the upper bound of the
// bucket holding the sample of that rank, clamped to the exact extremes so
// that Quantile(1) is Max. 0 when empty.
func (h *Histogram) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	rank = min(rank, h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(max(bucketHigh(i), h.min), h.max)
		}
	}
	return h.max
}
