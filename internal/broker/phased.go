package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
)

// Two phases for an inbound QoS 2 PUBLISH in cluster mode.
//
// On one node a QoS 2 PUBLISH's inbound identifier and its deliveries are
// one atomic transaction: after a crash either the message was routed and
// the identifier says so (a resend is acknowledged, not routed again), or
// neither. In cluster mode a transaction is a set of JetStream writes to
// several streams, and it is not atomic across them: a node stopped or
// frozen in the middle of one may leave the deliveries durable and not
// the identifier, and the client, resending the PUBLISH to another node,
// would have it routed a second time. So with RemoteSessions attached, the
// QoS 2 PUBLISH of a persistent session is handled in two phases:
//
//  1. its identifier is stored with the message and the MessageID it will
//     be routed under (RemoteSessions.Received), together with its
//     retained change; nothing is routed yet;
//  2. once that is durable the message is routed under that id, here and
//     to the other nodes, as any publish (publishRoute), and the PUBREC
//     leaves once those writes are durable.
//
// Phase 2 can be done again without a second delivery: every write of a
// delivery of the message to a persistent session is keyed by the message
// id and the session and the Durable drops a second one (OnceTxn,
// RemoteSessions.Route: JetStream's duplicate window). A node that holds
// the identifier stored with its message, because it adopted or took over
// the session or restored it after a restart, does phase 2 again when the
// client resends the PUBLISH (DUP), under the stored id, before its PUBREC;
// it never routes it under a new one.
//
// A client's PUBLISHes reach phase 2 in the order they arrived (phasePipe),
// so its QoS 2 messages are routed, and its PUBRECs sent, in order.

// phaseState is where a two-phase PUBLISH stands.
type phaseState uint8

const (
	// phaseStored: stored with its message by another node or an earlier
	// run of this one (AdoptSession): maybe not routed yet.
	phaseStored phaseState = iota
	// phaseRunning: being stored or routed here.
	phaseRunning
	// phaseRouted: routed and acknowledged; the PUBREL ends it.
	phaseRouted
	// phaseFailed: refused (0x80); the exchange is over, and a PUBLISH
	// under the identifier is a new message.
	phaseFailed
)

// phased is an inbound QoS 2 PUBLISH handled in two phases, between its
// arrival and its PUBREL (session.phased, by packet identifier; the
// identifier is in session.awaitingRel too).
type phased struct {
	id  MessageID
	msg *Message // set before phase 1 is committed, read-only after

	// mu guards state and waiters. Commit callbacks take it; nothing is
	// locked while it is held.
	mu      sync.Mutex
	state   phaseState
	waiters []*client // resends received while running, acknowledged with it
}

// resendAction is what a PUBLISH resent under a two-phase identifier does.
type resendAction uint8

const (
	resendAck   resendAction = iota // routed already: PUBREC
	resendWait                      // phases under way: PUBREC when they end
	resendRedo                      // stored: route again under its id, then PUBREC
	resendFresh                     // the identifier's exchange is over: a new message
)

// resent decides what a PUBLISH under ph's identifier received from c
// does; dup is the PUBLISH's DUP flag.
func (ph *phased) resent(c *client, dup bool) resendAction {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	switch ph.state {
	case phaseRunning:
		ph.waiters = append(ph.waiters, c)
		return resendWait
	case phaseStored:
		if !dup {
			// Not a resend: the client counted the exchange over (it
			// was refused where the record could not be removed).
			return resendFresh
		}
		ph.state = phaseRunning
		return resendRedo
	case phaseFailed:
		return resendFresh
	}
	return resendAck
}

// newMessageID returns a random identifier for a message routed in two
// phases: unique in the cluster without asking anyone, and known before
// the message is forwarded (Forwarder.Forward keeps it).
func newMessageID() MessageID {
	var id MessageID
	for id.IsZero() {
		binary.BigEndian.PutUint64(id[:8], rand.Uint64())
		binary.BigEndian.PutUint64(id[8:], rand.Uint64())
	}
	return id
}

// twoPhase reports whether a QoS 2 PUBLISH of s is handled in two phases:
// a persistent network client's session in cluster mode. s.mu is held.
func (b *Broker) twoPhase(s *session) bool {
	return b.remote != nil && s.persistent(b) && !s.internal
}

