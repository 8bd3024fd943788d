package packet

import (
	"bytes"
	"reflect"
	"testing"
)

// fixture is one packet in both forms: the struct and its wire bytes. The
// round-trip test checks both directions against the same bytes.
type fixture struct {
	name string
	v    Version
	p    Packet
	wire string
}

var fixtures = []fixture{
	// ---- CONNECT ----
	{"connect 3.1.1 minimal", V311, &Connect{ProtocolName: "MQTT", Version: V311, CleanStart: true, KeepAlive: 60, ClientID: "c1"}, `
		10 0e             // CONNECT, remaining 14
		00 04 4d 51 54 54 // protocol name "MQTT"
		04                // level 4
		02                // flags: clean session
		00 3c             // keep alive 60
		00 02 63 31       // client id "c1"`},
	{"connect 3.1.1 will user password", V311, &Connect{
		ProtocolName: "MQTT", Version: V311, KeepAlive: 10, ClientID: "cid",
		Will:        &Will{Topic: "a/b", Payload: []byte("hi"), QoS: 1, Retain: true},
		HasUsername: true, Username: "u", HasPassword: true, Password: []byte("pw")}, `
		10 1f             // CONNECT, remaining 31
		00 04 4d 51 54 54 // "MQTT"
		04                // level 4
		ec                // flags: username, password, will retain, will QoS 1, will
		00 0a             // keep alive 10
		00 03 63 69 64    // client id "cid"
		00 03 61 2f 62    // will topic "a/b"
		00 02 68 69       // will payload "hi"
		00 01 75          // username "u"
		00 02 70 77       // password "pw"`},
	{"connect 3.1 MQIsdp", V31, &Connect{ProtocolName: "MQIsdp", Version: V31, CleanStart: true, KeepAlive: 30, ClientID: "x"}, `
		10 0f                   // CONNECT, remaining 15
		00 06 4d 51 49 73 64 70 // "MQIsdp"
		03                      // level 3
		02                      // clean session
		00 1e                   // keep alive 30
		00 01 78                // client id "x"`},
	{"connect 5.0 full", V5, &Connect{
		ProtocolName: "MQTT", Version: V5, CleanStart: true, KeepAlive: 30, ClientID: "c5",
		Properties: propWith(PropSessionExpiry, 3600, PropAuthMethod, "m", PropAuthData, []byte{1, 2},
			PropRequestProblemInfo, 0, PropRequestResponseInfo, 1, PropReceiveMaximum, 10,
			PropTopicAliasMaximum, 5, PropUserProperty, UserProperty{"k", "v"}, PropMaximumPacketSize, 1024),
		Will: &Will{Topic: "w", Payload: []byte("bye"), QoS: 2,
			Properties: propWith(PropPayloadFormat, 1, PropMessageExpiry, 60, PropContentType, "t",
				PropResponseTopic, "r", PropCorrelationData, []byte("c"), PropWillDelay, 5,
				PropUserProperty, UserProperty{"a", "b"})},
		HasUsername: true, Username: "u", HasPassword: true, Password: []byte("p")}, `
		10 61             // CONNECT, remaining 97
		00 04 4d 51 54 54 // "MQTT"
		05                // level 5
		d6                // flags: username, password, will QoS 2, will, clean start
		00 1e             // keep alive 30
		24                // property length 36
		  11 00 00 0e 10            // session expiry 3600
		  15 00 01 6d               // authentication method "m"
		  16 00 02 01 02            // authentication data 01 02
		  17 00                     // request problem information 0
		  19 01                     // request response information 1
		  21 00 0a                  // receive maximum 10
		  22 00 05                  // topic alias maximum 5
		  26 00 01 6b 00 01 76      // user property k=v
		  27 00 00 04 00            // maximum packet size 1024
		00 02 63 35       // client id "c5"
		1f                // will property length 31
		  01 01                     // payload format 1
		  02 00 00 00 3c            // message expiry 60
		  03 00 01 74               // content type "t"
		  08 00 01 72               // response topic "r"
		  09 00 01 63               // correlation data "c"
		  18 00 00 00 05            // will delay 5
		  26 00 01 61 00 01 62      // user property a=b
		00 01 77          // will topic "w"
		00 03 62 79 65    // will payload "bye"
		00 01 75          // username "u"
		00 01 70          // password "p"`},
	{"connect 5.0 password without username", V5, &Connect{ProtocolName: "MQTT", Version: V5, ClientID: "", HasPassword: true}, `
		10 0f             // CONNECT, remaining 15
		00 04 4d 51 54 54 // "MQTT"
		05                // level 5
		40                // flags: password only (legal in 5.0)
		00 00             // keep alive 0
		00                // no properties
		00 00             // empty client id (server assigns one)
		00 00             // empty password`},

	// ---- CONNACK ----
	{"connack 3.1.1 session present", V311, &ConnAck{SessionPresent: true}, `
		20 02 // CONNACK, remaining 2
		01    // session present
		00    // accepted`},
	{"connack 3.1.1 refused", V311, &ConnAck{ReasonCode: ConnRefusedNotAuthorized311}, `
		20 02 00 05 // not authorized`},
	{"connack 5.0 refused", V5, &ConnAck{ReasonCode: NotAuthorized}, `
		20 03 // CONNACK, remaining 3
		00    // no session
		87    // not authorized
		00    // no properties`},
	{"connack 5.0 full", V5, &ConnAck{Properties: propWith(PropSessionExpiry, 0, PropAssignedClientID, "id",
		PropServerKeepAlive, 30, PropResponseInfo, "ri", PropReasonString, "ok", PropReceiveMaximum, 100,
		PropTopicAliasMaximum, 10, PropMaximumQoS, 1, PropRetainAvailable, 0, PropUserProperty, UserProperty{"x", "y"},
		PropMaximumPacketSize, 65536, PropWildcardSubAvailable, 1, PropSubIDAvailable, 0, PropSharedSubAvailable, 1)}, `
		20 36 // CONNACK, remaining 54
		00 00 // flags, success
		33    // property length 51
		  11 00 00 00 00       // session expiry 0 (present)
		  12 00 02 69 64       // assigned client id "id"
		  13 00 1e             // server keep alive 30
		  1a 00 02 72 69       // response information "ri"
		  1f 00 02 6f 6b       // reason string "ok"
		  21 00 64             // receive maximum 100
		  22 00 0a             // topic alias maximum 10
		  24 01                // maximum QoS 1
		  25 00                // retain available 0
		  26 00 01 78 00 01 79 // user property x=y
		  27 00 01 00 00       // maximum packet size 65536
		  28 01                // wildcard subscription available
		  29 00                // subscription identifiers not available
		  2a 01                // shared subscription available`},
	{"connack 5.0 server moved", V5, &ConnAck{ReasonCode: UseAnotherServer, Properties: propWith(PropServerReference, "h:1")}, `
		20 09                // CONNACK, remaining 9
		00 9c                // use another server
		06 1c 00 03 68 3a 31 // server reference "h:1"`},

	// ---- PUBLISH ----
	{"publish 3.1.1 qos0", V311, &Publish{Topic: "a/b", Payload: []byte("hello")}, `
		30 0a          // PUBLISH QoS 0, remaining 10
		00 03 61 2f 62 // topic "a/b"
		68 65 6c 6c 6f // payload "hello"`},
	{"publish 3.1.1 qos1 dup retain empty payload", V311, &Publish{Dup: true, QoS: 1, Retain: true, Topic: "a/b", PacketID: 7}, `
		3b 07          // PUBLISH DUP QoS 1 RETAIN, remaining 7
		00 03 61 2f 62 // topic "a/b"
		00 07          // packet id 7`},
	{"publish 5.0 qos0 no properties", V5, &Publish{Topic: "t", Payload: []byte("x")}, `
		30 05    // PUBLISH, remaining 5
		00 01 74 // topic "t"
		00       // no properties
		78       // payload "x"`},
	{"publish 5.0 qos2 properties", V5, &Publish{QoS: 2, Topic: "s/1", PacketID: 0x1234,
		Properties: propWith(PropPayloadFormat, 1, PropMessageExpiry, 300, PropContentType, "json",
			PropResponseTopic, "resp", PropCorrelationData, []byte{0xbe, 0xef}, PropSubscriptionID, 1,
			PropSubscriptionID, 16383, PropTopicAlias, 3, PropUserProperty, UserProperty{"k", "v"},
			PropUserProperty, UserProperty{"k", "w"}),
		Payload: []byte("{}")}, `
		34 3a          // PUBLISH QoS 2, remaining 58
		00 03 73 2f 31 // topic "s/1"
		12 34          // packet id 0x1234
		30             // property length 48
		  01 01                   // payload format 1 (UTF-8)
		  02 00 00 01 2c          // message expiry 300
		  03 00 04 6a 73 6f 6e    // content type "json"
		  08 00 04 72 65 73 70    // response topic "resp"
		  09 00 02 be ef          // correlation data
		  0b 01                   // subscription id 1
		  0b ff 7f                // subscription id 16383 (two-byte varint)
		  23 00 03                // topic alias 3
		  26 00 01 6b 00 01 76    // user property k=v
		  26 00 01 6b 00 01 77    // user property k=w (duplicate names are kept, in order)
		7b 7d          // payload "{}"`},
	{"publish 5.0 empty topic with alias", V5, &Publish{QoS: 1, PacketID: 1, Properties: propWith(PropTopicAlias, 2), Payload: []byte("z")}, `
		32 09          // PUBLISH QoS 1, remaining 9
		00 00          // empty topic: the alias supplies it
		00 01          // packet id 1
		03 23 00 02    // properties: topic alias 2
		7a             // payload "z"`},

	// ---- PUBACK / PUBREC / PUBREL / PUBCOMP ----
	{"puback 3.1.1", V311, &Ack{Type: PUBACK, PacketID: 1}, `40 02 00 01`},
	{"pubrec 3.1.1", V311, &Ack{Type: PUBREC, PacketID: 2}, `50 02 00 02`},
	{"pubrel 3.1.1", V311, &Ack{Type: PUBREL, PacketID: 3}, `62 02 00 03 // PUBREL carries flags 0010`},
	{"pubcomp 3.1.1", V311, &Ack{Type: PUBCOMP, PacketID: 4}, `70 02 00 04`},
	{"puback 5.0 short form", V5, &Ack{Type: PUBACK, PacketID: 5}, `40 02 00 05 // success, no properties: id only`},
	{"pubrec 5.0 reason only", V5, &Ack{Type: PUBREC, PacketID: 6, ReasonCode: NoMatchingSubscribers}, `
		50 03 // PUBREC, remaining 3
		00 06 // packet id 6
		10    // no matching subscribers; property length omitted`},
	{"pubrel 5.0 full", V5, &Ack{Type: PUBREL, PacketID: 7, ReasonCode: PacketIdentifierNotFound,
		Properties: propWith(PropReasonString, "gone", PropUserProperty, UserProperty{"k", "v"})}, `
		62 12 // PUBREL, remaining 18
		00 07 // packet id 7
		92    // packet identifier not found
		0e    // property length 14
		  1f 00 04 67 6f 6e 65 // reason string "gone"
		  26 00 01 6b 00 01 76 // user property k=v`},
	{"puback 5.0 success with properties", V5, &Ack{Type: PUBACK, PacketID: 9, Properties: propWith(PropReasonString, "r")}, `
		40 08       // PUBACK, remaining 8
		00 09       // packet id 9
		00          // success
		04 1f 00 01 72 // reason string "r"`},
	{"pubcomp 5.0 short form", V5, &Ack{Type: PUBCOMP, PacketID: 8}, `70 02 00 08`},

	// ---- SUBSCRIBE ----
	{"subscribe 3.1.1", V311, &Subscribe{PacketID: 10, Subscriptions: []Subscription{{Filter: "a/+", QoS: 1}, {Filter: "#", QoS: 2}}}, `
		82 0c          // SUBSCRIBE (flags 0010), remaining 12
		00 0a          // packet id 10
		00 03 61 2f 2b // filter "a/+"
		01             // QoS 1
		00 01 23       // filter "#"
		02             // QoS 2`},
	{"subscribe 5.0", V5, &Subscribe{PacketID: 11,
		Properties: propWith(PropSubscriptionID, 42, PropUserProperty, UserProperty{"k", "v"}),
		Subscriptions: []Subscription{
			{Filter: "a/b", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
			{Filter: "$share/g/x", RetainHandling: 1},
		}}, `
		82 1f          // SUBSCRIBE, remaining 31
		00 0b          // packet id 11
		09             // property length 9
		  0b 2a                // subscription id 42
		  26 00 01 6b 00 01 76 // user property k=v
		00 03 61 2f 62 // filter "a/b"
		2d             // retain handling 2, retain as published, no local, QoS 1
		00 0a 24 73 68 61 72 65 2f 67 2f 78 // filter "$share/g/x"
		10             // retain handling 1, QoS 0`},

	// ---- SUBACK ----
	{"suback 3.1.1", V311, &SubAck{PacketID: 10, ReasonCodes: []ReasonCode{GrantedQoS1, GrantedQoS2, UnspecifiedError}}, `
		90 05    // SUBACK, remaining 5
		00 0a    // packet id 10
		01 02 80 // granted 1, granted 2, failure`},
	{"suback 5.0", V5, &SubAck{PacketID: 11, Properties: propWith(PropReasonString, "no"),
		ReasonCodes: []ReasonCode{GrantedQoS1, TopicFilterInvalid, SubscriptionIdentifiersNotSupported}}, `
		90 0b             // SUBACK, remaining 11
		00 0b             // packet id 11
		05 1f 00 02 6e 6f // reason string "no"
		01 8f a1          // granted 1, topic filter invalid, subscription ids not supported`},

	// ---- UNSUBSCRIBE ----
	{"unsubscribe 3.1.1", V311, &Unsubscribe{PacketID: 12, Filters: []string{"a/b", "#"}}, `
		a2 0a          // UNSUBSCRIBE (flags 0010), remaining 10
		00 0c          // packet id 12
		00 03 61 2f 62 // "a/b"
		00 01 23       // "#"`},
	{"unsubscribe 5.0", V5, &Unsubscribe{PacketID: 13, Properties: propWith(PropUserProperty, UserProperty{"k", "v"}), Filters: []string{"a/b"}}, `
		a2 0f                   // UNSUBSCRIBE, remaining 15
		00 0d                   // packet id 13
		07 26 00 01 6b 00 01 76 // user property k=v
		00 03 61 2f 62          // "a/b"`},

	// ---- UNSUBACK ----
	{"unsuback 3.1.1", V311, &UnsubAck{PacketID: 12}, `b0 02 00 0c // no payload in 3.1.1`},
	{"unsuback 5.0", V5, &UnsubAck{PacketID: 13, ReasonCodes: []ReasonCode{Success, NoSubscriptionExisted}}, `
		b0 05 // UNSUBACK, remaining 5
		00 0d // packet id 13
		00    // no properties
		00 11 // success, no subscription existed`},

	// ---- PINGREQ / PINGRESP ----
	{"pingreq 3.1.1", V311, &PingReq{}, `c0 00`},
	{"pingreq 5.0", V5, &PingReq{}, `c0 00`},
	{"pingresp 3.1.1", V311, &PingResp{}, `d0 00`},
	{"pingresp 5.0", V5, &PingResp{}, `d0 00`},

	// ---- DISCONNECT ----
	{"disconnect 3.1.1", V311, &Disconnect{}, `e0 00`},
	{"disconnect 5.0 short form", V5, &Disconnect{}, `e0 00 // normal disconnection`},
	{"disconnect 5.0 reason only", V5, &Disconnect{ReasonCode: DisconnectWithWill}, `e0 01 04 // disconnect with will`},
	{"disconnect 5.0 full", V5, &Disconnect{ReasonCode: ServerShuttingDown,
		Properties: propWith(PropSessionExpiry, 60, PropServerReference, "s", PropReasonString, "bye")}, `
		e0 11 // DISCONNECT, remaining 17
		8b    // server shutting down
		0f    // property length 15
		  11 00 00 00 3c    // session expiry 60
		  1c 00 01 73       // server reference "s"
		  1f 00 03 62 79 65 // reason string "bye"`},

	// ---- AUTH ----
	{"auth 5.0 short form", V5, &Auth{}, `f0 00 // success, no properties`},
	{"auth 5.0 continue", V5, &Auth{ReasonCode: ContinueAuthentication,
		Properties: propWith(PropAuthMethod, "sc", PropAuthData, []byte{1, 2, 3}, PropReasonString, "c")}, `
		f0 11 // AUTH, remaining 17
		18    // continue authentication
		0f    // property length 15
		  15 00 02 73 63       // authentication method "sc"
		  16 00 03 01 02 03    // authentication data
		  1f 00 01 63          // reason string "c"`},
}

func TestFixturesDecode(t *testing.T) {
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			got, err := decodePacket(hx(f.wire), f.v)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, f.p) {
				t.Errorf("decode mismatch\n got %+v\nwant %+v", got, f.p)
			}
		})
	}
}

