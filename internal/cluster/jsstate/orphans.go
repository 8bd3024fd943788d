package jsstate

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The sessions of a lost node. Every node indexes the owners bucket from
// its watch (node → client key → revision). Once a heartbeat interval it
// looks for nodes that entries still name but that are lost (Members.Lost:
// unheard for three heartbeat intervals, and no server holds their
// subscriptions any more), and adopts their sessions: each session is
// claimed by one survivor, chosen by rendezvous hashing of the client
// identifier over the live members; the next one in that order tries
// after adoptFallback heartbeat intervals, and so on, so a session is
// never left behind by a survivor that fails too. The claim is a
// compare-and-set on the revision that named the lost node, so exactly
// one node adopts each session (a survivor, or the node of a client
// reconnecting meanwhile), and only that node publishes the session's
// will.
//
// A node that restarts does the same with the entries that name it (its
// previous run): a compare-and-set on each, so that it never restores a
// session a survivor adopted meanwhile, and no survivor adopts one it
// restored.

// Members tells which nodes are alive; *cluster.Node implements it. An
// Ownership whose JetStreamSource implements it adopts the sessions of
// lost nodes.
type Members interface {
	// LiveMembers names the nodes heard from recently, this one included.
	LiveMembers() []string
	// Lost reports whether a node is gone, not merely slow.
	Lost(ctx context.Context, node string) bool
	// HeartbeatInterval is how often nodes announce themselves.
	HeartbeatInterval() time.Duration
}

// adoptFallback is how many heartbeat intervals each survivor in a
// session's rendezvous order waits after the one before it.
const adoptFallback = 3

// adoptTimeout bounds one attempt to adopt a batch of sessions; sessions
// claimed but not restored are tried again at the next scan.
const adoptTimeout = 2 * AckTimeout

// indexEntry records an owners bucket change in the index.
func (o *Ownership) indexEntry(e jetstream.KeyValueEntry) {
	o.amu.Lock()
	defer o.amu.Unlock()
	key := e.Key()
	if prev, ok := o.ownerOf[key]; ok {
		delete(o.owners[prev], key)
		if len(o.owners[prev]) == 0 {
			delete(o.owners, prev)
		}
		delete(o.ownerOf, key)
	}
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	node := string(e.Value())
	if o.owners[node] == nil {
		o.owners[node] = make(map[string]uint64)
	}
	o.owners[node][key] = e.Revision()
	o.ownerOf[key] = node
}

// entriesOf returns a copy of the entries naming node: key → revision.
func (o *Ownership) entriesOf(node string) map[string]uint64 {
	o.amu.Lock()
	defer o.amu.Unlock()
	out := make(map[string]uint64, len(o.owners[node]))
	for k, rev := range o.owners[node] {
		out[k] = rev
	}
	return out
}

