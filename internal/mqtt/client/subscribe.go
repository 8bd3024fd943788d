package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/mqtt/topic"
)

// Subscription asks for the messages matching Filters and names their
// handler.
type Subscription struct {
	Filters []packet.Subscription
	Handler Handler
	// ManualAck leaves acknowledging each QoS 1/2 message to the handler
	// (Message.Ack), which may do so after it returns, from any goroutine:
	// a dataflow acknowledges a message once its destination has it. By
	// default the client acknowledges a message when the handler returns.
	ManualAck bool
	// User properties sent with the SUBSCRIBE (MQTT 5).
	User []packet.UserProperty
}

// subEntry is one Subscribe call's live filters and handler.
type subEntry struct {
	id      uint32 // subscription identifier; 0 when not used
	filters []packet.Subscription
	match   []string // the filters as topic.Match takes them ($share/group/ removed)
	h       Handler
	manual  bool
	user    []packet.UserProperty
}

func (e *subEntry) matches(name string) bool {
	for _, f := range e.match {
		if topic.Match(f, name) {
			return true
		}
	}
	return false
}

// maxCtrlSends is how many connections a SUBSCRIBE or UNSUBSCRIBE is sent
// on before the client gives up waiting for its acknowledgement.
const maxCtrlSends = 3

// ctrlReq is a SUBSCRIBE or UNSUBSCRIBE waiting for its acknowledgement.
type ctrlReq struct {
	seq   uint64
	id    uint16
	sub   *packet.Subscribe   // nil for UNSUBSCRIBE
	unsub *packet.Unsubscribe // nil for SUBSCRIBE
	entry *subEntry           // SUBSCRIBE: the entry made for it
	sends int                 // connections it was sent on
	done  func([]packet.ReasonCode, string, error)
}

func (r *ctrlReq) packet() packet.Packet {
	if r.sub != nil {
		r.sub.PacketID = r.id
		return r.sub
	}
	r.unsub.PacketID = r.id
	return r.unsub
}

func (r *ctrlReq) fail(err error) func() {
	return func() {
		if r.done != nil {
			r.done(nil, "", err)
		}
	}
}

// Subscribe subscribes to s.Filters and routes their messages to
// s.Handler. It returns once the server answered (or ctx ended): a
// *ReasonError names the first filter the server refused; the others stay
// subscribed. A subscription made while disconnected is sent on the next
// connection, and every subscription is made again on a connection whose
// session the server no longer had. Messages are routed by subscription
// identifier where the server supports them, by topic otherwise; a message
// matching several subscriptions goes to each handler.
func (c *Client) Subscribe(ctx context.Context, s Subscription) error {
	if len(s.Filters) == 0 || s.Handler == nil {
		return errors.New("mqtt client: Subscribe needs filters and a handler")
	}
	e := &subEntry{filters: slices.Clone(s.Filters), h: s.Handler, manual: s.ManualAck, user: s.User}
	for _, f := range s.Filters {
		if err := topic.ValidFilter(f.Filter); err != nil {
			return fmt.Errorf("mqtt client: filter %q: %w", f.Filter, err)
		}
		if f.QoS > 2 {
			return fmt.Errorf("mqtt client: filter %q: QoS %d", f.Filter, f.QoS)
		}
		_, inner, shared, _ := topic.ParseShared(f.Filter)
		if !shared {
			inner = f.Filter
		} else if f.NoLocal {
			// A protocol error: the server would close the connection.
			return fmt.Errorf("mqtt client: filter %q: No Local on a shared subscription", f.Filter)
		}
		e.match = append(e.match, inner)
	}
	type result struct {
		codes  []packet.ReasonCode
		reason string
		err    error
	}
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.opts.Version == packet.V5 && (c.cur == nil || c.cur.subIDs) {
		c.nextSubID++
		e.id = c.nextSubID
	}
	// The entry routes messages from now on: a server may deliver retained
	// messages before its SUBACK is read.
	c.subs = append(c.subs, e)
	r, err := c.sendCtrlLocked(&ctrlReq{sub: e.subscribePacket(), entry: e, done: func(codes []packet.ReasonCode, reason string, err error) {
		ch <- result{codes, reason, err}
	}})
	c.mu.Unlock()
	if err != nil {
		c.removeEntry(e, nil)
		return err
	}
	select {
	case res := <-ch:
		if res.err != nil {
			c.removeEntry(e, nil)
			return res.err
		}
		var refused []string
		var first *ReasonError
		for i, code := range res.codes {
			if i < len(s.Filters) && code.IsError() {
				refused = append(refused, s.Filters[i].Filter)
				if first == nil {
					first = &ReasonError{Packet: packet.SUBACK, Code: code, Reason: res.reason, Filter: s.Filters[i].Filter}
				}
			}
		}
		if len(res.codes) != len(s.Filters) {
			c.removeEntry(e, nil)
			return fmt.Errorf("mqtt client: SUBACK has %d codes for %d filters", len(res.codes), len(s.Filters))
		}
		if first != nil {
			c.removeEntry(e, refused)
			return first
		}
		return nil
	case <-ctx.Done():
		// The server may still subscribe: keep routing in case it does.
		c.abandonCtrl(r)
		return ctx.Err()
	}
}

