package statestore

import (
	"bytes"
	"strconv"
)

// The client side of the RESP answers: what the CLI and the portal read
// back from the state store. The server's own encoding is in resp.go.

// ReadBulk reads one RESP bulk string from the front of b; a null bulk
// string gives a nil v. ok is false when b does not start with a complete,
// well-formed one.
func ReadBulk(b []byte) (v, rest []byte, ok bool) {
	i := bytes.Index(b, []byte("\r\n"))
	if len(b) < 4 || b[0] != '$' || i < 0 {
		return nil, nil, false
	}
	if string(b[1:i]) == "-1" {
		return nil, b[i+2:], true
	}
	n, err := strconv.Atoi(string(b[1:i]))
	if err != nil || n < 0 || len(b) < i+2+n+2 || string(b[i+2+n:i+4+n]) != "\r\n" {
		return nil, nil, false
	}
	return b[i+2 : i+2+n : i+2+n], b[i+4+n:], true
}

// ParseKeys reads a whole EDGEPORT.KEYS answer: the cursor to continue from
// (nil when the listing is complete) and the keys. A refused or malformed
// answer gives ok false and no keys.
func ParseKeys(b []byte) (keys [][]byte, next []byte, ok bool) {
	i := bytes.Index(b, []byte("\r\n"))
	if len(b) < 4 || b[0] != '*' || i < 0 {
		return nil, nil, false
	}
	n, err := strconv.Atoi(string(b[1:i]))
	if err != nil || n < 1 {
		return nil, nil, false
	}
	rest := b[i+2:]
	if next, rest, ok = ReadBulk(rest); !ok {
		return nil, nil, false
	}
	for range n - 1 {
		var k []byte
		if k, rest, ok = ReadBulk(rest); !ok || k == nil {
			return nil, nil, false
		}
		keys = append(keys, k)
	}
	if len(rest) != 0 {
		return nil, nil, false
	}
	return keys, next, true
}
