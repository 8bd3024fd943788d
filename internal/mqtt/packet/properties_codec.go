package packet

import "math/bits"

// willProperties is the pseudo packet type used for the will properties of
// CONNECT; type 0 is reserved on the wire so it cannot collide.
const willProperties Type = 0

// propKind is the wire data type of a property value (MQTT 5.0 §2.2.2.2).
type propKind byte

const (
	kindByte propKind = iota + 1
	kindU16
	kindU32
	kindVarint
	kindString
	kindBinary
	kindPair
)

// Placement bits: bit t set means the property may appear in packet type t
// (bit 0 is the will properties).
const (
	inWill    = 1 << willProperties
	inConnect = 1 << CONNECT
	inConnAck = 1 << CONNACK
	inPublish = 1 << PUBLISH
	inPubAcks = 1<<PUBACK | 1<<PUBREC | 1<<PUBREL | 1<<PUBCOMP
	inSub     = 1 << SUBSCRIBE
	inSubAck  = 1 << SUBACK
	inUnsub   = 1 << UNSUBSCRIBE
	inUnsAck  = 1 << UNSUBACK
	inDisconn = 1 << DISCONNECT
	inAuth    = 1 << AUTH
)

// propSpec describes property id: its value type, the packets it may appear
// in and its name. kind == 0 means the identifier is unknown.
func propSpec(id Property) (kind propKind, where uint32, name string) {
	switch id {
	case PropPayloadFormat:
		return kindByte, inPublish | inWill, "payload format indicator"
	case PropMessageExpiry:
		return kindU32, inPublish | inWill, "message expiry interval"
	case PropContentType:
		return kindString, inPublish | inWill, "content type"
	case PropResponseTopic:
		return kindString, inPublish | inWill, "response topic"
	case PropCorrelationData:
		return kindBinary, inPublish | inWill, "correlation data"
	case PropSubscriptionID:
		return kindVarint, inPublish | inSub, "subscription identifier"
	case PropSessionExpiry:
		return kindU32, inConnect | inConnAck | inDisconn, "session expiry interval"
	case PropAssignedClientID:
		return kindString, inConnAck, "assigned client identifier"
	case PropServerKeepAlive:
		return kindU16, inConnAck, "server keep alive"
	case PropAuthMethod:
		return kindString, inConnect | inConnAck | inAuth, "authentication method"
	case PropAuthData:
		return kindBinary, inConnect | inConnAck | inAuth, "authentication data"
	case PropRequestProblemInfo:
		return kindByte, inConnect, "request problem information"
	case PropWillDelay:
		return kindU32, inWill, "will delay interval"
	case PropRequestResponseInfo:
		return kindByte, inConnect, "request response information"
	case PropResponseInfo:
		return kindString, inConnAck, "response information"
	case PropServerReference:
		return kindString, inConnAck | inDisconn, "server reference"
	case PropReasonString:
		return kindString, inConnAck | inPubAcks | inSubAck | inUnsAck | inDisconn | inAuth, "reason string"
	case PropReceiveMaximum:
		return kindU16, inConnect | inConnAck, "receive maximum"
	case PropTopicAliasMaximum:
		return kindU16, inConnect | inConnAck, "topic alias maximum"
	case PropTopicAlias:
		return kindU16, inPublish, "topic alias"
	case PropMaximumQoS:
		return kindByte, inConnAck, "maximum QoS"
	case PropRetainAvailable:
		return kindByte, inConnAck, "retain available"
	case PropUserProperty:
		return kindPair, inWill | inConnect | inConnAck | inPublish | inPubAcks | inSub | inSubAck |
			inUnsub | inUnsAck | inDisconn | inAuth, "user property"
	case PropMaximumPacketSize:
		return kindU32, inConnect | inConnAck, "maximum packet size"
	case PropWildcardSubAvailable:
		return kindByte, inConnAck, "wildcard subscription available"
	case PropSubIDAvailable:
		return kindByte, inConnAck, "subscription identifier available"
	case PropSharedSubAvailable:
		return kindByte, inConnAck, "shared subscription available"
	}
	return 0, 0, ""
}

// String names the property as the specification does.
func (id Property) String() string {
	if _, _, name := propSpec(id); name != "" {
		return name
	}
	return "unknown property"
}

// PropertyAllowed reports whether property id may appear in packet type t
// (MQTT 5.0 §2.2.2.2); t == 0 asks about the will properties of CONNECT.
func PropertyAllowed(id Property, t Type) bool {
	_, where, _ := propSpec(id)
	return t < 16 && where&(1<<t) != 0
}

