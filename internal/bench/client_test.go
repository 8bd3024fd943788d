package bench

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// fakeServer accepts one connection, answers CONNECT with connack and
// hands the connection to the test.
type fakeServer struct {
	t    *testing.T
	conn net.Conn
	r    *packet.Reader
	v    packet.Version
}

func dialFake(t *testing.T, connack packet.ConnAck, o ClientOptions) (*Client, *fakeServer) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	srv := make(chan *fakeServer, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			srv <- nil
			return
		}
		s := &fakeServer{t: t, conn: nc, r: packet.NewReader(nc, 0), v: packet.V5}
		h, body, err := s.r.Next(0)
		var c packet.Connect
		if err != nil || h.Type != packet.CONNECT || c.Decode(h.Flags, body) != nil {
			nc.Close()
			srv <- nil
			return
		}
		s.v = c.Version
		nc.Write(connack.Append(nil, s.v))
		srv <- s
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, l.Addr().String(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := <-srv
	if s == nil {
		t.Fatal("fake server handshake failed")
	}
	t.Cleanup(func() { s.conn.Close() })
	s.conn.SetDeadline(time.Now().Add(10 * time.Second))
	return c, s
}

func (s *fakeServer) send(p packet.Packet) {
	s.t.Helper()
	if _, err := s.conn.Write(p.Append(nil, s.v)); err != nil {
		s.t.Fatalf("server write: %v", err)
	}
}

// expectAck reads the next packet and checks it is the acknowledgement t for id.
func (s *fakeServer) expectAck(t packet.Type, id uint16) {
	s.t.Helper()
	h, body, err := s.r.Next(0)
	if err != nil {
		s.t.Fatalf("server read: %v", err)
	}
	var a packet.Ack
	if h.Type != t || a.Decode(h.Type, h.Flags, body, s.v) != nil || a.PacketID != id {
		s.t.Fatalf("server got %s for packet %d, want %s for %d", h.Type, a.PacketID, t, id)
	}
}

func TestClientQoS2ReceiveDeliversOnce(t *testing.T) {
	var got atomic.Int32
	_, s := dialFake(t, packet.ConnAck{}, ClientOptions{ClientID: "q2", OnPublish: func(p *packet.Publish) {
		if p.Topic != "a/b" || string(p.Payload) != "hello" {
			t.Errorf("OnPublish got %q %q", p.Topic, p.Payload)
		}
		got.Add(1)
	}})
	pub := packet.Publish{QoS: 2, PacketID: 7, Topic: "a/b", Payload: []byte("hello")}
	s.send(&pub)
	s.expectAck(packet.PUBREC, 7)
	pub.Dup = true // a resend before PUBREL is the same message
	s.send(&pub)
	s.expectAck(packet.PUBREC, 7)
	s.send(&packet.Ack{Type: packet.PUBREL, PacketID: 7})
	s.expectAck(packet.PUBCOMP, 7)
	pub.Dup, pub.QoS, pub.PacketID = false, 1, 8
	s.send(&pub)
	s.expectAck(packet.PUBACK, 8)
	if n := got.Load(); n != 2 {
		t.Fatalf("OnPublish called %d times, want 2 (QoS 2 once, QoS 1 once)", n)
	}
}

func TestClientWindowFollowsReceiveMaximum(t *testing.T) {
	ack := packet.ConnAck{}
	ack.Properties.ReceiveMaximum = 2
	ack.Properties.Set(packet.PropReceiveMaximum)
	c, s := dialFake(t, ack, ClientOptions{ClientID: "w", Window: 10})
	if c.Window() != 2 {
		t.Fatalf("window %d, want the server's Receive Maximum 2", c.Window())
	}
	ctx := context.Background()
	var ids []uint16
	for range 2 {
		p := packet.Publish{QoS: 1, Topic: "t", Payload: []byte("x")}
		if err := c.Publish(ctx, &p); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.PacketID)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	third := packet.Publish{QoS: 2, Topic: "t", Payload: []byte("x")}
	if err := c.Publish(short, &third); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third publish into a full window: %v, want a deadline", err)
	}
	for range 2 {
		h, body, err := s.r.Next(0)
		var p packet.Publish
		if err != nil || h.Type != packet.PUBLISH || p.Decode(h.Flags, body, s.v) != nil {
			t.Fatalf("server read %s: %v", h.Type, err)
		}
	}
	s.send(&packet.Ack{Type: packet.PUBACK, PacketID: ids[0]})
	if err := c.Publish(ctx, &third); err != nil {
		t.Fatalf("publish after PUBACK: %v", err)
	}
	if third.PacketID == ids[1] || third.PacketID == 0 {
		t.Fatalf("packet identifier %d reused while %v in flight", third.PacketID, ids)
	}
	h, body, err := s.r.Next(0)
	var p packet.Publish
	if err != nil || h.Type != packet.PUBLISH || p.Decode(h.Flags, body, s.v) != nil || p.QoS != 2 {
		t.Fatalf("server read %s: %v", h.Type, err)
	}
	s.send(&packet.Ack{Type: packet.PUBREC, PacketID: p.PacketID})
	s.expectAck(packet.PUBREL, p.PacketID)
	s.send(&packet.Ack{Type: packet.PUBCOMP, PacketID: p.PacketID})
	s.send(&packet.Ack{Type: packet.PUBACK, PacketID: ids[1], ReasonCode: packet.QuotaExceeded})
	testwait.Within(testwait.Timeout, func() bool { return c.Inflight() == 0 })
	if c.Inflight() != 0 || c.Acked() != 2 || c.Rejected() != 1 {
		t.Fatalf("inflight %d acked %d rejected %d, want 0 2 1", c.Inflight(), c.Acked(), c.Rejected())
	}
}

