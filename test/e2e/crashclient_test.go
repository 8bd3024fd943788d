package e2e

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// The crash test's clients speak MQTT 5 on Edgeport's own codec: the test
// must know exactly which packet carried which acknowledgement, keep QoS 2
// receiver state across connections and resend with original packet
// identifiers, which third-party clients do not expose.

// crashConn is one connection: writes are serialised, and a reader
// goroutine hands every packet to a handler until the connection ends.
type crashConn struct {
	conn net.Conn
	wmu  sync.Mutex
	wbuf []byte
	done chan struct{} // closed when the reader has ended
	// pong is when the last PINGRESP arrived (Unix nanoseconds; the
	// CONNACK's time until one does): a roaming client's keepalive.
	pong atomic.Int64
}

// dialCrash connects with cp; handle runs on the reader goroutine, which
// stops when it returns an error.
func dialCrash(addr string, cp *packet.Connect, handle func(*crashConn, packet.FixedHeader, []byte) error) (*crashConn, *packet.ConnAck, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	cp.Version = packet.V5
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(cp.Append(nil, packet.V5)); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("CONNECT: %w", err)
	}
	r := packet.NewReader(conn, 4096)
	h, body, err := r.Next(0)
	if err != nil || h.Type != packet.CONNACK {
		conn.Close()
		return nil, nil, fmt.Errorf("waiting for CONNACK: got %v: %v", h.Type, err)
	}
	ack := new(packet.ConnAck)
	if err := ack.Decode(h.Flags, body, packet.V5); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("CONNACK: %w", err)
	}
	if ack.ReasonCode != packet.Success {
		conn.Close()
		return nil, ack, fmt.Errorf("CONNACK %s", ack.ReasonCode)
	}
	_ = conn.SetDeadline(time.Time{})
	c := &crashConn{conn: conn, done: make(chan struct{})}
	c.pong.Store(time.Now().UnixNano())
	go func() {
		defer close(c.done)
		defer conn.Close()
		for {
			h, body, err := r.Next(0)
			if err != nil {
				return
			}
			if h.Type == packet.PINGRESP {
				c.pong.Store(time.Now().UnixNano())
			}
			if err := handle(c, h, body); err != nil {
				return
			}
		}
	}()
	return c, ack, nil
}

func (c *crashConn) send(p packet.Packet) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = p.Append(c.wbuf[:0], packet.V5)
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.conn.Write(c.wbuf)
	return err
}

// close ends the connection (after a DISCONNECT when polite) and waits for
// the reader.
func (c *crashConn) close(polite bool) {
	if polite {
		_ = c.send(&packet.Disconnect{})
		select {
		case <-c.done: // the broker closes after DISCONNECT
		case <-time.After(5 * time.Second):
		}
	}
	c.conn.Close()
	<-c.done
}

func persistentConnect(id string, clean bool) *packet.Connect {
	cp := &packet.Connect{ClientID: id, CleanStart: clean, KeepAlive: 60}
	cp.Properties.SessionExpiry = 3600
	cp.Properties.Set(packet.PropSessionExpiry)
	return cp
}

// Message states in a publisher's log.
const (
	msgSent     = iota // PUBLISH written, not acknowledged
	msgAcked           // PUBACK (QoS 1) or PUBREC (QoS 2) received: the broker vouches for it
	msgComplete        // QoS 2: PUBCOMP received too
	// msgRefused: PUBACK (QoS 1) or PUBREC (QoS 2) with an error reason
	// code (a cluster node without a quorum): the broker does not vouch
	// for it, and the exchange is over. Only a refusable publisher
	// accepts it.
	msgRefused
)

// crashPub publishes numbered messages ("name:seq") with a window of
// unacknowledged ones, in a persistent session, and logs each message's fate.
type crashPub struct {
	name     string
	qos      byte
	retained bool // publishes retained messages on crashRetainedTopics topics
	window   int
	// roaming: a lost connection is replaced (by a roamer) rather than
	// ending run, and error reason codes are refusals, not violations.
	roaming bool

	mu       sync.Mutex
	cond     *sync.Cond     // signalled when the log or the connection changes
	conn     *crashConn     // nil while disconnected
	state    []byte         // by seq: msgSent, msgAcked, msgComplete, msgRefused
	ackAt    []time.Time    // by seq: when the PUBACK or PUBREC arrived (zero: none)
	endAt    []time.Time    // by seq: when it was acknowledged or refused (zero: neither yet)
	inflight map[uint16]int // packet ID → seq, until PUBACK or PUBCOMP
	nextID   uint16
	stop     bool
	err      error // protocol violation seen by the reader
	// lastAcked and lastSent are by retained topic index, -1 = none.
	lastAcked, lastSent []int
}

