package client

import (
	"errors"
	"fmt"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Errors of the client itself; errors.Is finds them in what its methods
// return.
var (
	// ErrClosed: the client was stopped (or never started).
	ErrClosed = errors.New("mqtt client: closed")
	// ErrNotConnected: a QoS 0 publish while there is no connection (QoS 0
	// is never queued for later).
	ErrNotConnected = errors.New("mqtt client: not connected")
	// ErrSubscribePending: SubscribeWithin returned before the client was
	// connected; the subscription is made when it connects.
	ErrSubscribePending = errors.New("mqtt client: not connected yet; subscribing when connected")
	// ErrConnectionLost: the connection ended while the operation waited,
	// and the client does not reconnect (Options.NoReconnect).
	ErrConnectionLost = errors.New("mqtt client: connection lost")
	// ErrNoResponder: a request's PUBLISH reached no subscriber (PUBACK
	// 0x10), so no response will come.
	ErrNoResponder = errors.New("mqtt client: no subscriber for the request topic")
	// ErrPacketTooLarge: the packet exceeds the server's Maximum Packet Size.
	ErrPacketTooLarge = errors.New("mqtt client: packet exceeds the server's maximum packet size")
)

// ReasonError is a refusal by the server: a CONNACK, PUBACK, PUBREC,
// SUBACK or UNSUBACK with a failure reason code, or a DISCONNECT. The code
// is also reachable with errors.Is(err, packet.NotAuthorized).
type ReasonError struct {
	Packet packet.Type       // the packet that carried the code
	Code   packet.ReasonCode // in MQTT 3.1.1 CONNACK codes are mapped to their 5.0 equivalents
	Reason string            // the Reason String property, when the server sent one
	Filter string            // SUBACK and UNSUBACK: the refused filter
}

func (e *ReasonError) Error() string {
	var what string
	switch e.Packet {
	case packet.CONNACK:
		what = "the server refused the connection"
	case packet.PUBACK, packet.PUBREC:
		what = "the server refused the publish"
	case packet.SUBACK:
		what = fmt.Sprintf("the server refused the subscription to %q", e.Filter)
	case packet.UNSUBACK:
		what = fmt.Sprintf("the server refused to unsubscribe %q", e.Filter)
	case packet.DISCONNECT:
		what = "the server disconnected"
	default:
		what = e.Packet.String()
	}
	s := fmt.Sprintf("%s: %v (0x%02X)", what, e.Code, byte(e.Code))
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Unwrap returns the reason code, so errors.Is(err, packet.QuotaExceeded) works.
func (e *ReasonError) Unwrap() error { return e.Code }

// connAck311 maps an MQTT 3.1.1 CONNACK return code to its 5.0 reason code.
func connAck311(rc packet.ReasonCode) packet.ReasonCode {
	switch rc {
	case packet.ConnAccepted311:
		return packet.Success
	case packet.ConnRefusedVersion311:
		return packet.UnsupportedProtocolVersion
	case packet.ConnRefusedIdentifier311:
		return packet.ClientIdentifierNotValid
	case packet.ConnRefusedServerUnavailable311:
		return packet.ServerUnavailable
	case packet.ConnRefusedBadCredentials311:
		return packet.BadUserNameOrPassword
	default:
		return packet.NotAuthorized
	}
}
