package e2e

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// rawMQTT is a minimal MQTT 5 client on Edgeport's own codec, for tests that
// need exact control of what goes on the wire (credentials, properties). A
// reader goroutine acknowledges QoS 1 deliveries and counts them.
type rawMQTT struct {
	t    *testing.T
	conn net.Conn

	wmu  sync.Mutex // serialises writes from the test and the reader
	wbuf []byte

	mu        sync.Mutex // guards the fields below
	delivered int
	acks      map[uint16]packet.ReasonCode
	changed   chan struct{}
	done      bool
}

// dialMQTT connects to addr with cp and returns the client and the CONNACK.
func dialMQTT(t *testing.T, addr string, cp *packet.Connect) (*rawMQTT, *packet.ConnAck) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	cp.Version = packet.V5
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(cp.Append(nil, packet.V5)); err != nil {
		t.Fatalf("CONNECT: %v", err)
	}
	r := packet.NewReader(conn, 4096)
	h, body, err := r.Next(0)
	if err != nil || h.Type != packet.CONNACK {
		t.Fatalf("waiting for CONNACK: %v %v", h.Type, err)
	}
	var ack packet.ConnAck
	if err := ack.Decode(h.Flags, body, packet.V5); err != nil {
		t.Fatalf("CONNACK: %v", err)
	}
	_ = conn.SetDeadline(time.Time{})
	c := &rawMQTT{t: t, conn: conn, acks: make(map[uint16]packet.ReasonCode), changed: make(chan struct{})}
	if ack.ReasonCode == packet.Success {
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			c.read(r)
		}()
		t.Cleanup(func() { conn.Close(); <-readDone })
	}
	return c, &ack
}

func (c *rawMQTT) read(r *packet.Reader) {
	defer c.signal(func() { c.done = true })
	for {
		h, body, err := r.Next(0)
		if err != nil {
			return
		}
		switch h.Type {
		case packet.PUBLISH:
			var p packet.Publish
			if p.Decode(h.Flags, body, packet.V5) != nil {
				return
			}
			if p.QoS == 1 {
				_ = c.write(&packet.Ack{Type: packet.PUBACK, PacketID: p.PacketID})
			}
			c.signal(func() { c.delivered++ })
		case packet.PUBACK, packet.SUBACK:
			var id uint16
			code := packet.Success
			if h.Type == packet.PUBACK {
				var a packet.Ack
				if a.Decode(h.Type, h.Flags, body, packet.V5) != nil {
					return
				}
				id, code = a.PacketID, a.ReasonCode
			} else {
				var a packet.SubAck
				if a.Decode(h.Flags, body, packet.V5) != nil {
					return
				}
				id = a.PacketID
			}
			c.signal(func() { c.acks[id] = code })
		}
	}
}

func (c *rawMQTT) signal(f func()) {
	c.mu.Lock()
	f()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

func (c *rawMQTT) write(p packet.Packet) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = p.Append(c.wbuf[:0], packet.V5)
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.conn.Write(c.wbuf)
	return err
}

// await waits until the broker acknowledged packet id.
func (c *rawMQTT) await(id uint16) (packet.ReasonCode, error) {
	deadline := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		code, ok := c.acks[id]
		delete(c.acks, id)
		changed, done := c.changed, c.done
		c.mu.Unlock()
		switch {
		case ok:
			return code, nil
		case done:
			return 0, fmt.Errorf("connection ended before the ack of %d", id)
		}
		select {
		case <-changed:
		case <-deadline:
			return 0, fmt.Errorf("no ack of %d within 5s", id)
		}
	}
}

// subscribe subscribes and waits for the SUBACK.
func (c *rawMQTT) subscribe(id uint16, filter string, qos byte) {
	c.t.Helper()
	if err := c.write(&packet.Subscribe{PacketID: id, Subscriptions: []packet.Subscription{{Filter: filter, QoS: qos}}}); err != nil {
		c.t.Fatalf("SUBSCRIBE: %v", err)
	}
	if _, err := c.await(id); err != nil {
		c.t.Fatalf("SUBACK: %v", err)
	}
}

// publish sends a PUBLISH and, for QoS 1, waits for its PUBACK. It returns
// an error rather than failing so that background traffic can use it.
func (c *rawMQTT) publish(p *packet.Publish) error {
	if err := c.write(p); err != nil {
		return err
	}
	if p.QoS == 0 {
		return nil
	}
	_, err := c.await(p.PacketID)
	return err
}

// disconnect sends DISCONNECT and closes the socket.
func (c *rawMQTT) disconnect() {
	_ = c.write(&packet.Disconnect{})
	c.conn.Close()
}
