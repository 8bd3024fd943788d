package packet

import "strings"

// Decoders validate the body of one packet against MQTT 3.1.1 and 5.0. They
// return *Error: MalformedPacket when the bytes cannot be parsed as the
// specification lays them out, ProtocolError when they parse but carry a
// value the specification forbids, and a more specific code where one exists.
// Apart from PUBLISH, decoded strings and byte slices are copies, so the
// caller may reuse body at once; PUBLISH aliases body (see Publish.Decode).

func malformed(format string, args ...any) error { return Errorf(MalformedPacket, format, args...) }

func protocolErr(format string, args ...any) error { return Errorf(ProtocolError, format, args...) }

func checkFlags(t Type, flags, want byte) error {
	if flags != want {
		return malformed("%s fixed header flags 0x%X, want 0x%X", t, flags, want)
	}
	return nil
}

func trailing(t Type, c *cursor) error {
	if c.rest() != 0 {
		return malformed("%d unexpected bytes at the end of %s", c.rest(), t)
	}
	return nil
}

// packetID reads a packet identifier, which is never 0 (MQTT-2.3.1-1).
func packetID(t Type, c *cursor) (uint16, error) {
	id, ok := c.u16()
	if !ok {
		return 0, malformed("%s too short for packet identifier", t)
	}
	if id == 0 {
		return 0, protocolErr("%s packet identifier is 0", t)
	}
	return id, nil
}

// Decode parses a CONNECT body. Version and ProtocolName are filled in
// before any version error, so the caller can still answer with a CONNACK
// the client understands. When the name or level is not one of "MQTT" 4 or 5
// or "MQIsdp" 3, the error wraps UnsupportedProtocolVersion. The will is
// always freshly allocated; strings and binary fields are copies.
func (p *Connect) Decode(flags byte, body []byte) error {
	props := p.Properties
	props.Reset()
	*p = Connect{Properties: props}
	if err := checkFlags(CONNECT, flags, 0); err != nil {
		return err
	}
	c := cursor{b: body}
	name, ok := c.binary()
	if !ok {
		return malformed("CONNECT too short for protocol name")
	}
	level, ok := c.byte()
	if !ok {
		return malformed("CONNECT too short for protocol level")
	}
	p.Version = Version(level)
	switch {
	case string(name) == "MQTT" && (p.Version == V311 || p.Version == V5):
		p.ProtocolName = "MQTT"
	case string(name) == "MQIsdp" && p.Version == V31:
		p.ProtocolName = "MQIsdp"
	default:
		p.ProtocolName = string(name)
		return Errorf(UnsupportedProtocolVersion, "protocol %q level %d", name, level)
	}
	v5 := p.Version == V5

	cf, ok := c.byte()
	if !ok {
		return malformed("CONNECT too short for connect flags")
	}
	if cf&0x01 != 0 {
		return malformed("CONNECT reserved flag set")
	}
	willFlag := cf&0x04 != 0
	willQoS := cf >> 3 & 0x03
	willRetain := cf&0x20 != 0
	p.HasPassword = cf&0x40 != 0
	p.HasUsername = cf&0x80 != 0
	p.CleanStart = cf&0x02 != 0
	if willQoS == 3 {
		return malformed("CONNECT will QoS 3")
	}
	if !willFlag && (willQoS != 0 || willRetain) {
		return malformed("CONNECT will QoS or retain set without will flag")
	}
	if !v5 && p.HasPassword && !p.HasUsername {
		return malformed("CONNECT password flag set without username flag")
	}
	if p.KeepAlive, ok = c.u16(); !ok {
		return malformed("CONNECT too short for keep alive")
	}
	if v5 {
		n, err := p.Properties.decode(body[c.i:], CONNECT, false)
		if err != nil {
			return err
		}
		c.i += n
	}
	var err error
	if p.ClientID, err = c.str(false, "client identifier"); err != nil {
		return err
	}
	if willFlag {
		w := &Will{QoS: willQoS, Retain: willRetain}
		if v5 {
			n, err := w.Properties.decode(body[c.i:], willProperties, false)
			if err != nil {
				return err
			}
			c.i += n
		}
		if w.Topic, err = c.str(false, "will topic"); err != nil {
			return err
		}
		if w.Topic == "" || !validTopicName(w.Topic) {
			return Errorf(TopicNameInvalid, "will topic %q", w.Topic)
		}
		payload, ok := c.binary()
		if !ok {
			return malformed("truncated will payload")
		}
		w.Payload = cloneBytes(payload)
		p.Will = w
	}
	if p.HasUsername {
		if p.Username, err = c.str(false, "user name"); err != nil {
			return err
		}
	}
	if p.HasPassword {
		pw, ok := c.binary()
		if !ok {
			return malformed("truncated password")
		}
		p.Password = cloneBytes(pw)
	}
	if err := trailing(CONNECT, &c); err != nil {
		return err
	}
	if !v5 && p.ClientID == "" && !p.CleanStart {
		// MQTT-3.1.3-8: 3.1.1 answers this with return code 2.
		return Errorf(ClientIdentifierNotValid, "empty client identifier without clean session")
	}
	return nil
}

