package packet

// Packet is implemented by every packet type: Append writes the complete
// packet (fixed header included) for protocol version v, and Size is the
// exact number of bytes Append would write, so a peer's Maximum Packet Size
// can be honoured without encoding. In 3.1.1 every 5.0-only field is left
// out. Append trusts its input: strings and binary fields must fit a
// two-byte length and the packet must fit MaxRemainingLength; decoded packets
// always do.
type Packet interface {
	Append(dst []byte, v Version) []byte
	Size(v Version) int
}

var (
	_ Packet = (*Connect)(nil)
	_ Packet = (*ConnAck)(nil)
	_ Packet = (*Publish)(nil)
	_ Packet = (*Ack)(nil)
	_ Packet = (*Subscribe)(nil)
	_ Packet = (*SubAck)(nil)
	_ Packet = (*Unsubscribe)(nil)
	_ Packet = (*UnsubAck)(nil)
	_ Packet = (*PingReq)(nil)
	_ Packet = (*PingResp)(nil)
	_ Packet = (*Disconnect)(nil)
	_ Packet = (*Auth)(nil)
)

// protocolName is what CONNECT carries for version v.
func protocolName(v Version) string {
	if v == V31 {
		return "MQIsdp"
	}
	return "MQTT"
}

// remaining returns the remaining length of the CONNECT for version v and the
// property sizes appendTo needs.
func (p *Connect) remaining(v Version) (n, props, willProps int) {
	n = 2 + len(protocolName(v)) + 1 + 1 + 2 + 2 + len(p.ClientID)
	if v == V5 {
		var t int
		t, props = p.Properties.wireSize()
		n += t
	}
	if w := p.Will; w != nil {
		n += 2 + len(w.Topic) + 2 + len(w.Payload)
		if v == V5 {
			var t int
			t, willProps = w.Properties.wireSize()
			n += t
		}
	}
	if p.HasUsername {
		n += 2 + len(p.Username)
	}
	if p.HasPassword {
		n += 2 + len(p.Password)
	}
	return n, props, willProps
}

// Size implements Packet.
func (p *Connect) Size(v Version) int {
	n, _, _ := p.remaining(v)
	return packetSize(n)
}

// Append implements Packet. The protocol name and level come from v, not
// from p.ProtocolName and p.Version.
func (p *Connect) Append(dst []byte, v Version) []byte {
	n, props, willProps := p.remaining(v)
	dst = appendHeader(dst, CONNECT, 0, n)
	dst = appendString(dst, protocolName(v))
	var flags byte
	if p.CleanStart {
		flags |= 0x02
	}
	if w := p.Will; w != nil {
		flags |= 0x04 | w.QoS<<3
		if w.Retain {
			flags |= 0x20
		}
	}
	if p.HasPassword {
		flags |= 0x40
	}
	if p.HasUsername {
		flags |= 0x80
	}
	dst = append(dst, byte(v), flags)
	dst = appendU16(dst, p.KeepAlive)
	if v == V5 {
		dst = p.Properties.appendTo(dst, props)
	}
	dst = appendString(dst, p.ClientID)
	if w := p.Will; w != nil {
		if v == V5 {
			dst = w.Properties.appendTo(dst, willProps)
		}
		dst = appendString(dst, w.Topic)
		dst = appendBinary(dst, w.Payload)
	}
	if p.HasUsername {
		dst = appendString(dst, p.Username)
	}
	if p.HasPassword {
		dst = appendBinary(dst, p.Password)
	}
	return dst
}

func (p *ConnAck) remaining(v Version) (n, props int) {
	if v != V5 {
		return 2, 0
	}
	t, props := p.Properties.wireSize()
	return 2 + t, props
}

// Size implements Packet.
func (p *ConnAck) Size(v Version) int {
	n, _ := p.remaining(v)
	return packetSize(n)
}

// Append implements Packet. In 3.1.1 ReasonCode is written as it is: pass it
// through ConnAckCode311 first.
func (p *ConnAck) Append(dst []byte, v Version) []byte {
	n, props := p.remaining(v)
	dst = appendHeader(dst, CONNACK, 0, n)
	var af byte
	if p.SessionPresent {
		af = 1
	}
	dst = append(dst, af, byte(p.ReasonCode))
	if v == V5 {
		dst = p.Properties.appendTo(dst, props)
	}
	return dst
}

