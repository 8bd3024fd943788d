package packet

// Property is an MQTT 5 property identifier.
type Property byte

// Property identifiers (MQTT 5.0 §2.2.2.2).
const (
	PropPayloadFormat        Property = 0x01
	PropMessageExpiry        Property = 0x02
	PropContentType          Property = 0x03
	PropResponseTopic        Property = 0x08
	PropCorrelationData      Property = 0x09
	PropSubscriptionID       Property = 0x0B
	PropSessionExpiry        Property = 0x11
	PropAssignedClientID     Property = 0x12
	PropServerKeepAlive      Property = 0x13
	PropAuthMethod           Property = 0x15
	PropAuthData             Property = 0x16
	PropRequestProblemInfo   Property = 0x17
	PropWillDelay            Property = 0x18
	PropRequestResponseInfo  Property = 0x19
	PropResponseInfo         Property = 0x1A
	PropServerReference      Property = 0x1C
	PropReasonString         Property = 0x1F
	PropReceiveMaximum       Property = 0x21
	PropTopicAliasMaximum    Property = 0x22
	PropTopicAlias           Property = 0x23
	PropMaximumQoS           Property = 0x24
	PropRetainAvailable      Property = 0x25
	PropUserProperty         Property = 0x26
	PropMaximumPacketSize    Property = 0x27
	PropWildcardSubAvailable Property = 0x28
	PropSubIDAvailable       Property = 0x29
	PropSharedSubAvailable   Property = 0x2A
)

// Properties holds the MQTT 5 properties of any packet. Scalar, string and
// binary properties are present when their bit is set (Has/Set), so that a
// present zero is told apart from an absent value without pointers; the
// encoder writes exactly the properties that are present. SubscriptionIDs and
// User are present when non-empty.
type Properties struct {
	present uint64 // bit n set: property with identifier n is present

	PayloadFormat        byte
	MessageExpiry        uint32
	ContentType          string
	ResponseTopic        string
	CorrelationData      []byte
	SubscriptionIDs      []uint32 // PUBLISH may carry several; SUBSCRIBE at most one
	SessionExpiry        uint32
	AssignedClientID     string
	ServerKeepAlive      uint16
	AuthMethod           string
	AuthData             []byte
	RequestProblemInfo   byte
	WillDelay            uint32
	RequestResponseInfo  byte
	ResponseInfo         string
	ServerReference      string
	ReasonString         string
	ReceiveMaximum       uint16
	TopicAliasMaximum    uint16
	TopicAlias           uint16
	MaximumQoS           byte
	RetainAvailable      byte
	User                 []UserProperty
	MaximumPacketSize    uint32
	WildcardSubAvailable byte
	SubIDAvailable       byte
	SharedSubAvailable   byte
}

// Has reports whether property id is present.
func (p *Properties) Has(id Property) bool {
	switch id {
	case PropSubscriptionID:
		return len(p.SubscriptionIDs) > 0
	case PropUserProperty:
		return len(p.User) > 0
	}
	return p.present&(1<<id) != 0
}

// Set marks property id as present; assign its field as well.
func (p *Properties) Set(id Property) { p.present |= 1 << id }

// Unset marks property id as absent.
func (p *Properties) Unset(id Property) { p.present &^= 1 << id }

// Empty reports whether no property is present.
func (p *Properties) Empty() bool {
	return p.present == 0 && len(p.SubscriptionIDs) == 0 && len(p.User) == 0
}

// Reset clears every property, keeping slice capacity for reuse.
func (p *Properties) Reset() {
	subs, user := p.SubscriptionIDs[:0], p.User[:0]
	*p = Properties{SubscriptionIDs: subs, User: user}
}
