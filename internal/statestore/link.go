package statestore

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// link is one MQTT 5 connection of the state store to the broker, over an
// in-process pipe. A reader goroutine turns the broker's packets into
// requests and frees packet identifiers on PUBACK; a writer goroutine sends
// what the executor produced, in order, holding back a QoS 1 publish while
// the broker's Receive Maximum is used up.
type link struct {
	s    *Server
	conn net.Conn
	r    *packet.Reader

	keepAlive time.Duration // 0: the broker does not need pings
	maxPacket int           // the broker's Maximum Packet Size; 0 = unlimited

	done     chan struct{} // closed once the connection is down
	downOnce sync.Once

	qmu     sync.Mutex
	queue   []*chunk
	closing bool // Stop: send DISCONNECT once the queue is written
	wake    chan struct{}

	fmu      sync.Mutex
	used     [1 << 16]bool
	next     uint16
	inflight int
	limit    int
	freed    chan struct{}
}

// chunk is a run of encoded packets: responses, notifications and request
// PUBACKs of one executor batch. pubs marks the QoS 1 publishes, whose
// packet identifiers are assigned when they are written.
type chunk struct {
	buf  []byte
	pubs []pubMark
}

type pubMark struct {
	start int // first byte of the packet
	id    int // offset of its packet identifier
}

func (c *chunk) reset() {
	c.buf = c.buf[:0]
	c.pubs = c.pubs[:0]
}

// Connection parameters of the state store's own client.
const (
	// receiveMaximum bounds the requests the broker sends before we
	// acknowledge them, which bounds the request queue.
	receiveMaximum   = 1024
	handshakeTimeout = 5 * time.Second
)

// dial connects a new link through serve and subscribes to the invoke topic.
func (s *Server) dial() (*link, error) {
	client, server := net.Pipe()
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		s.serve(server)
	}()
	l := &link{
		s:     s,
		conn:  client,
		r:     packet.NewReader(client, 0),
		done:  make(chan struct{}),
		wake:  make(chan struct{}, 1),
		freed: make(chan struct{}, 1),
		limit: 65535,
	}
	if err := l.handshake(); err != nil {
		client.Close()
		return nil, err
	}
	return l, nil
}

func (l *link) handshake() error {
	_ = l.conn.SetDeadline(time.Now().Add(handshakeTimeout))
	conn := packet.Connect{Version: packet.V5, CleanStart: true, ClientID: l.s.clientID}
	conn.Properties.ReceiveMaximum = receiveMaximum
	conn.Properties.Set(packet.PropReceiveMaximum)
	if _, err := l.conn.Write(conn.Append(nil, packet.V5)); err != nil {
		return fmt.Errorf("statestore: connecting to the broker: %w", err)
	}
	var ack packet.ConnAck
	if err := l.expect(packet.CONNACK, func(h packet.FixedHeader, body []byte) error {
		return ack.Decode(h.Flags, body, packet.V5)
	}); err != nil {
		return fmt.Errorf("statestore: connecting to the broker: %w", err)
	}
	if ack.ReasonCode != packet.Success {
		return fmt.Errorf("statestore: the broker refused the connection: %v", ack.ReasonCode)
	}
	if ack.Properties.Has(packet.PropServerKeepAlive) {
		l.keepAlive = time.Duration(ack.Properties.ServerKeepAlive) * time.Second
	}
	if ack.Properties.Has(packet.PropReceiveMaximum) && ack.Properties.ReceiveMaximum > 0 {
		l.limit = int(ack.Properties.ReceiveMaximum)
	}
	if ack.Properties.Has(packet.PropMaximumPacketSize) {
		l.maxPacket = int(ack.Properties.MaximumPacketSize)
	}
	sub := packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: InvokeTopic, QoS: 1, NoLocal: true}}}
	if _, err := l.conn.Write(sub.Append(nil, packet.V5)); err != nil {
		return fmt.Errorf("statestore: subscribing to %s: %w", InvokeTopic, err)
	}
	var suback packet.SubAck
	if err := l.expect(packet.SUBACK, func(h packet.FixedHeader, body []byte) error {
		return suback.Decode(h.Flags, body, packet.V5)
	}); err != nil {
		return fmt.Errorf("statestore: subscribing to %s: %w", InvokeTopic, err)
	}
	if len(suback.ReasonCodes) != 1 || suback.ReasonCodes[0] != packet.GrantedQoS1 {
		return fmt.Errorf("statestore: the broker refused the subscription to %s: %v", InvokeTopic, suback.ReasonCodes)
	}
	return l.conn.SetDeadline(time.Time{})
}

func (l *link) expect(t packet.Type, decode func(packet.FixedHeader, []byte) error) error {
	h, body, err := l.r.Next(0)
	if err != nil {
		return fmt.Errorf("waiting for %v: %w", t, err)
	}
	if h.Type != t {
		return fmt.Errorf("got %v, want %v", h.Type, t)
	}
	return decode(h, body)
}

// down marks the link dead and closes the connection; safe to call repeatedly.
func (l *link) down() {
	l.downOnce.Do(func() {
		close(l.done)
		l.conn.Close()
	})
}

func (l *link) alive() bool {
	select {
	case <-l.done:
		return false
	default:
		return true
	}
}

