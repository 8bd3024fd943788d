package broker

import (
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// authzFunc is an authorization policy written inline; the rules
// themselves are internal/auth's business and tested there.
type authzFunc func(p *Principal, op Op, topic string) bool

func (f authzFunc) Allow(p *Principal, op Op, topic string) bool { return f(p, op, topic) }

var allowEverything = authzFunc(func(*Principal, Op, string) bool { return true })

// TestReservedClientIDs: a network client cannot claim an internal
// client's identifier (issue 10, item 3). Before the fix any client could
// connect as the state store and take its session over in a loop.
func TestReservedClientIDs(t *testing.T) {
	addr, b := startBroker(t, Options{})
	// The owner: an internal client, connected over a pipe.
	owner := dialInternal(t, b, InternalClientIDPrefix+"statestore")
	owner.subscribe(1, 1, "requests")

	for _, policy := range []struct {
		name  string
		authz Authorizer
	}{{"no policy", nil}, {"a policy that allows everything", allowEverything}} {
		b.SetListenerSecurity("test", nil, policy.authz, true)
		for _, id := range []string{InternalClientIDPrefix + "statestore", InternalClientIDPrefix + "selftest", InternalClientIDPrefix + "anything/else"} {
			c5 := dialRaw(t, addr, packet.V5)
			if ack := c5.connect(connV5(id)); ack.ReasonCode != packet.ClientIdentifierNotValid {
				t.Fatalf("%s: MQTT 5 CONNACK for %q: %v, want 0x85", policy.name, id, ack.ReasonCode)
			}
			c5.expectClosed()
			c3 := dialRaw(t, addr, packet.V311)
			if ack := c3.connect(&packet.Connect{ClientID: id, CleanStart: false}); ack.ReasonCode != packet.ConnRefusedIdentifier311 {
				t.Fatalf("%s: MQTT 3.1.1 CONNACK for %q: %v, want 2 (identifier rejected)", policy.name, id, ack.ReasonCode)
			}
			c3.expectClosed()
		}
	}
	// Paho, a real MQTT 5 client, is refused the same way.
	c, err := tryDialP5(t, addr, &paho.Connect{ClientID: InternalClientIDPrefix + "statestore", CleanStart: true})
	if err == nil || c.Connack == nil || c.Connack.ReasonCode != byte(packet.ClientIdentifierNotValid) {
		t.Fatalf("paho with a reserved client identifier: %v", err)
	}
	// The internal client kept its session and connection throughout.
	owner.ping()
	pub, _ := connectRaw(t, addr, packet.V5, connV5("pub"))
	pub.send(&packet.Publish{Topic: "requests", Payload: []byte("still served")})
	owner.expectPublish("requests", "still served")
	// Identifiers that merely contain the prefix, or differ in case, are
	// ordinary.
	for _, id := range []string{"x$edgeport/statestore", "$Edgeport/statestore", "$edgeport"} {
		c, _ := connectRaw(t, addr, packet.V5, connV5(id))
		c.ping()
	}
}
