package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Member is one node as this node knows it from its heartbeats.
type Member struct {
	Name string `json:"name"`
	// Self is this node.
	Self bool `json:"self,omitempty"`
	// Healthy: heard from within three heartbeat intervals of this
	// node's running time (the time since its last pause, if shorter).
	Healthy bool `json:"healthy"`
	// LastSeen is when its last heartbeat arrived (this node's clock).
	LastSeen time.Time `json:"lastSeen"`
	// Started is when the node started (its clock).
	Started time.Time `json:"started"`
	// Route is its embedded server's route address ("" when external).
	Route string `json:"route,omitempty"`
}

// heartbeat is what a node publishes on the members subject.
type heartbeat struct {
	Name    string    `json:"name"`
	Started time.Time `json:"started"`
	Route   string    `json:"route,omitempty"`
	Leaving bool      `json:"leaving,omitempty"`
	// Hello asks the others to answer at once, so that a node that starts
	// learns the members without waiting for their next beat.
	Hello bool `json:"hello,omitempty"`
}

// members is the member table.
//
// A member's silence counts in this node's running time: a node that did
// not run for a while (SIGSTOP, a suspended VM, a starved process) heard
// no heartbeat meanwhile, whatever the others did, so the silence it
// judges them by starts when it runs again. Otherwise a node thawed
// after the others' routes to it had timed out counted every other node
// unheard for the whole freeze, found no responders to their sync
// subjects (its routes not made again yet) and adopted the sessions of
// live nodes: their connections were ended and what their nodes went on
// writing for those sessions was missing from the copies it had read.
type members struct {
	self     string
	interval time.Duration
	started  time.Time

	mu      sync.Mutex // guards byName, changed, ran and awake
	byName  map[string]*Member
	changed chan struct{} // closed and replaced on every join or leave
	// ran is when the heartbeat loop last ran; awake is when it ran after
	// not running for more than pausedAfter (or the start): silence is
	// counted from then.
	ran, awake time.Time
}

func newMembers(self string, interval time.Duration) *members {
	now := time.Now()
	return &members{
		self: self, interval: interval, started: now,
		byName:  map[string]*Member{self: {Name: self, Self: true, Healthy: true, LastSeen: now, Started: now}},
		changed: make(chan struct{}),
		ran:     now, awake: now,
	}
}

// pausedAfter is how long the heartbeat loop may go without running
// before this node counts as not having run: a whole tick missed, and as
// long again for a loaded machine's scheduling delays, and at least a
// second (with short intervals, a loaded machine's delays would count
// as pauses again and again, and keep a lost node from being found).
// Only a long pause misleads: a node whose routes are still up finds
// another's subscriptions whatever it heard, and routes fail after
// seconds of silence (a blocked write, 10 s).
func (m *members) pausedAfter() time.Duration { return max(2*m.interval, time.Second) }

// tick records a run of the heartbeat loop; it returns how long the node
// did not run when the loop finds it was paused.
func (m *members) tick(now time.Time) (paused time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if gap := now.Sub(m.ran); gap > m.pausedAfter() {
		m.awake, paused = now, gap
	}
	m.ran = now
	return paused
}

// quietSinceLocked is when the silence of a member unheard since counts
// from: the node's start or its last pause; now when the heartbeat loop
// has not run for more than pausedAfter (a pause it has not seen yet:
// another goroutine may run first at the thaw).
func (m *members) quietSinceLocked(now time.Time) time.Time {
	if now.Sub(m.ran) > m.pausedAfter() {
		return now
	}
	return m.awake
}

// seen records a heartbeat; it reports whether the member is new.
func (m *members) seen(hb heartbeat, now time.Time) (joined bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if hb.Name == m.self {
		return false
	}
	if hb.Leaving {
		if _, ok := m.byName[hb.Name]; ok {
			delete(m.byName, hb.Name)
			m.notifyLocked()
		}
		return false
	}
	mb, ok := m.byName[hb.Name]
	if !ok || !mb.Started.Equal(hb.Started) {
		mb = &Member{Name: hb.Name}
		m.byName[hb.Name] = mb
		m.notifyLocked()
		joined = true
	}
	mb.LastSeen, mb.Started, mb.Route = now, hb.Started, hb.Route
	return joined
}

