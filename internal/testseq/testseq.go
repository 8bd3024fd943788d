// Package testseq checks how numbered test messages arrived: at least once,
// the first arrivals in the order they were sent. Imported by tests only.
package testseq

import (
	"fmt"
	"testing"
)

// InOrder reports whether the first arrivals in seqs are exactly 0..n-1 in
// sequence. Duplicates (a resent suffix) and negative numbers (probes sent
// before the numbered run) are allowed; a gap or an inversion is not.
func InOrder(seqs []int, n int) error {
	next := 0
	for _, s := range seqs {
		switch {
		case s == next:
			next++
		case s > next:
			return fmt.Errorf("%d arrived before %d: order or loss", s, next)
		}
	}
	if next != n {
		return fmt.Errorf("0..%d arrived in order, want 0..%d", next-1, n-1)
	}
	return nil
}

// CheckInOrder fails t unless InOrder holds.
func CheckInOrder(t testing.TB, seqs []int, n int) {
	t.Helper()
	if err := InOrder(seqs, n); err != nil {
		t.Fatal(err)
	}
}