// Decode parses a CONNACK body.
func (p *ConnAck) Decode(flags byte, body []byte, v Version) error {
	props := p.Properties
	props.Reset()
	*p = ConnAck{Properties: props}
	if err := checkFlags(CONNACK, flags, 0); err != nil {
		return err
	}
	c := cursor{b: body}
	af, ok := c.byte()
	if !ok {
		return malformed("CONNACK too short")
	}
	if af&^0x01 != 0 {
		return malformed("CONNACK reserved acknowledge flags set")
	}
	p.SessionPresent = af == 1
	rc, ok := c.byte()
	if !ok {
		return malformed("CONNACK too short")
	}
	p.ReasonCode = ReasonCode(rc)
	if v == V5 {
		if !validConnAckReason(p.ReasonCode) {
			return protocolErr("CONNACK reason code 0x%02X", rc)
		}
		n, err := p.Properties.decode(body[c.i:], CONNACK, false)
		if err != nil {
			return err
		}
		c.i += n
	} else if rc > byte(ConnRefusedNotAuthorized311) {
		return protocolErr("CONNACK return code %d", rc)
	}
	if p.SessionPresent && p.ReasonCode != 0 {
		return protocolErr("CONNACK session present with non-zero reason code")
	}
	return trailing(CONNACK, &c)
}

// Decode parses a PUBLISH body. Topic, Payload and every string and binary
// property alias body, so decoding copies nothing and, on a reused Publish,
// allocates nothing; the caller must keep body unchanged while p is in use.
// An empty topic is accepted in 5.0 because a Topic Alias may stand for it;
// resolving aliases (and rejecting an empty topic without one) is the
// caller's job. Topic problems other than bad UTF-8 give TopicNameInvalid.
func (p *Publish) Decode(flags byte, body []byte, v Version) error {
	p.Dup = flags&0x08 != 0
	p.QoS = flags >> 1 & 0x03
	p.Retain = flags&0x01 != 0
	p.Topic = ""
	p.PacketID = 0
	p.Payload = nil
	if p.QoS == 3 {
		p.Properties.Reset()
		return malformed("PUBLISH QoS 3")
	}
	if p.Dup && p.QoS == 0 {
		p.Properties.Reset()
		return malformed("PUBLISH DUP set with QoS 0")
	}
	if len(body) < 2 {
		p.Properties.Reset()
		return malformed("PUBLISH too short for topic")
	}
	tl := int(body[0])<<8 | int(body[1])
	i := 2 + tl
	if i > len(body) {
		p.Properties.Reset()
		return malformed("PUBLISH topic length %d exceeds packet", tl)
	}
	topic := aliasString(body[2:i])
	if !validTopicName(topic) {
		p.Properties.Reset()
		if !ValidUTF8String(topic) {
			return malformed("PUBLISH topic is not valid UTF-8")
		}
		return Errorf(TopicNameInvalid, "PUBLISH topic %q contains a wildcard", topic)
	}
	if topic == "" && v != V5 {
		p.Properties.Reset()
		return Errorf(TopicNameInvalid, "PUBLISH topic is empty")
	}
	p.Topic = topic
	if p.QoS > 0 {
		if len(body)-i < 2 {
			p.Properties.Reset()
			return malformed("PUBLISH too short for packet identifier")
		}
		p.PacketID = uint16(body[i])<<8 | uint16(body[i+1])
		i += 2
		if p.PacketID == 0 {
			p.Properties.Reset()
			return protocolErr("PUBLISH packet identifier is 0")
		}
	}
	if v == V5 {
		if i < len(body) && body[i] == 0 {
			// The common case of no properties, without the general decoder.
			p.Properties.Reset()
			i++
		} else {
			n, err := p.Properties.decode(body[i:], PUBLISH, true)
			if err != nil {
				return err
			}
			i += n
		}
	} else {
		p.Properties.Reset()
	}
	if i < len(body) {
		p.Payload = body[i:len(body):len(body)]
	}
	return nil
}

