package store

import (
	"encoding/binary"
	"errors"
	"slices"
	"time"
)

// Message is a published application message as the broker keeps it: a
// retained message, a will, or the body of a queued Entry.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	Props   []byte // encoded MQTT 5 properties, opaque to the store
	Expiry  int64  // UnixNano after which the message is dropped; 0 = never
	Origin  string // client ID of the publisher
}

// Subscription is one subscription of a Session.
type Subscription struct {
	Filter            string
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
	ID                uint32 // MQTT 5 subscription identifier; 0 = none
}

// Session is the persistent part of a client session.
type Session struct {
	ClientID       string
	Version        byte          // MQTT protocol level
	Expiry         time.Duration // session expiry interval
	DisconnectedAt int64         // UnixNano; 0 = connected when last written
	Subs           []Subscription
	Will           *Message
	WillDelay      time.Duration
	WillExpiry     time.Duration
	// Owner is the principal the session belongs to: it set the will,
	// which is authorised for it when it is published (after a restart
	// too), and another principal does not resume the session. Nil in
	// records written before owners were kept.
	Owner *Principal
}

// Principal is a client's identity as its listener's authentication
// established it (the client ID is the session's).
type Principal struct {
	Listener   string
	Username   string
	Method     string
	Attributes map[string]string
}

// Entry is one message queued for, or in flight to, a client.
type Entry struct {
	Seq          uint64 // per-session order; lives in the key
	Msg          Message
	QoS          byte // granted delivery QoS
	Retain       bool // retain flag as delivered
	SubIDs       []uint32
	PacketID     uint16 // 0 = queued, not yet sent
	Released     bool   // QoS 2: PUBREC received, PUBREL sent
	SharedGroup  string
	SharedFilter string
	// Routed identifies, in cluster mode, the routed delivery this entry
	// was made from (the publishing node's record of it, which the entry
	// replaces); zero when none. A node adopting the session drops a routed
	// record whose identifier an entry already has.
	Routed [16]byte
}

const recordV1 = 1

// Flag bits. Decoders reject bits they do not know so that a newer writer's
// records or random garbage are not silently misread.
const (
	msgQoSMask   = 0x03
	msgRetain    = 0x04
	msgHasExpiry = 0x08
	msgKnown     = msgQoSMask | msgRetain | msgHasExpiry

	entQoSMask   = 0x03
	entRetain    = 0x04
	entReleased  = 0x08
	entPacketID  = 0x10
	entSubIDs    = 0x20
	entShared    = 0x40
	entRouted    = 0x80
	entKnownBits = entQoSMask | entRetain | entReleased | entPacketID | entSubIDs | entShared | entRouted

	sesWill      = 0x01
	sesOwner     = 0x02
	sesKnownBits = sesWill | sesOwner

	subQoSMask   = 0x03
	subNoLocal   = 0x04
	subRAP       = 0x08
	subRHShift   = 4
	subRHMask    = 0x30
	subKnownBits = subQoSMask | subNoLocal | subRAP | subRHMask
)

// errBadRecord is the cause inside the ErrCorrupt error that names the key.
var errBadRecord = errors.New("malformed record")

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendVarint(b []byte, v int64) []byte { return binary.AppendVarint(b, v) }

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendMessageBody(b []byte, m *Message) []byte {
	flags := m.QoS & msgQoSMask
	if m.Retain {
		flags |= msgRetain
	}
	if m.Expiry != 0 {
		flags |= msgHasExpiry
	}
	b = append(b, flags)
	b = appendString(b, m.Topic)
	b = appendBytes(b, m.Payload)
	b = appendBytes(b, m.Props)
	if m.Expiry != 0 {
		b = binary.BigEndian.AppendUint64(b, uint64(m.Expiry))
	}
	return appendString(b, m.Origin)
}

// appendMessage encodes a retained message record.
func appendMessage(b []byte, m *Message) []byte {
	return appendMessageBody(append(b, recordV1), m)
}

// appendEntry encodes an Entry record; the Seq is not included (it is the key).
func appendEntry(b []byte, e *Entry) []byte {
	flags := e.QoS & entQoSMask
	if e.Retain {
		flags |= entRetain
	}
	if e.Released {
		flags |= entReleased
	}
	if e.PacketID != 0 {
		flags |= entPacketID
	}
	if len(e.SubIDs) > 0 {
		flags |= entSubIDs
	}
	if e.SharedGroup != "" || e.SharedFilter != "" {
		flags |= entShared
	}
	if e.Routed != ([16]byte{}) {
		flags |= entRouted
	}
	b = append(b, recordV1, flags)
	if e.PacketID != 0 {
		b = binary.BigEndian.AppendUint16(b, e.PacketID)
	}
	if len(e.SubIDs) > 0 {
		b = appendUvarint(b, uint64(len(e.SubIDs)))
		for _, id := range e.SubIDs {
			b = appendUvarint(b, uint64(id))
		}
	}
	if flags&entShared != 0 {
		b = appendString(b, e.SharedGroup)
		b = appendString(b, e.SharedFilter)
	}
	if flags&entRouted != 0 {
		b = append(b, e.Routed[:]...)
	}
	return appendMessageBody(b, &e.Msg)
}

