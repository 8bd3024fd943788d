package broker

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// rawWait bounds every wait for the broker; generous because the race
// detector on a shared two-core machine is slow.
const rawWait = 5 * time.Second

// rawPacket is one packet the broker sent: its header, a private copy of
// its body and the decoded packet (*packet.Publish, *packet.Ack, ...), or the
// decode error.
type rawPacket struct {
	Header packet.FixedHeader
	Body   []byte
	Pkt    any
	Err    error
}

func (p rawPacket) String() string {
	if p.Err != nil {
		return fmt.Sprintf("%s (undecodable: %v)", p.Header.Type, p.Err)
	}
	return fmt.Sprintf("%s %+v", p.Header.Type, p.Pkt)
}

// rawClient speaks MQTT byte by byte over a real socket. A goroutine reads
// and decodes whatever the broker sends into a channel, so waiting with a
// deadline never leaves the stream in an undefined state, and the end of the
// connection is seen as the channel closing.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	v    packet.Version // version used to encode and decode
	in   chan rawPacket
	done chan struct{} // closed at cleanup: the read loop stops delivering
	end  atomic.Value  // error that ended the read loop (io.EOF for a clean close)
	buf  []byte
}

// dialRaw opens a connection without sending anything.
func dialRaw(t testing.TB, addr string, v packet.Version) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return newRawClient(t, conn, v)
}

// newRawClient wraps conn (a TCP socket or one end of net.Pipe).
func newRawClient(t testing.TB, conn net.Conn, v packet.Version) *rawClient {
	if v == packet.V31 {
		v = packet.V311 // identical on the wire after CONNECT
	}
	c := &rawClient{t: t, conn: conn, v: v, in: make(chan rawPacket, 64), done: make(chan struct{})}
	t.Cleanup(func() {
		close(c.done)
		conn.Close()
	})
	go c.readLoop()
	return c
}

func (c *rawClient) readLoop() {
	defer close(c.in)
	r := packet.NewReader(c.conn, 0)
	for {
		h, body, err := r.Next(0)
		if err != nil {
			c.end.Store(fmt.Errorf("read: %w", err))
			return
		}
		p := rawPacket{Header: h, Body: append([]byte(nil), body...)}
		p.Pkt, p.Err = decodeRaw(h, p.Body, c.v)
		select {
		case c.in <- p:
		case <-c.done:
			return
		}
	}
}

// decodeRaw decodes a packet a server may send (plus the client ones, so a
// broker sending something odd is reported legibly).
func decodeRaw(h packet.FixedHeader, body []byte, v packet.Version) (any, error) {
	switch h.Type {
	case packet.CONNACK:
		p := new(packet.ConnAck)
		return p, p.Decode(h.Flags, body, v)
	case packet.PUBLISH:
		p := new(packet.Publish)
		return p, p.Decode(h.Flags, body, v)
	case packet.PUBACK, packet.PUBREC, packet.PUBREL, packet.PUBCOMP:
		p := new(packet.Ack)
		return p, p.Decode(h.Type, h.Flags, body, v)
	case packet.SUBACK:
		p := new(packet.SubAck)
		return p, p.Decode(h.Flags, body, v)
	case packet.UNSUBACK:
		p := new(packet.UnsubAck)
		return p, p.Decode(h.Flags, body, v)
	case packet.PINGRESP:
		p := new(packet.PingResp)
		return p, p.Decode(h.Flags, body, v)
	case packet.DISCONNECT:
		p := new(packet.Disconnect)
		return p, p.Decode(h.Flags, body, v)
	case packet.AUTH:
		p := new(packet.Auth)
		return p, p.Decode(h.Flags, body, v)
	}
	return nil, fmt.Errorf("%s is not a packet a server sends", h.Type)
}

