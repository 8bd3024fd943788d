package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// ErrClosed is returned by a Client used after Close.
var ErrClosed = errors.New("bench: client closed")

// ClientOptions configure Dial.
type ClientOptions struct {
	ClientID string
	// Version is the protocol level; 0 means MQTT 5.0.
	Version packet.Version
	// KeepAlive is sent in CONNECT; 0 disables it. A server keep alive from a
	// 5.0 CONNACK overrides it, and a non-zero keep alive starts a pinger.
	KeepAlive time.Duration
	// Window is how many QoS 1/2 publishes may wait for their acknowledgement;
	// 0 means this client does not publish at QoS 1/2. A smaller Receive
	// Maximum from the server wins.
	Window int
	// ReadBuffer sizes the packet reader (0: packet.DefaultReaderSize).
	ReadBuffer int
	// MaxPending bounds the bytes queued for the socket before Publish waits
	// (0: 256 KiB). Acknowledgements never wait, so reading never stalls.
	MaxPending int
	// OnPublish is called on the read goroutine for every PUBLISH received;
	// p and its payload are valid only during the call. A QoS 2 message is
	// reported once even if the server resends it before PUBREL.
	OnPublish func(p *packet.Publish)
	// Persistent keeps the session after disconnect (clean start false;
	// session expiry 1 h in 5.0).
	Persistent bool
}

// Client is a minimal MQTT client for load generation: one read goroutine,
// and writes appended to a pending buffer that a flusher goroutine hands to
// the socket in batches, so that a burst of publishes or acknowledgements
// costs one write call rather than one each.
//
// It is not internal/mqtt/client, on purpose: a load generator shares the
// machine with the broker it measures, so every allocation and goroutine
// hop it spends is taken from the broker's figures. This client decodes
// deliveries in place without copying them, keeps no session state for
// resending, runs no dispatch goroutine and acknowledges on the reader,
// none of which a component of Edgeport may do.
type Client struct {
	nc        net.Conn
	v         packet.Version
	r         *packet.Reader
	onPublish func(*packet.Publish)
	keepAlive time.Duration

	mu         sync.Mutex
	space      sync.Cond // broadcast when pending is swapped out or the client fails
	pending    []byte
	maxPending int
	werr       error
	closing    bool

	kick     chan struct{} // capacity 1: pending has data for the flusher
	quit     chan struct{} // closed by Close
	flushed  chan struct{} // closed when the flusher has exited
	readDone chan struct{} // closed when the read goroutine has exited
	rerr     error         // why reading stopped; read only after readDone
	doneAt   time.Time     // when reading stopped; read only after readDone

	sessionPresent bool // from the CONNACK

	window chan struct{} // one token per unacknowledged QoS 1/2 publish
	out    *idSet        // packet identifiers of our unacknowledged publishes
	nextID uint16        // publishing goroutine only
	in     *idSet        // QoS 2 identifiers received and not yet released; read goroutine only

	subacks chan *packet.SubAck
	subID   atomic.Uint32

	// acksQueued says acknowledgements were queued without waking the
	// flusher; read goroutine only (see hookedConn).
	acksQueued bool

	acked    atomic.Int64 // publishes whose flow completed successfully
	rejected atomic.Int64 // publishes the server refused with a reason code >= 0x80

	closeOnce sync.Once
}

// idSet is a bitmap of the 65535 packet identifiers. Bits are set by one
// goroutine and cleared by another, hence the atomics.
type idSet struct{ bits [1024]atomic.Uint64 }

func (s *idSet) has(id uint16) bool { return s.bits[id>>6].Load()&(1<<(id&63)) != 0 }
func (s *idSet) add(id uint16)      { s.bits[id>>6].Or(1 << (id & 63)) }

// remove clears id and reports whether it was set.
func (s *idSet) remove(id uint16) bool {
	b := uint64(1) << (id & 63)
	return s.bits[id>>6].And(^b)&b != 0
}