const crashRetainedTopics = 8

func newCrashPub(name string, qos byte, retained bool) *crashPub {
	p := &crashPub{name: name, qos: qos, retained: retained, window: 32, inflight: make(map[uint16]int)}
	p.cond = sync.NewCond(&p.mu)
	p.lastAcked = slices.Repeat([]int{-1}, crashRetainedTopics)
	p.lastSent = slices.Repeat([]int{-1}, crashRetainedTopics)
	return p
}

func (p *crashPub) topic(seq int) string {
	if p.retained {
		return "crash/ret/" + strconv.Itoa(seq%crashRetainedTopics)
	}
	return "crash/q" + strconv.Itoa(int(p.qos))
}

func (p *crashPub) payload(seq int) []byte { return []byte(p.name + ":" + strconv.Itoa(seq)) }

// connect opens the publisher's session (clean the first time) and resends
// whatever is unacknowledged with its original packet identifier: PUBLISH
// with DUP, or PUBREL once PUBREC arrived. It reports SessionPresent.
func (p *crashPub) connect(addr string, first bool) (bool, error) {
	c, ack, err := dialCrash(addr, persistentConnect(p.name, first), p.handle)
	if err != nil {
		return false, fmt.Errorf("%s: %w", p.name, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conn = c
	if !p.roaming {
		p.stop = false // run again after halt
	}
	p.cond.Broadcast()
	ids := make([]uint16, 0, len(p.inflight))
	for id := range p.inflight {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uint16) int { return p.inflight[a] - p.inflight[b] })
	for _, id := range ids {
		seq := p.inflight[id]
		var err error
		if p.state[seq] == msgAcked {
			err = c.send(&packet.Ack{Type: packet.PUBREL, PacketID: id})
		} else {
			err = c.send(&packet.Publish{Dup: true, QoS: p.qos, Retain: p.retained, Topic: p.topic(seq), PacketID: id, Payload: p.payload(seq)})
		}
		if err != nil {
			return ack.SessionPresent, fmt.Errorf("%s: resending: %w", p.name, err)
		}
	}
	return ack.SessionPresent, nil
}

func (p *crashPub) handle(c *crashConn, h packet.FixedHeader, body []byte) error {
	var a packet.Ack
	switch h.Type {
	case packet.PUBACK, packet.PUBREC, packet.PUBCOMP:
		if err := a.Decode(h.Type, h.Flags, body, packet.V5); err != nil {
			return p.fail(fmt.Errorf("%s: %s: %w", p.name, h.Type, err))
		}
	case packet.DISCONNECT, packet.PINGRESP:
		return nil
	default:
		return p.fail(fmt.Errorf("%s: unexpected %s", p.name, h.Type))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.cond.Broadcast()
	seq, ok := p.inflight[a.PacketID]
	if !ok {
		// A PUBREL resent for a message whose PUBCOMP was lost in the
		// crash: the broker has forgotten the identifier.
		if h.Type == packet.PUBCOMP && a.ReasonCode == packet.PacketIdentifierNotFound {
			return nil
		}
		return p.failLocked(fmt.Errorf("%s: %s for unknown packet ID %d", p.name, h.Type, a.PacketID))
	}
	if p.roaming && a.ReasonCode.IsError() && p.state[seq] == msgSent &&
		(h.Type == packet.PUBACK && p.qos == 1 || h.Type == packet.PUBREC && p.qos == 2) {
		p.state[seq] = msgRefused
		p.endAt[seq] = time.Now()
		delete(p.inflight, a.PacketID)
		return nil
	}
	if a.ReasonCode.IsError() && !(h.Type == packet.PUBCOMP && a.ReasonCode == packet.PacketIdentifierNotFound) {
		return p.failLocked(fmt.Errorf("%s: %s %d (seq %d) reason %s", p.name, h.Type, a.PacketID, seq, a.ReasonCode))
	}
	switch {
	case h.Type == packet.PUBACK && p.qos == 1:
		p.ackedLocked(seq)
		p.state[seq] = msgComplete
		delete(p.inflight, a.PacketID)
	case h.Type == packet.PUBREC && p.qos == 2:
		p.ackedLocked(seq)
		if err := c.send(&packet.Ack{Type: packet.PUBREL, PacketID: a.PacketID}); err != nil {
			return err
		}
	case h.Type == packet.PUBCOMP && p.qos == 2 && p.state[seq] == msgAcked:
		// 0x92 here: the broker completed the exchange before the crash
		// and lost only the PUBCOMP.
		p.state[seq] = msgComplete
		delete(p.inflight, a.PacketID)
	default:
		return p.failLocked(fmt.Errorf("%s: %s for packet ID %d in state %d", p.name, h.Type, a.PacketID, p.state[seq]))
	}
	return nil
}

func (p *crashPub) ackedLocked(seq int) {
	if p.state[seq] == msgSent {
		p.state[seq] = msgAcked
		p.ackAt[seq] = time.Now()
		p.endAt[seq] = p.ackAt[seq]
	}
	if p.retained {
		t := seq % crashRetainedTopics
		p.lastAcked[t] = max(p.lastAcked[t], seq)
	}
}

func (p *crashPub) fail(err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failLocked(err)
}

func (p *crashPub) failLocked(err error) error {
	if p.err == nil {
		p.err = err
	}
	p.cond.Broadcast()
	return err
}

// run publishes until stopped or the connection fails, never with more
// than window messages unacknowledged. It returns how many it sent.
func (p *crashPub) run(limit int) int {
	sent := 0
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.stop && p.err == nil && sent < limit {
		if p.conn == nil || len(p.inflight) >= p.window {
			p.cond.Wait()
			continue
		}
		id := p.freeIDLocked()
		seq := len(p.state)
		p.state = append(p.state, msgSent)
		p.ackAt = append(p.ackAt, time.Time{})
		p.endAt = append(p.endAt, time.Time{})
		p.inflight[id] = seq
		if p.retained {
			p.lastSent[seq%crashRetainedTopics] = seq
		}
		pub := &packet.Publish{QoS: p.qos, Retain: p.retained, Topic: p.topic(seq), PacketID: id, Payload: p.payload(seq)}
		c := p.conn
		// Written outside the lock so that acknowledgements keep flowing.
		p.mu.Unlock()
		err := c.send(pub)
		p.mu.Lock()
		sent++
		if err != nil {
			if !p.roaming {
				break
			}
			// The roamer replaces the connection and resends what is
			// in flight, this message included.
			for p.conn == c && !p.stop && p.err == nil {
				p.cond.Wait()
			}
		}
	}
	return sent
}

func (p *crashPub) freeIDLocked() uint16 {
	for {
		p.nextID++
		if p.nextID == 0 {
			p.nextID = 1
		}
		if _, used := p.inflight[p.nextID]; !used {
			return p.nextID
		}
	}
}

// halt stops run and drops the connection (after a broker kill it is dead
// already).
func (p *crashPub) halt() {
	p.mu.Lock()
	p.stop = true
	c := p.conn
	p.conn = nil
	p.cond.Broadcast()
	p.mu.Unlock()
	if c != nil {
		c.close(false)
	}
}

// current returns the connection, nil while there is none.
func (p *crashPub) current() *crashConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conn
}

// finish makes run stop publishing and keeps the connection, on which what
// is in flight gets acknowledged.
func (p *crashPub) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stop = true
	p.cond.Broadcast()
}

