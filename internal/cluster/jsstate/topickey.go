package jsstate

import (
	"fmt"
	"strings"
)

// topicKey is the key of an MQTT topic in the retained bucket. NATS keys
// allow only [-/_=.a-zA-Z0-9]; letters, digits, '-', '_' and '/' are kept
// (so a key reads like its topic), every other byte becomes =XX (two
// upper-case hex digits), '=' and '.' included, which makes the encoding
// reversible and keeps NATS's token separator out of keys.
func topicKey(topic string) string {
	var b strings.Builder
	b.Grow(len(topic))
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		if plainKeyByte(c) {
			b.WriteByte(c)
			continue
		}
		const hex = "0123456789ABCDEF"
		b.WriteByte('=')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xF])
	}
	return b.String()
}

func plainKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '/'
}

// keyTopic decodes a key made by topicKey.
func keyTopic(key string) (string, error) {
	var b strings.Builder
	b.Grow(len(key))
	for i := 0; i < len(key); i++ {
		c := key[i]
		if plainKeyByte(c) {
			b.WriteByte(c)
			continue
		}
		if c != '=' || i+2 >= len(key) {
			return "", fmt.Errorf("decoding retained key %q: byte %d: %q is not a key character", key, i, c)
		}
		hi, lo := unhex(key[i+1]), unhex(key[i+2])
		if hi < 0 || lo < 0 {
			return "", fmt.Errorf("decoding retained key %q: byte %d: bad escape", key, i)
		}
		b.WriteByte(byte(hi<<4 | lo))
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
