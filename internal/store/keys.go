package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

const (
	entryKeySuffix   = 1 + 8 // tag + seq
	inboundKeySuffix = 1 + 2 // tag + packet ID
)

// Key spans as strings so that no package-level byte slice can be mutated.
const (
	clientSpanStart   = "c\x00"
	clientSpanEnd     = "c\x01"
	retainedSpanStart = "r\x00"
	retainedSpanEnd   = "r\x01"
	metaFormatKey     = "m\x00format"
)

// appendClientPrefix appends c\x00{clientID}\x00, the prefix shared by every
// key a client owns.
func appendClientPrefix(dst []byte, clientID string) []byte {
	dst = append(dst, nsClient, sep)
	dst = append(dst, clientID...)
	return append(dst, sep)
}

func appendSessionKey(dst []byte, clientID string) []byte {
	return append(appendClientPrefix(dst, clientID), tagSession)
}

func appendEntryKey(dst []byte, clientID string, seq uint64) []byte {
	dst = append(appendClientPrefix(dst, clientID), tagEntry)
	return binary.BigEndian.AppendUint64(dst, seq)
}

func appendInboundKey(dst []byte, clientID string, packetID uint16) []byte {
	dst = append(appendClientPrefix(dst, clientID), tagInbound)
	return binary.BigEndian.AppendUint16(dst, packetID)
}

func appendRetainedKey(dst []byte, topic string) []byte {
	dst = append(dst, nsRetained, sep)
	return append(dst, topic...)
}

func appendKVPrefix(dst []byte, bucket string) []byte {
	dst = append(dst, nsKV, sep)
	dst = append(dst, bucket...)
	return append(dst, sep)
}

func appendKVKey(dst []byte, bucket string, key []byte) []byte {
	return append(appendKVPrefix(dst, bucket), key...)
}

// prefixEnd returns the smallest key greater than every key that starts
// with p, or nil when there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// clientKey is a parsed c\x00… key; its slices alias the key.
type clientKey struct {
	clientID []byte
	tag      byte
	seq      uint64 // tagEntry
	packetID uint16 // tagInbound
}

// parseClientKey splits a key of the client namespace; ok is false when the
// key does not have one of the three shapes the store writes.
func parseClientKey(k []byte) (ck clientKey, ok bool) {
	if len(k) < 2 || k[0] != nsClient || k[1] != sep {
		return ck, false
	}
	rest := k[2:]
	i := bytes.IndexByte(rest, sep)
	if i < 0 || i+1 >= len(rest) {
		return ck, false
	}
	ck.clientID = rest[:i]
	suffix := rest[i+1:]
	ck.tag = suffix[0]
	switch ck.tag {
	case tagEntry:
		if len(suffix) != entryKeySuffix {
			return ck, false
		}
		ck.seq = binary.BigEndian.Uint64(suffix[1:])
	case tagInbound:
		if len(suffix) != inboundKeySuffix {
			return ck, false
		}
		ck.packetID = binary.BigEndian.Uint16(suffix[1:])
	case tagSession:
		if len(suffix) != 1 {
			return ck, false
		}
	default:
		return ck, false
	}
	return ck, true
}

// describeKey renders a key for error messages and logs so that an operator
// can tell which record is damaged.
func describeKey(k []byte) string {
	if ck, ok := parseClientKey(k); ok {
		cid := strconv.Quote(string(ck.clientID))
		switch ck.tag {
		case tagEntry:
			return fmt.Sprintf("entry client=%s seq=%d (key %q)", cid, ck.seq, k)
		case tagInbound:
			return fmt.Sprintf("inbound client=%s packet=%d (key %q)", cid, ck.packetID, k)
		default:
			return fmt.Sprintf("session client=%s (key %q)", cid, k)
		}
	}
	if len(k) >= 2 && k[1] == sep {
		switch k[0] {
		case nsRetained:
			return fmt.Sprintf("retained topic=%q (key %q)", k[2:], k)
		case nsKV:
			if bucket, key, ok := strings.Cut(string(k[2:]), "\x00"); ok {
				return fmt.Sprintf("kv bucket=%q key=%q", bucket, key)
			}
		}
	}
	return fmt.Sprintf("key %q", k)
}