// Decode parses a PUBACK, PUBREC, PUBREL or PUBCOMP body of type t.
func (p *Ack) Decode(t Type, flags byte, body []byte, v Version) error {
	props := p.Properties
	props.Reset()
	*p = Ack{Type: t, Properties: props}
	want := byte(0)
	switch t {
	case PUBACK, PUBREC, PUBCOMP:
	case PUBREL:
		want = 0x02
	default:
		return malformed("%s is not an acknowledgement", t)
	}
	if err := checkFlags(t, flags, want); err != nil {
		return err
	}
	c := cursor{b: body}
	var err error
	if p.PacketID, err = packetID(t, &c); err != nil {
		return err
	}
	if v != V5 {
		return trailing(t, &c)
	}
	if c.rest() == 0 {
		return nil
	}
	rc, _ := c.byte()
	p.ReasonCode = ReasonCode(rc)
	if !validAckReason(t, p.ReasonCode) {
		return protocolErr("%s reason code 0x%02X", t, rc)
	}
	if c.rest() == 0 {
		return nil
	}
	n, err := p.Properties.decode(body[c.i:], t, false)
	if err != nil {
		return err
	}
	c.i += n
	return trailing(t, &c)
}

// Decode parses a SUBSCRIBE body. Topic filters are copied but not
// validated beyond UTF-8: an invalid filter is answered per subscription
// with TopicFilterInvalid in SUBACK, which is the broker's business.
func (p *Subscribe) Decode(flags byte, body []byte, v Version) error {
	props, subs := p.Properties, p.Subscriptions[:0]
	props.Reset()
	*p = Subscribe{Properties: props}
	if err := checkFlags(SUBSCRIBE, flags, 0x02); err != nil {
		return err
	}
	c := cursor{b: body}
	var err error
	if p.PacketID, err = packetID(SUBSCRIBE, &c); err != nil {
		return err
	}
	if v == V5 {
		n, err := p.Properties.decode(body[c.i:], SUBSCRIBE, false)
		if err != nil {
			return err
		}
		c.i += n
	}
	for c.rest() > 0 {
		var s Subscription
		if s.Filter, err = c.str(false, "topic filter"); err != nil {
			return err
		}
		o, ok := c.byte()
		if !ok {
			return malformed("SUBSCRIBE missing subscription options")
		}
		s.QoS = o & 0x03
		if v == V5 {
			if o&0xC0 != 0 {
				return malformed("SUBSCRIBE reserved option bits set")
			}
			s.NoLocal = o&0x04 != 0
			s.RetainAsPublished = o&0x08 != 0
			s.RetainHandling = o >> 4 & 0x03
		} else if o&0xFC != 0 {
			return malformed("SUBSCRIBE reserved option bits set")
		}
		if s.QoS == 3 {
			return malformed("SUBSCRIBE QoS 3")
		}
		if s.RetainHandling == 3 {
			return protocolErr("SUBSCRIBE retain handling 3")
		}
		if s.NoLocal && strings.HasPrefix(s.Filter, "$share/") {
			return protocolErr("SUBSCRIBE no local set on shared subscription")
		}
		subs = append(subs, s)
	}
	if len(subs) == 0 {
		return protocolErr("SUBSCRIBE without subscriptions")
	}
	p.Subscriptions = subs
	return nil
}