// knownScalars has a bit for every property stored in a scalar, string or
// binary field, that is every one tracked by the present mask.
const knownScalars uint64 = 1<<PropPayloadFormat | 1<<PropMessageExpiry | 1<<PropContentType |
	1<<PropResponseTopic | 1<<PropCorrelationData | 1<<PropSessionExpiry | 1<<PropAssignedClientID |
	1<<PropServerKeepAlive | 1<<PropAuthMethod | 1<<PropAuthData | 1<<PropRequestProblemInfo |
	1<<PropWillDelay | 1<<PropRequestResponseInfo | 1<<PropResponseInfo | 1<<PropServerReference |
	1<<PropReasonString | 1<<PropReceiveMaximum | 1<<PropTopicAliasMaximum | 1<<PropTopicAlias |
	1<<PropMaximumQoS | 1<<PropRetainAvailable | 1<<PropMaximumPacketSize |
	1<<PropWildcardSubAvailable | 1<<PropSubIDAvailable | 1<<PropSharedSubAvailable

// decode reads a property length and the properties of packet type t from
// the start of b, returning the bytes consumed. It resets p first, keeping
// the capacity of its slices. Strings and binary values alias b when alias is
// set (PUBLISH, whose body the caller owns) and are copied otherwise.
func (p *Properties) decode(b []byte, t Type, alias bool) (int, error) {
	p.Reset()
	c := cursor{b: b}
	length, err := c.varint()
	if err != nil {
		return 0, err
	}
	if int(length) > c.rest() {
		return 0, Errorf(MalformedPacket, "property length %d exceeds packet", length)
	}
	end := c.i + int(length)
	c.b = b[:end]
	for c.i < end {
		idb, _ := c.byte()
		id := Property(idb)
		kind, where, name := propSpec(id)
		if kind == 0 {
			return 0, Errorf(MalformedPacket, "unknown property identifier 0x%02X", idb)
		}
		if where&(1<<t) == 0 {
			return 0, Errorf(ProtocolError, "%s not allowed in %s", name, propContext(t))
		}
		switch {
		case id == PropUserProperty:
		case id == PropSubscriptionID:
			if t != PUBLISH && len(p.SubscriptionIDs) > 0 {
				return 0, Errorf(ProtocolError, "%s included more than once", name)
			}
		case p.present&(1<<id) != 0:
			return 0, Errorf(ProtocolError, "%s included more than once", name)
		}
		if err := p.decodeValue(&c, id, kind, name, alias); err != nil {
			return 0, err
		}
	}
	if t == CONNECT && p.Has(PropAuthData) && !p.Has(PropAuthMethod) {
		return 0, Errorf(ProtocolError, "authentication data without authentication method")
	}
	return end, nil
}

func propContext(t Type) string {
	if t == willProperties {
		return "will properties"
	}
	return t.String()
}

