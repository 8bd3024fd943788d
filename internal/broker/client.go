package broker

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/mqtt/topic"
)

// client is one network connection. Its reader goroutine decodes and
// handles packets; outbound packets are appended, already encoded, to out and
// written in batches by a writer goroutine that runs only while there is
// something to write, so an idle connection costs one goroutine.
type client struct {
	b    *Broker
	conn net.Conn
	ls   *listenerStats
	log  *slog.Logger
	r    *packet.Reader
	// trusted marks an in-process Edgeport client (InternalListener), which
	// may publish to $ topics.
	trusted bool

	// Set during CONNECT, read-only afterwards.
	id          string
	version     packet.Version
	sess        *session
	keepAlive   time.Duration
	sendQuota   int    // client's Receive Maximum, capped by MaxInflight
	maxOut      int    // client's Maximum Packet Size, 0 = unlimited
	aliasMaxOut uint16 // client's Topic Alias Maximum
	problemInfo bool   // client wants reason strings and user properties
	authMethod  string
	auth        *clientAuth // principal and listener security; nil for trusted clients
	claimToken  uint64      // cluster mode: the token of the claim on the client's session
	// pauseEpoch is the node's count of its pauses when this connection
	// last knew it held its session (cluster mode, pause.go), and
	// sessionMoved is set once a check after a pause found another
	// node's claim. The reader's only.
	pauseEpoch   uint64
	sessionMoved bool
	// What CONNACK told the client; live option changes do not alter them
	// for a connection that is already up.
	maxIn, recvMaxIn, aliasMaxIn int
	reauth                       AuthStepper  // re-authentication in progress (reader goroutine)
	pendingAcks                  atomic.Int32 // publisher acks waiting for the store
	phases                       phasePipe    // QoS 2 PUBLISHes between their two phases (phased.go)
	// ending is set once the connection is closing: the reader stops
	// handling packets and leaves what still arrives to finish's drain.
	ending atomic.Bool
	// dead is set before the socket is closed from outside the reader (a
	// failed write, Stop's deadline): the reader must not park any more.
	dead atomic.Bool

	// Parking (park_linux.go). ended is ServeConnAsync's callback, nil
	// for ServeConn, whose caller waits: such a connection never parks.
	ended    func()
	canPark  bool  // set after CONNECT: a plain TCP connection served async
	parkedFD int32 // the socket while parked, else -1; guarded by Broker.park.mu
	// kaDeadline is the keep-alive deadline (Unix nanoseconds, 0: none) of
	// the current wait for input; resuming keeps it, so that a parked
	// connection is not given a fresh keep-alive period. Reader goroutine,
	// and the parker while parked.
	kaDeadline int64
	resuming   bool // the next Read continues the wait kaDeadline belongs to

	// Reader goroutine only. Packets are decoded into locals rather than
	// reusable fields here: an idle connection should not carry a kilobyte
	// of decode scratch.
	aliasesIn map[uint16]string

	outMu      sync.Mutex // guards the fields below
	out        []byte     // encoded packets waiting for the writer
	spare      []byte     // the writer's other buffer
	writing    bool       // a writer goroutine is running
	closing    bool       // no more packets are accepted; close after flush
	closed     bool
	halfClosed bool // the writer half-closed the socket; finish drains it (read after writerDone)
	acked      bool // CONNACK is queued: DISCONNECT may be sent
	// holdOut keeps what is queued (the CONNACK first) from being
	// written until the session's record is durable (cluster mode,
	// releaseOut); closing writes it all the same.
	holdOut    bool
	aliasesOut map[string]uint16
	writerDone chan struct{} // closed by an exiting writer when closing

	stats clientStats
}

type clientStats struct {
	msgsIn, msgsOut, bytesIn, bytesOut  atomic.Uint64
	payloadIn, payloadOut, authzAllowed atomic.Uint64
}

func newClient(b *Broker, conn net.Conn, ls *listenerStats) *client {
	c := &client{b: b, conn: conn, ls: ls, log: b.log, parkedFD: -1}
	c.r = packet.NewReader(deadlineReader{c}, 4096)
	ls.open.Add(1)
	return c
}

// deadlineReader sets the keep-alive deadline before each socket read, so a
// burst of packets read in one call costs one deadline update. For a
// connection that may park it also sets an earlier deadline, parkAfter
// from now, when the reader is between packets, and turns that deadline's
// expiry into packet.ErrIdle (see parker).
type deadlineReader struct{ c *client }

// parkAfter is how long a connection is quiet before it parks.
const parkAfter = time.Second

func (d deadlineReader) Read(p []byte) (int, error) {
	c := d.c
	if !c.canPark {
		if c.keepAlive > 0 {
			_ = c.conn.SetReadDeadline(time.Now().Add(c.keepAlive * 3 / 2))
		}
	} else {
		now := time.Now()
		if !c.resuming {
			c.kaDeadline = 0
			if c.keepAlive > 0 {
				c.kaDeadline = now.Add(c.keepAlive * 3 / 2).UnixNano()
			}
		}
		c.resuming = false
		var deadline time.Time
		if c.kaDeadline != 0 {
			deadline = time.Unix(0, c.kaDeadline)
		}
		idle := false
		if c.r.AtBoundary() {
			if at := now.Add(parkAfter); deadline.IsZero() || at.Before(deadline) {
				deadline, idle = at, true
			}
		}
		_ = c.conn.SetReadDeadline(deadline)
		if idle {
			if d.c.ending.Load() {
				return 0, errEnding
			}
			n, err := c.conn.Read(p)
			c.stats.bytesIn.Add(uint64(n))
			if n == 0 && isTimeout(err) && !c.ending.Load() {
				c.resuming = true // keep kaDeadline
				return 0, packet.ErrIdle
			}
			return n, err
		}
	}
	// Checked after setting the deadline: closeAfterFlush sets ending and
	// then a deadline of now, so either this sees ending or its deadline
	// is the later one and the Read below returns at once.
	if d.c.ending.Load() {
		return 0, errEnding
	}
	n, err := d.c.conn.Read(p)
	d.c.stats.bytesIn.Add(uint64(n))
	return n, err
}