func TestClientRejectsAckForUnknownPacket(t *testing.T) {
	c, s := dialFake(t, packet.ConnAck{}, ClientOptions{ClientID: "u", Window: 4})
	s.send(&packet.Ack{Type: packet.PUBACK, PacketID: 99})
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client kept the connection after a PUBACK for nothing")
	}
	if c.Err() == nil {
		t.Fatal("Err is nil after a protocol violation")
	}
	p := packet.Publish{QoS: 1, Topic: "t"}
	if err := c.Publish(context.Background(), &p); err == nil {
		t.Fatal("Publish on a dead connection succeeded")
	}
}

func TestClientRefusedConnect(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		r := packet.NewReader(nc, 0)
		if _, _, err := r.Next(0); err != nil {
			return
		}
		ack := packet.ConnAck{ReasonCode: packet.NotAuthorized}
		nc.Write(ack.Append(nil, packet.V5))
		r.Next(0) // wait for the client to hang up
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = Dial(ctx, l.Addr().String(), ClientOptions{ClientID: "x"})
	if !errors.Is(err, packet.NotAuthorized) {
		t.Fatalf("Dial: %v, want not authorized", err)
	}
}

func TestPoolWaitsAndWakes(t *testing.T) {
	p := newPool(1, 2)
	p.sent.Add(2)
	acquired := make(chan bool)
	go func() { acquired <- p.acquire() }()
	// Once the publisher is parked, a delivery halves the backlog and must
	// wake it.
	waitParked(t, p)
	p.delivered()
	if !<-acquired {
		t.Fatal("acquire failed after a delivery")
	}

	p.sent.Add(5) // backlog 6: parked again, until forgiven
	go func() { acquired <- p.acquire() }()
	waitParked(t, p)
	p.forgive()
	if !<-acquired || p.backlog() != 0 {
		t.Fatalf("forgive did not release the publisher (backlog %d)", p.backlog())
	}

	p.sent.Add(5)
	go func() { acquired <- p.acquire() }()
	waitParked(t, p)
	p.stop()
	if <-acquired {
		t.Fatal("acquire succeeded on a stopped pool")
	}
}

func waitParked(t *testing.T, p *pool) {
	t.Helper()
	testwait.For(t, "the publisher to wait", func() bool { return p.waiters.Load() != 0 })
}

func TestClientPublishDoesNotAllocate(t *testing.T) {
	c, s := dialFake(t, packet.ConnAck{}, ClientOptions{ClientID: "a", Window: 1000})
	go drainConn(s.conn)
	ctx := context.Background()
	p := packet.Publish{Topic: "bench/topic", Payload: make([]byte, 64)}
	if n := testing.AllocsPerRun(10000, func() {
		if err := c.Publish(ctx, &p); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("QoS 0 Publish allocates %v times per message", n)
	}
}

// drainConn reads and discards until the connection ends.
func drainConn(nc net.Conn) {
	nc.SetDeadline(time.Time{})
	buf := make([]byte, 64<<10)
	for {
		if _, err := nc.Read(buf); err != nil {
			return
		}
	}
}

func BenchmarkClientPublishQoS0(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		r := packet.NewReader(nc, 0)
		r.Next(0)
		nc.Write((&packet.ConnAck{}).Append(nil, packet.V5))
		drainConn(nc)
	}()
	c, err := Dial(context.Background(), l.Addr().String(), ClientOptions{ClientID: "b"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	p := packet.Publish{Topic: "bench/topic", Payload: make([]byte, 64)}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Publish(ctx, &p); err != nil {
			b.Fatal(err)
		}
	}
}