func (e *subEntry) subscribePacket() *packet.Subscribe {
	p := &packet.Subscribe{Subscriptions: e.filters}
	p.Properties.User = e.user
	if e.id != 0 {
		p.Properties.SubscriptionIDs = []uint32{e.id}
	}
	return p
}

// removeEntry removes the filters named (all when nil) from e, and e once
// it has none.
func (c *Client) removeEntry(e *subEntry, filters []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeFiltersLocked(e, filters)
}

func (c *Client) removeFiltersLocked(e *subEntry, filters []string) {
	for i := 0; i < len(e.filters); {
		if filters == nil || slices.Contains(filters, e.filters[i].Filter) {
			e.filters = slices.Delete(e.filters, i, i+1)
			e.match = slices.Delete(e.match, i, i+1)
			continue
		}
		i++
	}
	if len(e.filters) == 0 {
		c.subs = slices.DeleteFunc(c.subs, func(x *subEntry) bool { return x == e })
	}
}

// Unsubscribe removes filters, as they were given to Subscribe, and stops
// routing their messages once the server confirmed. A *ReasonError names
// the first filter the server refused (0x11, no subscription existed, is
// not an error).
func (c *Client) Unsubscribe(ctx context.Context, filters ...string) error {
	if len(filters) == 0 {
		return nil
	}
	type result struct {
		codes  []packet.ReasonCode
		reason string
		err    error
	}
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return ErrClosed
	}
	r, err := c.sendCtrlLocked(&ctrlReq{unsub: &packet.Unsubscribe{Filters: slices.Clone(filters)}, done: func(codes []packet.ReasonCode, reason string, err error) {
		ch <- result{codes, reason, err}
	}})
	c.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case res := <-ch:
		if res.err != nil {
			return res.err
		}
		c.mu.Lock()
		for _, e := range slices.Clone(c.subs) {
			c.removeFiltersLocked(e, filters)
		}
		c.mu.Unlock()
		for i, code := range res.codes {
			if i < len(filters) && code.IsError() {
				return &ReasonError{Packet: packet.UNSUBACK, Code: code, Reason: res.reason, Filter: filters[i]}
			}
		}
		return nil
	case <-ctx.Done():
		c.abandonCtrl(r)
		return ctx.Err()
	}
}

// sendCtrlLocked assigns r an identifier and sends it when connected (or on
// the next connection).
func (c *Client) sendCtrlLocked(r *ctrlReq) (*ctrlReq, error) {
	id, ok := c.allocIDLocked()
	if !ok {
		return nil, errors.New("mqtt client: all packet identifiers are in use")
	}
	r.id = id
	c.seq++
	r.seq = c.seq
	c.ctrl[id] = r
	if c.cur != nil {
		r.sends++
		c.cur.writePacket(r.packet(), c.opts.Version)
	}
	return r, nil
}

// abandonCtrl stops waiting for r; its acknowledgement, if it comes, is
// ignored, and it is not resent.
func (c *Client) abandonCtrl(r *ctrlReq) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctrl[r.id] == r {
		r.done = nil
		// Keep the identifier reserved until the acknowledgement, so that
		// a late SUBACK is not taken for another request's.
	}
}

// ctrlAcked handles SUBACK and UNSUBACK.
func (c *Client) ctrlAcked(id uint16, codes []packet.ReasonCode, reason string) {
	c.mu.Lock()
	r := c.ctrl[id]
	if r != nil {
		delete(c.ctrl, id)
		c.ids[id] = false
	}
	c.mu.Unlock()
	if r == nil {
		return
	}
	if r.done == nil {
		return // abandoned by its caller
	}
	if c.opts.Version != packet.V5 && r.sub != nil {
		// 3.1.1 SUBACK failure is 0x80 with no reason string.
		for i, code := range codes {
			if code == 0x80 {
				codes[i] = packet.UnspecifiedError
			}
		}
	}
	r.done(codes, reason, nil)
}

// resubscribeLocked makes every subscription again on a connection whose
// session the server did not have.
func (c *Client) resubscribeLocked(cn *conn) {
	for _, e := range c.subs {
		inFlight := false
		for _, r := range c.ctrl {
			if r.entry == e {
				inFlight = true // resent with the other requests
			}
		}
		if inFlight || len(e.filters) == 0 {
			continue
		}
		if e.id != 0 && !cn.subIDs {
			e.id = 0
		}
		req := &ctrlReq{sub: e.subscribePacket(), entry: e, done: func(codes []packet.ReasonCode, reason string, err error) {
			for i, code := range codes {
				if code.IsError() && i < len(e.filters) {
					c.log.Warn("the server refused a subscription when it was made again", "filter", e.filters[i].Filter, "reason", code.String())
				}
			}
		}}
		if _, err := c.sendCtrlLocked(req); err != nil {
			c.log.Warn("resubscribing", "err", err)
		}
	}
}

