package store

import (
	"errors"
	"math"
	"reflect"
	"testing"
	"time"
)

func sampleMessages() map[string]Message {
	return map[string]Message{
		"empty":    {},
		"minimal":  {Topic: "a", QoS: 1},
		"retained": {Topic: "sensors/x/temp", Payload: []byte("21.5"), QoS: 2, Retain: true},
		"full": {Topic: "a/b/c", Payload: make([]byte, 300), QoS: 1, Props: []byte{0x01, 0x01, 0x23, 0x00, 0x03, 'a', '/', 'b'},
			Expiry: time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano(), Origin: "publisher-1"},
		"negative expiry": {Topic: "t", Expiry: -1},
		"max expiry":      {Topic: "t", Expiry: math.MaxInt64},
		"binary topic":    {Topic: "\xff\xfe/ü/€", Payload: []byte{0}},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for name, m := range sampleMessages() {
		t.Run(name, func(t *testing.T) {
			b := appendMessage(nil, &m)
			var got Message
			if err := decodeMessage(b, &got, nil); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(normMsg(got), normMsg(m)) {
				t.Fatalf("got %+v, want %+v", got, m)
			}
			checkTruncations(t, b, func(p []byte) error { var x Message; return decodeMessage(p, &x, nil) })
		})
	}
}

func TestEntryRoundTrip(t *testing.T) {
	msgs := sampleMessages()
	cases := map[string]Entry{
		"queued":              {Msg: msgs["minimal"], QoS: 1},
		"inflight":            {Msg: msgs["full"], QoS: 2, Retain: true, PacketID: 65535, SubIDs: []uint32{1, 268435455, math.MaxUint32}},
		"released":            {Msg: msgs["retained"], QoS: 2, PacketID: 7, Released: true},
		"shared":              {Msg: msgs["minimal"], QoS: 1, SharedGroup: "g1", SharedFilter: "a/+"},
		"shared empty filter": {Msg: msgs["empty"], SharedGroup: "g"},
		"routed":              {Msg: msgs["full"], QoS: 2, PacketID: 9, Routed: [16]byte{1, 2, 3, 15: 0xff}},
	}
	for name, e := range cases {
		t.Run(name, func(t *testing.T) {
			b := appendEntry(nil, &e)
			var got Entry
			if err := decodeEntry(b, &got, nil); err != nil {
				t.Fatalf("decode: %v", err)
			}
			e.Msg = normMsg(e.Msg)
			got.Msg = normMsg(got.Msg)
			if !reflect.DeepEqual(got, e) {
				t.Fatalf("got %+v, want %+v", got, e)
			}
			checkTruncations(t, b, func(p []byte) error { var x Entry; return decodeEntry(p, &x, nil) })
		})
	}
}

func TestSessionRoundTrip(t *testing.T) {
	will := sampleMessages()["full"]
	cases := map[string]Session{
		"bare": {Version: 4},
		"subs": {Version: 5, Expiry: time.Duration(math.MaxUint32) * time.Second, DisconnectedAt: time.Now().UnixNano(),
			Subs: []Subscription{
				{Filter: "a/#", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, ID: 268435455},
				{Filter: "+", QoS: 0, RetainHandling: 1},
				{Filter: "$share/g/x", QoS: 1, ID: 1},
			}},
		"will": {Version: 5, Expiry: time.Hour, Will: &will, WillDelay: 30 * time.Second, WillExpiry: -time.Second},
		"owner and will": {Version: 4, Expiry: time.Hour, Will: &will, Owner: &Principal{Listener: "plant:1883", Username: "alice",
			Method: "UsernamePassword", Attributes: map[string]string{"line": "1", "area": "north", "": "empty key"}}},
		"anonymous owner": {Version: 5, Expiry: time.Hour, Owner: &Principal{Listener: "mqtt", Method: "anonymous"}},
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			b := appendSession(nil, &s)
			var got Session
			if err := decodeSession(b, &got, nil); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if s.Will != nil {
				w := normMsg(*s.Will)
				s.Will = &w
				gw := normMsg(*got.Will)
				got.Will = &gw
			}
			if !reflect.DeepEqual(got, s) {
				t.Fatalf("got %+v, want %+v", got, s)
			}
			checkTruncations(t, b, func(p []byte) error { var x Session; return decodeSession(p, &x, nil) })
		})
	}
}