func TestFixturesEncode(t *testing.T) {
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			want := hx(f.wire)
			if got := f.p.Append(nil, f.v); !bytes.Equal(got, want) {
				t.Errorf("Append\n got % x\nwant % x", got, want)
			}
			if got := f.p.Size(f.v); got != len(want) {
				t.Errorf("Size = %d, want %d", got, len(want))
			}
			// Append must append, leaving what dst holds alone.
			prefix := []byte{0xAA, 0xBB}
			if got := f.p.Append(prefix, f.v); !bytes.Equal(got, append(prefix, want...)) {
				t.Errorf("Append after prefix\n got % x", got)
			}
		})
	}
}

// TestEncodeNoAlloc checks that Append allocates nothing when dst has room.
func TestEncodeNoAlloc(t *testing.T) {
	dst := make([]byte, 0, 1024)
	for _, f := range fixtures {
		allocs := testing.AllocsPerRun(100, func() { dst = f.p.Append(dst[:0], f.v) })
		if allocs != 0 {
			t.Errorf("%s: Append allocates %.1f times", f.name, allocs)
		}
	}
}

// TestVersionOmits31Fields checks that 3.1.1 encoding drops every 5.0 field.
func TestVersionOmits5Fields(t *testing.T) {
	tests := []struct {
		name string
		p    Packet
		want string
	}{
		{"publish", &Publish{QoS: 1, PacketID: 1, Topic: "t", Properties: propWith(PropMessageExpiry, 1)}, `32 05 00 01 74 00 01`},
		{"puback", &Ack{Type: PUBACK, PacketID: 1, ReasonCode: NoMatchingSubscribers}, `40 02 00 01`},
		{"subscribe", &Subscribe{PacketID: 1, Properties: propWith(PropSubscriptionID, 1),
			Subscriptions: []Subscription{{Filter: "t", QoS: 1, NoLocal: true, RetainHandling: 2}}}, `82 06 00 01 00 01 74 01`},
		{"suback", &SubAck{PacketID: 1, Properties: propWith(PropReasonString, "x"), ReasonCodes: []ReasonCode{0}}, `90 03 00 01 00`},
		{"unsuback", &UnsubAck{PacketID: 1, ReasonCodes: []ReasonCode{0x11}}, `b0 02 00 01`},
		{"disconnect", &Disconnect{ReasonCode: ServerBusy}, `e0 00`},
		{"connack", &ConnAck{ReasonCode: 2, Properties: propWith(PropMaximumQoS, 1)}, `20 02 00 02`},
	}
	for _, tt := range tests {
		want := hx(tt.want)
		if got := tt.p.Append(nil, V311); !bytes.Equal(got, want) {
			t.Errorf("%s: got % x, want % x", tt.name, got, want)
		}
		if got := tt.p.Size(V311); got != len(want) {
			t.Errorf("%s: Size %d, want %d", tt.name, got, len(want))
		}
	}
}

