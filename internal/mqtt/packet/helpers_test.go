package packet

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// hx decodes an annotated hex fixture: "//" starts a comment running to the
// end of the line, and whitespace is ignored.
func hx(s string) []byte {
	var clean strings.Builder
	for line := range strings.SplitSeq(s, "\n") {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		clean.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(clean.String())
	if err != nil {
		panic(fmt.Sprintf("bad fixture %q: %v", s, err))
	}
	return b
}

// propWith builds Properties from (id, value) pairs: numbers as int,
// strings as string, binary as []byte, user properties as UserProperty.
func propWith(kv ...any) Properties {
	var p Properties
	for i := 0; i < len(kv); i += 2 {
		id := kv[i].(Property)
		v := kv[i+1]
		switch id {
		case PropSubscriptionID:
			p.SubscriptionIDs = append(p.SubscriptionIDs, uint32(v.(int)))
			continue
		case PropUserProperty:
			p.User = append(p.User, v.(UserProperty))
			continue
		}
		p.Set(id)
		switch id {
		case PropPayloadFormat:
			p.PayloadFormat = byte(v.(int))
		case PropMessageExpiry:
			p.MessageExpiry = uint32(v.(int))
		case PropContentType:
			p.ContentType = v.(string)
		case PropResponseTopic:
			p.ResponseTopic = v.(string)
		case PropCorrelationData:
			p.CorrelationData = v.([]byte)
		case PropSessionExpiry:
			p.SessionExpiry = uint32(v.(int))
		case PropAssignedClientID:
			p.AssignedClientID = v.(string)
		case PropServerKeepAlive:
			p.ServerKeepAlive = uint16(v.(int))
		case PropAuthMethod:
			p.AuthMethod = v.(string)
		case PropAuthData:
			p.AuthData = v.([]byte)
		case PropRequestProblemInfo:
			p.RequestProblemInfo = byte(v.(int))
		case PropWillDelay:
			p.WillDelay = uint32(v.(int))
		case PropRequestResponseInfo:
			p.RequestResponseInfo = byte(v.(int))
		case PropResponseInfo:
			p.ResponseInfo = v.(string)
		case PropServerReference:
			p.ServerReference = v.(string)
		case PropReasonString:
			p.ReasonString = v.(string)
		case PropReceiveMaximum:
			p.ReceiveMaximum = uint16(v.(int))
		case PropTopicAliasMaximum:
			p.TopicAliasMaximum = uint16(v.(int))
		case PropTopicAlias:
			p.TopicAlias = uint16(v.(int))
		case PropMaximumQoS:
			p.MaximumQoS = byte(v.(int))
		case PropRetainAvailable:
			p.RetainAvailable = byte(v.(int))
		case PropMaximumPacketSize:
			p.MaximumPacketSize = uint32(v.(int))
		case PropWildcardSubAvailable:
			p.WildcardSubAvailable = byte(v.(int))
		case PropSubIDAvailable:
			p.SubIDAvailable = byte(v.(int))
		case PropSharedSubAvailable:
			p.SharedSubAvailable = byte(v.(int))
		default:
			panic(fmt.Sprintf("propWith: unknown property %d", id))
		}
	}
	return p
}

// decodePacket decodes a complete packet (fixed header included) into a
// fresh struct of its type. For CONNECT the version comes from the packet.
func decodePacket(data []byte, v Version) (Packet, error) {
	h, n, err := DecodeFixedHeader(data)
	if err != nil {
		return nil, err
	}
	if n == 0 || n+h.Remaining != len(data) {
		return nil, fmt.Errorf("fixture length mismatch: header says %d+%d, have %d", n, h.Remaining, len(data))
	}
	return decodeBody(h.Type, h.Flags, data[n:], v)
}

func decodeBody(t Type, flags byte, body []byte, v Version) (Packet, error) {
	switch t {
	case CONNECT:
		p := new(Connect)
		return p, p.Decode(flags, body)
	case CONNACK:
		p := new(ConnAck)
		return p, p.Decode(flags, body, v)
	case PUBLISH:
		p := new(Publish)
		return p, p.Decode(flags, body, v)
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		p := new(Ack)
		return p, p.Decode(t, flags, body, v)
	case SUBSCRIBE:
		p := new(Subscribe)
		return p, p.Decode(flags, body, v)
	case SUBACK:
		p := new(SubAck)
		return p, p.Decode(flags, body, v)
	case UNSUBSCRIBE:
		p := new(Unsubscribe)
		return p, p.Decode(flags, body, v)
	case UNSUBACK:
		p := new(UnsubAck)
		return p, p.Decode(flags, body, v)
	case PINGREQ:
		p := new(PingReq)
		return p, p.Decode(flags, body, v)
	case PINGRESP:
		p := new(PingResp)
		return p, p.Decode(flags, body, v)
	case DISCONNECT:
		p := new(Disconnect)
		return p, p.Decode(flags, body, v)
	case AUTH:
		p := new(Auth)
		return p, p.Decode(flags, body, v)
	}
	return nil, fmt.Errorf("no decoder for type %d", t)
}

// reasonOf extracts the reason code of a codec error, failing the test when
// err is not an *Error.
func reasonOf(t *testing.T, err error) ReasonCode {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *packet.Error", err, err)
	}
	return e.Code
}