// normMsg maps empty byte slices to nil, the decoder's representation.
func normMsg(m Message) Message {
	if len(m.Payload) == 0 {
		m.Payload = nil
	}
	if len(m.Props) == 0 {
		m.Props = nil
	}
	return m
}

// checkTruncations asserts that every strict prefix and the record with a
// trailing byte are refused.
func checkTruncations(t *testing.T, b []byte, decode func([]byte) error) {
	t.Helper()
	for n := 0; n < len(b); n++ {
		if err := decode(b[:n]); !errors.Is(err, errBadRecord) {
			t.Fatalf("prefix of %d/%d bytes: err = %v, want errBadRecord", n, len(b), err)
		}
	}
	if err := decode(append(append([]byte(nil), b...), 0)); !errors.Is(err, errBadRecord) {
		t.Fatalf("trailing byte: err = %v, want errBadRecord", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	cases := []struct {
		name   string
		decode func([]byte) error
		in     []byte
	}{
		{"message wrong version", decMsg, []byte{2, 0, 0, 0, 0, 0}},
		{"message qos 3", decMsg, []byte{1, 3, 0, 0, 0, 0}},
		{"message unknown flag", decMsg, []byte{1, 0x80, 0, 0, 0, 0}},
		{"message zero expiry with flag", decMsg, []byte{1, msgHasExpiry, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"message huge topic length", decMsg, []byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"message overlong varint", decMsg, []byte{1, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}},
		{"entry zero packet id", decEnt, []byte{1, entPacketID, 0, 0, 0, 0, 0, 0, 0}},
		{"entry empty subids", decEnt, []byte{1, entSubIDs, 0, 0, 0, 0, 0, 0}},
		{"entry subid overflow", decEnt, []byte{1, entSubIDs, 1, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, 0, 0, 0}},
		{"entry huge subid count", decEnt, []byte{1, entSubIDs, 0xff, 0xff, 0x03, 0, 0, 0, 0, 0}},
		{"session unknown flag", decSes, []byte{1, 5, 0x04, 0, 0, 0}},
		{"session owner attributes unsorted", decSes, []byte{1, 5, sesOwner, 0, 0, 0,
			0, 0, 0, 2, 1, 'b', 0, 1, 'a', 0}}, // listener, user name, method ""; attributes b, a
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.decode(tc.in); !errors.Is(err, errBadRecord) {
				t.Fatalf("err = %v, want errBadRecord", err)
			}
		})
	}
}

func decMsg(b []byte) error { var m Message; return decodeMessage(b, &m, nil) }
func decEnt(b []byte) error { var e Entry; return decodeEntry(b, &e, nil) }
func decSes(b []byte) error { var s Session; return decodeSession(b, &s, nil) }

func TestKeys(t *testing.T) {
	cases := []struct {
		name string
		key  []byte
		want clientKey
		desc string
	}{
		{"entry", appendEntryKey(nil, "cl", 0x0102030405060708), clientKey{clientID: []byte("cl"), tag: tagEntry, seq: 0x0102030405060708}, `entry client="cl" seq=72623859790382856`},
		{"inbound", appendInboundKey(nil, "x/y", 513), clientKey{clientID: []byte("x/y"), tag: tagInbound, packetID: 513}, `inbound client="x/y" packet=513`},
		{"session", appendSessionKey(nil, ""), clientKey{clientID: []byte{}, tag: tagSession}, `session client=""`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseClientKey(tc.key)
			if !ok || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("parse = %+v %v, want %+v", got, ok, tc.want)
			}
			if d := describeKey(tc.key); len(d) < len(tc.desc) || d[:len(tc.desc)] != tc.desc {
				t.Fatalf("describe = %q, want prefix %q", d, tc.desc)
			}
		})
	}
	for _, bad := range [][]byte{nil, []byte("c"), []byte("c\x00abc"), []byte("c\x00a\x00"), []byte("c\x00a\x00e123"), []byte("c\x00a\x00i1"), []byte("c\x00a\x00sx"), []byte("c\x00a\x00z"), []byte("r\x00a")} {
		if _, ok := parseClientKey(bad); ok {
			t.Errorf("parseClientKey(%q) accepted", bad)
		}
	}
	// Keys of one client sort together and before a client whose ID extends it.
	a := appendSessionKey(nil, "a")
	ab := appendEntryKey(nil, "ab", 0)
	if string(a) >= string(ab) || string(appendEntryKey(nil, "a", math.MaxUint64)) >= string(a) {
		t.Fatal("client keys do not group by client")
	}
	if got := describeKey(appendKVKey(nil, "b", []byte("k"))); got != `kv bucket="b" key="k"` {
		t.Fatalf("describe kv = %q", got)
	}
	for in, want := range map[string]string{"a": "b", "a\xff": "b", "\xff\xff": "", "": ""} {
		if got := string(prefixEnd([]byte(in))); got != want {
			t.Errorf("prefixEnd(%q) = %q, want %q", in, got, want)
		}
	}
}