// write sends raw bytes.
func (c *rawClient) write(b []byte) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(rawWait))
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// tryWrite sends raw bytes where the broker may already have closed the
// connection (after a protocol error), so failure is not fatal.
func (c *rawClient) tryWrite(b []byte) {
	_ = c.conn.SetWriteDeadline(time.Now().Add(rawWait))
	_, _ = c.conn.Write(b)
}

// send encodes p in the client's version and writes it.
func (c *rawClient) send(ps ...packet.Packet) {
	c.t.Helper()
	c.buf = c.buf[:0]
	for _, p := range ps {
		c.buf = p.Append(c.buf, c.v)
	}
	c.write(c.buf)
}

// next returns the next packet, failing if none arrives in time, the
// connection ends or the packet is invalid.
func (c *rawClient) next() rawPacket {
	c.t.Helper()
	p := c.nextRaw()
	if p.Err != nil {
		c.t.Fatalf("broker sent an invalid %s: %v (body % X)", p.Header.Type, p.Err, p.Body)
	}
	return p
}

// nextRaw is next without judging whether the packet decodes.
func (c *rawClient) nextRaw() rawPacket {
	c.t.Helper()
	select {
	case p, ok := <-c.in:
		if !ok {
			c.t.Fatalf("connection ended (%v) while waiting for a packet", c.end.Load())
		}
		return p
	case <-time.After(rawWait):
		c.t.Fatalf("no packet within %v", rawWait)
	}
	panic("unreachable")
}

// rawRecv returns the next packet as a *T, failing if it is something else.
func rawRecv[T any](c *rawClient) *T {
	c.t.Helper()
	p := c.next()
	v, ok := p.Pkt.(*T)
	if !ok {
		c.t.Fatalf("got %s, want %T", p, v)
	}
	return v
}

// expectClosed asserts that the broker closes the connection without
// sending anything more.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	select {
	case p, ok := <-c.in:
		if ok {
			c.t.Fatalf("got %s, want the connection closed", p)
		}
		if err, _ := c.end.Load().(error); err != nil && !closedErr(err) {
			c.t.Fatalf("connection ended with %v, want a close", err)
		}
	case <-time.After(rawWait):
		c.t.Fatalf("connection still open after %v", rawWait)
	}
}

func closedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "connection reset")
}

// expectDisconnect asserts a DISCONNECT with code followed by the close.
func (c *rawClient) expectDisconnect(code packet.ReasonCode) *packet.Disconnect {
	c.t.Helper()
	d := rawRecv[packet.Disconnect](c)
	if d.ReasonCode != code {
		c.t.Fatalf("DISCONNECT %s (0x%02X, %q), want %s (0x%02X)", d.ReasonCode, byte(d.ReasonCode),
			d.Properties.ReasonString, code, byte(code))
	}
	c.expectClosed()
	return d
}

// expectSilenceFor asserts that for d the broker sends nothing and keeps
// the connection open.
func (c *rawClient) expectSilenceFor(d time.Duration) {
	c.t.Helper()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case p, ok := <-c.in:
		if !ok {
			c.t.Fatalf("connection ended (%v) within %v", c.end.Load(), d)
		}
		c.t.Fatalf("got %s within %v, want nothing", p, d)
	case <-t.C:
	}
}

// ping sends PINGREQ and requires PINGRESP to be the very next packet: a
// deterministic way to show that nothing else was sent before it.
func (c *rawClient) ping() {
	c.t.Helper()
	c.write(packet.AppendPingReq(nil))
	rawRecv[packet.PingResp](c)
}

// connectRaw dials and completes CONNECT, requiring CONNACK success.
func connectRaw(t testing.TB, addr string, v packet.Version, cp *packet.Connect) (*rawClient, *packet.ConnAck) {
	t.Helper()
	c := dialRaw(t, addr, v)
	ack := c.connect(cp)
	if ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK %s (0x%02X, %q)", ack.ReasonCode, byte(ack.ReasonCode), ack.Properties.ReasonString)
	}
	return c, ack
}

