package statestore

import (
	"strconv"
	"strings"
	"time"
)

// HLC is a hybrid logical clock timestamp, the state store's notion of a
// version: milliseconds since the Unix epoch, a counter that orders events
// within one millisecond, and the identifier of the node that produced it.
// On the wire it is "{wall}:{counter}:{node}" (user properties __ts, __ft).
type HLC struct {
	Wall    int64 // Unix milliseconds
	Counter uint64
	Node    string
}

// IsZero reports whether h is the zero value (no timestamp).
func (h HLC) IsZero() bool { return h.Wall == 0 && h.Counter == 0 && h.Node == "" }

// Compare orders HLCs by wall clock, then counter, then node identifier, the
// order the Azure IoT Operations SDKs use; it returns -1, 0 or +1.
func (h HLC) Compare(o HLC) int {
	switch {
	case h.Wall < o.Wall:
		return -1
	case h.Wall > o.Wall:
		return 1
	case h.Counter < o.Counter:
		return -1
	case h.Counter > o.Counter:
		return 1
	}
	return strings.Compare(h.Node, o.Node)
}

// AppendTo appends the wire form. The fields are zero padded to the widths
// the SDKs write (15 and 5 digits) so that our versions look like theirs;
// parsers accept any width.
func (h HLC) AppendTo(dst []byte) []byte {
	dst = appendPadded(dst, uint64(max(h.Wall, 0)), 15)
	dst = append(dst, ':')
	dst = appendPadded(dst, h.Counter, 5)
	dst = append(dst, ':')
	return append(dst, h.Node...)
}

// String returns the wire form.
func (h HLC) String() string { return string(h.AppendTo(make([]byte, 0, 24+len(h.Node)))) }

func appendPadded(dst []byte, v uint64, width int) []byte {
	var digits [20]byte
	d := strconv.AppendUint(digits[:0], v, 10)
	for i := len(d); i < width; i++ {
		dst = append(dst, '0')
	}
	return append(dst, d...)
}

// ParseHLC parses the wire form: a decimal wall clock, a decimal counter and
// a node identifier (which may be empty but contains no colon).
func ParseHLC(s string) (HLC, bool) {
	i := strings.IndexByte(s, ':')
	if i <= 0 {
		return HLC{}, false
	}
	j := strings.IndexByte(s[i+1:], ':')
	if j <= 0 {
		return HLC{}, false
	}
	j += i + 1
	node := s[j+1:]
	if strings.IndexByte(node, ':') >= 0 {
		return HLC{}, false
	}
	wall, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || wall < 0 || !digitsOnly(s[:i]) {
		return HLC{}, false
	}
	counter, err := strconv.ParseUint(s[i+1:j], 10, 64)
	if err != nil || !digitsOnly(s[i+1:j]) {
		return HLC{}, false
	}
	return HLC{Wall: wall, Counter: counter, Node: node}, true
}

// digitsOnly rejects the signs strconv would accept.
func digitsOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// clock is the state store's own HLC. It is owned by the executor goroutine.
type clock struct {
	last HLC
}

// tick returns a new timestamp later than every timestamp the clock has
// produced and than remote (when given), following the HLC receive rule:
// the wall clock when it is ahead of both, otherwise the larger of the two
// with its counter advanced.
func (c *clock) tick(now time.Time, remote *HLC) HLC {
	wall := now.UnixMilli()
	next := HLC{Node: c.last.Node}
	switch {
	case remote == nil || remote.Wall < c.last.Wall || remote.Wall == c.last.Wall && remote.Counter <= c.last.Counter:
		// Only our own history matters.
		if wall > c.last.Wall {
			next.Wall = wall
		} else {
			next.Wall, next.Counter = c.last.Wall, c.last.Counter+1
		}
	case wall > remote.Wall:
		next.Wall = wall
	default:
		next.Wall, next.Counter = remote.Wall, remote.Counter+1
	}
	c.last = next
	return next
}

// observe moves the clock past h without producing a timestamp, so that
// versions restored from the store are never issued again.
func (c *clock) observe(h HLC) {
	if h.Wall > c.last.Wall || h.Wall == c.last.Wall && h.Counter > c.last.Counter {
		c.last.Wall, c.last.Counter = h.Wall, h.Counter
	}
}
