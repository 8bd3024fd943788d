// Package testlog holds what tests need to read what a component logged.
// It is imported by tests only.
package testlog

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that a logger and a test may use at once: the
// component writes from its goroutines while the test polls String.
type Buffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