// decodeValue reads the value of one property and stores it.
func (p *Properties) decodeValue(c *cursor, id Property, kind propKind, name string, alias bool) error {
	switch kind {
	case kindByte:
		v, ok := c.byte()
		if !ok {
			return Errorf(MalformedPacket, "truncated %s", name)
		}
		// Every one-byte property is a boolean or a QoS limited to 0 or 1.
		if v > 1 {
			return Errorf(ProtocolError, "%s has value %d", name, v)
		}
		switch id {
		case PropPayloadFormat:
			p.PayloadFormat = v
		case PropRequestProblemInfo:
			p.RequestProblemInfo = v
		case PropRequestResponseInfo:
			p.RequestResponseInfo = v
		case PropMaximumQoS:
			p.MaximumQoS = v
		case PropRetainAvailable:
			p.RetainAvailable = v
		case PropWildcardSubAvailable:
			p.WildcardSubAvailable = v
		case PropSubIDAvailable:
			p.SubIDAvailable = v
		case PropSharedSubAvailable:
			p.SharedSubAvailable = v
		}
	case kindU16:
		v, ok := c.u16()
		if !ok {
			return Errorf(MalformedPacket, "truncated %s", name)
		}
		switch id {
		case PropServerKeepAlive:
			p.ServerKeepAlive = v
		case PropReceiveMaximum:
			if v == 0 {
				return Errorf(ProtocolError, "receive maximum is 0")
			}
			p.ReceiveMaximum = v
		case PropTopicAliasMaximum:
			p.TopicAliasMaximum = v
		case PropTopicAlias:
			if v == 0 {
				return Errorf(TopicAliasInvalid, "topic alias is 0")
			}
			p.TopicAlias = v
		}
	case kindU32:
		v, ok := c.u32()
		if !ok {
			return Errorf(MalformedPacket, "truncated %s", name)
		}
		switch id {
		case PropMessageExpiry:
			p.MessageExpiry = v
		case PropSessionExpiry:
			p.SessionExpiry = v
		case PropWillDelay:
			p.WillDelay = v
		case PropMaximumPacketSize:
			if v == 0 {
				return Errorf(ProtocolError, "maximum packet size is 0")
			}
			p.MaximumPacketSize = v
		}
	case kindVarint:
		v, err := c.varint()
		if err != nil {
			return err
		}
		if v == 0 {
			return Errorf(ProtocolError, "subscription identifier is 0")
		}
		p.SubscriptionIDs = append(p.SubscriptionIDs, v)
		return nil
	case kindString:
		s, err := c.str(alias, name)
		if err != nil {
			return err
		}
		switch id {
		case PropContentType:
			p.ContentType = s
		case PropResponseTopic:
			if !validTopicName(s) || s == "" {
				return Errorf(ProtocolError, "response topic %q is not a valid topic name", s)
			}
			p.ResponseTopic = s
		case PropAssignedClientID:
			p.AssignedClientID = s
		case PropAuthMethod:
			p.AuthMethod = s
		case PropResponseInfo:
			p.ResponseInfo = s
		case PropServerReference:
			p.ServerReference = s
		case PropReasonString:
			p.ReasonString = s
		}
	case kindBinary:
		b, ok := c.binary()
		if !ok {
			return Errorf(MalformedPacket, "truncated %s", name)
		}
		if !alias {
			b = cloneBytes(b)
		} else if len(b) == 0 {
			b = nil
		}
		switch id {
		case PropCorrelationData:
			p.CorrelationData = b
		case PropAuthData:
			p.AuthData = b
		}
	case kindPair:
		k, err := c.str(alias, "user property name")
		if err != nil {
			return err
		}
		v, err := c.str(alias, "user property value")
		if err != nil {
			return err
		}
		if p.User == nil {
			// Room for the few a message usually carries (the Azure IoT
			// Operations SDKs send three or four): one allocation, not
			// one per doubling.
			p.User = make([]UserProperty, 0, 4)
		}
		p.User = append(p.User, UserProperty{Key: k, Value: v})
		return nil
	}
	p.present |= 1 << id
	return nil
}

// encodedMask is the set of properties the encoder writes, one bit each.
func (p *Properties) encodedMask() uint64 {
	m := p.present & knownScalars
	if len(p.SubscriptionIDs) > 0 {
		m |= 1 << PropSubscriptionID
	}
	if len(p.User) > 0 {
		m |= 1 << PropUserProperty
	}
	return m
}

// size is the encoded length of the properties, without the property length.
func (p *Properties) size() int {
	m := p.encodedMask()
	n := 0
	for m != 0 {
		id := Property(bits.TrailingZeros64(m))
		m &= m - 1
		switch id {
		case PropPayloadFormat, PropRequestProblemInfo, PropRequestResponseInfo, PropMaximumQoS,
			PropRetainAvailable, PropWildcardSubAvailable, PropSubIDAvailable, PropSharedSubAvailable:
			n += 2
		case PropServerKeepAlive, PropReceiveMaximum, PropTopicAliasMaximum, PropTopicAlias:
			n += 3
		case PropMessageExpiry, PropSessionExpiry, PropWillDelay, PropMaximumPacketSize:
			n += 5
		case PropContentType:
			n += 3 + len(p.ContentType)
		case PropResponseTopic:
			n += 3 + len(p.ResponseTopic)
		case PropAssignedClientID:
			n += 3 + len(p.AssignedClientID)
		case PropAuthMethod:
			n += 3 + len(p.AuthMethod)
		case PropResponseInfo:
			n += 3 + len(p.ResponseInfo)
		case PropServerReference:
			n += 3 + len(p.ServerReference)
		case PropReasonString:
			n += 3 + len(p.ReasonString)
		case PropCorrelationData:
			n += 3 + len(p.CorrelationData)
		case PropAuthData:
			n += 3 + len(p.AuthData)
		case PropSubscriptionID:
			for _, v := range p.SubscriptionIDs {
				n += 1 + VarintSize(v)
			}
		case PropUserProperty:
			for _, u := range p.User {
				n += 5 + len(u.Key) + len(u.Value)
			}
		}
	}
	return n
}

