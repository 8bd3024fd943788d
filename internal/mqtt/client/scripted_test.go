package client

// These tests need a server that misbehaves on purpose (withholds a PUBACK,
// never answers PINGREQ). Neither Edgeport's broker nor mosquitto can be
// made to, so a scripted server speaking raw MQTT over a real TCP socket
// stands in for one: the only stand-in in this package.

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// scripted accepts connections on 127.0.0.1:0 and hands each to the test.
type scripted struct {
	ln    net.Listener
	conns chan net.Conn
}

func newScripted(t *testing.T) *scripted {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{ln: ln, conns: make(chan net.Conn, 4)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(s.conns)
		for c := range s.conns {
			c.Close()
		}
	})
	return s
}

func (s *scripted) accept(t *testing.T) (net.Conn, *packet.Reader) {
	t.Helper()
	select {
	case c := <-s.conns:
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, packet.NewReader(c, 0)
	case <-time.After(5 * time.Second):
		t.Fatal("no connection")
		return nil, nil
	}
}

func expectPacket(t *testing.T, r *packet.Reader, want packet.Type) (packet.FixedHeader, []byte) {
	t.Helper()
	h, body, err := r.Next(0)
	if err != nil {
		t.Fatalf("waiting for %v: %v", want, err)
	}
	if h.Type != want {
		t.Fatalf("got %v, want %v", h.Type, want)
	}
	return h, body
}

func send(t *testing.T, c net.Conn, p packet.Packet) {
	t.Helper()
	if _, err := c.Write(p.Append(nil, packet.V5)); err != nil {
		t.Fatal(err)
	}
}

// An unacknowledged QoS 1 publish is resent with DUP and the same packet
// identifier when the session is resumed, and Publish returns on its PUBACK.
func TestResendWithDup(t *testing.T) {
	noLeaks(t)
	s := newScripted(t)
	c := newClient(t, Options{Dialer: TCP(s.ln.Addr().String(), nil), ClientID: "dup", SessionExpiry: time.Hour})
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(ctxT(t)) }()
	conn1, r1 := s.accept(t)
	_, body := expectPacket(t, r1, packet.CONNECT)
	var cp packet.Connect
	if err := cp.Decode(0, body); err != nil || cp.Properties.SessionExpiry != 3600 {
		t.Fatalf("CONNECT %+v, %v", cp, err)
	}
	send(t, conn1, &packet.ConnAck{})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	pubErr := make(chan error, 1)
	go func() { pubErr <- c.Publish(ctxT(t), &Message{Topic: "t", QoS: 1, Payload: []byte("p")}) }()
	h, body := expectPacket(t, r1, packet.PUBLISH)
	var first packet.Publish
	if err := first.Decode(h.Flags, body, packet.V5); err != nil || first.Dup {
		t.Fatalf("first PUBLISH %+v, %v", first, err)
	}
	conn1.Close() // no PUBACK

	conn2, r2 := s.accept(t)
	_, body = expectPacket(t, r2, packet.CONNECT)
	if err := cp.Decode(0, body); err != nil || cp.CleanStart {
		t.Fatalf("reconnection CONNECT %+v, %v: want Clean Start 0", cp, err)
	}
	send(t, conn2, &packet.ConnAck{SessionPresent: true})
	h, body = expectPacket(t, r2, packet.PUBLISH)
	var again packet.Publish
	if err := again.Decode(h.Flags, body, packet.V5); err != nil || !again.Dup || again.PacketID != first.PacketID || string(again.Payload) != "p" {
		t.Fatalf("resent PUBLISH %+v, %v: want DUP and packet id %d", again, err, first.PacketID)
	}
	select {
	case err := <-pubErr:
		t.Fatalf("Publish returned %v before its PUBACK", err)
	default:
	}
	send(t, conn2, &packet.Ack{Type: packet.PUBACK, PacketID: again.PacketID})
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
}

// The client pings a silent server and gives the connection up when no
// PINGRESP comes within 1.5 × the keep-alive.
func TestKeepAliveDetectsDeadServer(t *testing.T) {
	noLeaks(t)
	s := newScripted(t)
	lost := make(chan error, 1)
	c := newClient(t, Options{Dialer: TCP(s.ln.Addr().String(), nil), ClientID: "ka", KeepAlive: time.Second, NoReconnect: true,
		OnConnectionLost: func(err error) { lost <- err }})
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(ctxT(t)) }()
	conn, r := s.accept(t)
	expectPacket(t, r, packet.CONNECT)
	send(t, conn, &packet.ConnAck{})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	expectPacket(t, r, packet.PINGREQ) // and never answer it
	select {
	case err := <-lost:
		if !isTimeout(err) {
			t.Fatalf("connection lost with %v, want a read timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a server that stopped answering was not detected")
	}
	if err := c.Publish(ctxT(t), &Message{Topic: "x", QoS: 1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after the loss: %v", err)
	}
}
