package cluster

import (
	"bytes"
	"encoding/base64"
	"slices"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

func TestMetaRoundTrip(t *testing.T) {
	sent := time.Unix(1000, 0)
	props := &packet.Properties{ContentType: "text/plain", ResponseTopic: "r", CorrelationData: []byte{1, 2},
		User: []packet.UserProperty{{Key: "k", Value: "v"}}}
	props.Set(packet.PropContentType)
	props.Set(packet.PropResponseTopic)
	props.Set(packet.PropCorrelationData)
	m := &broker.Message{Topic: "a/b", QoS: 2, Retain: true, Origin: "client-1", Props: props,
		Expiry: sent.Add(10 * time.Second).UnixNano()}
	id := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	b := encodeMeta(nil, id, 42, m, sent.Add(3*time.Second))

	// Received on a node whose clock reads something else: the expiry
	// left when it was sent (7 s) counts from the arrival.
	recv := time.Unix(5000, 0)
	var got broker.Message
	gid, seq, err := decodeMeta(b, &got, recv)
	if err != nil {
		t.Fatal(err)
	}
	if gid != id || seq != 42 || got.QoS != 2 || !got.Retain || got.Origin != "client-1" {
		t.Fatalf("decoded %v %d %q qos %d retain %v origin %q", gid, seq, got.Topic, got.QoS, got.Retain, got.Origin)
	}
	if want := recv.Add(7 * time.Second).UnixNano(); got.Expiry != want {
		t.Errorf("expiry %v, want %v", time.Unix(0, got.Expiry), time.Unix(0, want))
	}
	p := got.Props
	if p == nil || p.ContentType != "text/plain" || p.ResponseTopic != "r" || !bytes.Equal(p.CorrelationData, []byte{1, 2}) || len(p.User) != 1 {
		t.Errorf("properties %+v", p)
	}

	// No expiry, no properties.
	b = encodeMeta(b[:0], id, 43, &broker.Message{Topic: "x"}, sent)
	got = broker.Message{}
	if _, _, err := decodeMeta(b, &got, recv); err != nil || got.Expiry != 0 || got.Props != nil || got.QoS != 0 {
		t.Errorf("plain message: expiry %d props %v qos %d: %v", got.Expiry, got.Props, got.QoS, err)
	}
}

// A durably routed message carries its publisher's session index
// position, and the receiver knows it by its identifier.
func TestMetaDurablyRouted(t *testing.T) {
	m := &broker.Message{Topic: "a", QoS: 1, Origin: "c", DurablyRouted: true, RoutedIndex: []uint64{0, 7, 1 << 40}}
	id := [8]byte{9, 8, 7}
	b := encodeMeta(nil, id, 300, m, time.Now())
	var got broker.Message
	if _, _, err := decodeMeta(b, &got, time.Now()); err != nil {
		t.Fatal(err)
	}
	want := broker.MessageID{9, 8, 7, 14: 1, 15: 44} // sequence 300, big-endian
	if !got.DurablyRouted || !slices.Equal(got.RoutedIndex, m.RoutedIndex) || got.RoutedID != want {
		t.Fatalf("decoded durably routed %v index %v id %v; want index %v id %v", got.DurablyRouted, got.RoutedIndex, got.RoutedID, m.RoutedIndex, want)
	}
}

// A message routed in two phases carries the identifier it was stored
// under, not the router's sequence number.
func TestMetaOwnIdentifier(t *testing.T) {
	own := broker.MessageID{1, 2, 3, 15: 4}
	m := &broker.Message{Topic: "a", QoS: 2, Origin: "c", DurablyRouted: true, RoutedIndex: []uint64{5}, RoutedID: own,
		Props: &packet.Properties{ContentType: "text/plain"}}
	m.Props.Set(packet.PropContentType)
	b := encodeMeta(nil, [8]byte{9}, 300, m, time.Now())
	var got broker.Message
	if _, seq, err := decodeMeta(b, &got, time.Now()); err != nil || seq != 300 {
		t.Fatalf("decode: seq %d, %v", seq, err)
	}
	if got.RoutedID != own || !slices.Equal(got.RoutedIndex, m.RoutedIndex) || got.Props == nil || got.Props.ContentType != "text/plain" {
		t.Fatalf("decoded id %v index %v props %+v; want id %v", got.RoutedID, got.RoutedIndex, got.Props, own)
	}
	if _, _, err := decodeMeta(b[:len(b)-20], &got, time.Now()); err == nil {
		t.Fatal("a truncated identifier decoded")
	}
}

// A message whose publishing node gave shared subscription groups their
// delivery names them, so that their queue groups drop it.
func TestMetaSharedDurable(t *testing.T) {
	groups := []broker.SharedGroup{{Group: "workers", Filter: "jobs/#"}, {Group: "g.2", Filter: "a b/+/%"}}
	m := &broker.Message{Topic: "jobs/1", QoS: 1, Origin: "c", DurablyRouted: true, RoutedIndex: []uint64{2}, SharedDurable: groups,
		Props: &packet.Properties{ContentType: "text/plain"}}
	m.Props.Set(packet.PropContentType)
	b := encodeMeta(nil, [8]byte{9}, 7, m, time.Now())
	var got broker.Message
	if _, _, err := decodeMeta(b, &got, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.SharedDurable, groups) || got.Props == nil || got.Props.ContentType != "text/plain" {
		t.Fatalf("decoded groups %v props %+v; want %v", got.SharedDurable, got.Props, groups)
	}
	if !got.SharedDurableFor(groups[1]) || got.SharedDurableFor(broker.SharedGroup{Group: "workers", Filter: "jobs/+"}) {
		t.Fatal("SharedDurableFor does not match the decoded groups exactly")
	}
	if _, _, err := decodeMeta(b[:len(b)-len("text/plain")-12], &got, time.Now()); err == nil {
		t.Fatal("truncated groups decoded")
	}
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMeta(nil, [8]byte{1}, 1, &broker.Message{Topic: "a", QoS: 1, Origin: "c", DurablyRouted: true, RoutedIndex: []uint64{1},
		SharedDurable: []broker.SharedGroup{{Group: "g", Filter: "a/#"}}}, time.Now()))
	f.Add(encodeMeta(nil, [8]byte{1}, 1, &broker.Message{Topic: "a", QoS: 2, Origin: "c", DurablyRouted: true, RoutedID: broker.MessageID{7}}, time.Now()))
	f.Add(encodeMeta(nil, [8]byte{1}, 1, &broker.Message{Topic: "a", QoS: 1, Origin: "c"}, time.Now()))
	f.Add(encodeMeta(nil, [8]byte{1}, 1, &broker.Message{Topic: "a", QoS: 1, Origin: "c", DurablyRouted: true, RoutedIndex: []uint64{3, 4}}, time.Now()))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m broker.Message
		_, _, _ = decodeMeta(b, &m, time.Now()) // must not panic
	})
}

func nowForBench() time.Time { return time.Now() }

func encodeB64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }
