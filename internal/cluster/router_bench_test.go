package cluster

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// benchRouter runs one node with its router on a broker without clients.
func benchRouter(b *testing.B) *Router {
	cfg := Config{Name: "bench", Listen: "127.0.0.1:0", Routes: []string{"127.0.0.1:1"}, StoreDir: b.TempDir(), Replicas: 1}
	node, err := New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := node.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = node.Stop(context.Background()) })
	br, err := broker.New(broker.Options{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	r := NewRouter(node, br, nil)
	if err := r.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Stop(context.Background()) })
	return r
}

func benchMessage() *broker.Message {
	props := &packet.Properties{ContentType: "application/json", User: []packet.UserProperty{{Key: "unit", Value: "C"}}}
	props.Set(packet.PropContentType)
	return &broker.Message{Topic: "plant/line1/temp", Payload: make([]byte, 64), QoS: 1, Origin: "sensor-17", Props: props}
}

// BenchmarkForward is the publishing node's cost per message: meta
// encoding and the NATS publish (into nats.go's buffer; nobody listens).
func BenchmarkForward(b *testing.B) {
	r := benchRouter(b)
	m := benchMessage()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r.Forward(m)
	}
}

// BenchmarkReceive is the receiving node's cost per message before the
// broker's own routing: header decoding, subject mapping, deduplication
// (the broker has no subscriber).
func BenchmarkReceive(b *testing.B) {
	r := benchRouter(b)
	m := benchMessage()
	r.seq++
	meta := encodeMeta(nil, [8]byte{9}, 0, m, nowForBench())
	hdr := nats.Header{metaHeader: []string{encodeB64(meta)}}
	msg := &nats.Msg{Subject: Subject(m.Topic), Data: m.Payload, Header: hdr}
	b.ReportAllocs()
	b.ResetTimer()
	var seq uint64
	for b.Loop() {
		seq++
		// A fresh sequence number per message, as a sender's would be.
		hdr[metaHeader][0] = encodeB64(encodeMeta(meta[:0], [8]byte{9}, seq, m, nowForBench()))
		r.route(msg, false)
	}
}
