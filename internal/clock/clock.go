// Package clock is the time source of the broker's and the state store's
// timers: the real clock in production, a Fake that tests advance by hand.
package clock

import (
	"sync"
	"time"
)

// Clock tells the time and calls functions later. Components take one in
// their options (nil means Real) and use it for every deadline a test
// would otherwise have to wait out: session expiry, will delay, message
// and key expiry, credential expiry.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f on its own goroutine (Real) or on the goroutine
	// that advances the clock past d (Fake), unless the Timer is stopped
	// first.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call; it reports false when the call already
	// started or the timer was stopped before.
	Stop() bool
}

// Real returns the system clock.
func Real() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Or returns c, or Real when c is nil.
func Or(c Clock) Clock {
	if c == nil {
		return Real()
	}
	return c
}

// Fake is a Clock that moves only when told to. Its timers fire inside
// Advance, in deadline order, on the caller's goroutine and without the
// Fake's lock held, so a callback may use the clock. A timer armed with a
// non-positive duration fires at the next Advance (Advance(0) included).
type Fake struct {
	mu     sync.Mutex // guards the fields below
	now    time.Time
	timers []*fakeTimer // armed, in no particular order
	seq    uint64       // arming order, to break deadline ties
}

// NewFake returns a Fake clock showing now.
func NewFake(now time.Time) *Fake { return &Fake{now: now} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// AfterFunc arms a timer that fires when the clock is advanced d or more.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	t := &fakeTimer{f: f, at: f.now.Add(d), seq: f.seq, fn: fn}
	f.timers = append(f.timers, t)
	return t
}

// Advance moves the clock d forward and runs every timer that is due,
// earliest first; the clock shows each timer's deadline while it runs, and
// now+d at the end. Timers armed by a callback fire in the same Advance
// when they are due by then.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	end := f.now.Add(d)
	f.mu.Unlock()
	for {
		f.mu.Lock()
		next := -1
		for i, t := range f.timers {
			if t.at.After(end) {
				continue
			}
			if next < 0 || t.at.Before(f.timers[next].at) || t.at.Equal(f.timers[next].at) && t.seq < f.timers[next].seq {
				next = i
			}
		}
		if next < 0 {
			if end.After(f.now) {
				f.now = end
			}
			f.mu.Unlock()
			return
		}
		t := f.timers[next]
		f.timers = append(f.timers[:next], f.timers[next+1:]...)
		if t.at.After(f.now) {
			f.now = t.at
		}
		f.mu.Unlock()
		t.fn()
	}
}

// Pending returns how many timers are armed: tests wait for the broker to
// arm the timer they mean to fire before they advance.
func (f *Fake) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

type fakeTimer struct {
	f   *Fake
	at  time.Time
	seq uint64
	fn  func()
}

func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	for i, x := range t.f.timers {
		if x == t {
			t.f.timers = append(t.f.timers[:i], t.f.timers[i+1:]...)
			return true
		}
	}
	return false
}
