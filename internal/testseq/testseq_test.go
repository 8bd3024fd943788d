package testseq

import (
	"strings"
	"testing"
)

func TestInOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		seqs []int
		n    int
		err  string
	}{
		{"exact", []int{0, 1, 2}, 3, ""},
		{"resent suffix", []int{0, 1, 2, 1, 2}, 3, ""},
		{"probes first", []int{-1, -1, 0, 1}, 2, ""},
		{"gap", []int{0, 2, 1}, 3, "2 arrived before 1"},
		{"missing tail", []int{0, 1}, 3, "0..1 arrived in order, want 0..2"},
		{"nothing", nil, 1, "0..-1 arrived in order, want 0..0"},
	} {
		err := InOrder(tc.seqs, tc.n)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: InOrder(%v, %d) = %v, want %q", tc.name, tc.seqs, tc.n, err, tc.err)
		}
	}
}
