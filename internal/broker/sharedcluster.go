package broker

import (
	"slices"

	"github.com/edgeport/edgeport/internal/mqtt/topic"
)

// Shared subscriptions in cluster mode (docs/cluster.md, "Shared
// subscriptions"). A QoS 1/2 message published here that matches a shared
// subscription group with a persistent member anywhere in the cluster (a
// member of this node, or one the session index knows: RemoteSessions.Shared)
// gets its one delivery for the group from this node, inside the publish's
// transaction: to a member of this node directly, or to a member of another
// node as a routed delivery in that member's session stream, durable before
// the PUBACK like any routed delivery. The group's live NATS queue group then
// drops the message (Message.SharedDurable names the groups served so). Other
// groups (only non-persistent members, as far as this node knows) and QoS 0
// stay on the live queue group.
//
// Which member: the online ones first (this node's connected sessions, and
// the sessions whose last record says connected), and among them the one
// ranking first for the message by rendezvous hashing of its identifier and
// the member's client identifier; with none online, the first of all the
// members. A hash rather than a rotation: a node that routes a QoS 2 message
// again under its stored identifier (phased.go) picks the same member from the
// same view, so the routed delivery's once-key makes it one delivery.

// SharedGroup names a shared subscription group: $share/<Group>/<Filter>.
type SharedGroup struct {
	Group, Filter string
}

// SharedMember is a persistent session of the cluster that is a member of
// a shared subscription group, as the session index knows it: its client
// identifier, its subscription's QoS and whether its session was
// connected when last written.
type SharedMember struct {
	ClientID string
	QoS      byte
	Online   bool
}

// SharedPick is the one delivery of a message for a shared subscription
// group, given to member ClientID whose subscription is at QoS.
type SharedPick struct {
	ClientID string
	SharedGroup
	QoS byte
}

// sharedHit is one shared subscription group a message published here
// matched: this node's members and the other nodes' persistent ones.
type sharedHit struct {
	SharedGroup
	local  []topic.Member[*session, *subscription]
	remote []SharedMember
}

// collectShared gathers the groups m matches that have a persistent
// member: remote (RemoteSessions.Shared, sessions held here left out: this
// node knows them better) and this node's, from local.
func (b *Broker) collectShared(m *Message, local []sharedHit) []sharedHit {
	var hits []sharedHit
	b.remote.Shared(m, func(group, filter string, members []SharedMember) {
		hits = append(hits, sharedHit{SharedGroup: SharedGroup{group, filter}, remote: slices.Clone(members)})
	})
	if len(hits) > 0 {
		b.sessMu.Lock()
		for i := range hits {
			hits[i].remote = slices.DeleteFunc(hits[i].remote, func(mb SharedMember) bool { return b.sessions[mb.ClientID] != nil })
		}
		b.sessMu.Unlock()
	}
	for _, l := range local {
		i := slices.IndexFunc(hits, func(h sharedHit) bool { return h.SharedGroup == l.SharedGroup })
		if i < 0 {
			hits = append(hits, sharedHit{SharedGroup: l.SharedGroup})
			i = len(hits) - 1
		}
		hits[i].local = l.local
	}
	return slices.DeleteFunc(hits, func(h sharedHit) bool { return !h.durable(b, m) })
}

// durable reports whether the group has a member whose delivery is
// durable: a remote persistent member, or a persistent session of this
// node subscribed at QoS 1 or 2.
func (h *sharedHit) durable(b *Broker, m *Message) bool {
	if len(h.remote) > 0 {
		return true
	}
	for _, mb := range h.local {
		if min(m.QoS, mb.Value.qos) > 0 && mb.Key.skipsLive(b) {
			return true
		}
	}
	return false
}

