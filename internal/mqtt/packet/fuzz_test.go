package packet

import (
	"bytes"
	"io"
	"reflect"
	"testing"
	"testing/iotest"
)

// fuzzDecode is the property every decoder must have: no panic, only *Error
// failures, and whatever decodes re-encodes (with Size matching) into bytes
// that decode to an equal struct.
func fuzzDecode(f *testing.F, types []Type, fresh func(Type) Packet,
	decode func(p Packet, t Type, flags byte, body []byte, v Version) (Version, error)) {
	for _, fx := range fixtures {
		data := hx(fx.wire)
		h, n, _ := DecodeFixedHeader(data)
		for _, t := range types {
			if h.Type == t {
				f.Add(byte(fx.v), byte(t), h.Flags, data[n:])
			}
		}
	}
	for _, tc := range decodeErrorCases {
		data := hx(tc.wire)
		h, n, err := DecodeFixedHeader(data)
		for _, t := range types {
			if err == nil && n > 0 && h.Type == t {
				f.Add(byte(tc.v), byte(t), h.Flags, data[n:])
			}
		}
	}
	f.Fuzz(func(t *testing.T, vb, tb, flags byte, body []byte) {
		v := Version(3 + vb%3) // V31, V311 or V5, each mapped to itself
		typ := types[int(tb)%len(types)]
		for _, t := range types {
			if t == Type(tb) {
				typ = t
			}
		}
		p := fresh(typ)
		ev, err := decode(p, typ, flags&0x0F, body, v)
		if err != nil {
			reasonOf(t, err)
			return
		}
		enc := p.Append(nil, ev)
		if size := p.Size(ev); size != len(enc) {
			t.Fatalf("Size %d, Append wrote %d", size, len(enc))
		}
		h, n, err := DecodeFixedHeader(enc)
		if err != nil || n == 0 || n+h.Remaining != len(enc) || h.Type != typ {
			t.Fatalf("bad re-encoding % x: %+v %d %v", enc, h, n, err)
		}
		q := fresh(typ)
		if _, err := decode(q, typ, h.Flags, enc[n:], v); err != nil {
			t.Fatalf("re-encoding % x does not decode: %v", enc, err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip changed the packet\n got %+v\nwant %+v", q, p)
		}
		if again := q.Append(nil, ev); !bytes.Equal(again, enc) {
			t.Fatalf("encoding not stable: % x then % x", enc, again)
		}
	})
}

func FuzzDecodeConnect(f *testing.F) {
	fuzzDecode(f, []Type{CONNECT}, func(Type) Packet { return new(Connect) },
		func(p Packet, _ Type, flags byte, body []byte, _ Version) (Version, error) {
			c := p.(*Connect)
			err := c.Decode(flags, body)
			return c.Version, err
		})
}

func FuzzDecodeConnAck(f *testing.F) {
	fuzzDecode(f, []Type{CONNACK}, func(Type) Packet { return new(ConnAck) },
		func(p Packet, _ Type, flags byte, body []byte, v Version) (Version, error) {
			return v, p.(*ConnAck).Decode(flags, body, v)
		})
}

func FuzzDecodePublish(f *testing.F) {
	fuzzDecode(f, []Type{PUBLISH}, func(Type) Packet { return new(Publish) },
		func(p Packet, _ Type, flags byte, body []byte, v Version) (Version, error) {
			return v, p.(*Publish).Decode(flags, body, v)
		})
}

func FuzzDecodeAck(f *testing.F) {
	fuzzDecode(f, []Type{PUBACK, PUBREC, PUBREL, PUBCOMP}, func(Type) Packet { return new(Ack) },
		func(p Packet, t Type, flags byte, body []byte, v Version) (Version, error) {
			return v, p.(*Ack).Decode(t, flags, body, v)
		})
}

func FuzzDecodeSubscribe(f *testing.F) {
	fuzzDecode(f, []Type{SUBSCRIBE}, func(Type) Packet { return new(Subscribe) },
		func(p Packet, _ Type, flags byte, body []byte, v Version) (Version, error) {
			return v, p.(*Subscribe).Decode(flags, body, v)
		})
}

func FuzzDecodeSubAck(f *testing.F) {
	fuzzDecode(f, []Type{SUBACK}, func(Type) Packet { return new(SubAck) },
		func(p Packet, _ Type, flags byte, body []byte, v Version) (Version, error) {
			return v, p.(*SubAck).Decode(flags, body, v)
		})
}

func FuzzDecodeUnsubscribe(f *testing.F) {
	fuzzDecode(f, []Type{UNSUBSCRIBE}, func(Type) Packet { return new(Unsubscribe) },
		func(p Packet, _ Type, flags byte, body []byte, v Version) (Version, error) {
			return v, p.(*Unsubscribe).Decode(flags, body, v)
		})
}

func FuzzDecodeUnsubAck(f *testing.F) {
	fuzzDecode(f, []Type{UNSUBACK}, func(Type) Packet { return new(UnsubAck) },
		func(p Packet, _ Type, flags byte, body []byte, v Version) (Version, error) {
			return v, p.(*UnsubAck).Decode(flags, body, v)
		})
}

// FuzzDecodeControl covers the packets with little or no body.
func FuzzDecodeControl(f *testing.F) {
	fuzzDecode(f, []Type{DISCONNECT, AUTH, PINGREQ, PINGRESP}, func(t Type) Packet {
		switch t {
		case DISCONNECT:
			return new(Disconnect)
		case AUTH:
			return new(Auth)
		case PINGREQ:
			return new(PingReq)
		}
		return new(PingResp)
	}, func(p Packet, _ Type, flags byte, body []byte, v Version) (Version, error) {
		switch p := p.(type) {
		case *Disconnect:
			return v, p.Decode(flags, body, v)
		case *Auth:
			return v, p.Decode(flags, body, v)
		case *PingReq:
			return v, p.Decode(flags, body, v)
		case *PingResp:
			return v, p.Decode(flags, body, v)
		}
		panic("unreachable")
	})
}

// FuzzReader checks that the Reader splits any stream exactly as slicing it
// with DecodeFixedHeader does, whatever the buffer size and read pattern.
func FuzzReader(f *testing.F) {
	data, _ := stream()
	f.Add(data, uint8(7), uint16(0))
	f.Add(hx(`30 ff 01`), uint8(0), uint16(10))
	f.Add(hx(`30 ff ff ff 7f 00`), uint8(0), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, size uint8, limit uint16) {
		r := NewReader(iotest.HalfReader(bytes.NewReader(data)), int(size))
		rest, more := data, true
		for more {
			h, body, err := r.Next(int(limit))
			rest, more = checkNext(t, rest, int(limit), h, body, err)
		}
	})
}

