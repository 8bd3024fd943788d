// Package wire reads the length-prefixed fields that cluster mode's
// records and NATS headers share (the live route's meta header, routed
// deliveries).
package wire

import "encoding/binary"

// String reads a uvarint length and that many bytes from b as a string
// and returns the rest of b; ok is false when b is too short or the
// length is malformed.
func String(b []byte) (s string, rest []byte, ok bool) {
	l, k := binary.Uvarint(b)
	if k <= 0 || l > uint64(len(b)-k) {
		return "", b, false
	}
	return string(b[k : k+int(l)]), b[k+int(l):], true
}
