package stage

import (
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/config"
)

func TestBatchingOf(t *testing.T) {
	n := func(v int) *int { return &v }
	for _, tc := range []struct {
		name string
		in   config.Batching
		want Batching
	}{
		{"enabled", config.Batching{LatencyMs: n(5), MaxMessages: n(100), MaxBytes: n(1 << 20)},
			Batching{MaxMessages: 100, MaxBytes: 1 << 20, Latency: 5 * time.Millisecond}},
		{"disabled", config.Batching{Mode: "Disabled", LatencyMs: n(5), MaxMessages: n(100), MaxBytes: n(1 << 20)},
			Batching{MaxMessages: 1}},
		{"one message", config.Batching{LatencyMs: n(5), MaxMessages: n(1), MaxBytes: n(1 << 20)},
			Batching{MaxMessages: 1}},
	} {
		if got := BatchingOf(tc.in); got != tc.want {
			t.Errorf("%s: BatchingOf = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