// errEnding stops the reader once the server is ending the connection.
var errEnding = errors.New("connection ending")

// drainTimeout bounds how long the server reads (and discards) what a
// client still sends after the server half-closed the connection. Closing a
// socket with unread input, or with input still arriving, makes the kernel
// answer with a reset, and a client whose write then fails usually gives up
// before reading the DISCONNECT that said why (0x93, 0x8E, 0x95, ...).
// Draining instead lets the client's writes succeed until it has read the
// reason and the end of the stream. A second is plenty on any network where
// the DISCONNECT arrives at all, and short enough that a client that never
// stops sending holds its socket only briefly.
const drainTimeout = 2 * time.Second

// maxDraining bounds the connections being drained at once: beyond it a
// connection is closed at once, so that a flood of refused connections
// cannot hold sockets for drainTimeout each.
const maxDraining = 1024

// serve runs the connection: CONNECT, then packets until it ends or, for
// an idle connection, until it parks (then resume goes on).
func (c *client) serve() {
	// The handshake runs in its own frame, popped before the read loop, so
	// an idle connection's stack holds only the loop.
	if !c.handshake() {
		c.end()
		return
	}
	if c.ended != nil {
		_, c.canPark = c.conn.(*net.TCPConn)
	}
	c.run()
}

// run reads packets until the connection ends or parks.
func (c *client) run() {
	if c.readLoop() {
		return // parked: the parker calls resume
	}
	c.end()
}

// resume continues a parked connection on a new goroutine.
func (c *client) resume() { c.run() }

// end finishes the connection and forgets it.
func (c *client) end() {
	c.finish()
	c.b.forget(c)
}

// handshake reads and answers CONNECT; it reports whether the connection goes on.
func (c *client) handshake() bool {
	_ = c.conn.SetReadDeadline(time.Now().Add(c.b.o().ConnectTimeout))
	h, body, err := c.r.Next(c.b.o().MaxPacketSize)
	if err != nil {
		c.log.Debug("no CONNECT", "remote", c.conn.RemoteAddr().String(), "err", err)
		c.countNoConnect(err)
		return false
	}
	if h.Type != packet.CONNECT {
		c.log.Debug("first packet is not CONNECT", "remote", c.conn.RemoteAddr().String(), "type", h.Type)
		return false
	}
	var cp packet.Connect
	if err := cp.Decode(h.Flags, body); err != nil {
		c.refuseDecode(&cp, err)
		return false
	}
	_ = c.conn.SetReadDeadline(time.Time{})
	return c.connect(&cp)
}

// refuseDecode answers a CONNECT that failed to decode, when the protocol
// version is known well enough to answer in it.
func (c *client) refuseDecode(cp *packet.Connect, err error) {
	c.log.Debug("bad CONNECT", "remote", c.conn.RemoteAddr().String(), "err", err)
	code := packet.MalformedPacket
	var pe *packet.Error
	if errors.As(err, &pe) {
		code = pe.Code
	} else if errors.Is(err, packet.UnsupportedProtocolVersion) {
		code = packet.UnsupportedProtocolVersion
	}
	switch {
	case code == packet.UnsupportedProtocolVersion:
		// The client's version is unknown: answer in 3.1.1 form (return
		// code 1), which every client version can read.
		c.version = packet.V311
		c.writePacket(&packet.ConnAck{ReasonCode: packet.ConnRefusedVersion311})
	case cp.Version == packet.V5:
		c.version = packet.V5
		c.writePacket(&packet.ConnAck{ReasonCode: code})
	case code == packet.ClientIdentifierNotValid:
		// MQTT-3.1.3-9: 3.1.1 refuses an empty identifier without clean
		// session with return code 2; other 3.1.1 errors just close.
		c.version = packet.V311
		c.writePacket(&packet.ConnAck{ReasonCode: packet.ConnRefusedIdentifier311})
	default:
		c.closeAfterFlush()
		return
	}
	c.b.stats.refused.Add(1)
	c.closeAfterFlush()
}

func (c *client) finish() {
	c.closeAfterFlush()
	c.outMu.Lock()
	done := c.writerDone // closing is set, so a writer closes done
	c.outMu.Unlock()
	t := time.NewTimer(5 * time.Second)
	select {
	case <-done:
		if c.halfClosed {
			c.drain()
		}
	case <-t.C:
	}
	t.Stop()
	c.conn.Close()
	c.endAuth()
	// Counters adds the live connections of b.conns to the listener totals:
	// moving this connection's counts over and leaving b.conns happen under
	// one lock so that it is counted exactly once.
	c.b.connMu.Lock()
	c.ls.open.Add(-1)
	c.ls.msgsIn.Add(c.stats.msgsIn.Load())
	c.ls.msgsOut.Add(c.stats.msgsOut.Load())
	c.ls.bytesIn.Add(c.stats.bytesIn.Load())
	c.ls.bytesOut.Add(c.stats.bytesOut.Load())
	c.ls.payloadIn.Add(c.stats.payloadIn.Load())
	c.ls.payloadOut.Add(c.stats.payloadOut.Load())
	c.ls.authzAllowed.Add(c.stats.authzAllowed.Load())
	delete(c.b.conns, c)
	c.b.connMu.Unlock()
}

// readLoop handles packets until the connection ends, then detaches, or
// until it parks, which it reports.
func (c *client) readLoop() (parked bool) {
	publishWill := true
	defer func() {
		if !parked {
			c.b.detach(c, publishWill)
		}
	}()
	// The loop's frame stays small (decoding and handling happen in callees
	// whose frames are popped again), so an idle connection's goroutine
	// blocks in Read on a stack the runtime can shrink to its minimum.
	for {
		h, body, err := c.r.Next(c.maxIn)
		if c.ending.Load() {
			return false // the server ended the connection; finish drains the rest
		}
		if err == packet.ErrIdle {
			if c.b.park.park(c) {
				return true
			}
			continue
		}
		if err != nil {
			c.readFailed(err)
			return false
		}
		stop, will, err := c.dispatch(h, body)
		if err != nil {
			c.failPacket(err)
			return false
		}
		if stop {
			publishWill = will
			c.closeAfterFlush()
			return false
		}
	}
}

// readFailed ends the connection after a read error, telling MQTT 5
// clients why when the reason is theirs.
//
//go:noinline
func (c *client) readFailed(err error) {
	switch {
	case errors.Is(err, packet.PacketTooLarge):
		c.protocolError(packet.PacketTooLarge, "packet exceeds the maximum packet size")
	case errors.Is(err, packet.MalformedPacket):
		c.protocolError(packet.MalformedPacket, err.Error())
	case isTimeout(err):
		c.protocolError(packet.KeepAliveTimeout, "keep alive timeout")
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	default:
		c.log.Debug("read failed", "client", c.id, "err", err)
	}
}

// dispatch handles one packet. stop reports a client DISCONNECT, with
// publishWill saying whether the will still goes out (reason 0x04).
//
//go:noinline
func (c *client) dispatch(h packet.FixedHeader, body []byte) (stop, publishWill bool, err error) {
	switch h.Type {
	case packet.PUBLISH:
		err = c.handlePublish(h.Flags, body)
	case packet.PUBACK, packet.PUBREC, packet.PUBREL, packet.PUBCOMP:
		err = c.handleAck(h, body)
	case packet.SUBSCRIBE:
		err = c.handleSubscribe(h.Flags, body)
	case packet.UNSUBSCRIBE:
		err = c.handleUnsubscribe(h.Flags, body)
	case packet.PINGREQ:
		// Decode checks the reserved flags as well as the empty body.
		if err = (&packet.PingReq{}).Decode(h.Flags, body, c.version); err == nil {
			c.writePacket(&packet.PingResp{})
		}
	case packet.DISCONNECT:
		stop, publishWill, err = c.handleDisconnect(h.Flags, body)
	case packet.AUTH:
		err = c.handleAuth(h.Flags, body)
	default:
		err = packet.Errorf(packet.ProtocolError, "unexpected %s from a client", h.Type)
	}
	return stop, publishWill, err
}

