package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testpki"
	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/edgeport/edgeport/internal/testwait"
)

// These tests are about what a client that is still sending sees when the
// server ends its connection. Closing a socket that has unread input, or
// that input reaches after the close, makes the kernel answer with a reset:
// the client's next write fails, and a client that treats that as the end
// (as most libraries do) never reads the DISCONNECT that says why. The
// broker half-closes and reads what still arrives for a bounded time
// instead, so the client's writes succeed, it reads the DISCONNECT, and the
// connection then ends with an orderly end of stream, not a reset.
//
// The client here is one goroutine over a raw socket, like a simple
// library's connection: it writes a burst without reading, then reads,
// answering every PUBREC with its PUBREL as a QoS 2 publisher does.

// sendingClient is a raw MQTT 5 connection driven from the test goroutine.
type sendingClient struct {
	t    *testing.T
	conn net.Conn
	r    *packet.Reader
}

func dialSending(t *testing.T, addr, id string) *sendingClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return startSending(t, conn, id)
}

func startSending(t *testing.T, conn net.Conn, id string) *sendingClient {
	t.Helper()
	t.Cleanup(func() { conn.Close() })
	c := &sendingClient{t: t, conn: conn, r: packet.NewReader(conn, 0)}
	c.write((&packet.Connect{ClientID: id, CleanStart: true}).Append(nil, packet.V5))
	h, _ := c.next()
	if h.Type != packet.CONNACK {
		t.Fatalf("got %s, want CONNACK", h.Type)
	}
	return c
}

// write fails the test when the broker's end makes a write fail: that is
// where a client would lose the reason.
func (c *sendingClient) write(b []byte) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(rawWait))
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write failed before the DISCONNECT was read: %v", err)
	}
}

func (c *sendingClient) next() (packet.FixedHeader, []byte) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(rawWait))
	h, body, err := c.r.Next(0)
	if err != nil {
		c.t.Fatalf("read failed before the DISCONNECT: %v", err)
	}
	return h, body
}

// flood writes n bytes of QoS 0 publishes in 16 KiB writes, reading nothing.
func (c *sendingClient) flood(n int) {
	c.t.Helper()
	var burst []byte
	payload := make([]byte, 1000)
	for range 16 {
		burst = (&packet.Publish{Topic: "flood", Payload: payload}).Append(burst, packet.V5)
	}
	for sent := 0; sent < n; sent += len(burst) {
		c.write(burst)
	}
}

// awaitDisconnect reads until the DISCONNECT, answering PUBRECs, checks its
// code, and then requires the orderly end of the stream.
func (c *sendingClient) awaitDisconnect(code packet.ReasonCode) {
	c.t.Helper()
	for {
		h, body := c.next()
		switch h.Type {
		case packet.PUBREC:
			var a packet.Ack
			if err := a.Decode(h.Type, h.Flags, body, packet.V5); err != nil {
				c.t.Fatal(err)
			}
			c.write((&packet.Ack{Type: packet.PUBREL, PacketID: a.PacketID}).Append(nil, packet.V5))
		case packet.DISCONNECT:
			var d packet.Disconnect
			if err := d.Decode(h.Flags, body, packet.V5); err != nil {
				c.t.Fatal(err)
			}
			if d.ReasonCode != code {
				c.t.Fatalf("DISCONNECT %s (%q), want %s", d.ReasonCode, d.Properties.ReasonString, code)
			}
			_ = c.conn.SetReadDeadline(time.Now().Add(rawWait))
			if _, _, err := c.r.Next(0); !errors.Is(err, io.EOF) {
				c.t.Fatalf("after the DISCONNECT: %v, want the orderly end of the stream", err)
			}
			return
		}
	}
}

// TestDisconnectReasonReceiveMaximum: a QoS 2 publisher that pipelines past
// the broker's Receive Maximum, and keeps sending and answering PUBRECs
// while the broker ends the connection, reads DISCONNECT 0x93.
func TestDisconnectReasonReceiveMaximum(t *testing.T) {
	addr, _ := startBroker(t, Options{ReceiveMaximum: 2})
	c := dialSending(t, addr, "rm-flood")
	// The third of these is one too many while the first two are
	// unacknowledged.
	var burst []byte
	for id := uint16(1); id <= 4; id++ {
		burst = (&packet.Publish{QoS: 2, PacketID: id, Topic: "rm", Payload: []byte("x")}).Append(burst, packet.V5)
	}
	c.write(burst)
	c.flood(1 << 20)
	c.awaitDisconnect(packet.ReceiveMaximumExceeded)
}