// appendSession encodes a Session record; the client ID is the key.
func appendSession(b []byte, s *Session) []byte {
	var flags byte
	if s.Will != nil {
		flags |= sesWill
	}
	if s.Owner != nil {
		flags |= sesOwner
	}
	b = append(b, recordV1, s.Version, flags)
	b = appendVarint(b, int64(s.Expiry))
	b = appendVarint(b, s.DisconnectedAt)
	b = appendUvarint(b, uint64(len(s.Subs)))
	for i := range s.Subs {
		sub := &s.Subs[i]
		b = appendString(b, sub.Filter)
		sf := sub.QoS&subQoSMask | (sub.RetainHandling<<subRHShift)&subRHMask
		if sub.NoLocal {
			sf |= subNoLocal
		}
		if sub.RetainAsPublished {
			sf |= subRAP
		}
		b = append(b, sf)
		b = appendUvarint(b, uint64(sub.ID))
	}
	if s.Will != nil {
		b = appendMessageBody(b, s.Will)
		b = appendVarint(b, int64(s.WillDelay))
		b = appendVarint(b, int64(s.WillExpiry))
	}
	if o := s.Owner; o != nil {
		b = appendString(b, o.Listener)
		b = appendString(b, o.Username)
		b = appendString(b, o.Method)
		keys := make([]string, 0, len(o.Attributes))
		for k := range o.Attributes {
			keys = append(keys, k)
		}
		slices.Sort(keys) // one encoding per principal
		b = appendUvarint(b, uint64(len(keys)))
		for _, k := range keys {
			b = appendString(b, k)
			b = appendString(b, o.Attributes[k])
		}
	}
	return b
}

// interner deduplicates the strings of a Load: a queue of a million entries
// usually repeats a handful of topics and origins, so sharing them saves
// both allocations and resident memory.
type interner struct {
	m map[string]string
}

// maxInterned bounds the table so that a store full of unique topics does
// not grow a second copy of them.
const maxInterned = 1 << 16

func (in *interner) str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if in == nil {
		return string(b)
	}
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(in.m) < maxInterned {
		in.m[s] = s
	}
	return s
}

// decoder reads a record front to back; the first failure sticks, so
// callers check ok once at the end.
type decoder struct {
	b   []byte
	bad bool
	in  *interner
}

