package packet

import (
	"encoding/binary"
	"unicode/utf8"
	"unsafe"
)

// maxVarintLen is the longest variable byte integer MQTT allows.
const maxVarintLen = 4

// AppendVarint appends v as an MQTT variable byte integer. v must not exceed
// MaxRemainingLength; larger values would need a fifth byte that no MQTT
// peer accepts.
func AppendVarint(dst []byte, v uint32) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// VarintSize is the number of bytes AppendVarint writes for v.
func VarintSize(v uint32) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	case v < 1<<28:
		return 4
	}
	return 5
}

// decodeVarint reads a variable byte integer at the start of b. n == 0 with a
// nil error means b ends before the integer does. MQTT 5.0 §1.5.5 requires the
// minimal encoding, so a trailing zero continuation byte is malformed as well
// as a fifth byte.
func decodeVarint(b []byte) (v uint32, n int, err error) {
	var shift uint
	for i := 0; i < maxVarintLen; i++ {
		if i >= len(b) {
			return 0, 0, nil
		}
		c := b[i]
		v |= uint32(c&0x7F) << shift
		if c < 0x80 {
			if c == 0 && i > 0 {
				return 0, 0, Errorf(MalformedPacket, "variable byte integer not minimally encoded")
			}
			return v, i + 1, nil
		}
		shift += 7
	}
	return 0, 0, Errorf(MalformedPacket, "variable byte integer longer than 4 bytes")
}

// DecodeFixedHeader parses the fixed header at the start of b. It returns
// n == 0 and a nil error when b does not yet hold the whole header. Flags are
// not checked here: each packet's Decode validates its own.
func DecodeFixedHeader(b []byte) (h FixedHeader, n int, err error) {
	if len(b) == 0 {
		return h, 0, nil
	}
	h.Type = Type(b[0] >> 4)
	h.Flags = b[0] & 0x0F
	if h.Type == 0 {
		return h, 0, Errorf(MalformedPacket, "reserved packet type 0")
	}
	v, m, err := decodeVarint(b[1:])
	if err != nil || m == 0 {
		return h, 0, err
	}
	h.Remaining = int(v)
	return h, 1 + m, nil
}

// ValidUTF8String reports whether s is a legal MQTT UTF-8 encoded string
// payload: well-formed UTF-8 (which already excludes surrogates) without
// U+0000. Control characters and non-characters are only "SHOULD NOT" in the
// specifications, so they are accepted.
func ValidUTF8String(s string) bool { return scanString(s, false) }

// validTopicName reports whether s is valid UTF-8 without U+0000 and without
// the wildcard characters that topic names must not contain.
func validTopicName(s string) bool { return scanString(s, true) }

const (
	lowBits  = 0x0101010101010101
	highBits = 0x8080808080808080
)

// hasZeroByte reports whether any byte of w is zero, for w whose bytes are
// all below 0x80.
func hasZeroByte(w uint64) bool { return (w-lowBits)&^w&highBits != 0 }

// scanString validates s as UTF-8 without U+0000, and without '+' and '#'
// when noWildcards is set. It runs on every topic and string property, so
// ASCII is checked eight bytes at a time; multi-byte sequences never contain
// bytes below 0x80, so the byte tests cannot misfire inside them.
func scanString(s string, noWildcards bool) bool {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		_ = s[i+7] // one bounds check for the eight loads below
		w := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		if w&highBits != 0 {
			break
		}
		if hasZeroByte(w) || noWildcards && (hasZeroByte(w^('+'*lowBits)) || hasZeroByte(w^('#'*lowBits))) {
			return false
		}
	}
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if c == 0 || noWildcards && (c == '+' || c == '#') {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return false
		}
		i += size
	}
	return true
}

// aliasString returns a string sharing b's memory; the caller promises b is
// not modified while the string lives.
func aliasString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// cloneBytes copies b, returning nil for an empty slice so that decoded
// structs compare equal whatever buffer they came from.
func cloneBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// cursor walks a packet body. Its methods report failure with ok == false;
// callers turn that into a MalformedPacket naming the field.
type cursor struct {
	b []byte
	i int
}

func (c *cursor) rest() int { return len(c.b) - c.i }

func (c *cursor) byte() (byte, bool) {
	if c.i >= len(c.b) {
		return 0, false
	}
	v := c.b[c.i]
	c.i++
	return v, true
}

func (c *cursor) u16() (uint16, bool) {
	if len(c.b)-c.i < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(c.b[c.i:])
	c.i += 2
	return v, true
}

func (c *cursor) u32() (uint32, bool) {
	if len(c.b)-c.i < 4 {
		return 0, false
	}
	v := binary.BigEndian.Uint32(c.b[c.i:])
	c.i += 4
	return v, true
}

// varint reads a variable byte integer that must lie wholly inside the body.
func (c *cursor) varint() (uint32, error) {
	v, n, err := decodeVarint(c.b[c.i:])
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, Errorf(MalformedPacket, "truncated variable byte integer")
	}
	c.i += n
	return v, nil
}

// binary reads two-byte-length-prefixed data, aliasing the body.
func (c *cursor) binary() ([]byte, bool) {
	n, ok := c.u16()
	if !ok || len(c.b)-c.i < int(n) {
		return nil, false
	}
	v := c.b[c.i : c.i+int(n) : c.i+int(n)]
	c.i += int(n)
	return v, true
}

// str reads a UTF-8 encoded string, aliasing the body when alias is set and
// copying otherwise. what names the field in the error.
func (c *cursor) str(alias bool, what string) (string, error) {
	b, ok := c.binary()
	if !ok {
		return "", Errorf(MalformedPacket, "truncated %s", what)
	}
	var s string
	if alias {
		s = aliasString(b)
	} else {
		s = string(b)
	}
	if !ValidUTF8String(s) {
		return "", Errorf(MalformedPacket, "%s is not valid UTF-8", what)
	}
	return s, nil
}

func appendU16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }

func appendU32(dst []byte, v uint32) []byte {
	return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendString(dst []byte, s string) []byte {
	dst = appendU16(dst, uint16(len(s)))
	return append(dst, s...)
}

func appendBinary(dst []byte, b []byte) []byte {
	dst = appendU16(dst, uint16(len(b)))
	return append(dst, b...)
}

// appendHeader writes the fixed header.
func appendHeader(dst []byte, t Type, flags byte, remaining int) []byte {
	dst = append(dst, byte(t)<<4|flags)
	return AppendVarint(dst, uint32(remaining))
}

// packetSize is the total encoded size of a packet with the given remaining length.
func packetSize(remaining int) int { return 1 + VarintSize(uint32(remaining)) + remaining }