// again lets run publish again after finish.
func (p *crashPub) again() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stop = false
}

// detach takes the connection away from the publisher (a roamer replacing
// it); run waits until connect gives it a new one.
func (p *crashPub) detach() *crashConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.conn
	p.conn = nil
	p.cond.Broadcast()
	return c
}

// settled waits until every message is acknowledged (QoS 2: completed).
func (p *crashPub) settled(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() { p.mu.Lock(); p.cond.Broadcast(); p.mu.Unlock() })
	defer t.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.inflight) > 0 && p.err == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d messages still unacknowledged after %v (seqs %v)", p.name, len(p.inflight), timeout, p.pendingSeqsLocked(5))
		}
		p.cond.Wait()
	}
	return p.err
}

func (p *crashPub) pendingSeqsLocked(n int) []int {
	var seqs []int
	for _, s := range p.inflight {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	return seqs[:min(n, len(seqs))]
}

// acks returns a copy of the acknowledgement times by seq.
func (p *crashPub) acks() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ackAt)
}

// ends returns a copy of the times each message was acknowledged or
// refused, by seq.
func (p *crashPub) ends() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.endAt)
}

// snapshot returns a copy of the log and the retained bookkeeping.
func (p *crashPub) snapshot() (state []byte, lastAcked, lastSent []int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.state), slices.Clone(p.lastAcked), slices.Clone(p.lastSent), p.err
}