// failPacket ends the connection for a packet that broke the protocol,
// with the reason code the error carries.
//
//go:noinline
func (c *client) failPacket(perr error) {
	var pe *packet.Error
	code := packet.ProtocolError
	msg := perr.Error()
	if errors.As(perr, &pe) {
		code, msg = pe.Code, pe.Msg
	} else if rc, ok := perr.(packet.ReasonCode); ok {
		code = rc
	}
	c.protocolError(code, msg)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// protocolError ends the connection for a protocol violation: MQTT 5 clients
// get a DISCONNECT with the reason code first.
func (c *client) protocolError(code packet.ReasonCode, msg string) {
	c.log.Debug("closing connection", "client", c.id, "remote", c.conn.RemoteAddr().String(), "reason", code.String(), "detail", msg)
	c.b.stats.protocolErrors.Add(1)
	c.disconnect(code, msg)
}

// disconnect sends a server DISCONNECT (MQTT 5 only) and closes the
// connection once everything queued before it is written.
func (c *client) disconnect(code packet.ReasonCode, reason string) {
	c.outMu.Lock()
	if c.closing {
		c.outMu.Unlock()
		return
	}
	// DISCONNECT may only follow CONNACK; before it a connection just closes.
	// acked first: version is written during CONNECT by the reader, and is
	// only safe to read here (Stop's goroutine) once acked, set under
	// outMu after it, says CONNECT is done.
	if c.acked && c.version == packet.V5 {
		d := packet.Disconnect{ReasonCode: code}
		if reason != "" {
			d.Properties.ReasonString = reason
			d.Properties.Set(packet.PropReasonString)
		}
		c.appendLocked(&d)
	}
	c.outMu.Unlock()
	c.closeAfterFlush()
}

// closeAfterFlush stops accepting packets and closes the socket after the
// writer has written what was queued.
func (c *client) closeAfterFlush() {
	c.outMu.Lock()
	if c.closing {
		c.outMu.Unlock()
		return
	}
	// Stop the reader: it may be blocked in Read (a takeover, a shutdown;
	// see deadlineReader) or parked. Before closing is set, which lets the
	// writer close the socket: a parked socket must not be closed.
	c.ending.Store(true)
	c.b.park.unpark(c)
	c.closing = true
	if c.writerDone == nil {
		c.writerDone = make(chan struct{})
	}
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
	c.outMu.Unlock()
	if dc, ok := c.conn.(interface{ DeadlineEndsConn() bool }); !ok || !dc.DeadlineEndsConn() {
		_ = c.conn.SetReadDeadline(time.Now())
	}
	// Else (WebSocket) a read deadline that fires tears the connection down
	// at once, racing the DISCONNECT still being written; the reader stays
	// in Read until the writer's close ends it.
}

// closeNow closes the socket from outside the reader, which then sees
// the error and ends the connection.
func (c *client) closeNow() {
	c.dead.Store(true)
	c.b.park.unpark(c)
	c.conn.Close()
}

// writePacket encodes a control packet into the outbound buffer.
func (c *client) writePacket(p packet.Packet) {
	c.outMu.Lock()
	if !c.closing {
		c.appendLocked(p)
		c.kickLocked()
	}
	c.outMu.Unlock()
}

// appendLocked encodes a control packet into the outbound buffer. An MQTT 5
// packet that would exceed the client's Maximum Packet Size goes without
// its Reason String and User Properties, which the sender must leave out
// rather than exceed it ([MQTT-3.2.2-19] [MQTT-3.2.2-20] CONNACK,
// [MQTT-3.4.2-2] [MQTT-3.4.2-3] PUBACK and likewise the other
// acknowledgements, [MQTT-3.14.2-3] [MQTT-3.14.2-4] DISCONNECT,
// [MQTT-3.15.2-2] [MQTT-3.15.2-3] AUTH). c.outMu is held.
func (c *client) appendLocked(p packet.Packet) {
	if c.maxOut > 0 && c.version == packet.V5 && p.Size(c.version) > c.maxOut {
		if props := diagnosticProps(p); props != nil {
			props.Unset(packet.PropReasonString)
			props.User = nil
		}
	}
	c.out = p.Append(c.out, c.version)
}

// diagnosticProps returns the properties of a packet the server sends that
// may carry a Reason String and User Properties, nil for the others.
func diagnosticProps(p packet.Packet) *packet.Properties {
	switch p := p.(type) {
	case *packet.ConnAck:
		return &p.Properties
	case *packet.Ack:
		return &p.Properties
	case *packet.SubAck:
		return &p.Properties
	case *packet.UnsubAck:
		return &p.Properties
	case *packet.Disconnect:
		return &p.Properties
	case *packet.Auth:
		return &p.Properties
	}
	return nil
}

// kickLocked makes sure a writer is running. c.outMu is held.
func (c *client) kickLocked() {
	if !c.writing && !c.holdOut {
		c.writing = true
		go c.writeLoop()
	}
}

// writeLoop writes batches until there is nothing left, then exits; when
// the connection is closing it closes the socket after the last batch.
func (c *client) writeLoop() {
	for {
		c.outMu.Lock()
		if len(c.out) == 0 || c.holdOut && !c.closing {
			c.writing = false
			last := c.closing && !c.closed
			if last {
				c.closed = true
			}
			if cap(c.spare) > 64<<10 {
				c.spare = nil
			}
			c.outMu.Unlock()
			if last {
				c.endWrites()
				close(c.writerDone)
			}
			return
		}
		buf := c.out
		c.out, c.spare = c.spare[:0], nil
		closing := c.closing
		c.outMu.Unlock()
		if closing {
			_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		}
		n, err := c.conn.Write(buf)
		c.stats.bytesOut.Add(uint64(n))
		c.outMu.Lock()
		c.spare = buf[:0]
		if err != nil {
			c.out = c.out[:0]
			c.closing = true
			if c.writerDone == nil {
				c.writerDone = make(chan struct{})
			}
		}
		c.outMu.Unlock()
		if err != nil {
			c.closeNow()
		}
	}
}

// endWrites ends the connection's output after the last packet: a
// half-close when the socket has one and the client was sent anything (its
// input is then drained by finish, see drainTimeout), else a close. A
// WebSocket connection has no half-close of its own; its Close is the
// close handshake, which reads and discards until the peer's close frame.
func (c *client) endWrites() {
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	hc, ok := c.conn.(interface{ CloseWrite() error })
	if ok && c.stats.bytesOut.Load() > 0 {
		if c.b.draining.Add(1) <= maxDraining && hc.CloseWrite() == nil {
			// TLS's CloseWrite sends close_notify but leaves the socket
			// open; the FIN under it tells a client reading TLS records
			// as promptly.
			if nc, ok := c.conn.(interface{ NetConn() net.Conn }); ok {
				if tcw, ok := nc.NetConn().(interface{ CloseWrite() error }); ok {
					_ = tcw.CloseWrite()
				}
			}
			c.halfClosed = true
			return
		}
		c.b.draining.Add(-1)
	}
	c.conn.Close()
}

// drain reads and discards what the client still sends until it closes its
// side or drainTimeout passes (see drainTimeout). It runs on the
// connection's goroutine after the reader stopped, so Broker.Stop waits for
// it; Stop's deadline closes the socket, which ends it early.
func (c *client) drain() {
	defer c.b.draining.Add(-1)
	end := time.Now().Add(drainTimeout)
	for {
		_ = c.conn.SetReadDeadline(end)
		_, err := io.Copy(io.Discard, c.conn)
		// An earlier deadline set meanwhile ends the copy before drain's
		// own: closeAfterFlush, run by Stop's goroutine, stops the reader
		// with a deadline of now, and may get to it only after the reader
		// (which saw ending between two packets) started draining. Closing
		// then, with the client's data still arriving, reset the
		// connection under a client that had not read the DISCONNECT yet.
		if !isTimeout(err) || !time.Now().Before(end) {
			return
		}
	}
}

// writePublish encodes a delivery into the outbound buffer with packet ID
// id (0 for QoS 0). It reports false if the packet was dropped because it is
// larger than the client accepts or, for QoS 0, because the connection's
// outbound buffer is full (a slow consumer).
func (c *client) writePublish(d *delivery, id uint16, dup bool, now int64) bool {
	m := d.msg
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.closing {
		return d.qos > 0 // stays inflight for redelivery on reconnect
	}
	if d.qos == 0 && len(c.out) >= c.b.o().MaxOutboundBytes {
		c.b.stats.drop(dropSlowConsumer, 0)
		return false
	}
	origin := c.trusted && m.Origin != "" && c.version == packet.V5
	simple := c.version != packet.V5 || (len(d.subIDs) == 0 && m.Expiry == 0 && c.aliasMaxOut == 0 && !origin)
	if simple && d.single && !m.cached(c.version, d.qos) {
		pub := packet.Publish{Dup: dup, QoS: d.qos, Retain: d.retain, Topic: m.Topic, PacketID: id, Payload: m.Payload}
		if m.Props != nil && c.version == packet.V5 {
			pub.Properties = *m.Props
		}
		if c.maxOut > 0 && pub.Size(c.version) > c.maxOut {
			c.b.stats.drop(dropTooLarge, d.qos)
			return false
		}
		c.out = pub.Append(c.out, c.version)
	} else if simple {
		enc := m.cachedEncoding(c.version, d.qos)
		if c.maxOut > 0 && len(enc) > c.maxOut {
			c.b.stats.drop(dropTooLarge, d.qos)
			return false
		}
		start := len(c.out)
		c.out = append(c.out, enc...)
		flags := byte(packet.PUBLISH)<<4 | d.qos<<1
		if dup {
			flags |= 0x08
		}
		if d.retain {
			flags |= 0x01
		}
		c.out[start] = flags
		if d.qos > 0 {
			// The packet ID follows the fixed header and the topic.
			at := packetIDOffset(enc, m)
			c.out[start+at] = byte(id >> 8)
			c.out[start+at+1] = byte(id)
		}
	} else {
		pub := packet.Publish{Dup: dup, QoS: d.qos, Retain: d.retain, Topic: m.Topic, PacketID: id, Payload: m.Payload}
		if m.Props != nil {
			pub.Properties = *m.Props
		}
		if m.Expiry != 0 {
			pub.Properties.MessageExpiry = m.remainingExpiry(now)
			pub.Properties.Set(packet.PropMessageExpiry)
		}
		pub.Properties.SubscriptionIDs = d.subIDs
		if origin {
			user := make([]packet.UserProperty, 0, len(pub.Properties.User)+1)
			pub.Properties.User = append(append(user, pub.Properties.User...), packet.UserProperty{Key: OriginProperty, Value: m.Origin})
		}
		newAlias := false
		if c.aliasMaxOut > 0 {
			newAlias = c.applyAliasLocked(&pub)
		}
		if c.maxOut > 0 && pub.Size(c.version) > c.maxOut {
			c.b.stats.drop(dropTooLarge, d.qos)
			return false
		}
		if newAlias {
			// Only a mapping that reaches the client may be used later.
			c.aliasesOut[pub.Topic] = pub.Properties.TopicAlias
		}
		c.out = pub.Append(c.out, c.version)
	}
	c.stats.msgsOut.Add(1)
	c.stats.payloadOut.Add(uint64(len(m.Payload)))
	c.kickLocked()
	return true
}

// packetIDOffset finds the packet ID in a cached encoding: it sits
// after the fixed header and the topic, before the properties.
func packetIDOffset(enc []byte, m *Message) int {
	i := 1
	for enc[i]&0x80 != 0 {
		i++
	}
	return i + 1 + 2 + len(m.Topic)
}

// applyAliasLocked replaces the topic with an alias the client allowed:
// a known topic goes as an empty topic plus alias, a new one gets the next
// free alias while any is left. It reports a new alias, which the caller
// records in aliasesOut once the packet is sure to be sent. c.outMu is held.
func (c *client) applyAliasLocked(pub *packet.Publish) bool {
	if a, ok := c.aliasesOut[pub.Topic]; ok {
		pub.Properties.TopicAlias = a
		pub.Properties.Set(packet.PropTopicAlias)
		pub.Topic = ""
		return false
	}
	if len(c.aliasesOut) >= int(c.aliasMaxOut) {
		return false
	}
	if c.aliasesOut == nil {
		c.aliasesOut = make(map[string]uint16)
	}
	pub.Properties.TopicAlias = uint16(len(c.aliasesOut) + 1)
	pub.Properties.Set(packet.PropTopicAlias)
	return true
}

// inbound is a received PUBLISH and the Message routed from it, in one
// allocation: the message keeps the decoded properties (messageProps), so
// both live as long as the message does.
type inbound struct {
	pub packet.Publish
	msg Message
}

// handlePublish routes an inbound PUBLISH and acknowledges it.
func (c *client) handlePublish(flags byte, body []byte) error {
	// The message outlives the read buffer: one copy of the packet body
	// is shared by every subscriber.
	owned := make([]byte, len(body))
	copy(owned, body)
	in := new(inbound)
	p := &in.pub
	if err := p.Decode(flags, owned, c.version); err != nil {
		return err
	}
	c.stats.msgsIn.Add(1)
	name := p.Topic
	if c.version == packet.V5 {
		if p.Properties.Has(packet.PropTopicAlias) {
			a := p.Properties.TopicAlias
			if a == 0 || int(a) > c.aliasMax() {
				return packet.Errorf(packet.TopicAliasInvalid, "topic alias %d out of range", a)
			}
			if name == "" {
				name = c.aliasesIn[a]
				if name == "" {
					return packet.Errorf(packet.ProtocolError, "topic alias %d is not set", a)
				}
			} else {
				if c.aliasesIn == nil {
					c.aliasesIn = make(map[uint16]string)
				}
				c.aliasesIn[a] = strings.Clone(name)
			}
		}
		if p.Properties.Has(packet.PropSubscriptionID) {
			return packet.Errorf(packet.ProtocolError, "PUBLISH from a client carries a subscription identifier")
		}
	}
	if name == "" {
		return packet.Errorf(packet.ProtocolError, "empty topic name")
	}
	if err := c.b.limits().CheckName(name); err != nil || strings.HasPrefix(name, "$") && !c.trusted {
		// Topics beginning with $ are the broker's ($SYS, $edgeport): only
		// Edgeport's own internal clients may publish there.
		if p.QoS > 0 {
			c.ackPublish(p.QoS, p.PacketID, packet.TopicNameInvalid, "topic name not allowed")
		}
		c.b.stats.drop(dropInvalidTopic, p.QoS)
		return nil
	}
	if !c.allowPublish(name) {
		c.refusePublish(p)
		return nil
	}
	if (p.QoS > 0 || p.Retain && len(p.Payload) > 0) && c.b.st != nil && c.b.st.Full() {
		// Refused before routing, so a refused message reaches nobody and
		// the client's retry is not a duplicate. A QoS 0 message that
		// needs no disk (not retained: QoS 0 is never queued) still
		// reaches the subscribers online; a retained one would be
		// written, and is dropped (clearing one frees space: it goes on).
		c.b.stats.dropped[dropQuota].Add(1)
		if p.QoS == 0 {
			return nil
		}
		if c.version != packet.V5 {
			return packet.Errorf(packet.QuotaExceeded, "store full: 3.1.1 cannot refuse a PUBLISH, closing")
		}
		c.ackAfter(c.b.newTxn(), p.QoS, p.PacketID, packet.QuotaExceeded)
		return nil
	}
	if err := c.checkPaused(); err != nil {
		c.pausedPublish(p, err)
		return nil
	}
	s := c.sess
	tx := c.b.newTxn()
	var ph *phased // handled in two phases (phased.go)
	if p.QoS == 2 {
		s.mu.Lock()
		if s.ended && c.b.remote != nil {
			// Handed over to another node while this connection was
			// closing: its identifier would not reach the new owner, and
			// the client resends it there, where it is routed once.
			s.mu.Unlock()
			tx.discard()
			return nil
		}
		_, dup := s.awaitingRel[p.PacketID]
		replace := false
		if old := s.phased[p.PacketID]; dup && old != nil {
			switch old.resent(c, p.Dup) {
			case resendWait:
				s.mu.Unlock()
				tx.discard()
				return nil
			case resendRedo:
				s.mu.Unlock()
				c.redoPhased(s, p.PacketID, old, tx)
				return nil
			case resendFresh:
				delete(s.phased, p.PacketID)
				dup, replace = false, true
			}
		}
		if !dup && !replace && len(s.awaitingRel) >= c.recvMaxIn {
			s.mu.Unlock()
			return packet.Errorf(packet.ReceiveMaximumExceeded, "more than %d QoS 2 publishes unacknowledged", c.recvMaxIn)
		}
		if !dup {
			if s.awaitingRel == nil {
				s.awaitingRel = make(map[uint16]struct{})
			}
			s.awaitingRel[p.PacketID] = struct{}{}
			switch {
			case tx != nil && c.b.twoPhase(s):
				ph = &phased{id: newMessageID(), state: phaseRunning}
				if s.phased == nil {
					s.phased = make(map[uint16]*phased)
				}
				s.phased[p.PacketID] = ph
			case tx != nil && s.persistent(c.b):
				tx.write(func(t Txn) { t.PutInbound(s.id, p.PacketID) }, nil)
			}
		}
		s.mu.Unlock()
		if dup {
			// A resent QoS 2 PUBLISH was already routed: exactly once.
			c.ackAfter(tx, 2, p.PacketID, packet.Success)
			return nil
		}
	}
	m := &in.msg
	m.Topic, m.Payload, m.QoS, m.Retain, m.Origin = name, p.Payload, p.QoS, p.Retain, c.id
	if c.version == packet.V5 {
		c.messageProps(m, &p.Properties)
	}
	c.b.stats.publishesIn.Add(1)
	c.b.stats.payloadIn.Add(uint64(len(m.Payload)))
	c.stats.payloadIn.Add(uint64(len(m.Payload)))
	if ph != nil {
		m.RoutedID, ph.msg = ph.id, m
		c.publishPhased(s, p.PacketID, ph, tx)
		return nil
	}
	if m.Retain {
		c.b.setRetained(m, tx)
	}
	n, forwarded := c.b.publishRoute(m, tx)
	if p.QoS == 0 {
		c.b.commit(tx, nil)
		return nil
	}
	code := packet.Success
	// Forwarded, it may match another node's subscribers: this node
	// cannot tell, so it does not claim there were none.
	if n == 0 && !forwarded && c.version == packet.V5 {
		code = packet.NoMatchingSubscribers
	}
	c.ackAfter(tx, p.QoS, p.PacketID, code)
	return nil
}

// ackAfter acknowledges a QoS 1/2 PUBLISH once tx is durable. Acks leave in
// the order the PUBLISHes arrived (MQTT-4.6.0-2): while any ack waits for
// the store, later ones queue behind it in the committer.
func (c *client) ackAfter(tx *txnCtx, qos byte, id uint16, code packet.ReasonCode) {
	if tx == nil || tx.empty() && c.pendingAcks.Load() == 0 {
		c.b.commit(tx, nil) // discards it
		c.ackPublish(qos, id, code, "")
		return
	}
	c.pendingAcks.Add(1)
	tx.orderBy(c.id)
	c.b.commit(tx, func(err error) {
		// Decrement only after writing, so the reader never sees zero
		// while an earlier ack is still unwritten.
		defer c.pendingAcks.Add(-1)
		if err == nil {
			c.ackPublish(qos, id, code, "")
			return
		}
		if qos == 2 {
			s := c.sess
			c.b.goBackground(func() { // the exchange ended; the callback must not take s.mu
				s.mu.Lock()
				delete(s.awaitingRel, id)
				s.mu.Unlock()
			})
		}
		c.refuseStored(qos, id, err)
	})
}

// writeFlight writes an inflight delivery whose store entry just became
// durable. It runs on the store's committer and takes only c.outMu.
func (c *client) writeFlight(f *flight, now int64) {
	if f.refused() {
		return // the publisher got 0x97; resume drops the flight
	}
	c.writePublish(&f.delivery, f.id, false, now)
}

// messageProps makes in the message's properties, in place, those that
// travel with it (payload format, content type, response topic,
// correlation data, user properties but the broker's own), and turns the
// expiry interval into a deadline. The decoded PUBLISH is the message's
// for good, so its properties need no copy: one allocation less per
// message, and none for the filtered user properties.
func (c *client) messageProps(m *Message, in *packet.Properties) {
	if in.Has(packet.PropMessageExpiry) {
		exp := time.Duration(in.MessageExpiry) * time.Second
		if mx := c.b.o().MaxMessageExpiry; mx > 0 && exp > mx {
			exp = mx
		}
		m.Expiry = c.b.clk.Now().Add(exp).UnixNano()
	}
	// Per delivery, never forwarded as received: the expiry left is
	// computed at each delivery, an alias is the sender's.
	// A will's delay is the session's business, not the message's.
	in.Unset(packet.PropMessageExpiry)
	in.Unset(packet.PropTopicAlias)
	in.Unset(packet.PropWillDelay)
	in.MessageExpiry, in.TopicAlias, in.WillDelay = 0, 0, 0
	if len(in.User) > 0 {
		kept := in.User[:0]
		for _, u := range in.User {
			if u.Key == OriginProperty && !c.trusted {
				continue // only the broker vouches for an origin
			}
			if u.Key == DeliverToProperty {
				if c.trusted {
					m.DeliverTo = u.Value
				}
				continue
			}
			kept = append(kept, u)
		}
		clear(in.User[len(kept):])
		in.User = kept
		if len(kept) == 0 {
			in.User = nil
		}
	}
	if !in.Empty() {
		m.Props = in
	}
}

func (c *client) aliasMax() int { return c.aliasMaxIn }

func (c *client) ackPublish(qos byte, id uint16, code packet.ReasonCode, reason string) {
	t := packet.PUBACK
	if qos == 2 {
		t = packet.PUBREC
	}
	if reason != "" {
		c.refuseAck(t, id, code, reason)
		return
	}
	a := packet.Ack{Type: t, PacketID: id, ReasonCode: code}
	// Without properties (every acknowledgement but a refusal's), encoded
	// here rather than through writePacket, whose interface argument
	// would move the Ack to the heap: one allocation less per
	// acknowledged PUBLISH.
	c.outMu.Lock()
	if !c.closing {
		c.out = a.Append(c.out, c.version)
		c.kickLocked()
	}
	c.outMu.Unlock()
}

// refuseAck writes an acknowledgement with a reason string, fitted to the
// client's Maximum Packet Size (writePacket).
func (c *client) refuseAck(t packet.Type, id uint16, code packet.ReasonCode, reason string) {
	a := &packet.Ack{Type: t, PacketID: id, ReasonCode: code}
	c.setReason(&a.Properties, reason)
	c.writePacket(a)
}

// setReason adds a reason string when the client asked for problem information.
func (c *client) setReason(p *packet.Properties, reason string) {
	if reason != "" && c.problemInfo && c.version == packet.V5 {
		p.ReasonString = reason
		p.Set(packet.PropReasonString)
	}
}

// handleAck advances the QoS state machines on PUBACK, PUBREC, PUBREL and PUBCOMP.
func (c *client) handleAck(h packet.FixedHeader, body []byte) error {
	a := new(packet.Ack)
	if err := a.Decode(h.Type, h.Flags, body, c.version); err != nil {
		return err
	}
	s := c.sess
	now := c.b.clk.Now().UnixNano()
	// Deletions of acknowledged entries and the transactions of deliveries
	// sent from the queue are queued under s.mu; they go to the store once
	// it is released.
	defer c.b.flush()
	switch h.Type {
	case packet.PUBREL:
		s.mu.Lock()
		_, ok := s.awaitingRel[a.PacketID]
		delete(s.awaitingRel, a.PacketID)
		delete(s.phased, a.PacketID)
		persist := ok && s.persistent(c.b)
		s.mu.Unlock()
		comp := &packet.Ack{Type: packet.PUBCOMP, PacketID: a.PacketID}
		if !ok && c.version == packet.V5 {
			comp.ReasonCode = packet.PacketIdentifierNotFound
		}
		tx := c.b.newTxn()
		if !persist || tx == nil {
			tx.discard()
			c.writePacket(comp)
			return nil
		}
		// The identifier must be forgotten durably before PUBCOMP lets the
		// client reuse it, or a restart would drop its next message as a
		// duplicate.
		tx.write(func(t Txn) { t.DeleteInbound(s.id, a.PacketID) }, nil)
		c.pendingAcks.Add(1)
		tx.orderBy(c.id) // after the PUBRECs still waiting
		c.b.commit(tx, func(error) {
			c.writePacket(comp)
			c.pendingAcks.Add(-1)
		})
		return nil
	case packet.PUBACK:
		s.mu.Lock()
		if f := s.inflight[a.PacketID]; f != nil && f.qos == 1 {
			s.removeFlight(f)
			c.b.dropEntry(s, &f.delivery)
			s.drainLocked(c.b, now)
		}
		s.mu.Unlock()
	case packet.PUBREC:
		s.mu.Lock()
		f := s.inflight[a.PacketID]
		if f != nil && f.qos == 2 && f.held {
			// Received on an earlier connection, acknowledged before it
			// was resent on this one: the exchange goes on from here.
			f.held = false
			s.held--
		}
		switch {
		case f == nil || f.qos != 2:
			s.mu.Unlock()
			code := packet.Success
			if c.version == packet.V5 {
				code = packet.PacketIdentifierNotFound
			}
			c.writePacket(&packet.Ack{Type: packet.PUBREL, PacketID: a.PacketID, ReasonCode: code})
			return nil
		case a.ReasonCode.IsError():
			s.removeFlight(f)
			c.b.dropEntry(s, &f.delivery)
			s.drainLocked(c.b, now)
		case f.released:
			c.writePacket(&packet.Ack{Type: packet.PUBREL, PacketID: a.PacketID})
		default:
			f.released = true
			rel := &packet.Ack{Type: packet.PUBREL, PacketID: a.PacketID}
			tx := c.b.newTxn()
			if f.seq == 0 || tx == nil {
				tx.discard()
				c.writePacket(rel)
				break
			}
			// PUBREL only once the released state is durable: a restart
			// then resends PUBREL, never the PUBLISH, so it is not
			// delivered twice.
			tx.write(func(t Txn) { s.putEntry(t, &f.delivery, f.id, true) }, func() { c.writePacket(rel) })
			c.b.submit(tx, nil)
		}
		s.mu.Unlock()
	case packet.PUBCOMP:
		s.mu.Lock()
		if f := s.inflight[a.PacketID]; f != nil && f.qos == 2 && f.released {
			s.removeFlight(f)
			c.b.dropEntry(s, &f.delivery)
			s.drainLocked(c.b, now)
		}
		s.mu.Unlock()
	}
	return nil
}

// handleSubscribe adds subscriptions, answers SUBACK and sends retained messages.
func (c *client) handleSubscribe(flags byte, body []byte) error {
	sp := new(packet.Subscribe)
	if err := sp.Decode(flags, body, c.version); err != nil {
		return err
	}
	var subID uint32
	if len(sp.Properties.SubscriptionIDs) > 0 {
		subID = sp.Properties.SubscriptionIDs[0]
	}
	ack := packet.SubAck{PacketID: sp.PacketID, ReasonCodes: make([]packet.ReasonCode, len(sp.Subscriptions))}
	type retainedReq struct {
		sub *subscription
	}
	var retained []retainedReq
	s := c.sess
	for i := range sp.Subscriptions {
		in := &sp.Subscriptions[i]
		group, inner, shared, err := topic.ParseShared(in.Filter)
		if err == nil {
			err = topic.ValidFilter(inner)
		}
		if err == nil {
			err = c.b.limits().CheckFilter(inner)
		}
		if err != nil {
			ack.ReasonCodes[i] = c.subFailure(packet.TopicFilterInvalid)
			continue
		}
		if shared && in.NoLocal {
			return packet.Errorf(packet.ProtocolError, "No Local on shared subscription %q", in.Filter)
		}
		if !c.allowSubscribe(inner) {
			ack.ReasonCodes[i] = c.subFailure(packet.NotAuthorized)
			continue
		}
		sub := &subscription{
			filter: strings.Clone(in.Filter), qos: in.QoS, noLocal: in.NoLocal,
			retainAsPublished: in.RetainAsPublished, retainHandling: in.RetainHandling,
			id: subID, group: strings.Clone(group), inner: strings.Clone(inner),
		}
		s.mu.Lock()
		old, existed := s.subs[sub.filter]
		if !existed && c.b.o().MaxSubscriptionsPerClient > 0 && len(s.subs) >= c.b.o().MaxSubscriptionsPerClient {
			s.mu.Unlock()
			ack.ReasonCodes[i] = c.subFailure(packet.QuotaExceeded)
			continue
		}
		if s.subs == nil {
			s.subs = make(map[string]*subscription)
		}
		s.subs[sub.filter] = sub
		_ = old
		c.b.subscribe(s, sub)
		s.mu.Unlock()
		if !existed {
			s.count(&c.b.stats.subscriptions, 1)
		}
		ack.ReasonCodes[i] = packet.ReasonCode(in.QoS)
		if !shared && (in.RetainHandling == 0 || in.RetainHandling == 1 && !existed) {
			retained = append(retained, retainedReq{sub})
		}
	}
	if err := c.saveSessionWait(); err != nil {
		for i := range ack.ReasonCodes {
			if !ack.ReasonCodes[i].IsError() {
				ack.ReasonCodes[i] = c.subFailure(packet.ImplementationSpecificError)
			}
		}
		retained = nil
	}
	// The retained messages a subscription gets are those of the moment of
	// its SUBACK: one that changes after it reaches the subscription as
	// any publication does, and is not sent again as retained. (In
	// cluster mode syncRetained asks JetStream, which takes long enough
	// for a publisher that saw the SUBACK to change the index meanwhile.)
	var atAck map[string]*Message
	if len(retained) > 0 {
		c.b.syncRetained()
		atAck = make(map[string]*Message)
		for _, rq := range retained {
			c.b.retained.Match(rq.sub.inner, func(name string, m *Message) bool {
				atAck[name] = m
				return true
			})
		}
	}
	c.writePacket(&ack)
	now := c.b.clk.Now().UnixNano()
	for _, rq := range retained {
		sub := rq.sub
		c.b.retained.Match(sub.inner, func(name string, m *Message) bool {
			if m.expired(now) || atAck[name] != m {
				return true
			}
			d := delivery{msg: m, qos: min(m.QoS, sub.qos), retain: true}
			if sub.id != 0 {
				d.subIDs = []uint32{sub.id}
			}
			tx := c.b.newTxn()
			s.deliver(c.b, &d, now, tx)
			c.b.submit(tx, nil) // under the retained index's read lock
			return true
		})
		c.b.flush()
	}
	return nil
}

// subFailure picks the SUBACK failure code the client's version can express.
func (c *client) subFailure(code packet.ReasonCode) packet.ReasonCode {
	if c.version == packet.V5 {
		return code
	}
	return packet.UnspecifiedError // 0x80, the only 3.1.1 failure code
}

func (c *client) handleUnsubscribe(flags byte, body []byte) error {
	up := new(packet.Unsubscribe)
	if err := up.Decode(flags, body, c.version); err != nil {
		return err
	}
	ack := packet.UnsubAck{PacketID: up.PacketID, ReasonCodes: make([]packet.ReasonCode, len(up.Filters))}
	s := c.sess
	for i, f := range up.Filters {
		s.mu.Lock()
		sub, ok := s.subs[f]
		if ok {
			delete(s.subs, f)
			c.b.unsubscribe(s, sub)
		}
		s.mu.Unlock()
		if ok {
			s.count(&c.b.stats.subscriptions, -1)
		} else {
			ack.ReasonCodes[i] = packet.NoSubscriptionExisted
		}
	}
	_ = c.saveSessionWait() // an unsubscribe that is not stored only redelivers
	c.writePacket(&ack)
	return nil
}

// saveSessionWait writes the session record (after a subscription change)
// and waits until it is durable.
func (c *client) saveSessionWait() error {
	s := c.sess
	s.mu.Lock()
	tx := c.b.saveSessionLocked(s, 0)
	s.mu.Unlock()
	if tx == nil {
		return nil
	}
	done := make(chan error, 1)
	c.b.commit(tx, func(err error) { done <- err })
	return <-done
}

// handleDisconnect processes a client DISCONNECT; it reports whether to stop
// and whether the will is still to be published (reason 0x04).
func (c *client) handleDisconnect(flags byte, body []byte) (stop, publishWill bool, err error) {
	var d packet.Disconnect
	if err := d.Decode(flags, body, c.version); err != nil {
		return false, true, err
	}
	if c.version == packet.V5 && d.Properties.Has(packet.PropSessionExpiry) {
		s := c.sess
		s.mu.Lock()
		if s.expiry == 0 && d.Properties.SessionExpiry != 0 {
			s.mu.Unlock()
			return false, true, packet.Errorf(packet.ProtocolError, "session expiry set on DISCONNECT after CONNECT set 0")
		}
		s.expiry = c.capExpiry(d.Properties.SessionExpiry)
		s.mu.Unlock()
	}
	return true, d.ReasonCode == packet.DisconnectWithWill, nil
}

func (c *client) capExpiry(secs uint32) time.Duration {
	e := time.Duration(secs) * time.Second
	if secs == 0xFFFFFFFF {
		e = expiryNever
	}
	if e > c.b.o().MaxSessionExpiry {
		e = c.b.o().MaxSessionExpiry
	}
	return e
}