// TestDisconnectReasonTakeover: a client that is sending when another
// connection takes its session over reads DISCONNECT 0x8E.
func TestDisconnectReasonTakeover(t *testing.T) {
	addr, _ := startBroker(t, Options{})
	old := dialSending(t, addr, "taken")
	old.flood(64 << 10)
	dialSending(t, addr, "taken")
	old.flood(1 << 20)
	old.awaitDisconnect(packet.SessionTakenOver)
}

// TestDisconnectReasonPacketTooLarge: a PUBLISH over the maximum packet
// size followed by more data gets DISCONNECT 0x95.
func TestDisconnectReasonPacketTooLarge(t *testing.T) {
	addr, _ := startBroker(t, Options{MaxPacketSize: 512})
	c := dialSending(t, addr, "too-large")
	c.write((&packet.Publish{Topic: "big", Payload: make([]byte, 4096)}).Append(nil, packet.V5))
	c.flood(1 << 20)
	c.awaitDisconnect(packet.PacketTooLarge)
}

// TestDisconnectReasonShutdown: a client sending while the broker stops
// reads DISCONNECT 0x8B, and Stop returns by itself although the client
// sends until it has read the reason.
func TestDisconnectReasonShutdown(t *testing.T) {
	addr, b := startBroker(t, Options{})
	c := dialSending(t, addr, "shutdown")
	c.flood(64 << 10)
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- b.Stop(ctx)
	}()
	testwait.For(t, "the broker to start stopping", func() bool { return b.closing.Load() })
	c.flood(1 << 20)
	c.awaitDisconnect(packet.ServerShuttingDown)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// TestDisconnectReasonTLS: over TLS the half-close is close_notify (and the
// TCP FIN under it); the client reads the DISCONNECT and then a clean end.
func TestDisconnectReasonTLS(t *testing.T) {
	b, err := New(Options{SysInterval: -1, ReceiveMaximum: 2}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	b.Start(context.Background())
	cert := testpki.NewCA(t, pkix.Name{CommonName: "test CA"}).Server(t, "localhost")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert.TLS()}})
	if err != nil {
		t.Fatal(err)
	}
	srv := testserve.Serve(ln, func(conn net.Conn) {
		// The broker is handed the handshaken *tls.Conn, as by the
		// listener package.
		tc := conn.(*tls.Conn)
		if tc.Handshake() != nil {
			tc.Close()
			return
		}
		b.ServeConn(tc, "tls")
	})
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
		srv.Wait()
	})
	conn, err := tls.Dial("tcp", srv.Addr(), &tls.Config{InsecureSkipVerify: true}) // the test's own throwaway certificate
	if err != nil {
		t.Fatal(err)
	}
	c := startSending(t, conn, "tls-flood")
	var burst []byte
	for id := uint16(1); id <= 4; id++ {
		burst = (&packet.Publish{QoS: 2, PacketID: id, Topic: "rm", Payload: []byte("x")}).Append(burst, packet.V5)
	}
	c.write(burst)
	c.flood(1 << 20)
	c.awaitDisconnect(packet.ReceiveMaximumExceeded)
}

// countingConn counts the bytes read from it.
type countingConn struct {
	net.Conn
	n atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// A read deadline of now set while a connection drains (closeAfterFlush,
// run by Stop's goroutine, stopping a reader that had already seen the
// end between two packets and started draining) does not end the drain:
// what the client still sends is read until it closes its side. Seen
// once: the early close reset the connection under a flooding client of
// TestDisconnectReasonShutdown before it read the DISCONNECT.
func TestDrainOutlastsALateReaderStop(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	conn := &countingConn{Conn: sc}
	c := &client{b: &Broker{}, conn: conn}
	c.b.draining.Add(1) // as endWrites does
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		c.drain()
	}()
	chunk := make([]byte, 32<<10)
	if _, err := peer.Write(chunk); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the first chunk drained", func() bool { return conn.n.Load() == int64(len(chunk)) })
	_ = sc.SetReadDeadline(time.Now()) // the late stop of the reader
	if _, err := peer.Write(chunk); err != nil {
		t.Fatal(err)
	}
	if err := peer.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-drained:
	case <-time.After(2 * drainTimeout):
		t.Fatal("drain did not end after the client closed its side")
	}
	if got := conn.n.Load(); got != int64(2*len(chunk)) {
		t.Fatalf("drained %d bytes, want the %d the client sent before closing its side", got, 2*len(chunk))
	}
}
