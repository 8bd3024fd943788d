package broker

import (
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/mqtt/topic"
)

// connect processes CONNECT: identifiers, limits, authentication, session
// attach and CONNACK. It reports whether the connection goes on.
func (c *client) connect(cp *packet.Connect) bool {
	c.version = cp.Version
	if c.version == packet.V31 {
		c.version = packet.V311 // identical on the wire after CONNECT
	}
	v5 := c.version == packet.V5
	ack := packet.ConnAck{}
	refuse := func(code packet.ReasonCode, reason string) bool {
		c.logRefusal(code, cp.ClientID, reason)
		c.b.stats.refused.Add(1)
		ack.ReasonCode = code
		if v5 {
			if reason != "" {
				ack.Properties.ReasonString = reason
				ack.Properties.Set(packet.PropReasonString)
			}
		} else {
			ack.ReasonCode = packet.ConnAckCode311(code)
		}
		c.writePacket(&ack)
		c.closeAfterFlush()
		return false
	}
	if c.b.closing.Load() {
		return refuse(packet.ServerUnavailable, "server shutting down")
	}

	c.id = cp.ClientID
	if !c.trusted && strings.HasPrefix(c.id, InternalClientIDPrefix) {
		return refuse(packet.ClientIdentifierNotValid, "client identifiers beginning with "+InternalClientIDPrefix+" are reserved")
	}
	if c.id == "" {
		if !v5 && !cp.CleanStart {
			return refuse(packet.ClientIdentifierNotValid, "empty client identifier needs clean session")
		}
		c.id = newClientID()
		if v5 {
			ack.Properties.AssignedClientID = c.id
			ack.Properties.Set(packet.PropAssignedClientID)
		}
	}

	o := c.b.o()
	c.maxIn, c.recvMaxIn = o.MaxPacketSize, o.ReceiveMaximum
	c.aliasMaxIn = max(o.TopicAliasMaximum, 0) // -1 disables aliases
	c.sendQuota = o.MaxInflight
	c.problemInfo = true
	expiry := time.Duration(0)
	if v5 {
		p := &cp.Properties
		if p.Has(packet.PropReceiveMaximum) && int(p.ReceiveMaximum) < c.sendQuota {
			c.sendQuota = int(p.ReceiveMaximum)
		}
		if p.Has(packet.PropMaximumPacketSize) {
			c.maxOut = int(p.MaximumPacketSize)
		}
		c.aliasMaxOut = p.TopicAliasMaximum
		if p.Has(packet.PropRequestProblemInfo) {
			c.problemInfo = p.RequestProblemInfo == 1
		}
		if p.Has(packet.PropSessionExpiry) {
			expiry = c.capExpiry(p.SessionExpiry)
			if expiry != time.Duration(p.SessionExpiry)*time.Second && p.SessionExpiry != 0xFFFFFFFF {
				ack.Properties.SessionExpiry = uint32(expiry / time.Second)
				ack.Properties.Set(packet.PropSessionExpiry)
			}
		}
		if p.Has(packet.PropRequestResponseInfo) && p.RequestResponseInfo == 1 {
			ack.Properties.ResponseInfo = "edgeport/response/" + c.id
			ack.Properties.Set(packet.PropResponseInfo)
		}
	} else if !cp.CleanStart {
		expiry = c.b.o().MaxSessionExpiry // 3.1.1 persistent sessions last as long as allowed
	}

	ka := time.Duration(cp.KeepAlive) * time.Second
	if mx := c.b.o().MaxKeepAlive; mx < DefaultMaxKeepAlive && (ka == 0 || ka > mx) {
		ka = mx
		if v5 {
			ack.Properties.ServerKeepAlive = uint16(mx / time.Second)
			ack.Properties.Set(packet.PropServerKeepAlive)
		}
	}
	c.keepAlive = ka

	var will *Message
	var willDelay time.Duration
	if w := cp.Will; w != nil {
		if err := errors.Join(topic.ValidName(w.Topic), c.b.limits().CheckName(w.Topic)); err != nil || strings.HasPrefix(w.Topic, "$") {
			return refuse(packet.TopicNameInvalid, "will topic not allowed")
		}
		will = &Message{Topic: strings.Clone(w.Topic), Payload: append([]byte(nil), w.Payload...), QoS: w.QoS, Retain: w.Retain, Origin: c.id}
		if v5 {
			// A copy: messageProps trims what it is given in place, and
			// the will's delay and expiry are read from w below.
			props := w.Properties
			props.User = slices.Clone(props.User)
			c.messageProps(will, &props)
			// The will's expiry counts from its publication, not from CONNECT.
			will.Expiry = 0
			will.willExpiry = time.Duration(w.Properties.MessageExpiry) * time.Second
			willDelay = time.Duration(w.Properties.WillDelay) * time.Second
		}
	}

	if code, reason := c.authenticate(cp, &ack); code != packet.Success {
		return refuse(code, reason)
	}
	if will != nil {
		will.owner = c.auth // checked against the principal when published
	}
	// Only an authenticated client may take its session from another node.
	if ok, reason := c.claim(); !ok {
		return refuse(packet.ServerUnavailable, reason)
	}
	// Counted and its expiry watched before CONNACK leaves, so that a
	// client that has its CONNACK is already under the expiry timer.
	c.authenticated()

	if v5 {
		if c.recvMaxIn != 65535 {
			ack.Properties.ReceiveMaximum = uint16(c.recvMaxIn)
			ack.Properties.Set(packet.PropReceiveMaximum)
		}
		ack.Properties.MaximumPacketSize = uint32(c.maxIn)
		ack.Properties.Set(packet.PropMaximumPacketSize)
		if am := c.aliasMax(); am > 0 {
			ack.Properties.TopicAliasMaximum = uint16(am)
			ack.Properties.Set(packet.PropTopicAliasMaximum)
		}
	}

	c.b.awaitLeaving(c)
	s, present := c.b.attach(c, cp.CleanStart, expiry)
	if s == nil {
		c.log.Info("refusing a client whose session another node claimed while its claim here was under way", "client", c.id, "claim", c.claimToken)
		return refuse(packet.ServerUnavailable, "session claimed by another node meanwhile")
	}
	c.sess = s
	s.mu.Lock()
	s.will, s.willDelay = will, willDelay
	if present {
		c.pruneOnResume(s)
	}
	tx := c.b.saveSessionLocked(s, 0)
	var durable chan error
	if c.b.owner != nil && !c.trusted && tx != nil && !tx.empty() {
		// Cluster mode: the CONNACK waits until the session's record (its
		// will, and that a connection is live) is durable, so that if this
		// node dies the node adopting the session knows of the will.
		durable = make(chan error, 1)
		c.b.submit(tx, func(err error) { durable <- err })
	} else {
		c.b.submit(tx, nil)
	}
	ack.SessionPresent = present
	c.outMu.Lock()
	c.holdOut = durable != nil
	c.appendLocked(&ack)
	c.acked = true
	c.kickLocked()
	c.outMu.Unlock()
	c.resumeLocked()
	s.mu.Unlock()
	// The session record, and what taking the session over or resuming it
	// changed, go to the store now that no lock is held.
	c.b.flush()
	if durable != nil {
		c.releaseOut(durable)
	}
	c.ls.connects.Add(1)
	c.log.Debug("client connected", "client", c.id, "remote", c.conn.RemoteAddr().String(), "version", int(c.version), "session_present", present, "claim", c.claimToken)
	return true
}

