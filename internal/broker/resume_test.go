package broker

import (
	"fmt"
	"testing"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// TestResumeByAnotherPrincipal: a client that connects with another
// user's persistent client identifier gets a new, empty session: nothing
// queued or in flight for the owner reaches it (issue 10, item 2), in
// MQTT 5 and 3.1.1. Before the fix the intruder received the owner's
// queued messages. The owner itself resumes as before.
func TestResumeByAnotherPrincipal(t *testing.T) {
	for _, v := range []packet.Version{packet.V5, packet.V311} {
		t.Run(fmt.Sprintf("MQTT %d", v), func(t *testing.T) {
			addr, b := startBroker(t, Options{})
			b.SetListenerSecurity("test", areaAuthn, nil, false) // any client ID for anyone
			as := func(id, user string, clean bool) *packet.Connect {
				cp := &packet.Connect{ClientID: id, CleanStart: clean, Username: user, HasUsername: true, Password: []byte("north"), HasPassword: true}
				if v == packet.V5 {
					cp.Properties.SessionExpiry = 3600
					cp.Properties.Set(packet.PropSessionExpiry)
				}
				return cp
			}
			pub, _ := connectRaw(t, addr, packet.V5, as("publisher", "bob", true))
			send := func(payload string) {
				publishAcked(pub, &packet.Publish{QoS: 1, PacketID: 1, Topic: "private/alice", Payload: []byte(payload)})
			}

			// Alice's own resumption gets her queue.
			alice, _ := connectRaw(t, addr, v, as("alice-dev", "alice", v == packet.V5))
			alice.subscribe(1, 1, "private/alice")
			alice.leave()
			send("queued for alice")
			alice, ack := connectRaw(t, addr, v, as("alice-dev", "alice", false))
			if !ack.SessionPresent {
				t.Fatal("alice's own session not present")
			}
			if p := alice.collect(1)[0]; string(p.Payload) != "queued for alice" {
				t.Fatalf("alice got %q", p.Payload)
			}
			// One message in flight (delivered, never acknowledged) and
			// one queued when her connection drops.
			send("in flight")
			alice.expectPublish("private/alice", "in flight")
			alice.conn.Close()
			testwait.For(t, "alice offline", func() bool {
				b.sessMu.Lock()
				defer b.sessMu.Unlock()
				s := b.sessions["alice-dev"]
				return s != nil && !s.online.Load()
			})
			send("queued")

			// Mallory resumes with alice's client identifier.
			mallory, ack := connectRaw(t, addr, v, as("alice-dev", "mallory", false))
			if ack.SessionPresent {
				t.Fatal("mallory was told alice's session is present")
			}
			mallory.ping() // nothing of alice's came before the PINGRESP
			send("after the takeover")
			mallory.ping() // and alice's subscription is gone with her session
			b.sessMu.Lock()
			s := b.sessions["alice-dev"]
			b.sessMu.Unlock()
			s.mu.Lock()
			n, q, subs := len(s.inflight), s.queue.len(), len(s.subs)
			s.mu.Unlock()
			if n != 0 || q != 0 || subs != 0 {
				t.Fatalf("mallory's session holds %d in flight, %d queued, %d subscriptions", n, q, subs)
			}
		})
	}
}