// pickScore ranks member clientID for message id: FNV-1a 64 of both,
// mixed (splitmix64's finalizer) so that client identifiers differing in
// their last byte rank independently.
func pickScore(id MessageID, clientID string) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for _, c := range id {
		h = (h ^ uint64(c)) * prime
	}
	for i := 0; i < len(clientID); i++ {
		h = (h ^ uint64(clientID[i])) * prime
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

// pick chooses the group's member for message id: the best ranked online
// member, else the best ranked of all. It returns the local member's index
// in h.local, or -1 and the remote member.
func (h *sharedHit) pick(id MessageID) (local int, remote SharedMember) {
	local = -1
	ri := -1
	var best uint64
	online, found := false, false
	consider := func(clientID string, on bool) bool {
		score := pickScore(id, clientID)
		if !found || on && !online || on == online && score > best {
			found, online, best = true, on, score
			return true
		}
		return false
	}
	for i, mb := range h.local {
		if consider(mb.Key.id, mb.Key.online.Load()) {
			local, ri = i, -1
		}
	}
	for i, mb := range h.remote {
		if consider(mb.ClientID, mb.Online) {
			local, ri = -1, i
		}
	}
	if ri >= 0 {
		remote = h.remote[ri]
	}
	return local, remote
}

// pickShared chooses the member of each group in hits for message id: a
// local member becomes one of r's targets, a remote one a SharedPick.
func (r *router) pickShared(hits []sharedHit, id MessageID) []SharedPick {
	var picks []SharedPick
	for i := range hits {
		h := &hits[i]
		li, rm := h.pick(id)
		if li >= 0 {
			mb := h.local[li]
			r.addMember(h.Group, h.Filter, mb.Key, mb.Value)
			continue
		}
		picks = append(picks, SharedPick{ClientID: rm.ClientID, SharedGroup: h.SharedGroup, QoS: rm.QoS})
	}
	return picks
}

// sharedPicks chooses, for a message routed again under its stored id
// (phased.go), each group's member among the persistent members the
// session index knows (this node's included, as routed deliveries).
func (b *Broker) sharedPicks(m *Message, id MessageID) []SharedPick {
	var picks []SharedPick
	b.remote.Shared(m, func(group, filter string, members []SharedMember) {
		h := sharedHit{SharedGroup: SharedGroup{group, filter}, remote: members}
		if _, rm := h.pick(id); rm.ClientID != "" {
			picks = append(picks, SharedPick{ClientID: rm.ClientID, SharedGroup: h.SharedGroup, QoS: rm.QoS})
		}
	})
	return picks
}

// hasShared reports whether picks holds group g.
func hasShared(picks []SharedPick, g SharedGroup) (SharedPick, bool) {
	for _, p := range picks {
		if p.SharedGroup == g {
			return p, true
		}
	}
	return SharedPick{}, false
}

// SharedDurableFor reports whether m's publishing node gave the message's
// one delivery for group g itself (Message.SharedDurable): the group's
// live queue group must not deliver it again.
func (m *Message) SharedDurableFor(g SharedGroup) bool {
	return slices.Contains(m.SharedDurable, g)
}

// remoteMember returns, in cluster mode, the online member of another node
// (as the session index knows it) that d's shared subscription group would
// give d to, leaving from: ranked for id as a publish ranks them.
func (b *Broker) remoteMember(from *session, d *delivery, id MessageID) (SharedMember, bool) {
	if b.remote == nil || d.shared == nil {
		return SharedMember{}, false
	}
	var pick SharedMember
	found := false
	b.remote.Shared(d.msg, func(group, filter string, members []SharedMember) {
		if found || group != d.shared.group || filter != d.shared.filter {
			return
		}
		h := sharedHit{remote: slices.DeleteFunc(slices.Clone(members), func(mb SharedMember) bool { return !mb.Online || mb.ClientID == from.id })}
		if len(h.remote) > 0 {
			_, pick = h.pick(id)
			found = true
		}
	})
	return pick, found
}

// moveToRemote gives d, a shared subscription's QoS 1 delivery that from
// (left by its client, or adopted offline after its node was lost) will
// not send, to an online member of another node as a routed delivery, and
// drops from's entry once that is durable: should the node die between
// the two, or from's client resume the session on another node meanwhile,
// the message is delivered twice rather than lost, which QoS 1 allows. A
// QoS 2 delivery is not moved across nodes (it stays with from, sent when
// its client comes back): exactly once holds. It reports false when it
// did not move d.
func (b *Broker) moveToRemote(from *session, d delivery) bool {
	if d.qos > 1 {
		return false
	}
	id := d.routed
	if id.IsZero() {
		id = newMessageID()
	}
	to, ok := b.remoteMember(from, &d, id)
	if !ok {
		return false
	}
	tx := b.newTxn()
	if tx == nil {
		return false // stopped
	}
	picks := []SharedPick{{ClientID: to.ClientID, SharedGroup: SharedGroup{d.shared.group, d.shared.filter}, QoS: to.QoS}}
	m := d.msg
	tx.write(func(t Txn) { b.remote.Route(t, m, id, func(string) bool { return true }, nil, picks) }, nil)
	b.commit(tx, func(err error) {
		if err != nil {
			return // stays with from: sent when its client comes back
		}
		b.goBackground(func() {
			b.dropEntry(from, &d)
			b.flush()
		})
	})
	return true
}

// MoveShared gives the shared subscription deliveries that clientID's
// session, held here offline, has not sent (its queue, and QoS 1 ones in
// flight) to other online members of their groups, as detach does when a
// member's connection ends: called for a session adopted from a node that
// was lost (its connection ended with the node). A QoS 2 delivery that
// went out stays: the client may have it, and gets it again when it comes
// back (MQTT-4.8.2-4); so does a QoS 2 one with no online member on this
// node (moveToRemote).
func (b *Broker) MoveShared(clientID string) {
	b.sessMu.Lock()
	s := b.sessions[clientID]
	b.sessMu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.client != nil || s.ended {
		s.mu.Unlock()
		return
	}
	moved := s.takeShared(func(d *delivery) bool { return b.otherMemberOnline(s, d) }, false)
	s.mu.Unlock()
	for _, d := range moved {
		if b.reroute(s, d) {
			b.dropEntry(s, &d)
		}
	}
	b.flush()
}