// releaseOut waits (at most ClaimTimeout) until the session record written
// at CONNECT is durable, then lets the CONNACK and what followed it out.
// Should the write fail or take longer, the client is served all the same
// (the claim succeeded a moment ago) and the failure logged: the session's
// will is then lost if this node dies before it is written.
func (c *client) releaseOut(durable <-chan error) {
	t := time.NewTimer(ClaimTimeout)
	defer t.Stop()
	select {
	case err := <-durable:
		if err != nil {
			c.log.Warn("serving a client whose session record could not be written to the cluster", "client", c.id, "err", err)
		}
	case <-t.C:
		c.log.Warn("serving a client whose session record is not durable yet", "client", c.id, "waited", ClaimTimeout.String())
	}
	c.outMu.Lock()
	c.holdOut = false
	if len(c.out) > 0 && !c.closing {
		c.kickLocked()
	}
	c.outMu.Unlock()
}

// resumeLocked resends unacknowledged deliveries (PUBLISH with DUP, or PUBREL
// for released QoS 2) in their original order and with their original
// packet identifiers [MQTT-4.4.0-1], as many as the connection's Receive
// Maximum allows [MQTT-3.3.4-9]: the rest are held, and go out as
// acknowledgements free the window (sendHeldLocked). Then it drains the
// queue. c.sess.mu is held.
func (c *client) resumeLocked() {
	s := c.sess
	now := c.b.clk.Now().UnixNano()
	s.held = 0
	for f := s.oldest; f != nil; f = f.next {
		f.held = false
	}
	sent := 0
	for f, next := s.oldest, (*flight)(nil); f != nil; f = next {
		next = f.next
		if sent >= c.sendQuota && !f.refused() {
			f.held = true
			s.held++
			continue
		}
		if c.resendLocked(f, now) {
			sent++
		}
	}
	s.drainLocked(c.b, now)
}

// resendLocked sends an unacknowledged delivery again and reports whether
// it went out; one that cannot (refused, too large) leaves the window.
// c.sess.mu is held.
func (c *client) resendLocked(f *flight, now int64) bool {
	s := c.sess
	if f.released {
		c.writePacket(&packet.Ack{Type: packet.PUBREL, PacketID: f.id})
		return true
	}
	if f.refused() {
		// Never sent: its publisher was refused with 0x97.
		s.removeFlight(f)
		c.b.stats.dropped[dropQuota].Add(1)
		return false
	}
	dup := !f.fresh
	f.fresh = false
	if !c.writePublish(&f.delivery, f.id, dup, now) {
		// Too large for this connection's Maximum Packet Size: discarded
		// as if delivered (MQTT-3.1.2-25), so it frees its window slot.
		s.removeFlight(f)
		c.b.dropEntry(s, &f.delivery)
		return false
	}
	return true
}

// logRefusal logs a refused CONNECT at info, once a minute per reason and
// client address: a client retrying with bad credentials every second
// must not fill the log, and the first refusal is still there to see.
func (c *client) logRefusal(code packet.ReasonCode, clientID, detail string) {
	remote := c.conn.RemoteAddr().String()
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	c.b.refusals.Log(slog.LevelInfo, code.String()+" "+c.ls.name+" "+host, "refused a client",
		"listener", c.ls.name, "client", clientID, "remote", remote, "reason", code.String(), "detail", detail)
}
