package statestore

import "testing"

func TestParseKeys(t *testing.T) {
	for _, tc := range []struct {
		in   string
		keys []string
		next string
		ok   bool
	}{
		{"*3\r\n$1\r\nc\r\n$1\r\na\r\n$1\r\nb\r\n", []string{"a", "b"}, "c", true},
		{"*1\r\n$-1\r\n", nil, "", true},
		{"*2\r\n$-1\r\n$3\r\nkey\r\n", []string{"key"}, "", true},
		{"*2\r\n$-1\r\n$-1\r\n", nil, "", false},        // a null key
		{"*2\r\n$-1\r\n$3\r\nkey\r\nx", nil, "", false}, // trailing bytes
		{"-ERR no\r\n", nil, "", false},
		{"*2\r\n$-1\r\n$9\r\nkey\r\n", nil, "", false}, // short bulk string
	} {
		keys, next, ok := ParseKeys([]byte(tc.in))
		if ok != tc.ok || string(next) != tc.next || len(keys) != len(tc.keys) {
			t.Errorf("ParseKeys(%q) = %q, %q, %v; want %q, %q, %v", tc.in, keys, next, ok, tc.keys, tc.next, tc.ok)
			continue
		}
		for i := range keys {
			if string(keys[i]) != tc.keys[i] {
				t.Errorf("ParseKeys(%q) key %d = %q, want %q", tc.in, i, keys[i], tc.keys[i])
			}
		}
	}
}

func FuzzParseKeys(f *testing.F) {
	f.Add([]byte("*3\r\n$1\r\nb\r\n$1\r\na\r\n$1\r\nb\r\n"))
	f.Add([]byte("*1\r\n$-1\r\n"))
	f.Add([]byte("*2\r\n$-1\r\n$3\r\nkey\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, _, ok := ParseKeys(b)
		if !ok && keys != nil {
			t.Fatalf("keys %q from a refused answer", keys)
		}
		if v, rest, ok := ReadBulk(b); ok && len(v)+len(rest) > len(b) {
			t.Fatal("ReadBulk returned more than it read")
		}
	})
}
