package broker

import (
	"net"
	"testing"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// TestOriginProperty checks that internal clients learn the verified
// publisher of every message, and that a network client cannot forge it.
func TestOriginProperty(t *testing.T) {
	addr, b := startBroker(t, Options{})
	server, pipe := net.Pipe()
	go b.ServeConn(server, InternalListener)
	internal := newRawClient(t, pipe, packet.V5)
	if ack := internal.connect(&packet.Connect{ClientID: "component", CleanStart: true}); ack.ReasonCode != packet.Success {
		t.Fatalf("internal CONNACK %s", ack.ReasonCode)
	}
	internal.subscribe(1, 1, "req/#")
	outsider, _ := connectRaw(t, addr, packet.V5, &packet.Connect{ClientID: "outsider", CleanStart: true})
	outsider.subscribe(1, 0, "req/#")

	pub := &packet.Publish{Topic: "req/x", Payload: []byte("p")}
	pub.Properties.User = []packet.UserProperty{{Key: "a", Value: "1"}, {Key: OriginProperty, Value: "someone-else"}}
	outsider.send(pub)

	got := internal.expectPublish("req/x", "p")
	var origins []string
	for _, u := range got.Properties.User {
		if u.Key == OriginProperty {
			origins = append(origins, u.Value)
		}
	}
	if len(origins) != 1 || origins[0] != "outsider" {
		t.Fatalf("internal client saw origins %q, want exactly [outsider]", origins)
	}
	if len(got.Properties.User) != 2 || got.Properties.User[0] != (packet.UserProperty{Key: "a", Value: "1"}) {
		t.Fatalf("user properties %+v: want a=1 then the origin", got.Properties.User)
	}
	// Network subscribers see neither the forged nor the real origin.
	seen := outsider.expectPublish("req/x", "p")
	for _, u := range seen.Properties.User {
		if u.Key == OriginProperty {
			t.Fatalf("network subscriber saw %s=%q", u.Key, u.Value)
		}
	}
}