func (p *Publish) remaining(v Version) (n, props int) {
	n = 2 + len(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		n += 2
	}
	if v == V5 {
		if p.Properties.Empty() {
			n++
		} else {
			var t int
			t, props = p.Properties.wireSize()
			n += t
		}
	}
	return n, props
}

// Size implements Packet.
func (p *Publish) Size(v Version) int {
	n, _ := p.remaining(v)
	return packetSize(n)
}

// Append implements Packet. PacketID is written only for QoS 1 and 2.
func (p *Publish) Append(dst []byte, v Version) []byte {
	n, props := p.remaining(v)
	flags := p.QoS << 1
	if p.Dup {
		flags |= 0x08
	}
	if p.Retain {
		flags |= 0x01
	}
	dst = appendHeader(dst, PUBLISH, flags, n)
	dst = appendString(dst, p.Topic)
	if p.QoS > 0 {
		dst = appendU16(dst, p.PacketID)
	}
	if v == V5 {
		if props == 0 {
			dst = append(dst, 0)
		} else {
			dst = p.Properties.appendTo(dst, props)
		}
	}
	return append(dst, p.Payload...)
}

// remaining uses the 5.0 short forms: without properties a Success ack is
// just the packet identifier and any other reason adds one byte.
func (p *Ack) remaining(v Version) (n, props int) {
	if v != V5 {
		return 2, 0
	}
	if p.Properties.Empty() {
		if p.ReasonCode == Success {
			return 2, 0
		}
		return 3, 0
	}
	t, props := p.Properties.wireSize()
	return 3 + t, props
}

// Size implements Packet.
func (p *Ack) Size(v Version) int {
	n, _ := p.remaining(v)
	return packetSize(n)
}

// Append implements Packet; p.Type selects PUBACK, PUBREC, PUBREL or PUBCOMP.
func (p *Ack) Append(dst []byte, v Version) []byte {
	n, props := p.remaining(v)
	var flags byte
	if p.Type == PUBREL {
		flags = 0x02
	}
	dst = appendHeader(dst, p.Type, flags, n)
	dst = appendU16(dst, p.PacketID)
	if n > 2 {
		dst = append(dst, byte(p.ReasonCode))
	}
	if n > 3 {
		dst = p.Properties.appendTo(dst, props)
	}
	return dst
}

func (p *Subscribe) remaining(v Version) (n, props int) {
	n = 2
	if v == V5 {
		var t int
		t, props = p.Properties.wireSize()
		n += t
	}
	for i := range p.Subscriptions {
		n += 2 + len(p.Subscriptions[i].Filter) + 1
	}
	return n, props
}

// Size implements Packet.
func (p *Subscribe) Size(v Version) int {
	n, _ := p.remaining(v)
	return packetSize(n)
}

// Append implements Packet. In 3.1.1 only the QoS of each subscription is written.
func (p *Subscribe) Append(dst []byte, v Version) []byte {
	n, props := p.remaining(v)
	dst = appendHeader(dst, SUBSCRIBE, 0x02, n)
	dst = appendU16(dst, p.PacketID)
	if v == V5 {
		dst = p.Properties.appendTo(dst, props)
	}
	for i := range p.Subscriptions {
		s := &p.Subscriptions[i]
		o := s.QoS
		if v == V5 {
			if s.NoLocal {
				o |= 0x04
			}
			if s.RetainAsPublished {
				o |= 0x08
			}
			o |= s.RetainHandling << 4
		}
		dst = appendString(dst, s.Filter)
		dst = append(dst, o)
	}
	return dst
}

func (p *SubAck) remaining(v Version) (n, props int) {
	n = 2 + len(p.ReasonCodes)
	if v == V5 {
		var t int
		t, props = p.Properties.wireSize()
		n += t
	}
	return n, props
}

// Size implements Packet.
func (p *SubAck) Size(v Version) int {
	n, _ := p.remaining(v)
	return packetSize(n)
}

// Append implements Packet.
func (p *SubAck) Append(dst []byte, v Version) []byte {
	n, props := p.remaining(v)
	dst = appendHeader(dst, SUBACK, 0, n)
	dst = appendU16(dst, p.PacketID)
	if v == V5 {
		dst = p.Properties.appendTo(dst, props)
	}
	for _, rc := range p.ReasonCodes {
		dst = append(dst, byte(rc))
	}
	return dst
}