// Dial connects, sends CONNECT with a clean start and waits for CONNACK.
// ctx bounds the handshake only.
func Dial(ctx context.Context, addr string, o ClientOptions) (*Client, error) {
	v := o.Version
	if v == 0 {
		v = packet.V5
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	// Cancelling ctx unblocks the handshake's reads and writes.
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	c, err := handshake(nc, v, o)
	if !stop() || err != nil {
		nc.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("connect %s as %q: %w", addr, o.ClientID, err)
	}
	go c.readLoop()
	go c.flushLoop()
	if c.keepAlive > 0 {
		go c.pingLoop(c.keepAlive)
	}
	return c, nil
}

func handshake(nc net.Conn, v packet.Version, o ClientOptions) (*Client, error) {
	ka := o.KeepAlive
	conn := packet.Connect{Version: v, CleanStart: !o.Persistent, ClientID: o.ClientID, KeepAlive: uint16(ka / time.Second)}
	if v == packet.V5 && o.Persistent {
		conn.Properties.SessionExpiry = 3600
		conn.Properties.Set(packet.PropSessionExpiry)
	}
	if v == packet.V5 {
		// Let the server have as many deliveries in flight towards us as it likes.
		conn.Properties.ReceiveMaximum = 65535
		conn.Properties.Set(packet.PropReceiveMaximum)
	}
	if _, err := nc.Write(conn.Append(nil, v)); err != nil {
		return nil, fmt.Errorf("write CONNECT: %w", err)
	}
	c := &Client{
		nc:         nc,
		v:          v,
		onPublish:  o.OnPublish,
		maxPending: o.MaxPending,
		kick:       make(chan struct{}, 1),
		quit:       make(chan struct{}),
		flushed:    make(chan struct{}),
		readDone:   make(chan struct{}),
		subacks:    make(chan *packet.SubAck, 1),
	}
	c.r = packet.NewReader(hookedConn{c}, o.ReadBuffer)
	h, body, err := c.r.Next(0)
	if err != nil {
		return nil, fmt.Errorf("read CONNACK: %w", err)
	}
	if h.Type != packet.CONNACK {
		return nil, fmt.Errorf("expected CONNACK, got %s", h.Type)
	}
	var ack packet.ConnAck
	if err := ack.Decode(h.Flags, body, v); err != nil {
		return nil, fmt.Errorf("decode CONNACK: %w", err)
	}
	if ack.ReasonCode != 0 {
		if v == packet.V5 {
			return nil, fmt.Errorf("refused: %w", ack.ReasonCode)
		}
		return nil, fmt.Errorf("refused with 3.1.1 return code %d", byte(ack.ReasonCode))
	}
	if ack.Properties.Has(packet.PropServerKeepAlive) {
		ka = time.Duration(ack.Properties.ServerKeepAlive) * time.Second
	}
	if c.maxPending <= 0 {
		c.maxPending = 256 << 10
	}
	c.space.L = &c.mu
	if w := o.Window; w > 0 {
		if ack.Properties.Has(packet.PropReceiveMaximum) {
			w = min(w, int(ack.Properties.ReceiveMaximum))
		}
		c.window = make(chan struct{}, min(w, 65535))
		c.out = new(idSet)
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clear deadline: %w", err)
	}
	c.keepAlive = ka
	c.sessionPresent = ack.SessionPresent
	return c, nil
}

// Version is the protocol level in use.
func (c *Client) Version() packet.Version { return c.v }

// Window is the number of unacknowledged QoS 1/2 publishes allowed (0 if
// the client was not dialled to publish at QoS 1/2).
func (c *Client) Window() int { return cap(c.window) }

// Inflight is the number of QoS 1/2 publishes awaiting acknowledgement.
func (c *Client) Inflight() int { return len(c.window) }

// Acked is the number of QoS 1/2 publishes acknowledged with success.
func (c *Client) Acked() int64 { return c.acked.Load() }

// Rejected is the number of QoS 1/2 publishes refused by the server.
func (c *Client) Rejected() int64 { return c.rejected.Load() }

// SessionPresent is the CONNACK's Session Present flag.
func (c *Client) SessionPresent() bool { return c.sessionPresent }

// Done is closed when the connection stops reading; Err then says why and
// DoneAt when.
func (c *Client) Done() <-chan struct{} { return c.readDone }

// DoneAt is when the connection stopped reading (the zero time while it
// reads): for a DISCONNECT from the server, just after it was decoded.
func (c *Client) DoneAt() time.Time {
	select {
	case <-c.readDone:
		return c.doneAt
	default:
		return time.Time{}
	}
}

// Err is why the connection stopped, nil while it runs or after a clean Close.
func (c *Client) Err() error {
	select {
	case <-c.readDone:
		return c.rerr
	default:
		return nil
	}
}

// Publish queues p for sending. For QoS 1 and 2 it first waits for room in
// the window (or ctx, or the connection's end) and assigns p.PacketID. It
// also waits while too many bytes are pending for the socket. Publish must
// be called from one goroutine at a time.
func (c *Client) Publish(ctx context.Context, p *packet.Publish) error {
	if p.QoS > 0 {
		if c.out == nil {
			return errors.New("bench: client dialled without a window cannot publish at QoS 1/2")
		}
		select {
		case c.window <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.readDone:
			return c.deadErr()
		}
		id := c.nextID
		for {
			id++
			if id != 0 && !c.out.has(id) {
				break
			}
		}
		c.nextID = id
		c.out.add(id)
		p.PacketID = id
	}
	c.mu.Lock()
	var err error
	if len(c.pending) >= c.maxPending {
		c.waitSpace(ctx)
		err = ctx.Err()
	}
	if c.werr != nil {
		err = c.werr
	} else if c.closing {
		err = ErrClosed
	}
	if err != nil {
		c.mu.Unlock()
		if p.QoS > 0 {
			// Never sent, so never acknowledged: give the slot back.
			c.out.remove(p.PacketID)
			<-c.window
		}
		return err
	}
	c.pending = p.Append(c.pending, c.v)
	c.mu.Unlock()
	c.signal()
	return nil
}

// waitSpace waits, with c.mu held, until the flusher has taken the pending
// bytes or the client or ctx ended. It is the slow path of Publish, so the
// cost of watching ctx is paid only when the socket is behind.
func (c *Client) waitSpace(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.space.Broadcast()
		c.mu.Unlock()
	})
	for len(c.pending) >= c.maxPending && c.werr == nil && !c.closing && ctx.Err() == nil {
		c.space.Wait()
	}
	stop()
}