// TestDecodeReuse decodes different packets into one struct in turn and
// expects the same result as decoding into a fresh one: nothing may leak
// from the previous packet.
func TestDecodeReuse(t *testing.T) {
	var pub Publish
	var ack Ack
	var sub Subscribe
	var conn Connect
	for range 2 {
		for _, f := range fixtures {
			data := hx(f.wire)
			h, n, _ := DecodeFixedHeader(data)
			body := data[n:]
			var p Packet
			var err error
			switch h.Type {
			case PUBLISH:
				p, err = &pub, pub.Decode(h.Flags, body, f.v)
			case PUBACK, PUBREC, PUBREL, PUBCOMP:
				p, err = &ack, ack.Decode(h.Type, h.Flags, body, f.v)
			case SUBSCRIBE:
				p, err = &sub, sub.Decode(h.Flags, body, f.v)
			case CONNECT:
				p, err = &conn, conn.Decode(h.Flags, body)
			default:
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", f.name, err)
			}
			if got := p.Append(nil, f.v); !bytes.Equal(got, data) {
				t.Errorf("%s: reused decode re-encodes as % x", f.name, got)
			}
		}
	}
}

func TestPublishAliasesBody(t *testing.T) {
	data := hx(fixtureNamed(t, "publish 5.0 qos2 properties").wire)
	h, n, _ := DecodeFixedHeader(data)
	var p Publish
	if err := p.Decode(h.Flags, data[n:], V5); err != nil {
		t.Fatal(err)
	}
	data[n+2] = 'X' // first topic byte
	data[len(data)-1] = '!'
	if p.Topic != "X/1" || string(p.Payload) != "{!" {
		t.Errorf("topic %q payload %q: want aliases of the body", p.Topic, p.Payload)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := p.Decode(h.Flags, data[n:], V5); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("reused Publish.Decode allocates %.1f times", allocs)
	}
}

func fixtureNamed(t *testing.T, name string) fixture {
	t.Helper()
	for _, f := range fixtures {
		if f.name == name {
			return f
		}
	}
	t.Fatalf("no fixture %q", name)
	return fixture{}
}