// crashSub is a persistent subscriber that counts what it receives per
// publisher and sequence number. Its QoS 2 receiver state (identifiers
// between PUBLISH and PUBREL) outlives connections, as a real client's
// session state must: a PUBLISH for an identifier it holds is the same
// message again and is not counted.
type crashSub struct {
	name string

	mu      sync.Mutex
	conn    *crashConn
	subAck  chan *packet.SubAck // waits for a SUBACK
	got     map[string][]uint8  // publisher → counts by seq
	holding map[uint16]string   // QoS 2 identifiers awaiting PUBREL → payload
	errs    []string            // violations seen on the wire
	// firsts is, by publisher, the seqs in the order they were first
	// received: MQTT keeps one publisher's messages on one topic (they
	// are) in order.
	firsts map[string][]int
}

func newCrashSub(name string) *crashSub {
	return &crashSub{name: name, got: make(map[string][]uint8), holding: make(map[uint16]string), firsts: make(map[string][]int)}
}

func (s *crashSub) connect(addr string, first bool) (bool, error) {
	c, ack, err := dialCrash(addr, persistentConnect(s.name, first), s.handle)
	if err != nil {
		return false, fmt.Errorf("%s: %w", s.name, err)
	}
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
	return ack.SessionPresent, nil
}

// subscribe subscribes the connected session and waits for the SUBACK.
func (s *crashSub) subscribe(subs ...packet.Subscription) error {
	ch := make(chan *packet.SubAck, 1)
	s.mu.Lock()
	c := s.conn
	s.subAck = ch
	s.mu.Unlock()
	if err := c.send(&packet.Subscribe{PacketID: 1, Subscriptions: subs}); err != nil {
		return err
	}
	select {
	case sa := <-ch:
		for i, rc := range sa.ReasonCodes {
			if byte(rc) != subs[i].QoS {
				return fmt.Errorf("%s: SUBACK %v", s.name, sa.ReasonCodes)
			}
		}
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s: no SUBACK", s.name)
	}
}

func (s *crashSub) handle(c *crashConn, h packet.FixedHeader, body []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch h.Type {
	case packet.PUBLISH:
		var p packet.Publish
		if err := p.Decode(h.Flags, body, packet.V5); err != nil {
			s.errs = append(s.errs, "undecodable PUBLISH: "+err.Error())
			return err
		}
		key := string(p.Payload)
		switch p.QoS {
		case 1:
			s.countLocked(key, 1)
			return c.send(&packet.Ack{Type: packet.PUBACK, PacketID: p.PacketID})
		case 2:
			if held, ok := s.holding[p.PacketID]; ok {
				if held != key {
					s.errs = append(s.errs, fmt.Sprintf("packet ID %d reused for %s while %s awaits PUBREL", p.PacketID, key, held))
				}
			} else {
				s.holding[p.PacketID] = key
				s.countLocked(key, 2)
			}
			return c.send(&packet.Ack{Type: packet.PUBREC, PacketID: p.PacketID})
		default:
			s.errs = append(s.errs, fmt.Sprintf("%s arrived at QoS 0", key))
		}
	case packet.PUBREL:
		var a packet.Ack
		if err := a.Decode(h.Type, h.Flags, body, packet.V5); err != nil {
			return err
		}
		comp := &packet.Ack{Type: packet.PUBCOMP, PacketID: a.PacketID}
		if _, ok := s.holding[a.PacketID]; !ok {
			// PUBREL resent after a crash for an exchange already complete.
			comp.ReasonCode = packet.PacketIdentifierNotFound
		}
		delete(s.holding, a.PacketID)
		return c.send(comp)
	case packet.SUBACK:
		var sa packet.SubAck
		if err := sa.Decode(h.Flags, body, packet.V5); err != nil {
			return err
		}
		if s.subAck != nil {
			s.subAck <- &sa
			s.subAck = nil
		}
	case packet.DISCONNECT, packet.PINGRESP:
	default:
		s.errs = append(s.errs, "unexpected "+h.Type.String())
	}
	return nil
}