// Subscribe subscribes and waits for the SUBACK, failing if any filter is
// refused. One Subscribe at a time per client.
func (c *Client) Subscribe(ctx context.Context, subs ...packet.Subscription) error {
	id := uint16(c.subID.Add(1)%65535 + 1)
	s := packet.Subscribe{PacketID: id, Subscriptions: subs}
	c.mu.Lock()
	if c.werr != nil || c.closing {
		c.mu.Unlock()
		return ErrClosed
	}
	c.pending = s.Append(c.pending, c.v)
	c.mu.Unlock()
	c.signal()
	select {
	case ack := <-c.subacks:
		if ack.PacketID != id {
			return fmt.Errorf("SUBACK for packet %d, expected %d", ack.PacketID, id)
		}
		if len(ack.ReasonCodes) != len(subs) {
			return fmt.Errorf("SUBACK has %d codes for %d filters", len(ack.ReasonCodes), len(subs))
		}
		for i, rc := range ack.ReasonCodes {
			if rc.IsError() {
				return fmt.Errorf("subscribe %q: %w", subs[i].Filter, rc)
			}
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.readDone:
		return c.deadErr()
	}
}

// Close sends DISCONNECT after whatever is pending, closes the socket and
// waits for the client's goroutines. It does not wait for acknowledgements.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		if c.werr == nil {
			d := packet.Disconnect{}
			c.pending = d.Append(c.pending, c.v)
		}
		c.closing = true
		c.space.Broadcast()
		c.mu.Unlock()
		// A server that stopped reading must not hold Close up.
		c.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		close(c.quit)
		<-c.flushed
		c.nc.Close()
		<-c.readDone
	})
	return nil
}

func (c *Client) deadErr() error {
	if c.rerr != nil {
		return fmt.Errorf("connection lost: %w", c.rerr)
	}
	return ErrClosed
}

func (c *Client) signal() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// writeAck queues an acknowledgement without waiting for buffer room: the
// read goroutine must never block on the socket, or two peers that both
// stop reading while writing would deadlock. The caller signals the flusher.
func (c *Client) writeAck(t packet.Type, id uint16) {
	a := packet.Ack{Type: t, PacketID: id}
	c.mu.Lock()
	if c.werr == nil {
		c.pending = a.Append(c.pending, c.v)
	}
	c.mu.Unlock()
}

// flushLoop swaps the pending buffer for its spare and writes it outside the
// lock, so that writers keep appending while a write is in progress and the
// next write carries everything that accumulated meanwhile.
func (c *Client) flushLoop() {
	defer close(c.flushed)
	var out []byte
	for {
		select {
		case <-c.kick:
		case <-c.quit:
		}
		for {
			c.mu.Lock()
			if c.werr != nil || len(c.pending) == 0 {
				done := c.closing || c.werr != nil
				c.mu.Unlock()
				if done {
					return
				}
				break
			}
			out, c.pending = c.pending, out[:0]
			c.space.Broadcast()
			c.mu.Unlock()
			if _, err := c.nc.Write(out); err != nil {
				c.mu.Lock()
				c.werr = fmt.Errorf("write: %w", err)
				c.space.Broadcast()
				c.mu.Unlock()
			}
		}
	}
}

