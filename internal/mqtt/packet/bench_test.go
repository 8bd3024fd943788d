package packet

import "testing"

func benchPublish() *Publish {
	return &Publish{QoS: 1, PacketID: 42, Topic: "factory/line-3/sensor/temperature",
		Properties: propWith(PropMessageExpiry, 60, PropContentType, "application/json",
			PropUserProperty, UserProperty{"site", "berlin"}),
		Payload: make([]byte, 256)}
}

func BenchmarkPublishDecode(b *testing.B) {
	data := benchPublish().Append(nil, V5)
	h, n, _ := DecodeFixedHeader(data)
	body := data[n:]
	var p Publish
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := p.Decode(h.Flags, body, V5); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPublishDecode311(b *testing.B) {
	p := benchPublish()
	p.Properties = Properties{}
	data := p.Append(nil, V311)
	h, n, _ := DecodeFixedHeader(data)
	body := data[n:]
	var q Publish
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := q.Decode(h.Flags, body, V311); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPublishAppend(b *testing.B) {
	p := benchPublish()
	dst := make([]byte, 0, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(p.Size(V5)))
	for b.Loop() {
		dst = p.Append(dst[:0], V5)
	}
}

func BenchmarkAckAppend(b *testing.B) {
	p := &Ack{Type: PUBACK, PacketID: 42}
	dst := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		dst = p.Append(dst[:0], V5)
	}
}