// Decode parses a SUBACK body.
func (p *SubAck) Decode(flags byte, body []byte, v Version) error {
	props, codes := p.Properties, p.ReasonCodes[:0]
	props.Reset()
	*p = SubAck{Properties: props}
	if err := checkFlags(SUBACK, flags, 0); err != nil {
		return err
	}
	c := cursor{b: body}
	var err error
	if p.PacketID, err = packetID(SUBACK, &c); err != nil {
		return err
	}
	if v == V5 {
		n, err := p.Properties.decode(body[c.i:], SUBACK, false)
		if err != nil {
			return err
		}
		c.i += n
	}
	if c.rest() == 0 {
		return protocolErr("SUBACK without reason codes")
	}
	for _, b := range body[c.i:] {
		rc := ReasonCode(b)
		if !validSubAckReason(rc, v) {
			return protocolErr("SUBACK reason code 0x%02X", b)
		}
		codes = append(codes, rc)
	}
	p.ReasonCodes = codes
	return nil
}

// Decode parses an UNSUBSCRIBE body.
func (p *Unsubscribe) Decode(flags byte, body []byte, v Version) error {
	props, filters := p.Properties, p.Filters[:0]
	props.Reset()
	*p = Unsubscribe{Properties: props}
	if err := checkFlags(UNSUBSCRIBE, flags, 0x02); err != nil {
		return err
	}
	c := cursor{b: body}
	var err error
	if p.PacketID, err = packetID(UNSUBSCRIBE, &c); err != nil {
		return err
	}
	if v == V5 {
		n, err := p.Properties.decode(body[c.i:], UNSUBSCRIBE, false)
		if err != nil {
			return err
		}
		c.i += n
	}
	for c.rest() > 0 {
		f, err := c.str(false, "topic filter")
		if err != nil {
			return err
		}
		filters = append(filters, f)
	}
	if len(filters) == 0 {
		return protocolErr("UNSUBSCRIBE without topic filters")
	}
	p.Filters = filters
	return nil
}

// Decode parses an UNSUBACK body. In 3.1.1 it is just the packet identifier.
func (p *UnsubAck) Decode(flags byte, body []byte, v Version) error {
	props, codes := p.Properties, p.ReasonCodes[:0]
	props.Reset()
	*p = UnsubAck{Properties: props}
	if err := checkFlags(UNSUBACK, flags, 0); err != nil {
		return err
	}
	c := cursor{b: body}
	var err error
	if p.PacketID, err = packetID(UNSUBACK, &c); err != nil {
		return err
	}
	if v != V5 {
		return trailing(UNSUBACK, &c)
	}
	n, err := p.Properties.decode(body[c.i:], UNSUBACK, false)
	if err != nil {
		return err
	}
	c.i += n
	if c.rest() == 0 {
		return protocolErr("UNSUBACK without reason codes")
	}
	for _, b := range body[c.i:] {
		rc := ReasonCode(b)
		if !validUnsubAckReason(rc) {
			return protocolErr("UNSUBACK reason code 0x%02X", b)
		}
		codes = append(codes, rc)
	}
	p.ReasonCodes = codes
	return nil
}

// Decode parses a DISCONNECT body; in 5.0 an empty body means normal
// disconnection and a one-byte body a reason code without properties.
func (p *Disconnect) Decode(flags byte, body []byte, v Version) error {
	props := p.Properties
	props.Reset()
	*p = Disconnect{Properties: props}
	if err := checkFlags(DISCONNECT, flags, 0); err != nil {
		return err
	}
	c := cursor{b: body}
	if v != V5 || c.rest() == 0 {
		return trailing(DISCONNECT, &c)
	}
	rc, _ := c.byte()
	p.ReasonCode = ReasonCode(rc)
	if !validDisconnectReason(p.ReasonCode) {
		return protocolErr("DISCONNECT reason code 0x%02X", rc)
	}
	if c.rest() == 0 {
		return nil
	}
	n, err := p.Properties.decode(body[c.i:], DISCONNECT, false)
	if err != nil {
		return err
	}
	c.i += n
	return trailing(DISCONNECT, &c)
}