// phasePipe runs a client's phase-2 steps in the order its PUBLISHes
// arrived, on a goroutine that runs while it has some.
type phasePipe struct {
	mu      sync.Mutex // guards steps and running
	steps   []*phaseStep
	running bool
}

// phaseStep is one PUBLISH waiting for its phase 1.
type phaseStep struct {
	ready chan struct{} // closed once phase 1 is durable or failed
	err   error         // phase 1's result, set before ready is closed
	run   func(err error)
}

// pushStep queues st behind the client's earlier steps.
func (c *client) pushStep(st *phaseStep) {
	p := &c.phases
	p.mu.Lock()
	p.steps = append(p.steps, st)
	start := !p.running
	p.running = true
	p.mu.Unlock()
	if start && !c.b.goBackground(c.runSteps) {
		c.runSteps() // the broker is stopping: the commits end soon
	}
}

// runSteps runs the queued steps, each once its phase 1 has ended: those
// ready together as one batch, after one check that this node still holds
// the publisher's session (RemoteSessions.Fence): a node that lost it
// while frozen or stopping, its first-phase writes landing after the new
// owner read the session, refuses them rather than route them.
func (c *client) runSteps() {
	p := &c.phases
	for {
		p.mu.Lock()
		if len(p.steps) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		first := p.steps[0]
		p.mu.Unlock()
		<-first.ready
		p.mu.Lock()
		n := 1
		for n < len(p.steps) && closed(p.steps[n].ready) {
			n++
		}
		batch := slices.Clone(p.steps[:n])
		clear(p.steps[:n])
		p.steps = p.steps[n:]
		p.mu.Unlock()
		var fence error
		for _, st := range batch {
			if st.err == nil {
				ctx, cancel := context.WithTimeout(c.b.halt, ClaimTimeout)
				fence = c.b.remote.Fence(ctx, c.sess.id)
				cancel()
				if fence != nil {
					// Refused silently otherwise (PUBREC 0x80): a check
					// that fails for good leaves a client connected here
					// with every QoS 2 PUBLISH refused.
					c.b.errs.Log(slog.LevelWarn, "fence", "refusing QoS 2 PUBLISHes: the session's fence check failed", "client", c.id, "err", fence)
				}
				break
			}
		}
		for _, st := range batch {
			err := st.err
			if err == nil {
				err = fence
			}
			st.run(err)
		}
	}
}

// closed reports whether ch is closed.
func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// publishPhased stores ph (phase 1: the identifier with the message, and
// its retained change) in tx and commits it; phase 2 follows in order.
func (c *client) publishPhased(s *session, pid uint16, ph *phased, tx *txnCtx) {
	m, id := ph.msg, ph.id
	if m.Retain {
		c.b.setRetained(m, tx)
	}
	tx.write(func(t Txn) { c.b.remote.Received(t, s.id, pid, id, m) }, nil)
	c.pendingAcks.Add(1)
	st := &phaseStep{ready: make(chan struct{})}
	st.run = func(err error) { c.phaseTwo(s, pid, ph, err) }
	c.b.commit(tx, func(err error) {
		st.err = err
		close(st.ready)
	})
	c.pushStep(st)
}

// phaseTwo routes ph once its phase 1 is durable, and acknowledges it
// once the routing's writes are.
func (c *client) phaseTwo(s *session, pid uint16, ph *phased, err error) {
	c.routePhased(s, pid, ph, err, false, func(tx *txnCtx) packet.ReasonCode {
		n, forwarded := c.b.publishRoute(ph.msg, tx)
		if n == 0 && !forwarded && c.version == packet.V5 {
			return packet.NoMatchingSubscribers
		}
		return packet.Success
	})
}

// routePhased is a phase-pipe step's routing of ph: after err (phase 1's
// result, or the fence check's) it writes route into a transaction of its
// own, commits it and acknowledges ph with route's reason code once it is
// durable; stored reports whether ph's message was stored before this
// step (endPhased's routed, for a failure before the routing).
func (c *client) routePhased(s *session, pid uint16, ph *phased, err error, stored bool, route func(*txnCtx) packet.ReasonCode) {
	if err != nil {
		c.endPhased(s, pid, ph, 0, err, stored)
		return
	}
	tx := c.b.newTxn()
	if tx == nil {
		c.endPhased(s, pid, ph, 0, store.ErrClosed, stored)
		return
	}
	code := route(tx)
	c.b.commit(tx, func(err error) { c.endPhased(s, pid, ph, code, err, true) })
}