func (m *members) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// list returns the members sorted by name, health judged at now.
func (m *members) list(now time.Time) []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	quiet := m.quietSinceLocked(now)
	out := make([]Member, 0, len(m.byName))
	for _, mb := range m.byName {
		c := *mb
		if c.Self {
			c.LastSeen = now
		}
		c.Healthy = c.Self || now.Sub(later(c.LastSeen, quiet)) <= 3*m.interval
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// tooSoon reports whether a member never heard from cannot be judged yet:
// this node has not run three heartbeat intervals since it started or
// since its last pause.
func (m *members) tooSoon(now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return now.Sub(m.quietSinceLocked(now)) <= 3*m.interval
}

// wait returns the channel closed at the next join or leave, with the
// current count.
func (m *members) wait() (<-chan struct{}, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed, len(m.byName)
}

func (n *Node) membersSubject() string { return "edgeport.cluster." + n.cfg.ClusterName + ".members" }

// SyncSubject is where node name answers a ping: a request that reaches
// it has passed every subscription its sender made before (routes keep
// order), which is the readiness signal of WaitRouted.
func (n *Node) SyncSubject(name string) string {
	return "edgeport.cluster." + n.cfg.ClusterName + ".sync." + name
}

func (n *Node) startMembership() error {
	var err error
	// The handler answers on the connection it was made with, not n.nc,
	// and with the route address as it is now: it may still run while
	// Stop closes the connection and shuts the server down, clearing
	// both fields (the race detector saw n.nc in
	// TestReadinessClusterMember).
	nc := n.nc
	n.beatRoute = n.routeAddrString()
	n.hbSub, err = nc.Subscribe(n.membersSubject(), func(msg *nats.Msg) {
		var hb heartbeat
		if json.Unmarshal(msg.Data, &hb) != nil {
			return
		}
		if joined := n.members.seen(hb, time.Now()); (joined || hb.Hello) && hb.Name != n.cfg.Name {
			n.publishBeat(nc, heartbeat{})
		}
	})
	if err != nil {
		return fmt.Errorf("subscribing to members: %w", err)
	}
	if n.syncSub, err = n.nc.Subscribe(n.SyncSubject(n.cfg.Name), func(msg *nats.Msg) { _ = msg.Respond(nil) }); err != nil {
		return fmt.Errorf("subscribing to sync: %w", err)
	}
	if n.statusSub, err = n.nc.Subscribe(n.statusSubject(n.cfg.Name), n.serveStatus); err != nil {
		return fmt.Errorf("subscribing to status: %w", err)
	}
	if err := n.nc.Flush(); err != nil {
		return fmt.Errorf("flushing to NATS: %w", err)
	}
	n.hello()
	n.stop = make(chan struct{})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTicker(n.cfg.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-n.stop:
				return
			case <-t.C:
				if paused := n.members.tick(time.Now()); paused > 0 {
					n.log.Debug("this node did not run for a while: the other members' silence counts from now", "paused", paused.Round(time.Millisecond))
				}
				n.announce(false)
			}
		}
	}()
	return nil
}

func (n *Node) hello() { n.publishBeat(n.nc, heartbeat{Hello: true}) }

func (n *Node) announce(leaving bool) { n.publishBeat(n.nc, heartbeat{Leaving: leaving}) }

func (n *Node) publishBeat(nc *nats.Conn, hb heartbeat) {
	hb.Name, hb.Started, hb.Route = n.cfg.Name, n.members.started, n.beatRoute
	b, _ := json.Marshal(hb)
	_ = nc.Publish(n.membersSubject(), b) // a lost beat is repeated
}

// Members lists the nodes this node has heard from, itself included.
func (n *Node) Members() []Member {
	if n.members == nil {
		return nil
	}
	return n.members.list(time.Now())
}

// WaitMembers waits until count nodes (this one included) are members.
func (n *Node) WaitMembers(ctx context.Context, count int) error {
	for {
		ch, have := n.members.wait()
		if have >= count {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d members (have %d): %w", count, have, ctx.Err())
		}
	}
}

// LiveMembers names the members heard from within three heartbeat
// intervals, this node included, sorted.
func (n *Node) LiveMembers() []string {
	var out []string
	for _, m := range n.Members() {
		if m.Healthy {
			out = append(out, m.Name)
		}
	}
	return out
}

// HeartbeatInterval is how often nodes announce themselves.
func (n *Node) HeartbeatInterval() time.Duration { return n.cfg.HeartbeatInterval }

// Lost reports whether node name is gone, not just slow: this node has
// not heard its heartbeat for three intervals of its own running time
// (counting from this node's own start when it never did, and from its
// last pause: see members), and no server of the cluster holds its
// subscriptions any more: a request to its sync subject finds no
// responders. A node that is frozen or cut off behind a route that has
// not failed yet still has its subscriptions, so its request times out
// (one heartbeat interval) and it is not lost; NATS drops a dead route's
// interest once the route's connection closes (at once for a process
// that died, after the route's ping timeout for a silent one).
func (n *Node) Lost(ctx context.Context, name string) bool {
	if name == n.cfg.Name || n.members == nil {
		return false
	}
	now := time.Now()
	heard := false
	for _, m := range n.members.list(now) {
		if m.Name == name {
			if m.Healthy {
				return false
			}
			heard = true
		}
	}
	if !heard && n.members.tooSoon(now) {
		return false // too soon to tell
	}
	nc := n.probe.Load()
	if nc == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.HeartbeatInterval)
	defer cancel()
	_, err := nc.RequestWithContext(ctx, n.SyncSubject(name), nil)
	return errors.Is(err, nats.ErrNoResponders)
}
