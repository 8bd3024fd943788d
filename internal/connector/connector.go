// Package connector is the runtime every protocol connector shares: it runs one
// driver per device endpoint of the registry, keeps status, encodes and publishes samples.
package connector

import (
	"context"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Connector is one protocol: it serves the device endpoints whose
// endpointType is EndpointType.
type Connector interface {
	// EndpointType is the endpointType served, e.g. "Microsoft.Modbus".
	EndpointType() string
	// Run drives one device endpoint with the assets read through it
	// until ctx ends. The manager calls it on a goroutine it owns, cancels
	// ctx and waits for Run to return when the device or any of its
	// assets change (and calls Run again with the new configuration), or
	// when the manager stops. Run reconnects by itself; an error it
	// returns before ctx ends is recorded in the endpoint's status and Run
	// is called again after a backoff.
	//
	// Everything Run calls on ep, its assets and datasets is safe for
	// concurrent use and never blocks on the broker: publications go
	// through a bounded buffer that drops (and counts) what does not fit.
	Run(ctx context.Context, ep *Endpoint) error
}

// Publisher sends messages to the broker. Publish returns when the
// broker has accepted the message (PUBACK for QoS 1) or failed; it is
// called by the manager's own sender goroutines, never by drivers. The
// internal MQTT client satisfies it through a small adapter.
type Publisher interface {
	Publish(ctx context.Context, m *Message) error
}

// StateStore sets keys of the state store, for BrokerStateStore
// destinations.
type StateStore interface {
	Set(ctx context.Context, key string, value []byte) error
}

// Message is one MQTT application message as the connector runtime
// publishes it. Field names match the internal MQTT client's Message.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// ContentType is "application/json" for datasets and events.
	ContentType string
	// MessageExpiry in seconds (a destination's ttl); 0: none.
	MessageExpiry uint32
	// PayloadFormat 1: UTF-8 text.
	PayloadFormat byte
	// User carries the CloudEvents attributes.
	User []packet.UserProperty
}

// Endpoint states, as status and `edgeport get devices` show them.
const (
	StateConnecting = "Connecting"
	StateConnected  = "Connected"
	// StateDegraded: the device answers too rarely and is polled with
	// backoff until it recovers.
	StateDegraded = "Degraded"
	StateError    = "Error"
	StateDisabled = "Disabled"
)

// Sample is one value of a data point (or event field) as read.
type Sample struct {
	// Name is the data point's name.
	Name string
	// Value is a bool, an integer or float type, a string, or a value that
	// encoding/json can marshal.
	Value any
	// SourceTimestamp is when the device produced (or Edgeport read) the
	// value.
	SourceTimestamp time.Time
	// Status is nil when the value is good.
	Status *StatusCode
}

// StatusCode qualifies a sample that is not good: an OPC UA status code,
// or a Modbus exception mapped onto one.
type StatusCode struct {
	Code   uint32 `json:"Code"`
	Symbol string `json:"Symbol"`
}

// Frame is one publication of a dataset: its samples, and whether it is a
// key frame (every data point, as the heartbeat sends) or a delta frame
// (changes only).
type Frame struct {
	Samples  []Sample
	Keyframe bool
}