// The fuzz targets check that decoders never panic, refuse what they
// cannot read with errBadRecord, and that whatever they accept re-encodes
// to the same bytes (so a record has exactly one encoding).

func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(appendMessage(nil, &m))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		err := decodeMessage(b, &m, nil)
		if err != nil {
			if !errors.Is(err, errBadRecord) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if re := appendMessage(nil, &m); string(re) != string(b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, re)
		}
	})
}

func FuzzDecodeEntry(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(appendEntry(nil, &Entry{Msg: m, QoS: 1, PacketID: 3, SubIDs: []uint32{5}, SharedGroup: "g", SharedFilter: "f"}))
		f.Add(appendEntry(nil, &Entry{Msg: m, QoS: 2, Routed: [16]byte{7, 15: 1}}))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Entry
		err := decodeEntry(b, &e, nil)
		if err != nil {
			if !errors.Is(err, errBadRecord) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if re := appendEntry(nil, &e); string(re) != string(b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, re)
		}
	})
}

func FuzzDecodeSession(f *testing.F) {
	will := sampleMessages()["full"]
	f.Add(appendSession(nil, &Session{Version: 5, Expiry: time.Hour, Subs: []Subscription{{Filter: "a/#", QoS: 1, ID: 9}}, Will: &will}))
	f.Add(appendSession(nil, &Session{Version: 4}))
	f.Add(appendSession(nil, &Session{Version: 4, Will: &will, Owner: &Principal{Listener: "l", Username: "u", Method: "m",
		Attributes: map[string]string{"a": "1", "b": "2"}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Session
		err := decodeSession(b, &s, nil)
		if err != nil {
			if !errors.Is(err, errBadRecord) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if re := appendSession(nil, &s); string(re) != string(b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, re)
		}
	})
}

func FuzzParseClientKey(f *testing.F) {
	f.Add(appendEntryKey(nil, "c", 1))
	f.Add(appendInboundKey(nil, "c", 1))
	f.Add(appendSessionKey(nil, "c"))
	f.Fuzz(func(t *testing.T, k []byte) {
		ck, ok := parseClientKey(k)
		_ = describeKey(k)
		if !ok {
			return
		}
		var re []byte
		switch ck.tag {
		case tagEntry:
			re = appendEntryKey(nil, string(ck.clientID), ck.seq)
		case tagInbound:
			re = appendInboundKey(nil, string(ck.clientID), ck.packetID)
		default:
			re = appendSessionKey(nil, string(ck.clientID))
		}
		if string(re) != string(k) {
			t.Fatalf("re-encoding differs: %q vs %q", k, re)
		}
	})
}
