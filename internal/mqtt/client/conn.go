package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// errFinished ends a connection that Stop closed on purpose.
var errFinished = errors.New("mqtt client: disconnected")

// lingerTimeout bounds the wait for the server to close the connection
// after our DISCONNECT.
const lingerTimeout = time.Second

// conn is one network connection and its reader and writer goroutines.
type conn struct {
	c       *Client
	nc      net.Conn
	r       *packet.Reader
	version packet.Version

	// What the server announced.
	recvMax   int // send quota for QoS 1/2 publishes
	maxPacket int // 0: no limit
	keepAlive time.Duration
	subIDs    bool // subscription identifiers available

	outMu    sync.Mutex // guards out, closing and spare
	out      []byte     // encoded packets waiting for the writer
	spare    []byte
	closing  atomic.Bool // Stop: close once out is written; set under outMu
	wake     chan struct{}
	drained  chan struct{} // signalled after each write, for QoS 0 backpressure
	lastSend atomic.Int64  // unix nanos of the last write

	ackMu sync.Mutex  // guards acks
	acks  []*ackEntry // received QoS 1/2 messages in order of receipt, not yet acknowledged on the wire

	failOnce sync.Once
	err      error         // why the connection ended; set before dead is closed
	dead     chan struct{} // closed when the connection is over
	wg       sync.WaitGroup
}

// ackEntry is one received QoS 1/2 message waiting for its acknowledgement.
type ackEntry struct {
	id   uint16
	qos  byte
	done bool
}

// dial opens a connection and makes the CONNECT/CONNACK exchange, within
// Options.ConnectTimeout and ctx.
func (c *Client) dial(ctx context.Context) (*conn, ConnAck, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()
	// Stop ends a dial in progress; cancel (deferred) ends this goroutine.
	go func() {
		select {
		case <-c.stopMgr:
			cancel()
		case <-ctx.Done():
		}
	}()
	nc, err := c.opts.Dialer.Dial(ctx)
	if err != nil {
		return nil, ConnAck{}, fmt.Errorf("dialing: %w", err)
	}
	cn := &conn{
		c:       c,
		nc:      nc,
		r:       packet.NewReader(nc, 0),
		version: c.opts.Version,
		recvMax: 65535,
		wake:    make(chan struct{}, 1),
		drained: make(chan struct{}, 1),
		dead:    make(chan struct{}),
	}
	ack, err := c.handshake(ctx, cn)
	if err != nil {
		nc.Close()
		return nil, ConnAck{}, err
	}
	return cn, ack, nil
}