// owningNodes names the nodes that entries name, this one excepted.
func (o *Ownership) owningNodes() []string {
	o.amu.Lock()
	defer o.amu.Unlock()
	var out []string
	for n := range o.owners {
		if n != o.opts.Node {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// beginAdopt marks clientID as being adopted here; done removes the mark.
// ok is false when it is already marked.
func (o *Ownership) beginAdopt(clientID string) (done func(), ok bool) {
	o.amu.Lock()
	defer o.amu.Unlock()
	if o.adopting[clientID] != nil {
		return nil, false
	}
	ch := make(chan struct{})
	o.adopting[clientID] = ch
	// Routed deliveries its followers read meanwhile wait for it.
	o.sessions.beginAdopt(clientID)
	return func() {
		o.amu.Lock()
		delete(o.adopting, clientID)
		o.amu.Unlock()
		o.sessions.endAdopt(clientID)
		close(ch)
	}, true
}

// awaitAdopt waits while clientID is being adopted here (or ctx ends):
// a takeover must find the session restored, to hand it over.
func (o *Ownership) awaitAdopt(ctx context.Context, clientID string) {
	o.amu.Lock()
	ch := o.adopting[clientID]
	o.amu.Unlock()
	if ch == nil {
		return
	}
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// Adopted is how many sessions this node has adopted from lost nodes and
// from its own previous run.
func (o *Ownership) Adopted() uint64 { return o.adopted.Load() }

// rank is this node's place in clientID's rendezvous order over live:
// 0 adopts first.
func rank(clientID, self string, live []string) int {
	score := func(node string) uint64 {
		h := fnv.New64a()
		h.Write([]byte(node))
		h.Write([]byte{0})
		h.Write([]byte(clientID))
		// FNV alone barely mixes names that differ in their last byte
		// (node1, node2): finish with a 64-bit avalanche (MurmurHash3's).
		x := h.Sum64()
		x ^= x >> 33
		x *= 0xff51afd7ed558ccd
		x ^= x >> 33
		x *= 0xc4ceb9fe1a85ec53
		x ^= x >> 33
		return x
	}
	mine := score(self)
	r := 0
	for _, n := range live {
		if n == self {
			continue
		}
		if s := score(n); s > mine || s == mine && n < self {
			r++
		}
	}
	return r
}

// reap looks for lost nodes once a heartbeat interval until Stop.
func (o *Ownership) reap() {
	defer o.wg.Done()
	select {
	case <-o.ready:
	case <-o.done:
		return
	}
	t := time.NewTicker(o.members.HeartbeatInterval())
	defer t.Stop()
	lostSince := make(map[string]time.Time) // nodes judged lost, and since when
	for {
		select {
		case <-o.done:
			return
		case <-t.C:
		}
		o.scan(lostSince, time.Now())
	}
}

// scan adopts what is due of the sessions of lost nodes, and retries the
// sessions this node claimed but could not restore yet.
func (o *Ownership) scan(lostSince map[string]time.Time, now time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), adoptTimeout)
	defer cancel()
	go func() {
		select {
		case <-o.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	if len(o.unrestored) > 0 {
		o.adopt(ctx, maps.Clone(o.unrestored), "")
	}
	interval := o.members.HeartbeatInterval()
	nodes := o.owningNodes()
	for n := range lostSince {
		if !slices.Contains(nodes, n) {
			delete(lostSince, n) // nothing of it is left
		}
	}
	live := o.members.LiveMembers()
	for _, n := range nodes {
		if slices.Contains(live, n) || !o.members.Lost(ctx, n) {
			delete(lostSince, n)
			continue
		}
		entries := o.entriesOf(n)
		since, ok := lostSince[n]
		if !ok {
			since = now
			lostSince[n] = now
			o.log.Warn("cluster node lost: adopting its sessions", "lost", n, "sessions", len(entries), "live", live)
		}
		due := make(map[string]uint64)
		for key, rev := range entries {
			id, err := clientID(key)
			if err != nil {
				continue
			}
			wait := time.Duration(rank(id, o.opts.Node, live)*adoptFallback) * interval
			if !now.Before(since.Add(wait)) {
				due[key] = rev
			}
		}
		if len(due) > 0 {
			o.adopt(ctx, due, n)
		}
	}
}

// adopt claims the sessions of claims (key → the revision of the entry
// to replace) and restores them here, offline, as the node's own; from
// names the node that owned them ("" for this node's own entries). It
// returns the keys it is done with: restored, released (no record), or
// claimed by another node first.
//
// Each is marked as being adopted (a takeover of it here waits), claimed
// by compare-and-set, its records read (one consumer per shard), then
// claimed again on the new revision: that second compare-and-set fails
// when a client claimed the session meanwhile (its node then read the same
// records and serves it), so a session is restored by one node only. A
// session without a record has its entry released. Sessions claimed but
// not restored (JetStream failing) are kept in o.unrestored for the next
// try.
func (o *Ownership) adopt(ctx context.Context, claims map[string]uint64, from string) map[string]bool {
	self := []byte(o.opts.Node)
	resolved := make(map[string]bool)
	type claimed struct {
		key, id string
		token   uint64
		fenced  uint64 // the fence's stream sequence
		done    func()
	}
	var got []claimed
	var restored []string
	defer func() {
		for _, c := range got {
			c.done()
		}
		// Their connections ended with their node (or this node's
		// previous run): the deliveries their shared subscriptions had
		// not sent go to online members, as when a member's connection
		// ends on one node.
		for _, id := range restored {
			o.b.MoveShared(id)
		}
	}()
	for key, rev := range claims {
		id, err := clientID(key)
		if err != nil {
			resolved[key] = true
			continue
		}
		done, ok := o.beginAdopt(id)
		if !ok {
			continue
		}
		token, err := o.kv.Update(ctx, key, self, rev)
		if err != nil {
			done()
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
				// Claimed (or released) by another node first.
				delete(o.unrestored, key)
				resolved[key] = true
			} else {
				o.errs.Log(slog.LevelWarn, "adopt", "could not claim a session to adopt (tried again)", "client", id, "from", from, "err", err)
			}
			continue
		}
		// Before the records are read: a write of the node that lost
		// the session still on its way cannot store a QoS 2 identifier
		// after them (fence.go).
		fenced, err := o.sessions.fence(ctx, id, token)
		if err != nil {
			done()
			if errors.Is(err, errFenced) {
				delete(o.unrestored, key) // claimed by a client meanwhile
				resolved[key] = true
			} else {
				o.unrestored[key] = token
				o.errs.Log(slog.LevelWarn, "adopt", "could not fence a session to adopt (tried again)", "client", id, "from", from, "err", err)
			}
			continue
		}
		o.unrestored[key] = token
		got = append(got, claimed{key, id, token, fenced, done})
	}
	if len(got) == 0 {
		return resolved
	}
	// Their records, one read per shard.
	byShard := make(map[int][]string)
	through := make(map[int]uint64) // per shard, the last of the fences
	for _, c := range got {
		n := o.sessions.shard(c.id)
		byShard[n] = append(byShard[n], c.id)
		through[n] = max(through[n], c.fenced)
	}
	recs := make(map[string]*stored)
	for n, ids := range byShard {
		filters := []string{"edgeport.sessions." + strconv.Itoa(n) + ".>"} // the fences too
		if len(ids) == 1 {
			filters = []string{o.sessions.fenceSubject(ids[0]), o.sessions.sessionSubject(ids[0], ">")}
		}
		r, err := o.sessions.readRecords(ctx, n, filters, through[n], func(id string) bool { return slices.Contains(ids, id) })
		if err != nil {
			o.errs.Log(slog.LevelWarn, "adopt", "could not read the sessions to adopt (tried again)", "from", from, "err", err)
			return resolved
		}
		maps.Copy(recs, r)
	}
	adopted := 0
	for _, c := range got {
		token, err := o.kv.Update(ctx, c.key, self, c.token)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
				delete(o.unrestored, c.key) // a client claimed it meanwhile
				resolved[c.key] = true
			}
			continue
		}
		delete(o.unrestored, c.key)
		resolved[c.key] = true
		st := recs[c.id]
		if st == nil || st.rec == nil {
			o.Release(c.id, token) // nothing stored: nothing to serve
			continue
		}
		if err := o.sessions.adoptStored(st, token); err != nil {
			o.log.Warn("could not adopt a session", "client", c.id, "from", from, "err", err)
			continue
		}
		adopted++
		o.adopted.Add(1)
		restored = append(restored, c.id)
	}
	if adopted > 0 {
		if from == "" {
			o.log.Info("restored sessions this node owns", "sessions", adopted)
		} else {
			o.log.Info("adopted sessions of a lost node", "lost", from, "sessions", adopted)
		}
	}
	return resolved
}
