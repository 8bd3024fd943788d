package portal

import (
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/telemetry"
)

// Sample is one point of the overview's charts.
type Sample struct {
	Time        time.Time `json:"t"`
	Connections int64     `json:"connections"`
	// Message rates over the interval before Time, in messages per second.
	InRate  float64 `json:"inRate"`
	OutRate float64 `json:"outRate"`
	// SelfTestMs is the last self-test's publish-to-delivery latency in
	// milliseconds; nil when the probe is disabled or has not run.
	SelfTestMs *float64 `json:"selfTestMs"`
	// StorageBytes is the store's disk use; nil without a store.
	StorageBytes *int64 `json:"storageBytes"`
}

// history keeps an hour of samples in a ring and wakes the live views
// when a new one arrives.
type history struct {
	size int

	mu      sync.Mutex // guards the fields below
	ring    []Sample
	next    int
	changed chan struct{} // closed and replaced at each new sample
	prevIn  uint64
	prevOut uint64
	prevAt  time.Time
}

func newHistory(interval time.Duration) *history {
	n := int(time.Hour / interval)
	return &history{size: n, ring: make([]Sample, 0, n), changed: make(chan struct{})}
}

// take records a sample of st (and the store's use) at now.
func (h *history) take(now time.Time, st telemetry.Status, storage *int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := Sample{Time: now.UTC(), Connections: st.Broker.ConnectedSessions, StorageBytes: storage}
	if !h.prevAt.IsZero() {
		if dt := now.Sub(h.prevAt).Seconds(); dt > 0 {
			// Counters only grow; a smaller value is a new broker.
			if st.Broker.PublishesReceived >= h.prevIn {
				s.InRate = float64(st.Broker.PublishesReceived-h.prevIn) / dt
			}
			if st.Broker.PublishesSent >= h.prevOut {
				s.OutRate = float64(st.Broker.PublishesSent-h.prevOut) / dt
			}
		}
	}
	h.prevIn, h.prevOut, h.prevAt = st.Broker.PublishesReceived, st.Broker.PublishesSent, now
	if p := st.SelfTest; p != nil && p.Runs > 0 {
		ms := p.LastLatencySeconds * 1000
		s.SelfTestMs = &ms
	}
	if len(h.ring) < h.size {
		h.ring = append(h.ring, s)
	} else {
		h.ring[h.next] = s
		h.next = (h.next + 1) % h.size
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// samples returns the samples, oldest first, and a channel closed when
// the next one arrives.
func (h *history) samples() ([]Sample, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Sample, 0, len(h.ring))
	out = append(out, h.ring[h.next:]...)
	out = append(out, h.ring[:h.next]...)
	return out, h.changed
}

// latest returns the newest sample (ok false before the first) and the
// channel closed when the next one arrives.
func (h *history) latest() (Sample, bool, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.ring) == 0 {
		return Sample{}, false, h.changed
	}
	i := len(h.ring) - 1
	if len(h.ring) == h.size {
		i = (h.next + h.size - 1) % h.size
	}
	return h.ring[i], true, h.changed
}
