// Package testwait is the tests' one way to wait for something that
// happens on another goroutine: poll a condition until it holds or a
// deadline passes. Imported by tests only.
package testwait

import (
	"testing"
	"time"
)

// Timeout is how long For waits before it fails the test. It bounds a
// failing test, not a passing one: conditions normally hold in
// milliseconds, and a loaded CI machine must not turn them into failures.
const Timeout = 10 * time.Second

// For polls cond until it returns true, failing t (naming what it waited
// for) when Timeout passes first. Polls start 1 ms apart and back off to
// 20 ms, so a quick condition is seen quickly and a slow one costs little.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !Within(Timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", Timeout, what)
	}
}

// Within polls cond until it returns true or d passes, and reports
// whether it held. For tests that fail with more context than For gives.
func Within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	interval := time.Millisecond
	tick := time.NewTimer(interval)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
		interval = min(2*interval, 20*time.Millisecond)
		tick.Reset(interval)
	}
	return true
}
