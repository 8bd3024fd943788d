package paho5

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/eclipse/paho.golang/packets"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// gateConn records what is written to it; its first Write blocks until
// release is closed, after closing started.
type gateConn struct {
	net.Conn // nil: only Write is used
	started  chan struct{}
	release  chan struct{}
	mu       sync.Mutex // guards buf and calls
	buf      []byte
	calls    int
}

func (g *gateConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	g.buf = append(g.buf, p...)
	g.calls++
	first := g.calls == 1
	g.mu.Unlock()
	if first {
		close(g.started)
		<-g.release
	}
	return len(p), nil
}

// TestLockedConnKeepsPacketsWhole: a packet Paho is writing holds the
// harness connection's lock from its fixed header to its last byte, so a
// PINGREQ written meanwhile from another goroutine (Paho's pinger right
// after CONNACK) follows the SUBSCRIBE instead of splitting it. Without
// the lock the two interleaved and the broker closed the connection as
// malformed (internal/auth TestLivePolicyChange failing under load).
func TestLockedConnKeepsPacketsWhole(t *testing.T) {
	gate := &gateConn{started: make(chan struct{}), release: make(chan struct{})}
	wc := &lockedConn{Conn: gate, end: func() {}}
	var conn net.Conn = wc // what Paho is given
	locker, ok := conn.(interface {
		sync.Locker
		TryLock() bool
	})
	if !ok {
		t.Fatal("the harness connection is not a sync.Locker: Paho's concurrent packet writes interleave on it")
	}

	sub := &packets.Subscribe{PacketID: 7, Subscriptions: []packets.SubOptions{{Topic: "plant/#", QoS: 1}}}
	subDone := make(chan error, 1)
	go func() { _, err := sub.WriteTo(conn); subDone <- err }()
	<-gate.started // the SUBSCRIBE's fixed header is in Write, its body not yet
	if locker.TryLock() {
		locker.Unlock()
		t.Fatal("Paho does not hold the connection's lock while it writes a packet")
	}
	pingDone := make(chan error, 1)
	go func() { _, err := packets.NewControlPacket(packets.PINGREQ).WriteTo(conn); pingDone <- err }()
	close(gate.release)
	if err := <-subDone; err != nil {
		t.Fatal(err)
	}
	if err := <-pingDone; err != nil {
		t.Fatal(err)
	}

	gate.mu.Lock()
	stream := bytes.Clone(gate.buf)
	gate.mu.Unlock()
	r := packet.NewReader(bytes.NewReader(stream), 0)
	h, body, err := r.Next(0)
	if err != nil || h.Type != packet.SUBSCRIBE {
		t.Fatalf("first packet %v (%v), stream %x", h.Type, err, stream)
	}
	var sp packet.Subscribe
	if err := sp.Decode(h.Flags, body, packet.V5); err != nil || sp.PacketID != 7 || len(sp.Subscriptions) != 1 || sp.Subscriptions[0].Filter != "plant/#" {
		t.Fatalf("SUBSCRIBE %+v (%v), stream %x", sp, err, stream)
	}
	if h, _, err := r.Next(0); err != nil || h.Type != packet.PINGREQ {
		t.Fatalf("second packet %v (%v), stream %x", h.Type, err, stream)
	}
	if _, _, err := r.Next(0); err != io.EOF {
		t.Fatalf("after the PINGREQ: %v, stream %x", err, stream)
	}
}

// TestLockedConnConcurrentPackets writes Paho packets of every shape the
// harness's clients send (PINGREQ, SUBSCRIBE, PUBACK, PUBLISH) from
// several goroutines at once through one harness connection over TCP, and
// decodes what arrives with the broker's own reader: every packet must
// arrive whole.
func TestLockedConnConcurrentPackets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	const writers, each = 16, 250
	type result struct {
		n   int
		err error
	}
	got := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer conn.Close()
		r := packet.NewReader(conn, 0)
		n := 0
		for {
			h, body, err := r.Next(0)
			if err == io.EOF {
				got <- result{n: n}
				return
			}
			if err == nil {
				err = decodeAny(h, body)
			}
			if err != nil {
				got <- result{n: n, err: fmt.Errorf("packet %d (%v): %w", n, h.Type, err)}
				return
			}
			n++
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn := &lockedConn{Conn: raw, end: func() {}}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				var p io.WriterTo
				id := uint16(w*each + i + 1)
				switch i % 4 {
				case 0:
					p = packets.NewControlPacket(packets.PINGREQ)
				case 1:
					p = &packets.Subscribe{PacketID: id, Subscriptions: []packets.SubOptions{{Topic: fmt.Sprintf("plant/line%d/#", w), QoS: 1}}}
				case 2:
					p = &packets.Puback{PacketID: id}
				case 3:
					p = &packets.Publish{Topic: "plant/x", QoS: 1, PacketID: id, Payload: []byte("payload")}
				}
				if _, err := p.WriteTo(conn); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	raw.Close()
	// The reader's verdict first: a writer's error (a broken pipe) only
	// follows the reader's closing on a malformed packet.
	res := <-got
	if res.err != nil {
		t.Fatal(res.err)
	}
	for err := range errs {
		t.Fatal(err)
	}
	if res.n != writers*each {
		t.Fatalf("%d packets arrived, want %d", res.n, writers*each)
	}
}

// decodeAny decodes one MQTT 5 packet a client sends.
func decodeAny(h packet.FixedHeader, body []byte) error {
	switch h.Type {
	case packet.PINGREQ:
		return (&packet.PingReq{}).Decode(h.Flags, body, packet.V5)
	case packet.SUBSCRIBE:
		return (&packet.Subscribe{}).Decode(h.Flags, body, packet.V5)
	case packet.PUBACK:
		return (&packet.Ack{}).Decode(h.Type, h.Flags, body, packet.V5)
	case packet.PUBLISH:
		return (&packet.Publish{}).Decode(h.Flags, body, packet.V5)
	}
	return fmt.Errorf("unexpected %v", h.Type)
}