// appendTo writes the property length size (from p.size) and the properties,
// in ascending identifier order with user properties in their original order.
// Every present property is written; callers keep to the placement rules.
func (p *Properties) appendTo(dst []byte, size int) []byte {
	dst = AppendVarint(dst, uint32(size))
	m := p.encodedMask()
	for m != 0 {
		id := Property(bits.TrailingZeros64(m))
		m &= m - 1
		switch id {
		case PropPayloadFormat:
			dst = append(dst, byte(id), p.PayloadFormat)
		case PropRequestProblemInfo:
			dst = append(dst, byte(id), p.RequestProblemInfo)
		case PropRequestResponseInfo:
			dst = append(dst, byte(id), p.RequestResponseInfo)
		case PropMaximumQoS:
			dst = append(dst, byte(id), p.MaximumQoS)
		case PropRetainAvailable:
			dst = append(dst, byte(id), p.RetainAvailable)
		case PropWildcardSubAvailable:
			dst = append(dst, byte(id), p.WildcardSubAvailable)
		case PropSubIDAvailable:
			dst = append(dst, byte(id), p.SubIDAvailable)
		case PropSharedSubAvailable:
			dst = append(dst, byte(id), p.SharedSubAvailable)
		case PropServerKeepAlive:
			dst = appendU16(append(dst, byte(id)), p.ServerKeepAlive)
		case PropReceiveMaximum:
			dst = appendU16(append(dst, byte(id)), p.ReceiveMaximum)
		case PropTopicAliasMaximum:
			dst = appendU16(append(dst, byte(id)), p.TopicAliasMaximum)
		case PropTopicAlias:
			dst = appendU16(append(dst, byte(id)), p.TopicAlias)
		case PropMessageExpiry:
			dst = appendU32(append(dst, byte(id)), p.MessageExpiry)
		case PropSessionExpiry:
			dst = appendU32(append(dst, byte(id)), p.SessionExpiry)
		case PropWillDelay:
			dst = appendU32(append(dst, byte(id)), p.WillDelay)
		case PropMaximumPacketSize:
			dst = appendU32(append(dst, byte(id)), p.MaximumPacketSize)
		case PropContentType:
			dst = appendString(append(dst, byte(id)), p.ContentType)
		case PropResponseTopic:
			dst = appendString(append(dst, byte(id)), p.ResponseTopic)
		case PropAssignedClientID:
			dst = appendString(append(dst, byte(id)), p.AssignedClientID)
		case PropAuthMethod:
			dst = appendString(append(dst, byte(id)), p.AuthMethod)
		case PropResponseInfo:
			dst = appendString(append(dst, byte(id)), p.ResponseInfo)
		case PropServerReference:
			dst = appendString(append(dst, byte(id)), p.ServerReference)
		case PropReasonString:
			dst = appendString(append(dst, byte(id)), p.ReasonString)
		case PropCorrelationData:
			dst = appendBinary(append(dst, byte(id)), p.CorrelationData)
		case PropAuthData:
			dst = appendBinary(append(dst, byte(id)), p.AuthData)
		case PropSubscriptionID:
			for _, v := range p.SubscriptionIDs {
				dst = AppendVarint(append(dst, byte(id)), v)
			}
		case PropUserProperty:
			for _, u := range p.User {
				dst = appendString(append(dst, byte(id)), u.Key)
				dst = appendString(dst, u.Value)
			}
		}
	}
	return dst
}

// wireSize is the encoded size including the property length prefix, and
// the bare size to pass to appendTo.
func (p *Properties) wireSize() (total, size int) {
	size = p.size()
	return VarintSize(uint32(size)) + size, size
}

// AppendProperties appends p as a property block (length, then properties)
// in the form a PUBLISH carries it. Storage uses it to keep a message's
// properties without a format of its own.
func AppendProperties(dst []byte, p *Properties) []byte {
	_, size := p.wireSize()
	return p.appendTo(dst, size)
}

// DecodeProperties reads a property block written by AppendProperties,
// validating it as PUBLISH properties. Strings and binary values are copied.
func DecodeProperties(b []byte, p *Properties) error {
	n, err := p.decode(b, PUBLISH, false)
	if err != nil {
		return err
	}
	if n != len(b) {
		return Errorf(MalformedPacket, "%d bytes after the property block", len(b)-n)
	}
	return nil
}
