package jsstate

import (
	"context"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/store"
)

func TestTopicKeyRoundTrip(t *testing.T) {
	for _, tc := range []struct{ topic, key string }{
		{"a/b/c", "a/b/c"},
		{"/lead", "/lead"},
		{"a//b", "a//b"},
		{"dots.and=eq", "dots=2Eand=3Deq"},
		{"sp ace/ü", "sp=20ace/=C3=BC"},
		{"$SYS/x", "=24SYS/x"},
	} {
		if k := topicKey(tc.topic); k != tc.key {
			t.Errorf("topicKey(%q) = %q, want %q", tc.topic, k, tc.key)
		}
		if got, err := keyTopic(tc.key); err != nil || got != tc.topic {
			t.Errorf("keyTopic(%q) = %q, %v; want %q", tc.key, got, err, tc.topic)
		}
	}
	for _, bad := range []string{"a=", "a=4", "a=4g", "a.b", "a b"} {
		if _, err := keyTopic(bad); err == nil {
			t.Errorf("keyTopic(%q): no error", bad)
		}
	}
}

func FuzzTopicKey(f *testing.F) {
	f.Add("a/b")
	f.Add("x.y=z #+")
	f.Fuzz(func(t *testing.T, topic string) {
		k := topicKey(topic)
		for i := 0; i < len(k); i++ {
			if !plainKeyByte(k[i]) && k[i] != '=' {
				t.Fatalf("topicKey(%q) = %q: byte %q", topic, k, k[i])
			}
		}
		if got, err := keyTopic(k); err != nil || got != topic {
			t.Fatalf("round trip of %q: %q, %v", topic, got, err)
		}
		// Any string decodes to an error or to a topic that encodes back.
		if got, err := keyTopic(topic); err == nil && topicKey(got) != topic {
			t.Fatalf("keyTopic(%q) = %q, which encodes to %q", topic, got, topicKey(got))
		}
	})
}

// A retained message set through one node reaches subscribers on the
// others; replaced through another node, the newest is what every node
// serves; cleared with an empty payload, it is gone from every node and
// from the bucket.
func TestRetainedAcrossNodes(t *testing.T) {
	nodes := testCluster(t)
	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})
	pub.publish(t, "plant/line1/temp", "20", true)

	sub1 := dial(t, nodes[1].addr, &paho.Connect{ClientID: "sub1", CleanStart: true})
	sub1.subscribe(t, "plant/#")
	if m := sub1.next(t); m.Topic != "plant/line1/temp" || string(m.Payload) != "20" || !m.Retain {
		t.Fatalf("retained on node-1: %s %q retain=%v", m.Topic, m.Payload, m.Retain)
	}

	pub2 := dial(t, nodes[2].addr, &paho.Connect{ClientID: "pub2", CleanStart: true})
	pub2.publish(t, "plant/line1/temp", "21", true)
	sub0 := dial(t, nodes[0].addr, &paho.Connect{ClientID: "sub0", CleanStart: true})
	sub0.subscribe(t, "plant/line1/temp")
	if m := sub0.next(t); string(m.Payload) != "21" {
		t.Fatalf("retained on node-0 after the replacement on node-2: %q", m.Payload)
	}

	pub.publish(t, "plant/line1/temp", "", true) // clears it
	pub.publish(t, "plant/line2/temp", "30", true)
	sub2 := dial(t, nodes[2].addr, &paho.Connect{ClientID: "sub2", CleanStart: true})
	// Two SUBSCRIBEs in turn: the broker sends a subscription's retained
	// messages before it reads the next SUBSCRIBE, so line1's would
	// arrive before line2's.
	sub2.subscribe(t, "plant/line1/temp")
	sub2.subscribe(t, "plant/line2/temp")
	if m := sub2.next(t); m.Topic != "plant/line2/temp" || string(m.Payload) != "30" {
		t.Fatalf("retained on node-2: %s %q; want only plant/line2/temp 30", m.Topic, m.Payload)
	}
	e, err := nodes[1].st.retained.Get(context.Background(), topicKey("plant/line2/temp"))
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := store.DecodeMessage(e.Value()); err != nil || string(rec.Payload) != "30" || !rec.Retain {
		t.Fatalf("bucket record: %+v, %v", rec, err)
	}
	if _, err := nodes[1].st.retained.Get(context.Background(), topicKey("plant/line1/temp")); err == nil {
		t.Fatal("the cleared topic is still in the bucket")
	}
}
