// Package lograte keeps an error that repeats (a full disk, a port that
// cannot be bound) from flooding the log: the first occurrence is logged,
// then at most one line per interval, saying how many were left out.
package lograte

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Limiter logs one message (per key) at most once per interval. Its
// methods are safe for concurrent use.
type Limiter struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time // injected by tests

	mu   sync.Mutex // guards keys
	keys map[string]*state
}

type state struct {
	last       time.Time
	suppressed int
}

// maxKeys bounds the keys a Limiter remembers; past it the table starts
// over (keys are a handful of fixed strings in practice).
const maxKeys = 1024

// New returns a Limiter that logs to log at most once per interval per key.
func New(log *slog.Logger, interval time.Duration) *Limiter {
	return &Limiter{log: log, interval: interval, now: time.Now, keys: make(map[string]*state)}
}

// Log logs msg at level unless a line for key was logged less than the
// interval ago; then it only counts it. A line that follows left-out ones
// carries their number as "suppressed". It reports whether it logged.
func (l *Limiter) Log(level slog.Level, key, msg string, args ...any) bool {
	now := l.now()
	l.mu.Lock()
	st := l.keys[key]
	if st == nil {
		if len(l.keys) >= maxKeys {
			clear(l.keys)
		}
		st = &state{}
		l.keys[key] = st
	} else if now.Sub(st.last) < l.interval {
		st.suppressed++
		l.mu.Unlock()
		return false
	}
	n := st.suppressed
	st.last, st.suppressed = now, 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Log(context.Background(), level, msg, args...)
	return true
}

// Suppressed returns how many lines for key were left out since the last
// one logged.
func (l *Limiter) Suppressed(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.keys[key]; st != nil {
		return st.suppressed
	}
	return 0
}

// Reset forgets key, so that its next occurrence is logged at once: the
// condition it reported has ended (the disk has room again).
func (l *Limiter) Reset(key string) {
	l.mu.Lock()
	delete(l.keys, key)
	l.mu.Unlock()
}