// received queues a PUBLISH from the server for the handlers.
func (c *Client) received(cn *conn, p *packet.Publish) {
	m := fromPublish(p)
	if p.QoS == 2 {
		c.relMu.Lock()
		seen := c.rel[p.PacketID]
		c.relMu.Unlock()
		if seen {
			// A resent PUBLISH we already acknowledged: only the PUBREC
			// is owed again, not a second delivery.
			cn.writePacket(&packet.Ack{Type: packet.PUBREC, PacketID: p.PacketID}, c.opts.Version)
			return
		}
	}
	if p.QoS > 0 {
		e := &ackEntry{id: p.PacketID, qos: p.QoS}
		cn.ackMu.Lock()
		cn.acks = append(cn.acks, e)
		cn.ackMu.Unlock()
		m.ack = &ackHandle{ref: &ackRef{conn: cn, entry: e}}
	}
	c.dmu.Lock()
	if c.dclose {
		c.dmu.Unlock()
		return
	}
	if p.QoS == 0 {
		if c.dqos0 >= c.opts.MaxQueuedQoS0 {
			c.stats.DroppedQoS0++
			c.dmu.Unlock()
			return
		}
		c.dqos0++
	}
	c.dq = append(c.dq, m)
	c.dmu.Unlock()
	signal(c.dwake)
}

func (c *Client) closeDispatch() {
	c.dmu.Lock()
	c.dclose = true
	c.dmu.Unlock()
	signal(c.dwake)
}

// dispatchLoop runs the handlers, one message at a time, until the queue
// is closed.
func (c *Client) dispatchLoop(ctx context.Context) {
	var batch []*Message
	for {
		c.dmu.Lock()
		batch, c.dq = c.dq, batch[:0]
		c.dqos0 = 0
		closed := c.dclose
		c.dmu.Unlock()
		if closed {
			return
		}
		for i, m := range batch {
			c.deliver(ctx, m)
			batch[i] = nil
		}
		if len(batch) > 0 {
			batch = batch[:0]
			continue
		}
		<-c.dwake
	}
}

// deliver calls every handler whose subscription matches m.
func (c *Client) deliver(ctx context.Context, m *Message) {
	var hs []*subEntry
	c.mu.Lock()
	for _, e := range c.subs {
		if len(m.SubscriptionIDs) > 0 && e.id != 0 {
			if !slices.Contains(m.SubscriptionIDs, e.id) {
				continue
			}
		}
		if e.matches(m.Topic) {
			hs = append(hs, e)
		}
	}
	c.mu.Unlock()
	if len(hs) == 0 {
		if m.ack != nil {
			m.ack.ref.remaining.Store(1)
		}
		if h := c.opts.DefaultHandler; h != nil {
			h(ctx, m)
		}
		m.Ack()
		return
	}
	if m.ack != nil {
		m.ack.ref.remaining.Store(int32(len(hs)))
	}
	copies := make([]*Message, len(hs))
	copies[0] = m
	for i := 1; i < len(hs); i++ {
		copies[i] = m.clone()
		if m.ack != nil {
			copies[i].ack = &ackHandle{ref: m.ack.ref}
		}
	}
	for i, e := range hs {
		e.h(ctx, copies[i])
		if !e.manual {
			copies[i].Ack()
		}
	}
}

// SubscribeWithin subscribes s for a component that is starting: it waits
// at most wait for the server's answer. When the client is not connected by
// then (it is still connecting, or the broker refuses it), the error wraps
// ErrSubscribePending and the subscription stays registered, to be made
// when the client connects; a component logs that and starts anyway, so a
// broker that refuses internal clients does not keep Edgeport from
// starting. Any other error is a refusal by a connected server.
//
// It stops waiting as soon as a connection attempt fails (or already has):
// several components start one after the other on the same client, and
// each waiting out its bound against a broker that refuses it would add up
// to a start that looks hung.
func (c *Client) SubscribeWithin(ctx context.Context, s Subscription, wait time.Duration) error {
	sctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	c.mu.Lock()
	refused := c.cur == nil && c.lastErr != nil
	failed := c.failed
	c.mu.Unlock()
	if refused {
		cancel()
	} else {
		go func() {
			select {
			case <-failed:
				cancel()
			case <-sctx.Done():
			}
		}()
	}
	err := c.Subscribe(sctx, s)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil, !c.Connected():
		return fmt.Errorf("%w: %w", ErrSubscribePending, err)
	default:
		return err
	}
}
