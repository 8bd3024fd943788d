package wire

import (
	"encoding/binary"
	"testing"
)

func TestString(t *testing.T) {
	long := binary.AppendUvarint(nil, 1<<62)
	tests := []struct {
		name string
		in   []byte
		want string
		rest string
		ok   bool
	}{
		{"empty string", []byte{0, 'x'}, "", "x", true},
		{"string then rest", append([]byte{3}, "abcde"...), "abc", "de", true},
		{"whole input", append([]byte{2}, "ab"...), "ab", "", true},
		{"no input", nil, "", "", false},
		{"length past the end", append([]byte{4}, "abc"...), "", "\x04abc", false},
		{"huge length", long, "", string(long), false},
		{"truncated uvarint", []byte{0x80}, "", "\x80", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, rest, ok := String(tt.in)
			if s != tt.want || string(rest) != tt.rest || ok != tt.ok {
				t.Fatalf("String(%q) = %q, %q, %v; want %q, %q, %v", tt.in, s, rest, ok, tt.want, tt.rest, tt.ok)
			}
		})
	}
}

func FuzzString(f *testing.F) {
	f.Add([]byte{3, 'a', 'b', 'c'})
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, rest, ok := String(b)
		if !ok {
			if len(rest) != len(b) || s != "" {
				t.Fatalf("failed read consumed input: %q %q", s, rest)
			}
			return
		}
		if len(s)+len(rest) > len(b) {
			t.Fatalf("read %d + rest %d bytes from %d", len(s), len(rest), len(b))
		}
	})
}
