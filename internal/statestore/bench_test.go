package statestore

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"testing"

	"github.com/edgeport/edgeport/internal/broker"
	mqtt "github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
)

// The request path, measured in-process with -benchmem: a requester on an
// in-memory connection to a real broker with the state store attached
// keeps benchWindow requests in flight, as the SDKs' asynchronous RPC
// clients may, and acknowledges every answer (QoS 1). One op is one
// request answered: the broker decoding and routing it, the state store
// executing it and the answer's delivery into the requester's buffer,
// plus the little the requester itself does (it reuses its buffers).
//
//	go test -run X -bench . -benchmem ./internal/statestore/
func BenchmarkGet(b *testing.B) { benchRequests(b, "GET", store.SyncNone) }

// BenchmarkSet: durable SETs as `edgeport serve` makes them (sync policy
// batch: every answer waits for its group's fsync).
func BenchmarkSet(b *testing.B) { benchRequests(b, "SET", store.SyncBatch) }

const benchWindow = 16

func benchRequests(b *testing.B, cmd string, sync store.SyncPolicy) {
	st, err := store.Open(b.TempDir(), store.Options{Sync: sync})
	if err != nil {
		b.Fatal(err)
	}
	brk, err := broker.New(broker.Options{SysInterval: -1}, nil)
	if err != nil {
		b.Fatal(err)
	}
	brk.AttachStore(st)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := brk.Start(ctx); err != nil {
		b.Fatal(err)
	}
	ss, err := New(st, brk, Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := ss.Start(ctx); err != nil {
		b.Fatal(err)
	}
	conn, srv := mqtt.Pipe()
	served := make(chan struct{})
	go func() {
		defer close(served)
		brk.ServeConn(srv, "bench")
	}()
	r := newBenchRequester(b, conn)

	value := make([]byte, 64)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	r.run(1, resp("SET", "k", string(value))) // the key GETs read
	payload := resp(cmd, "k")
	if cmd == "SET" {
		payload = resp("SET", "k", string(value))
	}
	b.ReportAllocs()
	b.ResetTimer()
	r.run(b.N, payload)
	b.StopTimer()

	conn.Close()
	<-served
	sctx, scancel := context.WithTimeout(context.Background(), wait)
	defer scancel()
	if err := ss.Stop(sctx); err != nil {
		b.Error(err)
	}
	if err := brk.Stop(sctx); err != nil {
		b.Error(err)
	}
	if err := st.Close(); err != nil {
		b.Error(err)
	}
}

// benchRequester is a raw MQTT 5 requester: pre-encoded requests, answers
// read in place and acknowledged with a 4-byte PUBACK.
type benchRequester struct {
	b    testing.TB
	conn net.Conn
	rd   *packet.Reader
	mu   sync.Mutex // serialises writes to conn
	pub  packet.Publish
	out  []byte
}

const benchRespTopic = "clients/bench/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response"

func newBenchRequester(b testing.TB, conn net.Conn) *benchRequester {
	r := &benchRequester{b: b, conn: conn, rd: packet.NewReader(conn, 32<<10)}
	r.write((&packet.Connect{ClientID: "bench", CleanStart: true}).Append(nil, packet.V5))
	if h := r.next(); h.Type != packet.CONNACK {
		b.Fatalf("got %v, want CONNACK", h.Type)
	}
	sub := &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: benchRespTopic, QoS: 1}}}
	r.write(sub.Append(nil, packet.V5))
	if h := r.next(); h.Type != packet.SUBACK {
		b.Fatalf("got %v, want SUBACK", h.Type)
	}
	r.pub = packet.Publish{QoS: 1, Topic: InvokeTopic}
	r.pub.Properties.ResponseTopic = benchRespTopic
	r.pub.Properties.Set(packet.PropResponseTopic)
	r.pub.Properties.CorrelationData = make([]byte, 16)
	r.pub.Properties.Set(packet.PropCorrelationData)
	r.pub.Properties.User = []packet.UserProperty{
		{Key: "__ts", Value: HLC{Wall: 1, Node: "bench"}.String()},
		{Key: "__protVer", Value: "1.0"},
		{Key: "__srcId", Value: "bench"},
	}
	return r
}

func (r *benchRequester) write(p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.conn.Write(p); err != nil {
		r.b.Fatalf("write: %v", err)
	}
}

func (r *benchRequester) next() packet.FixedHeader {
	h, _, err := r.rd.Next(0)
	if err != nil {
		r.b.Fatalf("read: %v", err)
	}
	return h
}

// run sends n requests with payload, benchWindow at a time, and returns
// once all are answered.
func (r *benchRequester) run(n int, payload []byte) {
	tokens := make(chan struct{}, benchWindow)
	done := make(chan error, 1)
	go func() { done <- r.read(n, tokens) }()
	r.pub.Payload = payload
	for i := range n {
		tokens <- struct{}{}
		r.pub.PacketID = uint16(i%benchWindow) + 1
		binary.LittleEndian.PutUint64(r.pub.Properties.CorrelationData, uint64(i))
		r.mu.Lock()
		r.out = r.pub.Append(r.out[:0], packet.V5)
		_, err := r.conn.Write(r.out)
		r.mu.Unlock()
		if err != nil {
			r.b.Fatalf("write: %v", err)
		}
	}
	if err := <-done; err != nil {
		r.b.Fatal(err)
	}
}

// read takes n answers, acknowledging each, and frees a window slot per
// answer (the request's own PUBACK is ignored: the answer comes later).
func (r *benchRequester) read(n int, tokens <-chan struct{}) error {
	var ack [4]byte
	ack[0], ack[1] = byte(packet.PUBACK)<<4, 2
	for got := 0; got < n; {
		h, body, err := r.rd.Next(0)
		if err != nil {
			return err
		}
		if h.Type != packet.PUBLISH {
			continue
		}
		tl := int(binary.BigEndian.Uint16(body))
		ack[2], ack[3] = body[2+tl], body[3+tl]
		r.mu.Lock()
		_, err = r.conn.Write(ack[:])
		r.mu.Unlock()
		if err != nil {
			return err
		}
		got++
		<-tokens
	}
	return nil
}
