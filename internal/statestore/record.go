package statestore

import (
	"encoding/binary"
	"errors"
)

// entry is one stored key's value and metadata. Entries are never modified
// once published in the key map: a SET installs a new one, so an undo log
// can hold the previous pointer.
type entry struct {
	value   []byte
	version HLC
	fence   HLC    // zero when the key is not protected by a fencing token
	expiry  int64  // Unix milliseconds; 0 = never
	ts      string // version's wire form, the __ts of answers that read the entry
	// rev is the entry's revision in a shared backend (0 on a single
	// node): what a write replacing it expects. Set once, by the executor,
	// when the write that made the entry is acknowledged, before the entry
	// is published to the view.
	rev uint64
}

func (e *entry) fenced() bool { return !e.fence.IsZero() }

// Record format, the value under store KV key (Bucket, key):
//
//	byte    record version (1)
//	byte    flags: 1 = has expiry, 2 = has fencing token
//	varint  version wall, uvarint version counter, uvarint len + version node
//	[varint expiry]                           when flag 1
//	[varint wall, uvarint counter, node]      when flag 2
//	rest    the value
const (
	recordVersion = 1
	flagExpiry    = 1
	flagFence     = 2
)

var errBadRecord = errors.New("malformed state store record")

func appendRecord(dst []byte, e *entry) []byte {
	var flags byte
	if e.expiry != 0 {
		flags |= flagExpiry
	}
	if e.fenced() {
		flags |= flagFence
	}
	dst = append(dst, recordVersion, flags)
	dst = appendHLC(dst, e.version)
	if e.expiry != 0 {
		dst = binary.AppendVarint(dst, e.expiry)
	}
	if e.fenced() {
		dst = appendHLC(dst, e.fence)
	}
	return append(dst, e.value...)
}

func appendHLC(dst []byte, h HLC) []byte {
	dst = binary.AppendVarint(dst, h.Wall)
	dst = binary.AppendUvarint(dst, h.Counter)
	dst = binary.AppendUvarint(dst, uint64(len(h.Node)))
	return append(dst, h.Node...)
}

// decodeRecord parses a record; the entry's value is a copy. node interns
// node identifiers, which are nearly always the same few strings.
func decodeRecord(b []byte, node func([]byte) string) (*entry, error) {
	if len(b) < 2 || b[0] != recordVersion || b[1]&^(flagExpiry|flagFence) != 0 {
		return nil, errBadRecord
	}
	flags := b[1]
	b = b[2:]
	e := new(entry)
	var ok bool
	if e.version, b, ok = decodeHLC(b, node); !ok {
		return nil, errBadRecord
	}
	if flags&flagExpiry != 0 {
		v, n := binary.Varint(b)
		if n <= 0 || v <= 0 {
			return nil, errBadRecord
		}
		e.expiry, b = v, b[n:]
	}
	if flags&flagFence != 0 {
		if e.fence, b, ok = decodeHLC(b, node); !ok || e.fence.IsZero() {
			return nil, errBadRecord
		}
	}
	e.value = append(make([]byte, 0, len(b)), b...)
	e.ts = e.version.String()
	return e, nil
}

func decodeHLC(b []byte, node func([]byte) string) (HLC, []byte, bool) {
	var h HLC
	wall, n := binary.Varint(b)
	if n <= 0 || wall < 0 {
		return h, nil, false
	}
	b = b[n:]
	counter, n := binary.Uvarint(b)
	if n <= 0 {
		return h, nil, false
	}
	b = b[n:]
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return h, nil, false
	}
	b = b[n:]
	h.Wall, h.Counter, h.Node = wall, counter, node(b[:l])
	return h, b[l:], true
}
