package jsstate

import (
	"context"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

func TestClientKeyRoundTrip(t *testing.T) {
	for _, id := range []string{"a", "sensor/1", "dev.1 +#", "ü€\x00", "$edgeport/x"} {
		k := clientKey(id)
		got, err := clientID(k)
		if err != nil || got != id {
			t.Errorf("clientID(clientKey(%q)) = %q, %v", id, got, err)
		}
		for _, r := range k {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				t.Errorf("clientKey(%q) = %q: %q is not a plain NATS key character", id, k, r)
			}
		}
	}
	if _, err := clientID("not base64!"); err == nil {
		t.Error("clientID of a bad key: no error")
	}
}

func FuzzClientKey(f *testing.F) {
	f.Add("dev")
	f.Add("a.b/c")
	f.Fuzz(func(t *testing.T, id string) {
		if got, err := clientID(clientKey(id)); err != nil || got != id {
			t.Fatalf("round trip of %q: %q, %v", id, got, err)
		}
	})
}

// A client connecting to another node takes its session over: the old
// connection, on the first node, is told 0x8E, and the owners bucket
// names the new node. Back on the first node, the second is told 0x8E.
func TestTakeoverAcrossNodes(t *testing.T) {
	nodes := testCluster(t)
	first := dial(t, nodes[0].addr, &paho.Connect{ClientID: "dev", CleanStart: true, KeepAlive: 30})
	second := dial(t, nodes[1].addr, &paho.Connect{ClientID: "dev", CleanStart: true, KeepAlive: 30})
	if d := first.disconnected(t); d.ReasonCode != byte(packet.SessionTakenOver) {
		t.Fatalf("first connection told 0x%02X, want 0x8E", d.ReasonCode)
	}
	e, err := nodes[2].owner.kv.Get(context.Background(), clientKey("dev"))
	if err != nil || string(e.Value()) != "node2" {
		t.Fatalf("owner entry: %v, %v; want node2", e, err)
	}
	testwait.For(t, "the session gone from node1", func() bool {
		_, ok := nodes[0].b.Session("dev")
		return !ok
	})
	third := dial(t, nodes[0].addr, &paho.Connect{ClientID: "dev", CleanStart: true, KeepAlive: 30})
	if d := second.disconnected(t); d.ReasonCode != byte(packet.SessionTakenOver) {
		t.Fatalf("second connection told 0x%02X, want 0x8E", d.ReasonCode)
	}
	// The newest connection is left alone: it still works.
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	if _, err := third.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "t", QoS: 1}}}); err != nil {
		t.Fatalf("the newest connection: %v", err)
	}
	select {
	case d := <-third.discs:
		t.Fatalf("the newest connection was disconnected: 0x%02X", d.ReasonCode)
	default:
	}
}

// A clean session that ends gives its entry up; a session ended on a node
// after another node claimed it leaves the newer claim alone.
func TestReleaseOnSessionEnd(t *testing.T) {
	nodes := testCluster(t)
	c := dial(t, nodes[0].addr, &paho.Connect{ClientID: "gone", CleanStart: true})
	kv := nodes[1].owner.kv
	if _, err := kv.Get(context.Background(), clientKey("gone")); err != nil {
		t.Fatalf("owner entry while connected: %v", err)
	}
	if err := c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the owner entry deleted", func() bool {
		_, err := kv.Get(context.Background(), clientKey("gone"))
		return err != nil
	})
}