// Decode parses an AUTH body. AUTH does not exist before 5.0. An empty body
// means Success; otherwise the Authentication Method is mandatory.
func (p *Auth) Decode(flags byte, body []byte, v Version) error {
	props := p.Properties
	props.Reset()
	*p = Auth{Properties: props}
	if v != V5 {
		return malformed("AUTH is reserved before MQTT 5.0")
	}
	if err := checkFlags(AUTH, flags, 0); err != nil {
		return err
	}
	if len(body) == 0 {
		return nil
	}
	c := cursor{b: body}
	rc, _ := c.byte()
	p.ReasonCode = ReasonCode(rc)
	switch p.ReasonCode {
	case Success, ContinueAuthentication, ReAuthenticate:
	default:
		return protocolErr("AUTH reason code 0x%02X", rc)
	}
	if c.rest() == 0 {
		return malformed("AUTH reason code without property length")
	}
	n, err := p.Properties.decode(body[c.i:], AUTH, false)
	if err != nil {
		return err
	}
	c.i += n
	if err := trailing(AUTH, &c); err != nil {
		return err
	}
	if !p.Properties.Has(PropAuthMethod) {
		return protocolErr("AUTH without authentication method")
	}
	return nil
}

// Decode checks a PINGREQ: no flags, no body.
func (p *PingReq) Decode(flags byte, body []byte, _ Version) error {
	return emptyBody(PINGREQ, flags, body)
}

// Decode checks a PINGRESP: no flags, no body.
func (p *PingResp) Decode(flags byte, body []byte, _ Version) error {
	return emptyBody(PINGRESP, flags, body)
}

func emptyBody(t Type, flags byte, body []byte) error {
	if err := checkFlags(t, flags, 0); err != nil {
		return err
	}
	if len(body) != 0 {
		return malformed("%s with remaining length %d", t, len(body))
	}
	return nil
}

func validConnAckReason(r ReasonCode) bool {
	switch r {
	case Success, UnspecifiedError, MalformedPacket, ProtocolError, ImplementationSpecificError,
		UnsupportedProtocolVersion, ClientIdentifierNotValid, BadUserNameOrPassword, NotAuthorized,
		ServerUnavailable, ServerBusy, Banned, BadAuthenticationMethod, TopicNameInvalid,
		PacketTooLarge, QuotaExceeded, PayloadFormatInvalid, RetainNotSupported, QoSNotSupported,
		UseAnotherServer, ServerMoved, ConnectionRateExceeded:
		return true
	}
	return false
}

func validAckReason(t Type, r ReasonCode) bool {
	if t == PUBREL || t == PUBCOMP {
		return r == Success || r == PacketIdentifierNotFound
	}
	switch r {
	case Success, NoMatchingSubscribers, UnspecifiedError, ImplementationSpecificError, NotAuthorized,
		TopicNameInvalid, PacketIdentifierInUse, QuotaExceeded, PayloadFormatInvalid:
		return true
	}
	return false
}

func validSubAckReason(r ReasonCode, v Version) bool {
	switch r {
	case Success, GrantedQoS1, GrantedQoS2, UnspecifiedError:
		return true
	case ImplementationSpecificError, NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse,
		QuotaExceeded, SharedSubscriptionsNotSupported, SubscriptionIdentifiersNotSupported,
		WildcardSubscriptionsNotSupported:
		return v == V5
	}
	return false
}

func validUnsubAckReason(r ReasonCode) bool {
	switch r {
	case Success, NoSubscriptionExisted, UnspecifiedError, ImplementationSpecificError,
		NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse:
		return true
	}
	return false
}

func validDisconnectReason(r ReasonCode) bool {
	switch r {
	case Success, DisconnectWithWill, UnspecifiedError, MalformedPacket, ProtocolError,
		ImplementationSpecificError, NotAuthorized, ServerBusy, ServerShuttingDown, KeepAliveTimeout,
		SessionTakenOver, TopicFilterInvalid, TopicNameInvalid, ReceiveMaximumExceeded,
		TopicAliasInvalid, PacketTooLarge, MessageRateTooHigh, QuotaExceeded, AdministrativeAction,
		PayloadFormatInvalid, RetainNotSupported, QoSNotSupported, UseAnotherServer, ServerMoved,
		SharedSubscriptionsNotSupported, ConnectionRateExceeded, MaximumConnectTime,
		SubscriptionIdentifiersNotSupported, WildcardSubscriptionsNotSupported:
		return true
	}
	return false
}