func (c *Client) handshake(ctx context.Context, cn *conn) (ConnAck, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = cn.nc.SetDeadline(dl)
	}
	closeOnCancel := context.AfterFunc(ctx, func() { cn.nc.Close() })
	defer closeOnCancel()

	c.mu.Lock()
	id, first := c.clientID, c.opts.CleanStart && c.stats.Connects == 0
	c.mu.Unlock()
	v := c.opts.Version
	cp := packet.Connect{Version: v, ClientID: id, Will: c.opts.Will}
	cp.CleanStart = first
	if v != packet.V5 && c.opts.SessionExpiry == 0 {
		cp.CleanStart = true // 3.1.1: the session ends with the connection
	}
	if c.opts.KeepAlive > 0 {
		cp.KeepAlive = uint16(max(c.opts.KeepAlive/time.Second, 1))
	}
	if c.opts.Username != "" {
		cp.HasUsername, cp.Username = true, c.opts.Username
	}
	if c.opts.Password != nil {
		cp.HasPassword, cp.Password = true, c.opts.Password
	}
	if v == packet.V5 {
		pr := &cp.Properties
		if c.opts.SessionExpiry > 0 {
			pr.SessionExpiry = uint32(min(c.opts.SessionExpiry/time.Second, 1<<32-1))
			pr.Set(packet.PropSessionExpiry)
		}
		pr.ReceiveMaximum = c.opts.ReceiveMaximum
		pr.Set(packet.PropReceiveMaximum)
		if c.opts.AuthMethod != "" {
			pr.AuthMethod, pr.AuthData = c.opts.AuthMethod, c.opts.AuthData
			pr.Set(packet.PropAuthMethod)
			if c.opts.AuthData != nil {
				pr.Set(packet.PropAuthData)
			}
		}
		pr.User = c.opts.User
	}
	if _, err := cn.nc.Write(cp.Append(nil, v)); err != nil {
		return ConnAck{}, fmt.Errorf("sending CONNECT: %w", ctxErr(ctx, err))
	}
	h, body, err := cn.r.Next(0)
	if err != nil {
		return ConnAck{}, fmt.Errorf("waiting for CONNACK: %w", ctxErr(ctx, err))
	}
	switch h.Type {
	case packet.CONNACK:
	case packet.DISCONNECT:
		var d packet.Disconnect
		if err := d.Decode(h.Flags, body, v); err != nil {
			return ConnAck{}, fmt.Errorf("waiting for CONNACK: %w", err)
		}
		return ConnAck{}, &ReasonError{Packet: packet.DISCONNECT, Code: d.ReasonCode, Reason: d.Properties.ReasonString}
	case packet.AUTH:
		return ConnAck{}, errors.New("the server asked for an authentication exchange, which this client does not support")
	default:
		return ConnAck{}, fmt.Errorf("the server sent %v before CONNACK", h.Type)
	}
	var ca packet.ConnAck
	if err := ca.Decode(h.Flags, body, v); err != nil {
		return ConnAck{}, fmt.Errorf("decoding CONNACK: %w", err)
	}
	code := ca.ReasonCode
	if v != packet.V5 {
		code = connAck311(code)
	}
	if code != packet.Success {
		return ConnAck{}, &ReasonError{Packet: packet.CONNACK, Code: code, Reason: ca.Properties.ReasonString}
	}
	_ = cn.nc.SetDeadline(time.Time{})
	pr := &ca.Properties
	ack := ConnAck{SessionPresent: ca.SessionPresent, Properties: ca.Properties, RetainAvailable: true}
	cn.keepAlive = c.opts.KeepAlive
	cn.subIDs = v == packet.V5
	if v == packet.V5 {
		ack.AssignedClientID = pr.AssignedClientID
		if pr.Has(packet.PropReceiveMaximum) {
			ack.ReceiveMaximum = pr.ReceiveMaximum
			cn.recvMax = int(pr.ReceiveMaximum)
		}
		if pr.Has(packet.PropMaximumPacketSize) {
			ack.MaximumPacketSize = pr.MaximumPacketSize
			cn.maxPacket = int(pr.MaximumPacketSize)
		}
		ack.MaximumQoS = 2
		if pr.Has(packet.PropMaximumQoS) {
			ack.MaximumQoS = pr.MaximumQoS
		}
		if pr.Has(packet.PropServerKeepAlive) {
			ack.ServerKeepAlive = time.Duration(pr.ServerKeepAlive) * time.Second
			cn.keepAlive = ack.ServerKeepAlive
		}
		if pr.Has(packet.PropRetainAvailable) {
			ack.RetainAvailable = pr.RetainAvailable == 1
		}
		if pr.Has(packet.PropSubIDAvailable) {
			cn.subIDs = pr.SubIDAvailable == 1
		}
	} else {
		ack.MaximumQoS = 2
	}
	return ack, nil
}

// ctxErr prefers ctx's error over the I/O error its end caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// start runs the reader and writer.
func (cn *conn) start(c *Client) {
	cn.lastSend.Store(time.Now().UnixNano())
	cn.wg.Add(2)
	go func() {
		defer cn.wg.Done()
		c.readLoop(cn)
	}()
	go func() {
		defer cn.wg.Done()
		cn.writeLoop(c.opts.WriteTimeout)
	}()
}

