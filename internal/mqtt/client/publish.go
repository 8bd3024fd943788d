package client

import (
	"context"
	"fmt"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// maxQueuedBytes bounds what a blocking QoS 0 Publish lets pile up in the
// connection's write queue before it waits for the writer.
const maxQueuedBytes = 4 << 20

// outPub is a QoS 1 or 2 publish from queueing to completion.
type outPub struct {
	pkt       []byte // the encoded PUBLISH; its identifier is patched in when assigned
	idOff     int    // offset of the packet identifier in pkt
	qos       byte
	id        uint16 // 0 until assigned
	seq       uint64 // send order, for resending after a reconnection
	awaitComp bool   // QoS 2: PUBREC received, PUBREL sent
	done      func(packet.ReasonCode, error)
}

func (op *outPub) setID(id uint16) {
	op.id = id
	op.pkt[op.idOff], op.pkt[op.idOff+1] = byte(id>>8), byte(id)
}

func (op *outPub) setDup() { op.pkt[0] |= 0x08 }

// complete returns the call of op's completion, to be made without locks.
func (op *outPub) complete(code packet.ReasonCode, err error) func() {
	done := op.done
	return func() {
		if done != nil {
			done(code, err)
		}
	}
}

// encode turns m into a PUBLISH with a placeholder packet identifier.
func (c *Client) encode(m *Message) (*outPub, error) {
	if m.QoS > 2 {
		return nil, fmt.Errorf("mqtt client: QoS %d", m.QoS)
	}
	var p packet.Publish
	m.toPublish(&p)
	if c.opts.Version != packet.V5 {
		p.Properties = packet.Properties{}
	}
	if m.QoS > 0 {
		p.PacketID = 1
	}
	op := &outPub{qos: m.QoS}
	op.pkt = p.Append(nil, c.opts.Version)
	if m.QoS > 0 {
		_, n, _ := packet.DecodeFixedHeader(op.pkt)
		op.idOff = n + 2 + len(m.Topic)
	}
	return op, nil
}

// Publish sends m. QoS 0 returns once the message is queued on the
// connection (ErrNotConnected when there is none). QoS 1 and 2 return when
// the server acknowledged it (PUBACK, or PUBCOMP after PUBREC), with a
// *ReasonError when the server refused it. Publishes made while
// disconnected are sent on the next connection. When ctx ends first, a
// message not yet handed to a connection is withdrawn; one already sent
// stays in the session and may still be delivered.
//
// Publish copies what it needs of m before sending; the caller may reuse m
// and its payload once Publish returns.
func (c *Client) Publish(ctx context.Context, m *Message) error {
	_, err := c.PublishCode(ctx, m)
	return err
}

// PublishCode is Publish, returning the reason code of a QoS 1 or 2
// acknowledgement too: 0x10 (no matching subscribers) is a success that
// some callers want to tell apart. QoS 0 gives packet.Success.
func (c *Client) PublishCode(ctx context.Context, m *Message) (packet.ReasonCode, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if m.QoS == 0 {
		return 0, c.publish0(ctx, m)
	}
	type result struct {
		code packet.ReasonCode
		err  error
	}
	ch := make(chan result, 1)
	op, err := c.enqueue(m, func(code packet.ReasonCode, err error) { ch <- result{code, err} })
	if err != nil {
		return 0, err
	}
	select {
	case r := <-ch:
		return r.code, r.err
	case <-ctx.Done():
		c.withdraw(op)
		return 0, ctx.Err()
	}
}

// PublishAsync sends m without waiting: done (which may be nil) is called
// once with the outcome, as Publish would return it, on one of the client's
// goroutines; it must not block. Messages are sent in the order of the
// calls. The client buffers QoS 1/2 messages beyond the server's Receive
// Maximum without bound, so the caller bounds how many it has outstanding.
// m is encoded before PublishAsync returns.
func (c *Client) PublishAsync(m *Message, done func(packet.ReasonCode, error)) {
	if m.QoS == 0 {
		err := c.publish0(context.Background(), m)
		if done != nil {
			done(packet.Success, err)
		}
		return
	}
	if _, err := c.enqueue(m, done); err != nil && done != nil {
		done(0, err)
	}
}

func (c *Client) publish0(ctx context.Context, m *Message) error {
	op, err := c.encode(m)
	if err != nil {
		return err
	}
	c.mu.Lock()
	cn, state := c.cur, c.state
	c.mu.Unlock()
	switch {
	case state == stateClosed:
		return ErrClosed
	case cn == nil:
		return ErrNotConnected
	case cn.maxPacket > 0 && len(op.pkt) > cn.maxPacket:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrPacketTooLarge, len(op.pkt), cn.maxPacket)
	}
	for ctx.Done() != nil && cn.queued() > maxQueuedBytes {
		select {
		case <-cn.drained:
		case <-cn.dead:
			return ErrNotConnected
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	cn.write(op.pkt)
	return nil
}

// enqueue adds a QoS 1/2 publish to the session.
func (c *Client) enqueue(m *Message, done func(packet.ReasonCode, error)) (*outPub, error) {
	op, err := c.encode(m)
	if err != nil {
		return nil, err
	}
	op.done = done
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return nil, ErrClosed
	}
	if cn := c.cur; cn != nil && cn.maxPacket > 0 && len(op.pkt) > cn.maxPacket {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrPacketTooLarge, len(op.pkt), cn.maxPacket)
	}
	c.pending = append(c.pending, op)
	c.pumpLocked()
	return op, nil
}

// withdraw removes op if it is still waiting to be sent.
func (c *Client) withdraw(op *outPub) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.pending {
		if p == op {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			return
		}
	}
}

// pumpLocked sends pending publishes while the server's Receive Maximum
// allows.
func (c *Client) pumpLocked() {
	cn := c.cur
	if cn == nil {
		return
	}
	n := 0
	for n < len(c.pending) && len(c.inflight) < cn.recvMax {
		op := c.pending[n]
		id, ok := c.allocIDLocked()
		if !ok {
			break
		}
		c.pending[n] = nil
		n++
		op.setID(id)
		c.seq++
		op.seq = c.seq
		c.inflight[id] = op
		cn.write(op.pkt)
	}
	// Re-slicing, not copying: append reallocates once the front is used
	// up, so a long queue costs amortised O(1) per message.
	c.pending = c.pending[n:]
}

// acked handles PUBACK, PUBREC and PUBCOMP.
func (c *Client) acked(cn *conn, a *packet.Ack) {
	var done func()
	c.mu.Lock()
	op := c.inflight[a.PacketID]
	switch {
	case op == nil:
		// Not ours (any more): nothing to do.
	case a.Type == packet.PUBREC && op.qos == 2 && !op.awaitComp:
		if a.ReasonCode.IsError() {
			done = c.finishLocked(op, a)
			break
		}
		op.awaitComp = true
		cn.writePacket(&packet.Ack{Type: packet.PUBREL, PacketID: a.PacketID}, c.opts.Version)
	case a.Type == packet.PUBACK && op.qos == 1, a.Type == packet.PUBCOMP && op.awaitComp:
		done = c.finishLocked(op, a)
	}
	c.mu.Unlock()
	if done != nil {
		done()
	}
}

func (c *Client) finishLocked(op *outPub, a *packet.Ack) func() {
	delete(c.inflight, op.id)
	c.ids[op.id] = false
	c.pumpLocked()
	var err error
	if a.ReasonCode.IsError() {
		err = &ReasonError{Packet: a.Type, Code: a.ReasonCode, Reason: a.Properties.ReasonString}
	}
	return op.complete(a.ReasonCode, err)
}
