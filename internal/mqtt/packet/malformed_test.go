package packet

import (
	"errors"
	"testing"
)

// decodeErrorCases are packets that break one rule each, with the reason
// code the specifications assign to that breach. The fuzz targets use them as
// seeds too.
var decodeErrorCases = []struct {
	name string
	v    Version
	wire string
	want ReasonCode
}{
	// Fixed header.
	{"reserved type 0", V5, `00 00`, MalformedPacket},
	{"remaining length 5 bytes", V5, `30 ff ff ff ff 01`, MalformedPacket},
	{"remaining length not minimal", V5, `30 80 00`, MalformedPacket},

	// CONNECT (3.1.1 unless noted).
	{"connect header flags", V311, `11 0e 0004 4d515454 04 02 003c 0002 6331`, MalformedPacket},
	{"connect reserved flag", V311, `10 0e 0004 4d515454 04 03 003c 0002 6331`, MalformedPacket},
	{"connect will qos 3", V311, `10 0e 0004 4d515454 04 1e 003c 0002 6331`, MalformedPacket},
	{"connect will retain without will", V311, `10 0e 0004 4d515454 04 22 003c 0002 6331`, MalformedPacket},
	{"connect will qos without will", V311, `10 0e 0004 4d515454 04 0a 003c 0002 6331`, MalformedPacket},
	{"connect password without username 3.1.1", V311, `10 10 0004 4d515454 04 42 003c 0002 6331 0000`, MalformedPacket},
	{"connect level 6", V5, `10 0e 0004 4d515454 06 02 003c 0002 6331`, UnsupportedProtocolVersion},
	{"connect name MQTX", V5, `10 0e 0004 4d515458 04 02 003c 0002 6331`, UnsupportedProtocolVersion},
	{"connect MQIsdp level 4", V5, `10 10 0006 4d5149736470 04 02 003c 0002 6331`, UnsupportedProtocolVersion},
	{"connect truncated name", V5, `10 04 0004 4d51`, MalformedPacket},
	{"connect truncated keep alive", V5, `10 08 0004 4d515454 04 02`, MalformedPacket},
	{"connect client id bad utf-8", V311, `10 0e 0004 4d515454 04 02 003c 0002 63ff`, MalformedPacket},
	{"connect client id with U+0000", V311, `10 0e 0004 4d515454 04 02 003c 0002 6300`, MalformedPacket},
	{"connect trailing byte", V311, `10 0f 0004 4d515454 04 02 003c 0002 6331 00`, MalformedPacket},
	{"connect missing client id", V311, `10 0a 0004 4d515454 04 02 003c`, MalformedPacket},
	{"connect empty id without clean session 3.1.1", V311, `10 0c 0004 4d515454 04 00 003c 0000`, ClientIdentifierNotValid},
	{"connect username flag without username", V311, `10 0e 0004 4d515454 04 82 003c 0002 6331`, MalformedPacket},
	{"connect will flag without will topic", V311, `10 0e 0004 4d515454 04 06 003c 0002 6331`, MalformedPacket},
	{"connect will topic wildcard", V311, `10 14 0004 4d515454 04 06 003c 0002 6331 0002 612b 0000`, TopicNameInvalid},
	{"connect will topic empty", V311, `10 12 0004 4d515454 04 06 003c 0002 6331 0000 0000`, TopicNameInvalid},
	{"connect 5.0 topic alias property", V5, `10 12 0004 4d515454 05 02 003c 03 230001 0002 6331`, ProtocolError},
	{"connect 5.0 session expiry twice", V5, `10 19 0004 4d515454 05 02 003c 0a 1100000001 1100000002 0002 6331`, ProtocolError},
	{"connect 5.0 receive maximum 0", V5, `10 12 0004 4d515454 05 02 003c 03 210000 0002 6331`, ProtocolError},
	{"connect 5.0 maximum packet size 0", V5, `10 14 0004 4d515454 05 02 003c 05 2700000000 0002 6331`, ProtocolError},
	{"connect 5.0 request problem info 2", V5, `10 11 0004 4d515454 05 02 003c 02 1702 0002 6331`, ProtocolError},
	{"connect 5.0 request response info 2", V5, `10 11 0004 4d515454 05 02 003c 02 1902 0002 6331`, ProtocolError},
	{"connect 5.0 auth data without method", V5, `10 13 0004 4d515454 05 02 003c 04 16000101 0002 6331`, ProtocolError},
	{"connect 5.0 unknown property", V5, `10 11 0004 4d515454 05 02 003c 02 0501 0002 6331`, MalformedPacket},
	{"connect 5.0 property length past end", V5, `10 0f 0004 4d515454 05 02 003c 09 0002 6331`, MalformedPacket},
	{"connect 5.0 will session expiry", V5, `10 1a 0004 4d515454 05 06 003c 00 0002 6331 05 1100000001 0001 74 0000`, ProtocolError},
	{"connect 5.0 will payload format 2", V5, `10 17 0004 4d515454 05 06 003c 00 0002 6331 02 0102 0001 74 0000`, ProtocolError},
	{"connect 5.0 user property bad utf-8", V5, `10 15 0004 4d515454 05 02 003c 06 26 0001 ff 0000 0002 6331`, MalformedPacket},

	// PUBLISH.
	{"publish qos 3", V311, `36 05 0001 74 0001`, MalformedPacket},
	{"publish dup with qos 0", V311, `38 03 0001 74`, MalformedPacket},
	{"publish packet id 0", V311, `32 05 0001 74 0000`, ProtocolError},
	{"publish missing packet id", V311, `32 04 0001 74 00`, MalformedPacket},
	{"publish topic +", V311, `30 05 0003 612f2b`, TopicNameInvalid},
	{"publish topic #", V5, `30 04 0001 23 00`, TopicNameInvalid},
	{"publish topic bad utf-8", V311, `30 05 0003 61c328`, MalformedPacket},
	{"publish topic surrogate", V311, `30 05 0003 eda080`, MalformedPacket},
	{"publish topic U+0000", V311, `30 05 0003 610062`, MalformedPacket},
	{"publish empty topic 3.1.1", V311, `30 03 0000 78`, TopicNameInvalid},
	{"publish topic past end", V311, `30 03 0005 61`, MalformedPacket},
	{"publish 5.0 missing property length", V5, `30 03 0001 74`, MalformedPacket},
	{"publish 5.0 subscription id 0", V5, `30 06 0001 74 02 0b00`, ProtocolError},
	{"publish 5.0 subscription id not minimal", V5, `30 07 0001 74 03 0b8100`, MalformedPacket},
	{"publish 5.0 topic alias twice", V5, `30 0a 0001 74 06 230001 230002`, ProtocolError},
	{"publish 5.0 topic alias 0", V5, `30 07 0001 74 03 230000`, TopicAliasInvalid},
	{"publish 5.0 session expiry", V5, `30 09 0001 74 05 1100000001`, ProtocolError},
	{"publish 5.0 truncated message expiry", V5, `30 07 0001 74 03 020000`, MalformedPacket},
	{"publish 5.0 payload format 2", V5, `30 06 0001 74 02 0102`, ProtocolError},
	{"publish 5.0 response topic wildcard", V5, `30 08 0001 74 04 0800012b`, ProtocolError},
	{"publish 5.0 content type bad utf-8", V5, `30 08 0001 74 04 030001c0`, MalformedPacket},
	{"publish 5.0 user property value U+0000", V5, `30 0b 0001 74 07 26 0001 6b 0001 00`, MalformedPacket},
	{"publish 5.0 property id 0x80", V5, `30 07 0001 74 03 800101`, MalformedPacket},

	// PUBACK, PUBREC, PUBREL, PUBCOMP.
	{"pubrel flags 0", V311, `60 02 0001`, MalformedPacket},
	{"puback flags 2", V311, `42 02 0001`, MalformedPacket},
	{"puback 3.1.1 extra byte", V311, `40 03 0001 00`, MalformedPacket},
	{"puback one byte", V5, `40 01 00`, MalformedPacket},
	{"pubrec packet id 0", V5, `50 02 0000`, ProtocolError},
	{"pubcomp 5.0 reason 0x10", V5, `70 03 0001 10`, ProtocolError},
	{"puback 5.0 reason 0x92", V5, `40 03 0001 92`, ProtocolError},
	{"puback 5.0 subscription id", V5, `40 06 0001 00 02 0b01`, ProtocolError},
	{"puback 5.0 reason string twice", V5, `40 0c 0001 00 08 1f0001 61 1f0001 62`, ProtocolError},
	{"puback 5.0 trailing byte", V5, `40 05 0001 00 00 00`, MalformedPacket},

	// SUBSCRIBE.
	{"subscribe flags 0", V311, `80 06 0001 0001 74 00`, MalformedPacket},
	{"subscribe no subscriptions 3.1.1", V311, `82 02 0001`, ProtocolError},
	{"subscribe no subscriptions 5.0", V5, `82 03 0001 00`, ProtocolError},
	{"subscribe 3.1.1 reserved option bits", V311, `82 06 0001 0001 74 04`, MalformedPacket},
	{"subscribe 5.0 reserved option bits", V5, `82 07 0001 00 0001 74 40`, MalformedPacket},
	{"subscribe qos 3", V5, `82 07 0001 00 0001 74 03`, MalformedPacket},
	{"subscribe retain handling 3", V5, `82 07 0001 00 0001 74 30`, ProtocolError},
	{"subscribe missing options", V311, `82 05 0001 0001 74`, MalformedPacket},
	{"subscribe packet id 0", V311, `82 06 0000 0001 74 00`, ProtocolError},
	{"subscribe 5.0 two subscription ids", V5, `82 0b 0001 04 0b01 0b02 0001 74 00`, ProtocolError},
	{"subscribe 5.0 no local on shared", V5, `82 0f 0001 00 0009 2473686172652f672f 04`, ProtocolError},
	{"subscribe 5.0 reason string", V5, `82 0b 0001 04 1f000161 0001 74 00`, ProtocolError},

	// SUBACK.
	{"suback 3.1.1 code 0x8f", V311, `90 03 0001 8f`, ProtocolError},
	{"suback 5.0 code 0x03", V5, `90 04 0001 00 03`, ProtocolError},
	{"suback no codes", V5, `90 03 0001 00`, ProtocolError},

	// UNSUBSCRIBE.
	{"unsubscribe flags 0", V311, `a0 05 0001 0001 74`, MalformedPacket},
	{"unsubscribe no filters", V311, `a2 02 0001`, ProtocolError},
	{"unsubscribe truncated filter", V311, `a2 05 0001 0002 74`, MalformedPacket},
	{"unsubscribe 5.0 subscription id", V5, `a2 08 0001 02 0b01 0001 74`, ProtocolError},

	// UNSUBACK.
	{"unsuback 3.1.1 payload", V311, `b0 03 0001 00`, MalformedPacket},
	{"unsuback 5.0 code 0x01", V5, `b0 04 0001 00 01`, ProtocolError},
	{"unsuback 5.0 no codes", V5, `b0 03 0001 00`, ProtocolError},

	// CONNACK.
	{"connack reserved ack flags", V311, `20 02 02 00`, MalformedPacket},
	{"connack 3.1.1 return code 6", V311, `20 02 00 06`, ProtocolError},
	{"connack session present with error", V311, `20 02 01 05`, ProtocolError},
	{"connack 5.0 missing property length", V5, `20 02 00 00`, MalformedPacket},
	{"connack 5.0 maximum qos 2", V5, `20 05 00 00 02 2402`, ProtocolError},
	{"connack 5.0 retain available 2", V5, `20 05 00 00 02 2502`, ProtocolError},
	{"connack 5.0 reason 0x04", V5, `20 03 00 04 00`, ProtocolError},
	{"connack 5.0 will delay", V5, `20 08 00 00 05 1800000001`, ProtocolError},

	// DISCONNECT.
	{"disconnect 3.1.1 body", V311, `e0 01 00`, MalformedPacket},
	{"disconnect flags", V5, `e1 00`, MalformedPacket},
	{"disconnect 5.0 reason 0x01", V5, `e0 01 01`, ProtocolError},
	{"disconnect 5.0 topic alias", V5, `e0 05 00 03 230001`, ProtocolError},
	{"disconnect 5.0 property length past end", V5, `e0 02 00 05`, MalformedPacket},

	// AUTH.
	{"auth 3.1.1", V311, `f0 00`, MalformedPacket},
	{"auth flags", V5, `f1 00`, MalformedPacket},
	{"auth 5.0 reason 0x01", V5, `f0 02 01 00`, ProtocolError},
	{"auth 5.0 without method", V5, `f0 02 18 00`, ProtocolError},
	{"auth 5.0 reason without property length", V5, `f0 01 18`, MalformedPacket},
	{"auth 5.0 session expiry", V5, `f0 0b 18 09 150001 61 1100000001`, ProtocolError},

	// PINGREQ, PINGRESP.
	{"pingreq body", V311, `c0 01 00`, MalformedPacket},
	{"pingresp flags", V5, `d2 00`, MalformedPacket},
}