// redoPhased routes ph again under its id, to every persistent session of
// the cluster this node's included (RemoteSessions.Route, idempotent),
// and acknowledges it. Nothing goes to live routing: a non-persistent
// session got the live copy from the node that routed it before, if it
// did (at most once).
//
// It is a step of the client's phase pipe, its phase 1 done long ago: a
// resend routed at once overtook the client's earlier PUBLISH still in
// its phase 1 (one the previous node had not stored, resent just before
// it), and every subscriber got roll-pub-q2-n3:578 before 577 (a rolling
// restart's fault test).
func (c *client) redoPhased(s *session, pid uint16, ph *phased, tx *txnCtx) {
	c.pendingAcks.Add(1)
	if tx == nil {
		c.endPhased(s, pid, ph, 0, store.ErrClosed, true)
		return
	}
	tx.discard() // the step makes its own when its turn comes
	st := &phaseStep{ready: make(chan struct{})}
	close(st.ready)
	st.run = func(err error) {
		c.routePhased(s, pid, ph, err, true, func(tx *txnCtx) packet.ReasonCode {
			m, id := ph.msg, ph.id
			picks := c.b.sharedPicks(m, id)
			tx.write(func(t Txn) { c.b.remote.Route(t, m, id, nil, nil, picks) }, nil)
			return packet.Success
		})
	}
	c.pushStep(st)
}

// endPhased acknowledges ph (with code, or refused after err) to c and to
// the resends that waited for it; routed reports whether phase 2 was
// attempted, so that a 3.1.1 client's resend does it again. It may run on
// the store's committer: it takes only ph.mu and client.outMu, and leaves
// the session's bookkeeping to a background goroutine.
func (c *client) endPhased(s *session, pid uint16, ph *phased, code packet.ReasonCode, err error, routed bool) {
	defer c.pendingAcks.Add(-1)
	ph.mu.Lock()
	waiters := ph.waiters
	ph.waiters = nil
	switch {
	case err == nil:
		ph.state = phaseRouted
	case routed && c.version != packet.V5:
		// Disconnected without a PUBREC: the resend routes it again.
		ph.state = phaseStored
	default:
		ph.state = phaseFailed
	}
	state := ph.state
	ph.mu.Unlock()
	for _, to := range append(waiters, c) {
		if err == nil {
			to.ackPublish(2, pid, code, "")
		} else {
			to.refuseStored(2, pid, err)
		}
	}
	c.b.goBackground(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.phased[pid] != ph {
			return // released, or the identifier is in use again
		}
		switch state {
		case phaseRouted:
			delete(s.phased, pid) // awaits its PUBREL as any
		case phaseFailed:
			delete(s.phased, pid)
			delete(s.awaitingRel, pid)
			if tx := c.b.newTxn(); tx != nil && s.persistent(c.b) {
				// Best effort: a record left behind is a refused message,
				// routed at most once, and a new PUBLISH under the
				// identifier (no DUP) replaces it.
				tx.write(func(t Txn) { t.DeleteInbound(s.id, pid) }, nil)
				c.b.submit(tx, nil)
				defer c.b.flush()
			}
		}
	})
}

// refuseStored tells the client that a QoS 1/2 PUBLISH could not be
// stored (err): PUBACK/PUBREC 0x80 (0x97 when over quota); MQTT 3.1.1,
// which cannot refuse a PUBLISH, is disconnected so that the client
// resends it later.
func (c *client) refuseStored(qos byte, id uint16, err error) {
	if c.version != packet.V5 {
		c.disconnect(packet.QuotaExceeded, "")
		return
	}
	rc := packet.UnspecifiedError
	if errors.Is(err, store.ErrQuotaExceeded) {
		rc = packet.QuotaExceeded
	}
	c.ackPublish(qos, id, rc, "message could not be stored")
}

// adoptInbound gives s the inbound identifiers stored with their message
// (two phases) among in. s.mu is held.
func (s *session) adoptInbound(in []Inbound) {
	for _, i := range in {
		if i.Msg == nil {
			continue
		}
		if s.phased == nil {
			s.phased = make(map[uint16]*phased)
		}
		s.phased[i.PacketID] = &phased{id: i.ID, msg: i.Msg, state: phaseStored}
	}
}
