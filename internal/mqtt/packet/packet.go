// Package packet is the MQTT 3.1.1 and 5.0 wire codec: packet types,
// properties and reason codes, decoded from and appended to byte slices.
package packet

// Type is the MQTT control packet type (the high nibble of the first byte).
type Type byte

// Control packet types.
const (
	CONNECT     Type = 1
	CONNACK     Type = 2
	PUBLISH     Type = 3
	PUBACK      Type = 4
	PUBREC      Type = 5
	PUBREL      Type = 6
	PUBCOMP     Type = 7
	SUBSCRIBE   Type = 8
	SUBACK      Type = 9
	UNSUBSCRIBE Type = 10
	UNSUBACK    Type = 11
	PINGREQ     Type = 12
	PINGRESP    Type = 13
	DISCONNECT  Type = 14
	AUTH        Type = 15
)

var typeNames = [...]string{"RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL",
	"PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "INVALID"
}

// Version is the protocol level carried in CONNECT.
type Version byte

// Protocol levels.
const (
	V31  Version = 3 // MQTT 3.1 (MQIsdp), accepted and treated as 3.1.1
	V311 Version = 4
	V5   Version = 5
)

// MaxRemainingLength is the largest remaining length a variable byte integer can hold.
const MaxRemainingLength = 268435455

// FixedHeader is the first part of every packet.
type FixedHeader struct {
	Type      Type
	Flags     byte // low nibble of the first byte
	Remaining int  // remaining length: bytes after the fixed header
}

// UserProperty is a name/value pair; order is significant and duplicates are allowed.
type UserProperty struct {
	Key, Value string
}

// Subscription is one entry of a SUBSCRIBE packet.
type Subscription struct {
	Filter            string
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte // 0 send at subscribe, 1 only if new, 2 never
}

// Will is the will message carried in CONNECT.
type Will struct {
	Topic      string
	Payload    []byte
	QoS        byte
	Retain     bool
	Properties Properties
}

// Connect is the CONNECT packet.
type Connect struct {
	ProtocolName string
	Version      Version
	CleanStart   bool // "clean session" in 3.1.1
	KeepAlive    uint16
	ClientID     string
	HasUsername  bool
	Username     string
	HasPassword  bool
	Password     []byte
	Will         *Will // nil when the will flag is clear
	Properties   Properties
}

// ConnAck is the CONNACK packet. In 3.1.1 the reason code carries the
// 3.1.1 return code (0-5); use ConnAckCode311 to translate.
type ConnAck struct {
	SessionPresent bool
	ReasonCode     ReasonCode
	Properties     Properties
}

// Publish is the PUBLISH packet. After decoding, Topic and Payload alias
// the buffer passed to Decode; the caller owns that buffer and must not reuse
// it while the packet is alive.
type Publish struct {
	Dup        bool
	QoS        byte
	Retain     bool
	Topic      string
	PacketID   uint16
	Properties Properties
	Payload    []byte
}

// Ack is PUBACK, PUBREC, PUBREL or PUBCOMP, told apart by Type.
type Ack struct {
	Type       Type
	PacketID   uint16
	ReasonCode ReasonCode
	Properties Properties
}

// Subscribe is the SUBSCRIBE packet.
type Subscribe struct {
	PacketID      uint16
	Properties    Properties
	Subscriptions []Subscription
}

// SubAck is the SUBACK packet. In 3.1.1 only 0x00, 0x01, 0x02 and 0x80 are valid codes.
type SubAck struct {
	PacketID    uint16
	Properties  Properties
	ReasonCodes []ReasonCode
}

// Unsubscribe is the UNSUBSCRIBE packet.
type Unsubscribe struct {
	PacketID   uint16
	Properties Properties
	Filters    []string
}

// UnsubAck is the UNSUBACK packet. In 3.1.1 it has no payload; ReasonCodes is ignored.
type UnsubAck struct {
	PacketID    uint16
	Properties  Properties
	ReasonCodes []ReasonCode
}

// Disconnect is the DISCONNECT packet (reason and properties are 5.0 only).
type Disconnect struct {
	ReasonCode ReasonCode
	Properties Properties
}

// Auth is the AUTH packet (5.0 only).
type Auth struct {
	ReasonCode ReasonCode
	Properties Properties
}

// PingReq and PingResp have no body.
type (
	PingReq  struct{}
	PingResp struct{}
)