func TestDecodeErrors(t *testing.T) {
	for _, tt := range decodeErrorCases {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodePacket(hx(tt.wire), tt.v)
			if err == nil {
				t.Fatalf("decoded without error, want %v", tt.want)
			}
			if got := reasonOf(t, err); got != tt.want {
				t.Errorf("reason %v (%v), want %v", got, err, tt.want)
			}
			t.Log(err)
			if !errors.Is(err, tt.want) {
				t.Errorf("errors.Is(err, %v) is false", tt.want)
			}
		})
	}
}

func TestDecodeFixedHeaderShort(t *testing.T) {
	for _, in := range []string{``, `30`, `30 80`, `30 ff ff`, `30 ff ff ff`} {
		h, n, err := DecodeFixedHeader(hx(in))
		if n != 0 || err != nil {
			t.Errorf("%q: got %+v %d %v, want more bytes needed", in, h, n, err)
		}
	}
	h, n, err := DecodeFixedHeader(hx(`3b ff ff ff 7f 00`))
	if err != nil || n != 5 || h != (FixedHeader{Type: PUBLISH, Flags: 0xb, Remaining: MaxRemainingLength}) {
		t.Errorf("largest header: %+v %d %v", h, n, err)
	}
}

func TestVarint(t *testing.T) {
	for _, v := range []uint32{0, 1, 127, 128, 16383, 16384, 2097151, 2097152, MaxRemainingLength} {
		b := AppendVarint(nil, v)
		if len(b) != VarintSize(v) {
			t.Errorf("%d: %d bytes, VarintSize %d", v, len(b), VarintSize(v))
		}
		got, n, err := decodeVarint(b)
		if err != nil || n != len(b) || got != v {
			t.Errorf("%d: decoded %d (%d bytes, %v)", v, got, n, err)
		}
	}
}

func TestValidUTF8String(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"", true},
		{"a/b", true},
		{"\u00e9\u4e16\U0001F600", true},
		{"\x01\x1f\x7f\u0080\u009f\uFFFF", true}, // SHOULD NOT, not MUST NOT
		{"a\x00b", false},
		{"\xff", false},
		{"\xc3", false},             // truncated sequence
		{"\xc0\xaf", false},         // overlong
		{"\xed\xa0\x80", false},     // surrogate U+D800
		{"\xf4\x90\x80\x80", false}, // beyond U+10FFFF
	}
	for _, tt := range tests {
		if got := ValidUTF8String(tt.in); got != tt.want {
			t.Errorf("ValidUTF8String(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