func (c *Client) pingLoop(keepAlive time.Duration) {
	t := time.NewTicker(keepAlive * 3 / 4)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.mu.Lock()
			if c.werr == nil && !c.closing {
				c.pending = packet.AppendPingReq(c.pending)
			}
			c.mu.Unlock()
			c.signal()
		case <-c.quit:
			return
		case <-c.readDone:
			return
		}
	}
}

func (c *Client) readLoop() {
	defer close(c.readDone)
	err := c.read()
	c.doneAt = time.Now()
	c.mu.Lock()
	closing := c.closing
	if c.werr == nil {
		c.werr = ErrClosed
	}
	c.space.Broadcast()
	c.mu.Unlock()
	if !closing {
		c.rerr = err
		// Without a reader the connection is useless; make the flusher give up.
		c.nc.Close()
	}
}

// hookedConn is what the packet reader reads from. The read goroutine queues
// acknowledgements without waking the flusher and wakes it here, just before
// a read that may block: one write then carries all the acknowledgements for
// the packets of one read, and none waits behind a blocked read.
type hookedConn struct{ c *Client }

func (h hookedConn) Read(p []byte) (int, error) {
	if h.c.acksQueued {
		h.c.acksQueued = false
		h.c.signal()
	}
	return h.c.nc.Read(p)
}

func (c *Client) read() error {
	var (
		pub packet.Publish
		ack packet.Ack
	)
	for {
		h, body, err := c.r.Next(0)
		if err != nil {
			return err
		}
		queued := false
		switch h.Type {
		case packet.PUBLISH:
			if err := pub.Decode(h.Flags, body, c.v); err != nil {
				return fmt.Errorf("decode PUBLISH: %w", err)
			}
			fresh := true
			switch pub.QoS {
			case 1:
				c.writeAck(packet.PUBACK, pub.PacketID)
				queued = true
			case 2:
				if c.in == nil {
					c.in = new(idSet)
				}
				fresh = !c.in.has(pub.PacketID)
				c.in.add(pub.PacketID)
				c.writeAck(packet.PUBREC, pub.PacketID)
				queued = true
			}
			if fresh && c.onPublish != nil {
				c.onPublish(&pub)
			}
		case packet.PUBACK, packet.PUBREC, packet.PUBCOMP:
			if err := ack.Decode(h.Type, h.Flags, body, c.v); err != nil {
				return fmt.Errorf("decode %s: %w", h.Type, err)
			}
			if c.out == nil || !c.out.has(ack.PacketID) {
				return fmt.Errorf("%s for packet %d that is not in flight", h.Type, ack.PacketID)
			}
			if h.Type == packet.PUBREC && !ack.ReasonCode.IsError() {
				c.writeAck(packet.PUBREL, ack.PacketID)
				queued = true
				break
			}
			if ack.ReasonCode.IsError() {
				c.rejected.Add(1)
			} else {
				c.acked.Add(1)
			}
			c.out.remove(ack.PacketID)
			<-c.window
		case packet.PUBREL:
			if err := ack.Decode(h.Type, h.Flags, body, c.v); err != nil {
				return fmt.Errorf("decode PUBREL: %w", err)
			}
			if c.in != nil {
				c.in.remove(ack.PacketID)
			}
			c.writeAck(packet.PUBCOMP, ack.PacketID)
			queued = true
		case packet.SUBACK:
			sa := new(packet.SubAck)
			if err := sa.Decode(h.Flags, body, c.v); err != nil {
				return fmt.Errorf("decode SUBACK: %w", err)
			}
			select {
			case c.subacks <- sa:
			default:
				return fmt.Errorf("unexpected SUBACK for packet %d", sa.PacketID)
			}
		case packet.PINGRESP:
		case packet.DISCONNECT:
			var d packet.Disconnect
			if err := d.Decode(h.Flags, body, c.v); err != nil {
				return fmt.Errorf("decode DISCONNECT: %w", err)
			}
			return fmt.Errorf("server sent DISCONNECT: %w", d.ReasonCode)
		default:
			return fmt.Errorf("unexpected %s from server", h.Type)
		}
		if queued {
			c.acksQueued = true
		}
	}
}
