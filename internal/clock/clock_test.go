package clock

import (
	"slices"
	"testing"
	"time"
)

func TestFakeFiresInDeadlineOrder(t *testing.T) {
	start := time.Unix(1000, 0)
	f := NewFake(start)
	var got []string
	var at []time.Duration
	rec := func(name string) func() {
		return func() { got = append(got, name); at = append(at, f.Now().Sub(start)) }
	}
	f.AfterFunc(3*time.Second, rec("c"))
	f.AfterFunc(time.Second, rec("a"))
	f.AfterFunc(time.Second, rec("a2")) // same deadline: arming order
	stopped := f.AfterFunc(2*time.Second, rec("stopped"))
	f.AfterFunc(10*time.Second, rec("later"))
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop: want true once, then false")
	}
	if f.Pending() != 4 {
		t.Fatalf("Pending %d, want 4", f.Pending())
	}
	f.AfterFunc(time.Second+500*time.Millisecond, func() {
		// A callback may arm another timer; due within the same Advance, it fires in it.
		f.AfterFunc(time.Second, rec("chained"))
	})
	f.Advance(3 * time.Second)
	if want := []string{"a", "a2", "chained", "c"}; !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	if want := []time.Duration{time.Second, time.Second, 2500 * time.Millisecond, 3 * time.Second}; !slices.Equal(at, want) {
		t.Fatalf("clock during callbacks %v, want %v", at, want)
	}
	if f.Now() != start.Add(3*time.Second) || f.Pending() != 1 {
		t.Fatalf("after Advance: now +%v, %d pending", f.Now().Sub(start), f.Pending())
	}
}

func TestFakeZeroDurationFiresOnNextAdvance(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	fired := false
	tm := f.AfterFunc(0, func() { fired = true })
	if fired {
		t.Fatal("fired before Advance")
	}
	f.Advance(0)
	if !fired || tm.Stop() {
		t.Fatal("a zero-duration timer must fire at Advance(0), and Stop must then report false")
	}
}

func TestRealAfterFunc(t *testing.T) {
	done := make(chan struct{})
	Or(nil).AfterFunc(time.Millisecond, func() { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("real timer did not fire")
	}
}
