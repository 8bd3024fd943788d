package broker

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// A node that does not run for a while — stopped with SIGSTOP, its VM
// suspended, the process starved — cannot answer another node's handoff
// request (it waits HandoffTimeout, then takes the session all the same)
// nor hear, through the cluster's watch, that its clients' sessions were
// claimed elsewhere. When it runs again it still reads what its clients
// had sent it before they moved (still in its sockets), and would route
// those PUBLISHes as if it held their sessions, after the copies the
// clients resent through the node they moved to: out of their order, and
// to sessions it no longer holds.
//
// So the node watches its own running time (pauseWatch), and a
// connection that was made before a pause checks, before it routes its
// next PUBLISH, that this node still holds its session: the session's
// fence (RemoteSessions.Fence), the check a two-phase QoS 2 PUBLISH makes
// between its phases. Once it passes, the connection goes on as before
// (a claim made after the check hands the session over through this
// node, which the handoff orders with what it routed); once it fails,
// the connection's PUBLISHes are dropped unanswered: the client resent or
// resends them to the node it moved to, and this node's watch ends the
// connection (0x8E) when it catches up. The common path pays an atomic
// load per PUBLISH; only after a pause does a connection pay one
// JetStream write.

// pauseAfter is how long the node may go without running before it
// counts as paused: far above a loaded machine's scheduling delays, below
// the HandoffTimeout another node waits for this one's answer.
const pauseAfter = 1500 * time.Millisecond

// pauseTick is how often pauseWatch looks at the clock.
const pauseTick = 250 * time.Millisecond

// pauseWatch counts the pauses of the process: gaps in its own running
// time longer than pauseAfter, seen by its ticker or by a connection
// that runs before the ticker does.
type pauseWatch struct {
	now   func() time.Duration // the process's monotonic time
	last  atomic.Int64         // now at the last look
	epoch atomic.Uint64        // pauses seen
}

func newPauseWatch() *pauseWatch {
	start := time.Now()
	w := &pauseWatch{now: func() time.Duration { return time.Since(start) }}
	w.last.Store(int64(w.now()))
	return w
}

// look returns the number of pauses seen, this one included: a
// connection's look, which reads the clock and moves the last look only
// when it sees a pause (the ticker moves it otherwise).
func (w *pauseWatch) look() uint64 {
	now := int64(w.now())
	if now-w.last.Load() <= int64(pauseAfter) {
		return w.epoch.Load()
	}
	w.tickAt(now)
	return w.epoch.Load()
}

// tick is the ticker's look; it returns how long the pause was, if it
// saw one.
func (w *pauseWatch) tick() time.Duration {
	return w.tickAt(int64(w.now()))
}

// tickAt moves the last look to now, counting a pause when it is more
// than pauseAfter before. A pause counts before the time moves on, so
// whoever sees the new time sees the pause too (two that see it at once
// count it twice: a connection then checks once more).
func (w *pauseWatch) tickAt(now int64) time.Duration {
	last := w.last.Load()
	var paused time.Duration
	if now-last > int64(pauseAfter) {
		w.epoch.Add(1)
		paused = time.Duration(now - last)
	}
	for last < now && !w.last.CompareAndSwap(last, now) {
		last = w.last.Load()
	}
	return paused
}

// run ticks every pauseTick until ctx ends, logging pauses.
func (w *pauseWatch) run(ctx context.Context, b *Broker) {
	tick := time.NewTicker(pauseTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if paused := w.tick(); paused > 0 {
			b.log.Warn("this node did not run for a while: connections made before check that it still holds their sessions before routing more of their messages",
				"paused", paused.Round(time.Millisecond))
		}
	}
}

// Resyncer is implemented by an Ownership that can bring this node's view
// of the cluster's claims up to date on demand.
type Resyncer interface {
	// Resync returns once every claim the cluster made before the call
	// has been applied here: the sessions claimed by other nodes are taken
	// from this one (TakenOver).
	Resync(ctx context.Context) error
}

// resync is one Resync under way after pause epoch.
type resync struct {
	epoch uint64
	done  chan struct{}
	err   error // set before done is closed
}

// afterPause returns once the node's view of who holds which session is
// resynced (Resyncer) after pause epoch: the sessions other nodes took
// while it was paused are gone from here, so that it neither routes a
// message into one of them (a delivery the client, now elsewhere, would
// never get) nor takes their routed deliveries from the stream before
// their holder does. One resync runs at a time; callers wait for it.
func (b *Broker) afterPause(epoch uint64) error {
	r, ok := b.owner.(Resyncer)
	if !ok {
		return nil
	}
	for b.resynced.Load() < epoch {
		b.resyncMu.Lock()
		run := b.resyncing
		mine := run == nil
		if mine {
			run = &resync{epoch: b.pauses.epoch.Load(), done: make(chan struct{})}
			b.resyncing = run
		}
		b.resyncMu.Unlock()
		if mine {
			ctx, cancel := context.WithTimeout(b.halt, ClaimTimeout)
			run.err = r.Resync(ctx)
			cancel()
			if run.err == nil {
				b.resynced.Store(max(b.resynced.Load(), run.epoch))
			} else {
				b.log.Warn("could not learn which sessions other nodes took while this one was paused", "err", run.err)
			}
			b.resyncMu.Lock()
			b.resyncing = nil
			b.resyncMu.Unlock()
			close(run.done)
		} else {
			select {
			case <-run.done:
			case <-b.halt.Done():
				return b.halt.Err()
			}
		}
		if run.err != nil {
			return run.err
		}
	}
	return nil
}

// ErrFenced is what RemoteSessions.Fence returns (wrapped) when another
// node claimed or adopted the session since this one did.
var ErrFenced = errors.New("a newer claim fenced the session")

// errSessionMoved is a PUBLISH dropped because another node holds its
// publisher's session now.
var errSessionMoved = errors.New("the session was claimed by another node while this one was paused")

// checkPaused decides, before a PUBLISH of c is routed, whether this node
// still holds c's session after a pause that came since c last checked:
// nil to go on, errSessionMoved to drop it unanswered, another error to
// refuse it (the check could not be made).
func (c *client) checkPaused() error {
	b := c.b
	if b.pauses == nil || c.trusted {
		return nil
	}
	if c.sessionMoved {
		return errSessionMoved
	}
	epoch := b.pauses.look()
	if epoch > b.resynced.Load() {
		if err := b.afterPause(epoch); err != nil {
			return err
		}
	}
	if epoch == c.pauseEpoch {
		return nil
	}
	ctx, cancel := context.WithTimeout(b.halt, ClaimTimeout)
	err := b.remote.Fence(ctx, c.id)
	cancel()
	switch {
	case err == nil:
		c.pauseEpoch = epoch
		return nil
	case errors.Is(err, ErrFenced):
		c.sessionMoved = true
		c.log.Info("dropping the PUBLISHes of a connection whose session another node claimed while this one was paused", "client", c.id)
		return errSessionMoved
	}
	return err
}

// pausedPublish handles a PUBLISH that checkPaused did not let through.
func (c *client) pausedPublish(p *packet.Publish, err error) {
	switch {
	case errors.Is(err, errSessionMoved) || p.QoS == 0:
		c.b.stats.drop(dropSessionEnded, p.QoS)
	case c.version == packet.V5:
		// 0x80 after the acknowledgements still waiting for the store.
		c.ackAfter(c.b.newTxn(), p.QoS, p.PacketID, packet.UnspecifiedError)
	default:
		c.refuseStored(p.QoS, p.PacketID, err)
	}
}