// readLoop hands requests to the executor until the connection ends.
func (l *link) readLoop() {
	defer l.down()
	var p packet.Publish
	for {
		h, body, err := l.r.Next(0)
		if err != nil {
			l.qmu.Lock()
			closing := l.closing
			l.qmu.Unlock()
			if l.alive() && !closing && !errors.Is(err, net.ErrClosed) {
				l.s.log.Warn("connection to the broker lost", "err", err)
			}
			return
		}
		switch h.Type {
		case packet.PUBLISH:
			if err := p.Decode(h.Flags, body, packet.V5); err != nil {
				l.s.log.Error("undecodable PUBLISH from the broker", "err", err)
				return
			}
			req := l.s.newRequest(l, &p)
			select {
			case l.s.reqs <- req:
			case <-l.s.stopping:
				// Unanswered: the client retries elsewhere or later. Keep
				// reading, for the PUBACKs the final answers need.
				l.s.putRequest(req)
			}
		case packet.PUBACK:
			var a packet.Ack
			if err := a.Decode(h.Type, h.Flags, body, packet.V5); err != nil {
				l.s.log.Error("undecodable PUBACK from the broker", "err", err)
				return
			}
			if a.ReasonCode.IsError() {
				l.s.log.Warn("the broker refused a response or notification", "reason", a.ReasonCode.String())
			}
			l.release(a.PacketID)
		case packet.DISCONNECT:
			var d packet.Disconnect
			_ = d.Decode(h.Flags, body, packet.V5)
			if d.ReasonCode != packet.ServerShuttingDown {
				l.s.log.Warn("the broker disconnected the state store", "reason", d.ReasonCode.String())
			}
			return
		case packet.PINGRESP, packet.SUBACK, packet.UNSUBACK:
		default:
			l.s.log.Error("unexpected packet from the broker", "type", h.Type.String())
			return
		}
	}
}

// enqueue hands a chunk to the writer; it never blocks, because it runs on
// the executor, which must keep draining requests for PUBACKs to flow. A
// dead link drops the chunk: clients time out and retry.
func (l *link) enqueue(c *chunk) {
	l.qmu.Lock()
	if !l.alive() || l.closing {
		l.qmu.Unlock()
		l.s.putChunk(c)
		return
	}
	l.queue = append(l.queue, c)
	l.qmu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// finish asks the writer to disconnect once everything queued is written.
func (l *link) finish() {
	l.qmu.Lock()
	l.closing = true
	l.qmu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

var (
	pingReq    = packet.AppendPingReq(nil)
	disconnect = (&packet.Disconnect{}).Append(nil, packet.V5)
)

func (l *link) writeLoop() {
	defer l.down()
	var ping <-chan time.Time
	if l.keepAlive > 0 {
		t := time.NewTicker(l.keepAlive / 2)
		defer t.Stop()
		ping = t.C
	}
	var batch []*chunk
	for {
		select {
		case <-l.wake:
		case <-ping:
			if _, err := l.conn.Write(pingReq); err != nil {
				return
			}
			continue
		case <-l.done:
			l.drop()
			return
		}
		l.qmu.Lock()
		batch, l.queue = l.queue, batch[:0]
		closing := l.closing
		l.qmu.Unlock()
		for i, c := range batch {
			err := l.writeChunk(c)
			l.s.putChunk(c)
			batch[i] = nil
			if err != nil {
				for _, rest := range batch[i+1:] {
					l.s.putChunk(rest)
				}
				l.drop()
				return
			}
		}
		batch = batch[:0]
		if closing {
			l.qmu.Lock()
			empty := len(l.queue) == 0
			l.qmu.Unlock()
			if empty {
				_ = l.conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				_, _ = l.conn.Write(disconnect)
				return
			}
		}
	}
}

// drop recycles whatever is still queued on a dead link.
func (l *link) drop() {
	l.qmu.Lock()
	q := l.queue
	l.queue = nil
	l.qmu.Unlock()
	for _, c := range q {
		l.s.putChunk(c)
	}
}

// writeChunk writes c, assigning packet identifiers to its QoS 1 publishes;
// when the broker's Receive Maximum is reached it writes what precedes the
// publish and waits for a PUBACK.
func (l *link) writeChunk(c *chunk) error {
	written := 0
	for _, m := range c.pubs {
		id, ok := l.acquire()
		if !ok {
			if m.start > written {
				if _, err := l.conn.Write(c.buf[written:m.start]); err != nil {
					return err
				}
				written = m.start
			}
			if id, ok = l.waitAcquire(); !ok {
				return net.ErrClosed
			}
		}
		c.buf[m.id], c.buf[m.id+1] = byte(id>>8), byte(id)
	}
	if written < len(c.buf) {
		_, err := l.conn.Write(c.buf[written:])
		return err
	}
	return nil
}

func (l *link) acquire() (uint16, bool) {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	if l.inflight >= l.limit {
		return 0, false
	}
	for {
		l.next++
		if l.next == 0 {
			l.next = 1
		}
		if !l.used[l.next] {
			l.used[l.next] = true
			l.inflight++
			return l.next, true
		}
	}
}

func (l *link) waitAcquire() (uint16, bool) {
	for {
		if id, ok := l.acquire(); ok {
			return id, true
		}
		select {
		case <-l.freed:
		case <-l.done:
			return 0, false
		}
	}
}

func (l *link) release(id uint16) {
	l.fmu.Lock()
	if l.used[id] {
		l.used[id] = false
		l.inflight--
	}
	l.fmu.Unlock()
	select {
	case l.freed <- struct{}{}:
	default:
	}
}