// connect sends cp (encoded for the client's version, or as 3.1 when
// protocol is V31) and returns the CONNACK.
func (c *rawClient) connect(cp *packet.Connect) *packet.ConnAck {
	c.t.Helper()
	v := c.v
	if cp.Version == packet.V31 {
		v = packet.V31
	}
	c.write(cp.Append(nil, v))
	return rawRecv[packet.ConnAck](c)
}

// connV5 is a clean-start MQTT 5 CONNECT for id.
func connV5(id string) *packet.Connect {
	return &packet.Connect{ClientID: id, CleanStart: true}
}

// subscribe subscribes to filters at qos and checks the SUBACK grants it.
func (c *rawClient) subscribe(id uint16, qos byte, filters ...string) {
	c.t.Helper()
	sp := &packet.Subscribe{PacketID: id}
	for _, f := range filters {
		sp.Subscriptions = append(sp.Subscriptions, packet.Subscription{Filter: f, QoS: qos})
	}
	c.send(sp)
	ack := rawRecv[packet.SubAck](c)
	want := slices.Repeat([]packet.ReasonCode{packet.ReasonCode(qos)}, len(filters))
	if ack.PacketID != id || !slices.Equal(ack.ReasonCodes, want) {
		c.t.Fatalf("SUBACK id %d codes %v, want id %d codes %v", ack.PacketID, ack.ReasonCodes, id, want)
	}
}

// expectPublish returns the next packet, which must be a PUBLISH on topic
// (the empty topic when an alias stands for it) with payload.
func (c *rawClient) expectPublish(topic, payload string) *packet.Publish {
	c.t.Helper()
	p := rawRecv[packet.Publish](c)
	if p.Topic != topic || string(p.Payload) != payload {
		c.t.Fatalf("PUBLISH %q %q, want %q %q", p.Topic, p.Payload, topic, payload)
	}
	return p
}

// expectAck returns the next packet, which must be an acknowledgement of
// type t for id with the given reason code.
func (c *rawClient) expectAck(t packet.Type, id uint16, code packet.ReasonCode) *packet.Ack {
	c.t.Helper()
	a := rawRecv[packet.Ack](c)
	if a.Type != t || a.PacketID != id || a.ReasonCode != code {
		c.t.Fatalf("got %s id %d code 0x%02X, want %s id %d code 0x%02X", a.Type, a.PacketID, byte(a.ReasonCode), t, id, byte(code))
	}
	return a
}

// checkHealthy proves the broker still serves well-behaved clients: a QoS 1
// publish from one fresh client reaches a fresh subscriber.
func checkHealthy(t testing.TB, addr string) {
	t.Helper()
	n := rand.Text()
	topic := "healthy/" + n
	sub, _ := connectRaw(t, addr, packet.V5, connV5("healthy-sub-"+n))
	sub.subscribe(1, 1, topic)
	pub, _ := connectRaw(t, addr, packet.V5, connV5("healthy-pub-"+n))
	pub.send(&packet.Publish{QoS: 1, Topic: topic, PacketID: 1, Payload: []byte("ok")})
	pub.expectAck(packet.PUBACK, 1, packet.Success)
	got := sub.expectPublish(topic, "ok")
	sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: got.PacketID})
	sub.send(&packet.Disconnect{})
	pub.send(&packet.Disconnect{})
	sub.expectClosed()
	pub.expectClosed()
}

// Raw byte builders for packets the codec refuses to encode.

// rawFrame prefixes body with a fixed header.
func rawFrame(first byte, body ...[]byte) []byte {
	b := slices.Concat(body...)
	return append(packet.AppendVarint([]byte{first}, uint32(len(b))), b...)
}

// rawStr is a two-byte-length-prefixed string.
func rawStr(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

// rawU16 is a big-endian two-byte integer, as packet identifiers are written.
func rawU16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

// rawProps is a property block: its length and then the raw properties.
func rawProps(raw ...byte) []byte { return append(packet.AppendVarint(nil, uint32(len(raw))), raw...) }