func (s *crashSub) countLocked(key string, qos byte) {
	name, num, ok := strings.Cut(key, ":")
	seq, err := strconv.Atoi(num)
	if !ok || err != nil {
		s.errs = append(s.errs, "foreign payload "+key)
		return
	}
	g := s.got[name]
	for len(g) <= seq {
		g = append(g, 0)
	}
	g[seq]++
	s.got[name] = g
	if g[seq] == 1 {
		s.firsts[name] = append(s.firsts[name], seq)
	}
	if qos == 2 && g[seq] > 1 {
		s.errs = append(s.errs, fmt.Sprintf("QoS 2 message %s delivered %d times", key, g[seq]))
	}
}

// record counts a message another client (Paho) received.
func (s *crashSub) record(payload []byte, qos byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.countLocked(string(payload), qos)
}

// counts returns a copy of the counts for publisher name.
func (s *crashSub) counts(name string) []uint8 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got[name])
}

func (s *crashSub) violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.errs)
}

// outOfOrder returns the messages of publisher name received for the first
// time after a later one, among those counted (the acknowledged ones).
func (s *crashSub) outOfOrder(name string, counted func(seq int) bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	last := -1
	for _, seq := range s.firsts[name] {
		switch {
		case !counted(seq):
		case seq < last:
			out = append(out, fmt.Sprintf("%s:%d after %s:%d", name, seq, name, last))
		default:
			last = seq
		}
	}
	return out
}

// current returns the connection, nil while there is none.
func (s *crashSub) current() *crashConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

// detach takes the connection away (a roamer replacing it).
func (s *crashSub) detach() *crashConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.conn
	s.conn = nil
	return c
}

func (s *crashSub) disconnect(polite bool) {
	s.mu.Lock()
	c := s.conn
	s.conn = nil
	s.mu.Unlock()
	if c != nil {
		c.close(polite)
	}
}

// readRetained reads the retained messages of crash/ret/+ with a fresh
// clean session: those the broker sends between SUBACK and the PINGRESP
// that follows. It returns the payload seq by topic index (-1 = none).
func readRetained(addr string) ([]int, error) {
	got := slices.Repeat([]int{-1}, crashRetainedTopics)
	var mu sync.Mutex
	pong := make(chan struct{})
	var errs []error
	c, _, err := dialCrash(addr, &packet.Connect{ClientID: "crash-retained-check", CleanStart: true}, func(c *crashConn, h packet.FixedHeader, body []byte) error {
		mu.Lock()
		defer mu.Unlock()
		switch h.Type {
		case packet.PUBLISH:
			var p packet.Publish
			if err := p.Decode(h.Flags, body, packet.V5); err != nil {
				return err
			}
			i, err := strconv.Atoi(strings.TrimPrefix(p.Topic, "crash/ret/"))
			_, num, _ := strings.Cut(string(p.Payload), ":")
			seq, err2 := strconv.Atoi(num)
			if err != nil || err2 != nil || i < 0 || i >= crashRetainedTopics || !p.Retain || got[i] != -1 {
				errs = append(errs, fmt.Errorf("unexpected retained %s %q retain=%v", p.Topic, p.Payload, p.Retain))
			} else {
				got[i] = seq
			}
			if p.QoS == 1 {
				return c.send(&packet.Ack{Type: packet.PUBACK, PacketID: p.PacketID})
			}
		case packet.SUBACK:
			return c.send(&packet.PingReq{})
		case packet.PINGRESP:
			close(pong)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer c.close(true)
	if err := c.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "crash/ret/+", QoS: 1}}}); err != nil {
		return nil, err
	}
	select {
	case <-pong:
	case <-c.done:
		return nil, errors.New("retained check: connection ended")
	case <-time.After(10 * time.Second):
		return nil, errors.New("retained check: no PINGRESP")
	}
	mu.Lock()
	defer mu.Unlock()
	return got, errors.Join(errs...)
}
