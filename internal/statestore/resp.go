package statestore

import (
	"errors"
	"strconv"
)

// The payloads are the subset of RESP3 the state store speaks: a request is
// an array of bulk strings; a response is a simple string (+OK), an integer
// (:n), a bulk string ($n or the null $-1), an error (-ERR text) or, for
// notifications and Edgeport's key listing, an array of bulk strings.

// maxArgs bounds a request's argument count so that a forged array header
// cannot make the parser allocate; no command takes more than seven.
const maxArgs = 16

var errSyntax = errors.New("syntax error")

// parseRequest splits a request payload into its arguments, which alias
// payload. It appends to args[:0] so that a reused slice allocates nothing.
func parseRequest(payload []byte, args [][]byte) ([][]byte, error) {
	args = args[:0]
	n, rest, ok := parseLength(payload, '*')
	if !ok || n <= 0 || n > maxArgs {
		return args, errSyntax
	}
	for range n {
		var l int
		l, rest, ok = parseLength(rest, '$')
		if !ok || l < 0 || l > len(rest)-2 || rest[l] != '\r' || rest[l+1] != '\n' {
			return args, errSyntax
		}
		args = append(args, rest[:l:l])
		rest = rest[l+2:]
	}
	if len(rest) != 0 {
		return args, errSyntax
	}
	return args, nil
}

// parseLength reads "{prefix}{decimal}\r\n" and returns the number and what
// follows. -1 is the only negative value RESP uses (null).
func parseLength(b []byte, prefix byte) (int, []byte, bool) {
	if len(b) < 4 || b[0] != prefix {
		return 0, nil, false
	}
	i, neg, n := 1, false, 0
	if b[1] == '-' {
		neg, i = true, 2
	}
	start := i
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if n > (1<<31)/10 {
			return 0, nil, false // far beyond any payload MQTT can carry
		}
		n = n*10 + int(b[i]-'0')
	}
	if i == start || i+1 >= len(b) || b[i] != '\r' || b[i+1] != '\n' {
		return 0, nil, false
	}
	if neg {
		if n != 1 {
			return 0, nil, false
		}
		n = -1
	}
	return n, b[i+2:], true
}

// parseMillis parses PX's argument: a positive decimal number of milliseconds.
func parseMillis(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 15 || !digitsOnly(string(b)) {
		return 0, false
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	return v, err == nil && v > 0
}

// equalFold reports whether b equals the upper-case ASCII word w, ignoring
// case: the protocol asks clients for upper case, but its own examples use
// lower case, so both are accepted.
func equalFold(b []byte, w string) bool {
	if len(b) != len(w) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != w[i] {
			return false
		}
	}
	return true
}

// Response encoders.

func appendOK(dst []byte) []byte { return append(dst, "+OK\r\n"...) }

func appendInt(dst []byte, n int64) []byte {
	dst = append(dst, ':')
	dst = strconv.AppendInt(dst, n, 10)
	return append(dst, '\r', '\n')
}

func appendNull(dst []byte) []byte { return append(dst, "$-1\r\n"...) }

func appendBulk(dst []byte, b []byte) []byte {
	dst = append(dst, '$')
	dst = strconv.AppendInt(dst, int64(len(b)), 10)
	dst = append(dst, '\r', '\n')
	dst = append(dst, b...)
	return append(dst, '\r', '\n')
}

func appendArrayHeader(dst []byte, n int) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, '\r', '\n')
}

func appendError(dst []byte, msg string) []byte {
	dst = append(dst, "-ERR "...)
	dst = append(dst, msg...)
	return append(dst, '\r', '\n')
}

// Notification payloads, as the SDKs parse them: NOTIFY SET VALUE {value}
// after a SET, NOTIFY DELETE after a DEL, VDEL or expiry.
const notifyDelete = "*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n"

func appendNotifySet(dst, value []byte) []byte {
	dst = append(dst, "*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n"...)
	return appendBulk(dst, value)
}