func (d *decoder) byte() byte {
	if d.bad || len(d.b) < 1 {
		d.bad = true
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) fixed(n int) []byte {
	if d.bad || len(d.b) < n {
		d.bad = true
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.bad {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || (n > 1 && d.b[n-1] == 0) { // overflow, short, or not minimal
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.bad {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 || (n > 1 && d.b[n-1] == 0) {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads an element count and rejects one that cannot fit in the
// remaining bytes, each element taking at least min bytes, so garbage
// cannot make the decoder allocate a huge slice.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.bad || n > uint64(len(d.b)/min) {
		d.bad = true
		return 0
	}
	return int(n)
}

func (d *decoder) raw() []byte {
	n := d.uvarint()
	if d.bad || n > uint64(len(d.b)) {
		d.bad = true
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string { return d.in.str(d.raw()) }

// bytes returns a copy, since the input belongs to Pebble's iterator.
func (d *decoder) bytes() []byte {
	v := d.raw()
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

func (d *decoder) messageBody(m *Message) {
	flags := d.byte()
	if flags&^msgKnown != 0 || flags&msgQoSMask == 3 {
		d.bad = true
		return
	}
	m.QoS = flags & msgQoSMask
	m.Retain = flags&msgRetain != 0
	m.Topic = d.str()
	m.Payload = d.bytes()
	m.Props = d.bytes()
	if flags&msgHasExpiry != 0 {
		if e := d.fixed(8); e != nil {
			m.Expiry = int64(binary.BigEndian.Uint64(e))
			if m.Expiry == 0 {
				d.bad = true // the encoder never sets the flag for 0
			}
		}
	}
	m.Origin = d.str()
}

func (d *decoder) version() {
	if d.byte() != recordV1 {
		d.bad = true
	}
}

func (d *decoder) finish() error {
	if d.bad || len(d.b) != 0 {
		return errBadRecord
	}
	return nil
}

func decodeMessage(b []byte, m *Message, in *interner) error {
	*m = Message{}
	d := decoder{b: b, in: in}
	d.version()
	d.messageBody(m)
	return d.finish()
}

// decodeEntry decodes an Entry record; the caller sets Seq from the key.
func decodeEntry(b []byte, e *Entry, in *interner) error {
	*e = Entry{}
	d := decoder{b: b, in: in}
	d.version()
	flags := d.byte()
	if flags&^entKnownBits != 0 || flags&entQoSMask == 3 {
		return errBadRecord
	}
	e.QoS = flags & entQoSMask
	e.Retain = flags&entRetain != 0
	e.Released = flags&entReleased != 0
	if flags&entPacketID != 0 {
		if p := d.fixed(2); p != nil {
			e.PacketID = binary.BigEndian.Uint16(p)
			if e.PacketID == 0 {
				return errBadRecord
			}
		}
	}
	if flags&entSubIDs != 0 {
		n := d.count(1)
		if n == 0 {
			return errBadRecord
		}
		e.SubIDs = make([]uint32, n)
		for i := range e.SubIDs {
			v := d.uvarint()
			if v > 1<<32-1 {
				return errBadRecord
			}
			e.SubIDs[i] = uint32(v)
		}
	}
	if flags&entShared != 0 {
		e.SharedGroup = d.str()
		e.SharedFilter = d.str()
		if e.SharedGroup == "" && e.SharedFilter == "" {
			return errBadRecord // the encoder never sets the flag for these
		}
	}
	if flags&entRouted != 0 {
		if p := d.fixed(len(e.Routed)); p != nil {
			copy(e.Routed[:], p)
			if e.Routed == ([16]byte{}) {
				return errBadRecord // the encoder never sets the flag for it
			}
		}
	}
	d.messageBody(&e.Msg)
	return d.finish()
}

// decodeSession decodes a Session record; the caller sets ClientID from the key.
func decodeSession(b []byte, s *Session, in *interner) error {
	*s = Session{}
	d := decoder{b: b, in: in}
	d.version()
	s.Version = d.byte()
	flags := d.byte()
	if flags&^sesKnownBits != 0 {
		return errBadRecord
	}
	s.Expiry = time.Duration(d.varint())
	s.DisconnectedAt = d.varint()
	// A subscription takes at least 3 bytes: filter length, flags, ID.
	if n := d.count(3); n > 0 {
		s.Subs = make([]Subscription, n)
		for i := range s.Subs {
			sub := &s.Subs[i]
			sub.Filter = d.str()
			sf := d.byte()
			if sf&^subKnownBits != 0 || sf&subQoSMask == 3 || sf&subRHMask == 3<<subRHShift {
				return errBadRecord
			}
			sub.QoS = sf & subQoSMask
			sub.NoLocal = sf&subNoLocal != 0
			sub.RetainAsPublished = sf&subRAP != 0
			sub.RetainHandling = (sf & subRHMask) >> subRHShift
			id := d.uvarint()
			if id > 1<<32-1 {
				return errBadRecord
			}
			sub.ID = uint32(id)
		}
	}
	if flags&sesWill != 0 {
		s.Will = new(Message)
		d.messageBody(s.Will)
		s.WillDelay = time.Duration(d.varint())
		s.WillExpiry = time.Duration(d.varint())
	}
	if flags&sesOwner != 0 {
		o := &Principal{Listener: d.str(), Username: d.str(), Method: d.str()}
		// An attribute takes at least 2 bytes: two string lengths.
		if n := d.count(2); n > 0 {
			o.Attributes = make(map[string]string, n)
			prev := ""
			for i := range n {
				k := d.str()
				if i > 0 && k <= prev {
					return errBadRecord // written sorted, without duplicates
				}
				o.Attributes[k], prev = d.str(), k
			}
		}
		s.Owner = o
	}
	return d.finish()
}

// The valid* checks tell whether the two-bit fields the encoders pack can be
// decoded again; a Txn refuses records that would not round-trip.
func validMessage(m *Message) bool { return m.QoS <= 2 }

func validEntry(e *Entry) bool {
	return e.QoS <= 2 && validMessage(&e.Msg)
}

func validSession(s *Session) bool {
	for i := range s.Subs {
		if s.Subs[i].QoS > 2 || s.Subs[i].RetainHandling > 2 {
			return false
		}
	}
	return s.Will == nil || validMessage(s.Will)
}
