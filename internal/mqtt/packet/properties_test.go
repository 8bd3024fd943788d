package packet

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
)

// specPlacement is the property table of MQTT 5.0 §2.2.2.2, transcribed
// independently of propSpec; willProperties (0) stands for the will
// properties of CONNECT.
var specPlacement = map[Property][]Type{
	PropPayloadFormat:        {PUBLISH, willProperties},
	PropMessageExpiry:        {PUBLISH, willProperties},
	PropContentType:          {PUBLISH, willProperties},
	PropResponseTopic:        {PUBLISH, willProperties},
	PropCorrelationData:      {PUBLISH, willProperties},
	PropSubscriptionID:       {PUBLISH, SUBSCRIBE},
	PropSessionExpiry:        {CONNECT, CONNACK, DISCONNECT},
	PropAssignedClientID:     {CONNACK},
	PropServerKeepAlive:      {CONNACK},
	PropAuthMethod:           {CONNECT, CONNACK, AUTH},
	PropAuthData:             {CONNECT, CONNACK, AUTH},
	PropRequestProblemInfo:   {CONNECT},
	PropWillDelay:            {willProperties},
	PropRequestResponseInfo:  {CONNECT},
	PropResponseInfo:         {CONNACK},
	PropServerReference:      {CONNACK, DISCONNECT},
	PropReasonString:         {CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH},
	PropReceiveMaximum:       {CONNECT, CONNACK},
	PropTopicAliasMaximum:    {CONNECT, CONNACK},
	PropTopicAlias:           {PUBLISH},
	PropMaximumQoS:           {CONNACK},
	PropRetainAvailable:      {CONNACK},
	PropUserProperty:         {CONNECT, CONNACK, PUBLISH, willProperties, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH},
	PropMaximumPacketSize:    {CONNECT, CONNACK},
	PropWildcardSubAvailable: {CONNACK},
	PropSubIDAvailable:       {CONNACK},
	PropSharedSubAvailable:   {CONNACK},
}

// sampleProp encodes one valid instance of property id.
func sampleProp(id Property) []byte {
	b := []byte{byte(id)}
	switch kind, _, _ := propSpec(id); kind {
	case kindByte:
		return append(b, 1)
	case kindU16:
		return append(b, 0, 1)
	case kindU32:
		return append(b, 0, 0, 0, 1)
	case kindVarint:
		return append(b, 1)
	case kindString, kindBinary:
		return append(b, 0, 1, 'r')
	case kindPair:
		return append(b, 0, 1, 'k', 0, 1, 'v')
	}
	panic(fmt.Sprintf("no sample for %v", id))
}

// packetWithProps builds a complete 5.0 packet of type t (0: CONNECT with a
// will) whose properties (will properties for t == 0) are block.
func packetWithProps(t Type, block []byte) []byte {
	props := AppendVarint(nil, uint32(len(block)))
	props = append(props, block...)
	var body []byte
	typ, flags := t, byte(0)
	switch t {
	case willProperties:
		typ = CONNECT
		body = append(hx(`0004 4d515454 05 06 003c 00 0001 63`), props...)
		body = append(body, hx(`0001 74 0000`)...)
	case CONNECT:
		body = append(hx(`0004 4d515454 05 02 003c`), props...)
		body = append(body, hx(`0001 63`)...)
	case CONNACK:
		body = append([]byte{0, 0}, props...)
	case PUBLISH:
		body = append(hx(`0001 74`), props...)
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		if t == PUBREL {
			flags = 2
		}
		body = append(hx(`0001 00`), props...)
	case SUBSCRIBE, UNSUBSCRIBE:
		flags = 2
		body = append(hx(`0001`), props...)
		body = append(body, hx(`0001 74`)...)
		if t == SUBSCRIBE {
			body = append(body, 0)
		}
	case SUBACK, UNSUBACK:
		body = append(append(hx(`0001`), props...), 0)
	case DISCONNECT, AUTH:
		body = append([]byte{0}, props...)
	}
	return append(appendHeader(nil, typ, flags, len(body)), body...)
}

var propTypes = []Type{willProperties, CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP,
	SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH}

