package broker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
)

// Ownership is asked, in cluster mode, which node owns a client's session:
// a client may connect to any node, and the one it connected to last
// holds its session while every other node lets go of it.
// internal/cluster/jsstate implements it with a compare-and-set in a
// JetStream key-value bucket; a single node has none and pays nothing.
//
// Internal clients ($edgeport/...) are never claimed: each node runs its
// own, under the same identifiers.
type Ownership interface {
	// Claim makes this node the owner of clientID's session before the
	// broker accepts the client's CONNECT, and returns the claim's token:
	// claims of one client get increasing tokens across the cluster. The
	// node that owned it before learns of it and calls TakenOver with the
	// token. An error (the cluster cannot be reached, or no quorum)
	// refuses the CONNECT with 0x88, Server unavailable.
	Claim(ctx context.Context, clientID string) (token uint64, err error)
	// Release gives clientID's ownership up when its session ended on
	// this node, unless a claim newer than token took it meanwhile. It
	// must not block: the broker calls it with its locks held.
	Release(clientID string, token uint64)
}

// ClaimTimeout bounds how long a CONNECT waits for the cluster to grant
// the client's session to this node.
const ClaimTimeout = 5 * time.Second

// AttachOwnership makes the broker claim every network client's session
// from o before accepting its CONNECT (cluster mode). Call it after New and
// before the broker serves connections.
func (b *Broker) AttachOwnership(o Ownership) { b.owner = o }

// claim asks the cluster for the session of c; it reports false when the
// cluster refused or could not be reached, with the reason.
func (c *client) claim() (ok bool, reason string) {
	o := c.b.owner
	if o == nil || c.trusted {
		return true, ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), ClaimTimeout)
	defer cancel()
	token, err := o.Claim(ctx, c.id)
	if err != nil {
		c.log.Warn("cluster refused the session claim", "client", c.id, "err", err)
		return false, "cluster unavailable"
	}
	c.claimToken = token
	return true, ""
}

// TakenOver is how the cluster tells this node that another node claimed
// clientID's session with token: a connection of the client here that was
// claimed before is told 0x8E (Session taken over) and its session leaves
// this node, its will published as when a clean start replaces a session.
// It reports whether a session was here to give up.
func (b *Broker) TakenOver(clientID string, token uint64) bool {
	b.sessMu.Lock()
	s := b.sessions[clientID]
	if s == nil || s.internal {
		b.sessMu.Unlock()
		return false
	}
	s.mu.Lock()
	if s.claim >= token {
		// A later connection here claimed it again: the claim that beat
		// this one's is older news.
		s.mu.Unlock()
		b.sessMu.Unlock()
		return false
	}
	if old := s.client; old != nil {
		s.client = nil
		s.online.Store(false)
		s.count(&b.stats.connected, -1)
		old.disconnect(packet.SessionTakenOver, "another node took over the session")
		if due := b.scheduleWillLocked(s); due != nil {
			b.publishWillAfter(b.saveSessionLocked(s, 0), due)
		}
	}
	s.claim = 0 // ours no longer: nothing to release
	s.mu.Unlock()
	b.endSessionLocked(s)
	b.sessMu.Unlock()
	b.flush()
	b.sessionEnded(clientID)
	return true
}

// SharedRetained keeps, in cluster mode, one set of retained messages for
// every node. The broker writes a retained change through its Durable
// (PutRetained, DeleteRetained) and does not apply it itself: every
// change, this node's too, comes back through ApplyRetained in the one
// order the cluster committed them, so all nodes converge on the same
// index.
type SharedRetained interface {
	// Sync returns once this node has applied every retained change the
	// cluster had committed when Sync was called: a subscription made
	// after a retained message was acknowledged, on any node, gets it.
	Sync(ctx context.Context) error
}

// AttachSharedRetained makes retained messages cluster-wide (see
// SharedRetained). Call it after New and before Start.
func (b *Broker) AttachSharedRetained(r SharedRetained) { b.sharedRet = r }

// ApplyRetained sets (rec non-nil) or clears the retained message of topic
// as the cluster committed it. An expired message clears the topic.
func (b *Broker) ApplyRetained(topic string, rec *store.Message) error {
	if rec == nil {
		if b.retained.Delete(topic) {
			b.stats.retained.Add(-1)
		}
		return nil
	}
	m, err := messageFromRecord(rec)
	if err != nil {
		return fmt.Errorf("retained message %q: %w", topic, err)
	}
	m.Topic = topic
	if m.expired(b.clk.Now().UnixNano()) || len(m.Payload) == 0 {
		return b.ApplyRetained(topic, nil)
	}
	if _, existed := b.retained.Get(topic); !existed {
		b.stats.retained.Add(1)
	}
	b.retained.Set(topic, m)
	return nil
}

// syncRetained waits, in cluster mode, until the retained index holds
// every change committed before; it reports false when it could not.
func (b *Broker) syncRetained() bool {
	if b.sharedRet == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), ClaimTimeout)
	defer cancel()
	if err := b.sharedRet.Sync(ctx); err != nil {
		b.errs.Log(slog.LevelWarn, "retained-sync", "sending retained messages without the cluster's latest changes", "err", err)
		return false
	}
	return true
}
