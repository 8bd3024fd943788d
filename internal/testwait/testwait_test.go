package testwait

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestWithin(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 5 {
			n.Add(1)
		}
	}()
	For(t, "five increments", func() bool { return n.Load() == 5 })
	polls := 0
	if Within(30*time.Millisecond, func() bool { polls++; return false }) {
		t.Fatal("Within reported a condition that never held")
	}
	if polls < 2 {
		t.Fatalf("polled %d times in 30ms, want several", polls)
	}
}