// fail ends the connection with err (the first error wins).
func (cn *conn) fail(err error) {
	cn.failOnce.Do(func() {
		cn.err = err
		close(cn.dead)
		cn.nc.Close()
	})
}

func (cn *conn) alive() bool {
	select {
	case <-cn.dead:
		return false
	default:
		return true
	}
}

// write queues encoded packets for the writer.
func (cn *conn) write(b []byte) {
	cn.outMu.Lock()
	if !cn.closing.Load() {
		cn.out = append(cn.out, b...)
	}
	cn.outMu.Unlock()
	signal(cn.wake)
}

// writePacket encodes p straight into the queue.
func (cn *conn) writePacket(p packet.Packet, v packet.Version) {
	cn.outMu.Lock()
	if !cn.closing.Load() {
		cn.out = p.Append(cn.out, v)
	}
	cn.outMu.Unlock()
	signal(cn.wake)
}

func (cn *conn) queued() int {
	cn.outMu.Lock()
	defer cn.outMu.Unlock()
	return len(cn.out)
}

// finish queues DISCONNECT after everything queued; the writer closes the
// connection once it is written.
func (cn *conn) finish(v packet.Version) {
	cn.outMu.Lock()
	if !cn.closing.Load() {
		cn.out = (&packet.Disconnect{}).Append(cn.out, v)
		cn.closing.Store(true)
	}
	cn.outMu.Unlock()
	signal(cn.wake)
}

func (cn *conn) writeLoop(timeout time.Duration) {
	var tick <-chan time.Time
	if cn.keepAlive > 0 {
		t := time.NewTicker(max(cn.keepAlive/4, 10*time.Millisecond))
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-cn.wake:
		case <-tick:
			// Ping once half the keep-alive has passed in silence, so the
			// PINGRESP is back well before the server's 1.5× limit.
			if time.Since(time.Unix(0, cn.lastSend.Load())) < cn.keepAlive/2 {
				continue
			}
			cn.outMu.Lock()
			cn.out = packet.AppendPingReq(cn.out)
			cn.outMu.Unlock()
		case <-cn.dead:
			return
		}
		cn.outMu.Lock()
		buf := cn.out
		cn.out = cn.spare[:0]
		closing := cn.closing.Load()
		cn.outMu.Unlock()
		if len(buf) > 0 {
			_ = cn.nc.SetWriteDeadline(time.Now().Add(timeout))
			_, err := cn.nc.Write(buf)
			cn.lastSend.Store(time.Now().UnixNano())
			if err != nil {
				cn.fail(fmt.Errorf("writing: %w", err))
				return
			}
			signal(cn.drained)
		}
		// Keep the written buffer for the next swap, but not a huge one.
		// spare must never be the buffer now in out.
		if cap(buf) > 1<<20 {
			buf = nil
		}
		cn.outMu.Lock()
		cn.spare = buf[:0]
		cn.outMu.Unlock()
		if closing && cn.queued() == 0 {
			// DISCONNECT is written. Half-close and let the reader wait
			// for the server to close, so that it has read everything we
			// sent (a close with unread data would reset the connection)
			// and Stop returns once the session state is settled.
			if cw, ok := cn.nc.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			_ = cn.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
			return
		}
	}
}

// ack marks a received message acknowledged and sends every
// acknowledgement now due, in order of receipt.
func (cn *conn) ack(e *ackEntry) {
	if !cn.alive() {
		return
	}
	cn.ackMu.Lock()
	defer cn.ackMu.Unlock()
	e.done = true
	n := 0
	for n < len(cn.acks) && cn.acks[n].done {
		n++
	}
	if n == 0 {
		return
	}
	// A PUBREC'd identifier is recorded before the PUBREC can leave, so
	// that the PUBREL answering it finds it.
	cn.c.relMu.Lock()
	for _, a := range cn.acks[:n] {
		if a.qos == 2 {
			cn.c.rel[a.id] = true
		}
	}
	cn.c.relMu.Unlock()
	cn.outMu.Lock()
	for _, a := range cn.acks[:n] {
		t := packet.PUBACK
		if a.qos == 2 {
			t = packet.PUBREC
		}
		cn.out = append(cn.out, byte(t)<<4, 2, byte(a.id>>8), byte(a.id))
	}
	cn.outMu.Unlock()
	rest := copy(cn.acks, cn.acks[n:])
	clear(cn.acks[rest:])
	cn.acks = cn.acks[:rest]
	signal(cn.wake)
}