func (p *Unsubscribe) remaining(v Version) (n, props int) {
	n = 2
	if v == V5 {
		var t int
		t, props = p.Properties.wireSize()
		n += t
	}
	for _, f := range p.Filters {
		n += 2 + len(f)
	}
	return n, props
}

// Size implements Packet.
func (p *Unsubscribe) Size(v Version) int {
	n, _ := p.remaining(v)
	return packetSize(n)
}

// Append implements Packet.
func (p *Unsubscribe) Append(dst []byte, v Version) []byte {
	n, props := p.remaining(v)
	dst = appendHeader(dst, UNSUBSCRIBE, 0x02, n)
	dst = appendU16(dst, p.PacketID)
	if v == V5 {
		dst = p.Properties.appendTo(dst, props)
	}
	for _, f := range p.Filters {
		dst = appendString(dst, f)
	}
	return dst
}

func (p *UnsubAck) remaining(v Version) (n, props int) {
	if v != V5 {
		return 2, 0
	}
	t, props := p.Properties.wireSize()
	return 2 + t + len(p.ReasonCodes), props
}

// Size implements Packet.
func (p *UnsubAck) Size(v Version) int {
	n, _ := p.remaining(v)
	return packetSize(n)
}

// Append implements Packet.
func (p *UnsubAck) Append(dst []byte, v Version) []byte {
	n, props := p.remaining(v)
	dst = appendHeader(dst, UNSUBACK, 0, n)
	dst = appendU16(dst, p.PacketID)
	if v == V5 {
		dst = p.Properties.appendTo(dst, props)
		for _, rc := range p.ReasonCodes {
			dst = append(dst, byte(rc))
		}
	}
	return dst
}

// Size implements Packet.
func (p *PingReq) Size(Version) int { return 2 }

// Append implements Packet.
func (p *PingReq) Append(dst []byte, _ Version) []byte { return AppendPingReq(dst) }

// Size implements Packet.
func (p *PingResp) Size(Version) int { return 2 }

// Append implements Packet.
func (p *PingResp) Append(dst []byte, _ Version) []byte { return AppendPingResp(dst) }

// AppendPingReq appends a PINGREQ, identical in every version.
func AppendPingReq(dst []byte) []byte { return append(dst, byte(PINGREQ)<<4, 0) }

// AppendPingResp appends a PINGRESP, identical in every version.
func AppendPingResp(dst []byte) []byte { return append(dst, byte(PINGRESP)<<4, 0) }

// remaining uses the 5.0 short forms: nothing for a normal disconnection
// without properties, the reason code alone when there are no properties.
func (p *Disconnect) remaining(v Version) (n, props int) {
	if v != V5 {
		return 0, 0
	}
	if p.Properties.Empty() {
		if p.ReasonCode == Success {
			return 0, 0
		}
		return 1, 0
	}
	t, props := p.Properties.wireSize()
	return 1 + t, props
}

// Size implements Packet.
func (p *Disconnect) Size(v Version) int {
	n, _ := p.remaining(v)
	return packetSize(n)
}

// Append implements Packet.
func (p *Disconnect) Append(dst []byte, v Version) []byte {
	n, props := p.remaining(v)
	dst = appendHeader(dst, DISCONNECT, 0, n)
	if n > 0 {
		dst = append(dst, byte(p.ReasonCode))
	}
	if n > 1 {
		dst = p.Properties.appendTo(dst, props)
	}
	return dst
}

// remaining: AUTH may drop reason and properties only together, for a
// Success without properties; it has no reason-only form.
func (p *Auth) remaining(Version) (n, props int) {
	if p.ReasonCode == Success && p.Properties.Empty() {
		return 0, 0
	}
	t, props := p.Properties.wireSize()
	return 1 + t, props
}

// Size implements Packet. AUTH exists only in 5.0; v is ignored.
func (p *Auth) Size(v Version) int {
	n, _ := p.remaining(v)
	return packetSize(n)
}

// Append implements Packet. AUTH exists only in 5.0; v is ignored.
func (p *Auth) Append(dst []byte, v Version) []byte {
	n, props := p.remaining(v)
	dst = appendHeader(dst, AUTH, 0, n)
	if n > 0 {
		dst = append(dst, byte(p.ReasonCode))
		dst = p.Properties.appendTo(dst, props)
	}
	return dst
}