// checkNext checks what a Reader's Next returned against slicing the
// stream left, rest, with DecodeFixedHeader, and returns the stream after
// the packet; more is false once Next must have ended it (with an error).
func checkNext(t *testing.T, rest []byte, limit int, h FixedHeader, body []byte, err error) (after []byte, more bool) {
	t.Helper()
	wh, n, werr := DecodeFixedHeader(rest)
	switch {
	case werr != nil:
		if err == nil || reasonOf(t, err) != MalformedPacket {
			t.Fatalf("Reader: %v, want malformed", err)
		}
		return nil, false
	case len(rest) == 0:
		if err != io.EOF {
			t.Fatalf("at end: %v", err)
		}
		return nil, false
	case limit > 0 && n > 0 && n+wh.Remaining > limit:
		if err == nil || h != wh {
			t.Fatalf("oversize packet: %+v %v", h, err)
		}
		return nil, false
	case n == 0 || n+wh.Remaining > len(rest):
		if err != io.ErrUnexpectedEOF {
			t.Fatalf("truncated: %v", err)
		}
		return nil, false
	}
	if err != nil || h != wh || !bytes.Equal(body, rest[n:n+wh.Remaining]) {
		t.Fatalf("got %+v % x %v, want %+v", h, body, err, wh)
	}
	return rest[n+wh.Remaining:], true
}