// readLoop handles what the server sends until the connection ends.
func (c *Client) readLoop(cn *conn) {
	v := c.opts.Version
	var lastDeadline time.Time
	for {
		if cn.keepAlive > 0 && !cn.closing.Load() {
			// A healthy connection answers our pings within the keep-alive;
			// refresh the deadline only now and then, as it costs a timer
			// update.
			if now := time.Now(); now.Sub(lastDeadline) > cn.keepAlive/4 {
				lastDeadline = now
				_ = cn.nc.SetReadDeadline(now.Add(cn.keepAlive * 3 / 2))
			}
		}
		h, body, err := cn.r.Next(0)
		if err != nil {
			if cn.closing.Load() {
				err = errFinished
			} else {
				err = fmt.Errorf("reading: %w", err)
			}
			cn.fail(err)
			return
		}
		if err := c.handle(cn, h, body, v); err != nil {
			cn.fail(err)
			return
		}
	}
}

func (c *Client) handle(cn *conn, h packet.FixedHeader, body []byte, v packet.Version) error {
	switch h.Type {
	case packet.PUBLISH:
		// The reader reuses body: the message gets its own copy, which its
		// topic, payload and properties alias.
		var p packet.Publish
		if err := p.Decode(h.Flags, bytes.Clone(body), v); err != nil {
			return fmt.Errorf("decoding PUBLISH: %w", err)
		}
		if p.Topic == "" {
			return errors.New("the server sent a topic alias, which this client did not allow")
		}
		c.received(cn, &p)
	case packet.PUBACK, packet.PUBREC, packet.PUBCOMP:
		var a packet.Ack
		if err := a.Decode(h.Type, h.Flags, body, v); err != nil {
			return fmt.Errorf("decoding %v: %w", h.Type, err)
		}
		c.acked(cn, &a)
	case packet.PUBREL:
		var a packet.Ack
		if err := a.Decode(h.Type, h.Flags, body, v); err != nil {
			return fmt.Errorf("decoding PUBREL: %w", err)
		}
		c.relMu.Lock()
		known := c.rel[a.PacketID]
		delete(c.rel, a.PacketID)
		c.relMu.Unlock()
		comp := packet.Ack{Type: packet.PUBCOMP, PacketID: a.PacketID}
		if !known && v == packet.V5 {
			comp.ReasonCode = packet.PacketIdentifierNotFound
		}
		cn.writePacket(&comp, v)
	case packet.SUBACK:
		var a packet.SubAck
		if err := a.Decode(h.Flags, body, v); err != nil {
			return fmt.Errorf("decoding SUBACK: %w", err)
		}
		c.ctrlAcked(a.PacketID, a.ReasonCodes, a.Properties.ReasonString)
	case packet.UNSUBACK:
		var a packet.UnsubAck
		if err := a.Decode(h.Flags, body, v); err != nil {
			return fmt.Errorf("decoding UNSUBACK: %w", err)
		}
		c.ctrlAcked(a.PacketID, a.ReasonCodes, a.Properties.ReasonString)
	case packet.PINGRESP:
	case packet.DISCONNECT:
		var d packet.Disconnect
		if err := d.Decode(h.Flags, body, v); err != nil {
			return fmt.Errorf("decoding DISCONNECT: %w", err)
		}
		return &ReasonError{Packet: packet.DISCONNECT, Code: d.ReasonCode, Reason: d.Properties.ReasonString}
	default:
		return fmt.Errorf("unexpected %v from the server", h.Type)
	}
	return nil
}