// TestPropertyPlacement puts every property into every packet type that has
// properties and checks acceptance against the specification's table.
func TestPropertyPlacement(t *testing.T) {
	if len(specPlacement) != 27 {
		t.Fatalf("table has %d properties, the specification 27", len(specPlacement))
	}
	for id, allowed := range specPlacement {
		for _, typ := range propTypes {
			block := sampleProp(id)
			// Authentication data needs its method, and AUTH always does.
			if id == PropAuthData || (typ == AUTH && id != PropAuthMethod) {
				block = append(sampleProp(PropAuthMethod), block...)
			}
			want := false
			for _, a := range allowed {
				want = want || a == typ
			}
			name := fmt.Sprintf("%v in %v", id, propContext(typ))
			if PropertyAllowed(id, typ) != want {
				t.Errorf("%s: PropertyAllowed = %v", name, !want)
			}
			p, err := decodePacket(packetWithProps(typ, block), V5)
			switch {
			case want && err != nil:
				t.Errorf("%s: rejected: %v", name, err)
			case !want && err == nil:
				t.Errorf("%s: accepted", name)
			case !want && reasonOf(t, err) != ProtocolError:
				t.Errorf("%s: %v, want protocol error", name, err)
			case want:
				if props := propsOf(p, typ); !props.Has(id) {
					t.Errorf("%s: decoded properties lack it", name)
				}
			}
		}
	}
}

// propsOf returns the decoded properties of p (the will's for willProperties).
func propsOf(p Packet, t Type) *Properties {
	var props Properties
	switch p := p.(type) {
	case *Connect:
		props = p.Properties
		if t == willProperties {
			props = p.Will.Properties
		}
	case *ConnAck:
		props = p.Properties
	case *Publish:
		props = p.Properties
	case *Ack:
		props = p.Properties
	case *Subscribe:
		props = p.Properties
	case *SubAck:
		props = p.Properties
	case *Unsubscribe:
		props = p.Properties
	case *UnsubAck:
		props = p.Properties
	case *Disconnect:
		props = p.Properties
	case *Auth:
		props = p.Properties
	}
	return &props
}

// TestPropertyRepeat includes each property twice where it is allowed: only
// User Property, and Subscription Identifier in PUBLISH, may repeat.
func TestPropertyRepeat(t *testing.T) {
	for id, allowed := range specPlacement {
		for _, typ := range allowed {
			one := sampleProp(id)
			block := append(append([]byte(nil), one...), one...)
			if id == PropAuthData || (typ == AUTH && id != PropAuthMethod) {
				block = append(sampleProp(PropAuthMethod), block...)
			}
			_, err := decodePacket(packetWithProps(typ, block), V5)
			repeatable := id == PropUserProperty || (id == PropSubscriptionID && typ == PUBLISH)
			name := fmt.Sprintf("%v twice in %v", id, propContext(typ))
			switch {
			case repeatable && err != nil:
				t.Errorf("%s: %v", name, err)
			case !repeatable && err == nil:
				t.Errorf("%s: accepted", name)
			case !repeatable && reasonOf(t, err) != ProtocolError:
				t.Errorf("%s: %v, want protocol error", name, err)
			}
		}
	}
}

// TestPropertiesRoundTrip encodes a Properties holding every property and
// decodes it back through the PUBLISH and CONNACK paths.
func TestPropertiesRoundTrip(t *testing.T) {
	all := propWith(PropPayloadFormat, 1, PropMessageExpiry, 1<<31, PropContentType, "ct",
		PropResponseTopic, "a/b", PropCorrelationData, []byte{0}, PropSubscriptionID, MaxRemainingLength,
		PropSubscriptionID, 128, PropTopicAlias, 65535, PropUserProperty, UserProperty{"", ""})
	p := Publish{Topic: "t", Properties: all}
	enc := p.Append(nil, V5)
	if len(enc) != p.Size(V5) {
		t.Fatalf("Size %d, encoded %d", p.Size(V5), len(enc))
	}
	got, err := decodePacket(enc, V5)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.(*Publish).Properties, all) {
		t.Errorf("got %+v\nwant %+v", got.(*Publish).Properties, all)
	}

	// Properties never decoded keep their zero value and stay absent.
	var empty Properties
	if !empty.Empty() || empty.size() != 0 {
		t.Error("zero Properties not empty")
	}
	if enc := (&Publish{Topic: "t"}).Append(nil, V5); !bytes.Equal(enc, hx(`30 04 0001 74 00`)) {
		t.Errorf("no properties: % x", enc)
	}
}

func TestPropertiesBlockRoundTrip(t *testing.T) {
	var in Properties
	in.ContentType = "application/json"
	in.Set(PropContentType)
	in.CorrelationData = []byte{1, 2, 3}
	in.Set(PropCorrelationData)
	in.User = []UserProperty{{"a", "1"}, {"a", "2"}}
	b := AppendProperties(nil, &in)
	var out Properties
	if err := DecodeProperties(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.ContentType != in.ContentType || string(out.CorrelationData) != "\x01\x02\x03" || len(out.User) != 2 || out.User[1].Value != "2" {
		t.Fatalf("round trip: %+v", out)
	}
	if err := DecodeProperties(append(b, 0), &out); err == nil {
		t.Fatal("trailing byte accepted")
	}
}
