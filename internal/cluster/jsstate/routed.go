package jsstate

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/cluster/wire"
	"github.com/edgeport/edgeport/internal/mqtt/topic"
	"github.com/edgeport/edgeport/internal/store"
)

// Routed deliveries: a QoS 1/2 publication is made durable for every
// persistent session of the cluster before its publisher is acknowledged,
// not only for those of the node it arrived on (docs/cluster.md, "Routed
// deliveries").
//
//   - Every node keeps an index of the subscriptions of every persistent
//     session, read from the session records (<key>.s) of every shard by
//     one ordered consumer per shard.
//   - A node that routes a QoS 1/2 publication writes, in the publish's
//     transaction, a routed delivery <key>.r.<id> (the message record;
//     id is the publication's broker.MessageID) for each session the
//     index matches at QoS 1 or 2 and that it did not store the message
//     for itself (Store.Route).
//   - The same consumers read the routed deliveries: the node that holds
//     the session delivers the message into it and deletes the record in
//     one transaction (broker.DeliverRouted); the others leave it. A node
//     adopting a session reads its routed deliveries with the rest of it.
//   - Live routing does not give those sessions the message
//     (broker.Message.DurablyRouted), so a session gets it once.

// indexSub is one subscription of a persistent session in the index:
// group is its shared subscription group ("" when not shared), online
// whether the session was connected when its record was written.
type indexSub struct {
	group, filter string
	qos           byte
	noLocal       bool
	online        bool
}

// sessionIndex holds the subscriptions of the persistent sessions of the
// cluster, as the session records in JetStream give them.
type sessionIndex struct {
	trie *topic.Trie[string, indexSub] // its own locks: matched concurrently

	mu   sync.Mutex            // guards subs; held while the trie changes
	subs map[string][]indexSub // by client identifier
}

func newSessionIndex() *sessionIndex {
	return &sessionIndex{trie: topic.NewTrie[string, indexSub](), subs: make(map[string][]indexSub)}
}

// set replaces the subscriptions of clientID by rec's (rec nil: the session
// is gone). Shared subscriptions are kept only for a session that outlives
// its connection (a record of a session that ends with it is kept for its
// will alone).
func (x *sessionIndex) set(clientID string, rec *store.Session) {
	var subs []indexSub
	if rec != nil {
		for _, r := range rec.Subs {
			group, inner, shared, err := topic.ParseShared(r.Filter)
			if err != nil || shared && rec.Expiry == 0 {
				continue
			}
			subs = append(subs, indexSub{group: group, filter: inner, qos: r.QoS, noLocal: r.NoLocal, online: rec.DisconnectedAt == 0})
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, old := range x.subs[clientID] {
		if !containsFilter(subs, old.group, old.filter) {
			x.trie.Unsubscribe(old.filter, old.group, clientID)
		}
	}
	for _, sub := range subs {
		x.trie.Subscribe(sub.filter, sub.group, clientID, sub)
	}
	if rec == nil {
		delete(x.subs, clientID)
	} else {
		x.subs[clientID] = subs
	}
}

func containsFilter(subs []indexSub, group, filter string) bool {
	for _, s := range subs {
		if s.group == group && s.filter == filter {
			return true
		}
	}
	return false
}

// indexTarget is one session a message matched, with its QoS.
type indexTarget struct {
	clientID string
	qos      byte
}

// match returns the sessions m matches at QoS 1 or 2 (the highest of
// their matching subscriptions', No Local applied), appended to dst.
func (x *sessionIndex) match(m *broker.Message, dst []indexTarget) []indexTarget {
	x.trie.Match(m.Topic, func(clientID string, sub indexSub) {
		if sub.noLocal && m.Origin == clientID {
			return
		}
		qos := min(m.QoS, sub.qos)
		for i := range dst {
			if dst[i].clientID == clientID {
				dst[i].qos = max(dst[i].qos, qos)
				return
			}
		}
		dst = append(dst, indexTarget{clientID, qos})
	}, nil)
	n := 0
	for _, t := range dst {
		if t.qos > 0 {
			dst[n] = t
			n++
		}
	}
	return dst[:n]
}

// shared calls fn for every shared subscription group m matches, with
// its members subscribed at QoS 1 or 2 (network clients' sessions only).
func (x *sessionIndex) shared(m *broker.Message, fn func(group, filter string, members []broker.SharedMember)) {
	var out []broker.SharedMember
	x.trie.Match(m.Topic, nil, func(group, filter string, members []topic.Member[string, indexSub]) {
		out = out[:0]
		for _, mb := range members {
			if min(m.QoS, mb.Value.qos) == 0 || internal(mb.Key) {
				continue
			}
			out = append(out, broker.SharedMember{ClientID: mb.Key, QoS: mb.Value.qos, Online: mb.Value.online})
		}
		if len(out) > 0 {
			fn(group, filter, out)
		}
	})
}

// Shared implements broker.RemoteSessions from the session index.
func (s *Store) Shared(m *broker.Message, fn func(group, filter string, members []broker.SharedMember)) {
	if s.index != nil {
		s.index.shared(m, fn)
	}
}

// routedToken is the subject token of routed delivery id.
func routedToken(id broker.MessageID) string { return hex.EncodeToString(id[:]) }

// parseRoutedID decodes a routedToken.
func parseRoutedID(tok string) (broker.MessageID, error) {
	var id broker.MessageID
	if len(tok) != 2*len(id) {
		return id, fmt.Errorf("%w: routed delivery %q", store.ErrCorrupt, tok)
	}
	if _, err := hex.Decode(id[:], []byte(tok)); err != nil || id.IsZero() {
		return id, fmt.Errorf("%w: routed delivery %q", store.ErrCorrupt, tok)
	}
	return id, nil
}

// Route implements broker.RemoteSessions: it writes into t a routed
// delivery of m for every persistent session the index matches at QoS 1
// or 2 and that local does not report, and for every session in also.
func (s *Store) Route(bt broker.Txn, m *broker.Message, id broker.MessageID, local func(clientID string) bool, also []string, shared []broker.SharedPick) {
	t, ok := bt.(*txn)
	if !ok || s.index == nil {
		return
	}
	var rec []byte
	var done []string
	write := func(clientID string) {
		var groups []broker.SharedPick
		for _, p := range shared {
			if p.ClientID == clientID {
				groups = append(groups, p)
			}
		}
		data := rec
		if len(groups) > 0 {
			r := broker.MessageRecord(m)
			data = store.AppendMessage(appendSharedRouted(nil, groups), &r)
		} else if rec == nil {
			r := broker.MessageRecord(m)
			rec = store.AppendMessage(nil, &r)
			data = rec
		}
		t.put(s.sessionSubject(clientID, "r."+routedToken(id)), data)
		t.ops[len(t.ops)-1].msg.Header.Set(jetstream.MsgIDHeader, onceKey(id, clientID))
		t.ops[len(t.ops)-1].routed = clientID
		s.routedBegin(clientID)
		s.routedWrites.Add(1)
	}
	for _, tg := range s.index.match(m, nil) {
		if internal(tg.clientID) || local != nil && local(tg.clientID) {
			continue
		}
		write(tg.clientID)
		if len(also) > 0 || len(shared) > 0 {
			done = append(done, tg.clientID)
		}
	}
	for _, c := range also {
		if !internal(c) && !slices.Contains(done, c) {
			write(c)
			done = append(done, c)
		}
	}
	for _, p := range shared {
		if !internal(p.ClientID) && !slices.Contains(done, p.ClientID) {
			write(p.ClientID)
			done = append(done, p.ClientID)
		}
	}
}

// A routed delivery's record is the message record (store.AppendMessage,
// whose first byte is its version, 1), or, for the member a shared
// subscription group chose, routedShared, a uvarint count and that many
// groups (QoS byte, uvarint length and group name, uvarint length and
// filter), then the message record.
const routedShared = 0x80

// maxSharedRouted bounds the groups one routed delivery may name.
const maxSharedRouted = 1024

// appendSharedRouted appends the groups part of a routedShared record.
func appendSharedRouted(dst []byte, groups []broker.SharedPick) []byte {
	dst = append(dst, routedShared)
	dst = binary.AppendUvarint(dst, uint64(len(groups)))
	for _, g := range groups {
		dst = append(dst, g.QoS)
		dst = binary.AppendUvarint(dst, uint64(len(g.Group)))
		dst = append(dst, g.Group...)
		dst = binary.AppendUvarint(dst, uint64(len(g.Filter)))
		dst = append(dst, g.Filter...)
	}
	return dst
}

// decodeRouted splits a routed delivery's record into the groups that
// chose the session (none for a plain one) and the message record.
func decodeRouted(clientID string, data []byte) ([]broker.SharedPick, []byte, error) {
	if len(data) == 0 || data[0] != routedShared {
		return nil, data, nil
	}
	bad := fmt.Errorf("%w: shared routed delivery", store.ErrCorrupt)
	b := data[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n == 0 || n > maxSharedRouted {
		return nil, nil, bad
	}
	b = b[k:]
	groups := make([]broker.SharedPick, 0, n)
	for range n {
		if len(b) == 0 || b[0] > 2 {
			return nil, nil, bad
		}
		p := broker.SharedPick{ClientID: clientID, QoS: b[0]}
		b = b[1:]
		var ok1, ok2 bool
		p.Group, b, ok1 = wire.String(b)
		p.Filter, b, ok2 = wire.String(b)
		if !ok1 || !ok2 || p.Group == "" {
			return nil, nil, bad
		}
		groups = append(groups, p)
	}
	return groups, b, nil
}

// onceKey is the JetStream message id (Nats-Msg-Id) of the write of a
// delivery of message id to clientID's session, a routed delivery or the
// first entry made from a message published in two phases: within
// DuplicateWindow the session's stream stores one of them, whichever node
// writes them and however often.
func onceKey(id broker.MessageID, clientID string) string {
	return routedToken(id) + "." + clientKey(clientID)
}

// Received implements broker.RemoteSessions: the inbound QoS 2 identifier
// packetID of clientID's session, stored with m and its id (an inbound
// record of version 2, see inboundRecord).
func (s *Store) Received(bt broker.Txn, clientID string, packetID uint16, id broker.MessageID, m *broker.Message) {
	t, ok := bt.(*txn)
	if !ok {
		return
	}
	if internal(clientID) {
		t.PutInbound(clientID, packetID)
		return
	}
	r := broker.MessageRecord(m)
	t.put(s.sessionSubject(clientID, "i."+strconv.FormatUint(uint64(packetID), 10)), appendInbound(nil, id, &r))
}

// Inbound records (<key>.i.<packet id>), versioned by their first byte:
//
//	inboundPlain  (1): the identifier alone, the message routed in the
//	                  same transaction (a single-phase PUBLISH)
//	inboundPhased (2): then the 16-byte broker.MessageID and the message
//	                  record (store.AppendMessage): stored before the
//	                  message is routed (two phases, broker/phased.go)
const (
	inboundPlain  = 1
	inboundPhased = 2
)

// appendInbound appends an inboundPhased record of m routed as id.
func appendInbound(dst []byte, id broker.MessageID, m *store.Message) []byte {
	dst = append(dst, inboundPhased)
	dst = append(dst, id[:]...)
	return store.AppendMessage(dst, m)
}

// decodeInbound decodes the inbound record of packetID.
func decodeInbound(packetID uint16, data []byte) (broker.Inbound, error) {
	in := broker.Inbound{PacketID: packetID}
	switch {
	case len(data) == 1 && data[0] == inboundPlain:
		return in, nil
	case len(data) > 1+len(in.ID) && data[0] == inboundPhased:
		copy(in.ID[:], data[1:])
		if in.ID.IsZero() {
			break
		}
		rec, err := store.DecodeMessage(data[1+len(in.ID):])
		if err != nil {
			return in, fmt.Errorf("inbound %d: %w", packetID, err)
		}
		if in.Msg, err = broker.MessageFromRecord(rec); err != nil {
			return in, fmt.Errorf("inbound %d: %w", packetID, err)
		}
		return in, nil
	}
	return in, fmt.Errorf("%w: inbound record %d", store.ErrCorrupt, packetID)
}

// routedOut counts a client's routed deliveries written by this node:
// those not acknowledged yet, and the stream sequence of the last one
// acknowledged.
type routedOut struct {
	pending int
	last    uint64
}

// routedBegin counts a routed delivery to clientID's session put into a
// transaction.
func (s *Store) routedBegin(clientID string) {
	s.imu.Lock()
	defer s.imu.Unlock()
	r := s.routedOut[clientID]
	if r == nil {
		r = &routedOut{}
		s.routedOut[clientID] = r
	}
	r.pending++
}

// routedEnd counts one routed delivery to clientID's session done with:
// acknowledged at stream sequence seq, or (seq 0) failed or discarded.
func (s *Store) routedEnd(clientID string, seq uint64) {
	s.imu.Lock()
	defer s.imu.Unlock()
	r := s.routedOut[clientID]
	if r == nil {
		return
	}
	r.pending--
	r.last = max(r.last, seq)
	if r.pending <= 0 && r.last <= s.indexed[s.shard(clientID)] {
		delete(s.routedOut, clientID)
	}
}

// Deferred implements broker.RemoteSessions: whether a message published
// here for clientID's session, held here, must go through its stream as a
// routed delivery rather than straight into it, so that it comes after
// the routed deliveries this node wrote for the session before: some are
// not acknowledged yet or not read by this node's follower yet, or the
// session is being adopted.
func (s *Store) Deferred(clientID, origin string) bool {
	s.amu.Lock()
	adopting := s.adopting[clientID] != nil
	s.amu.Unlock()
	if adopting {
		return true
	}
	n := s.shard(clientID)
	s.imu.Lock()
	defer s.imu.Unlock()
	if at, ok := s.moved[origin]; ok {
		if s.indexed[n] < at[n] {
			return true
		}
		caught := true
		for i, seq := range at {
			caught = caught && s.indexed[i] >= seq
		}
		if caught {
			delete(s.moved, origin)
		}
	}
	r := s.routedOut[clientID]
	if r == nil {
		return false
	}
	if r.pending > 0 || r.last > s.indexed[n] {
		return true
	}
	delete(s.routedOut, clientID)
	return false
}

// arrived notes that clientID has just come from another node: the
// routed deliveries it published through that node, acknowledged before
// it left, are in the streams up to their last routed delivery now, and
// what it publishes here is deferred (Deferred) until this node's
// followers have read that far. The shards are asked at once, for
// arrivalTimeout at most. A shard that does not answer in time (no
// leader: common right after a node thaws or a partition heals, when
// the leaders are elected again) is not waited for, but not skipped
// either: the client's messages to the sessions of that shard held here
// are deferred until it answers (asked again in the background,
// learnArrival) and this node's follower has read that far. Skipped,
// the client's next message went straight into a subscriber here ahead
// of the ones it had published through its last node, still unread
// from the stream by this node's follower (behind after a thaw): the
// window of 32 QoS 2 messages `frozen-pub-q2-n3:1155`-`1186` first
// received after `1187`.
func (s *Store) arrived(ctx context.Context, clientID string) {
	ctx, cancel := context.WithTimeout(ctx, arrivalTimeout)
	defer cancel()
	at := make([]uint64, s.opts.Shards)
	errs := make([]error, s.opts.Shards)
	var wg sync.WaitGroup
	for n := range s.opts.Shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at[n], errs[n] = s.lastRouted(ctx, n)
		}()
	}
	wg.Wait()
	var silent []int
	for n, err := range errs {
		if err != nil {
			at[n] = unknownArrival
			silent = append(silent, n)
		}
	}
	s.imu.Lock()
	for n, seq := range at {
		if seq <= s.indexed[n] {
			at[n] = 0 // read already
		}
	}
	if slices.ContainsFunc(at, func(seq uint64) bool { return seq > 0 }) {
		s.moved[clientID] = at
	}
	s.imu.Unlock()
	if len(silent) > 0 {
		s.errs.Log(slog.LevelInfo, "arrived", "a moved client's messages go through the streams until the shards that did not answer do", "shards", silent, "client", clientID, "err", errs[silent[0]])
		s.qmu.Lock() // Stop sets closed under it before it waits for wg
		if !s.closed {
			s.wg.Add(1)
			go s.learnArrival(clientID, at, silent)
		}
		s.qmu.Unlock()
	}
}

// unknownArrival stands, in a moved client's arrival, for a shard that
// has not answered yet: its messages to the sessions of that shard held
// here are deferred meanwhile.
const unknownArrival = math.MaxUint64

// arrivalGiveUp bounds how long learnArrival asks the shards that did
// not answer: then the client's messages to their sessions are no longer
// deferred (and the order for them not kept).
const arrivalGiveUp = 30 * time.Second

// lastRouted returns the stream sequence of shard n's last routed
// delivery (0: none).
func (s *Store) lastRouted(ctx context.Context, n int) (uint64, error) {
	if f := s.opts.arrivalFault; f != nil {
		if err := f(n); err != nil {
			return 0, err
		}
	}
	last, err := s.streams[n].GetLastMsgForSubject(ctx, "edgeport.sessions."+strconv.Itoa(n)+".*.r.*")
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, err
	}
	return last.Sequence, nil
}

// learnArrival asks the shards of clientID's arrival at that did not
// answer (silent) again, every arrivalRetry, and puts their answers in
// at, until each answered, the store stops or arrivalGiveUp passed. It
// leaves at alone once a later arrival of the client replaced it.
func (s *Store) learnArrival(clientID string, at []uint64, silent []int) {
	defer s.wg.Done()
	tick := time.NewTicker(arrivalRetry)
	defer tick.Stop()
	giveUp := time.NewTimer(arrivalGiveUp)
	defer giveUp.Stop()
	set := func(n int, seq uint64) {
		s.imu.Lock()
		defer s.imu.Unlock()
		cur, ok := s.moved[clientID]
		if !ok || &cur[0] != &at[0] {
			return // caught up and forgotten, or a later arrival
		}
		if seq <= s.indexed[n] {
			seq = 0
		}
		at[n] = seq
	}
	for len(silent) > 0 {
		select {
		case <-s.quit:
			return
		case <-giveUp.C:
			s.errs.Log(slog.LevelWarn, "arrival", "not ordering a moved client's messages after those it published before on a shard", "shards", silent, "client", clientID)
			for _, n := range silent {
				set(n, 0)
			}
			return
		case <-tick.C:
		}
		silent = slices.DeleteFunc(silent, func(n int) bool {
			ctx, cancel := context.WithTimeout(s.halt, arrivalTimeout)
			defer cancel()
			seq, err := s.lastRouted(ctx, n)
			if err != nil {
				return false
			}
			set(n, seq)
			return true
		})
	}
}

// arrivalRetry is how often learnArrival asks a silent shard again.
const arrivalRetry = 250 * time.Millisecond

// arrivalTimeout bounds the streams' answers to arrived (a CONNECT that
// moved waits for them).
const arrivalTimeout = time.Second

// startFollowers starts one reader per shard (a streamReader, see
// watch.go) of its session records and routed deliveries, and returns
// once each has read what the shard held when it started (the index is
// complete). A follower's consumer is an R1 ephemeral that JetStream
// places on any server of the shard's stream: when that server dies, or
// its replica is behind and catching up, the follower reads on from a new
// one within about 2 s (nats.go's ordered consumer, 5 s heartbeat by
// default, left a survivor's routed deliveries and session index stalled
// for 10 s after a node was lost: `TestRoutedToSessionOfLostNode` took
// over 8 s in 35 of 80 runs under load and failed 2; 0 of 45 at 1 s).
func (s *Store) startFollowers(ctx context.Context) error {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if s.followers != nil {
		return nil
	}
	life, end := context.WithCancel(context.Background())
	var fs []*streamReader
	caught := make([]chan struct{}, s.opts.Shards)
	for n := range s.opts.Shards {
		prefix := "edgeport.sessions." + strconv.Itoa(n) + "."
		f := newStreamReader(s.streams[n], "shard "+strconv.Itoa(n), []string{prefix + "*.s", prefix + "*.r.*"}, true,
			jetstream.DeliverAllPolicy, &s.wg, s.log)
		caught[n] = make(chan struct{})
		var once sync.Once
		caughtUp := func() { once.Do(func() { close(caught[n]) }) }
		f.opened = func(pending uint64) bool {
			if pending == 0 {
				caughtUp()
			}
			return true
		}
		f.read = func(msg jetstream.Msg, md *jetstream.MsgMetadata) bool {
			s.apply(msg.Subject(), msg.Data(), md.Sequence.Stream)
			s.imu.Lock()
			if md.Sequence.Stream > s.indexed[n] {
				s.indexed[n] = md.Sequence.Stream
				close(s.indexChanged)
				s.indexChanged = make(chan struct{})
			}
			s.imu.Unlock()
			if md.NumPending == 0 {
				caughtUp()
			}
			return true
		}
		f.start(life)
		fs = append(fs, f)
	}
	for _, c := range caught {
		select {
		case <-c:
		case <-ctx.Done():
			end()
			return fmt.Errorf("reading the session index: %w", ctx.Err())
		}
	}
	s.followers, s.endFollowers = fs, end
	return nil
}

// stopFollowers ends the followers; Stop waits for their goroutines.
func (s *Store) stopFollowers() {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if s.endFollowers != nil {
		s.endFollowers()
	}
}

// apply handles one record a follower read, at stream sequence seq.
func (s *Store) apply(subject string, data []byte, seq uint64) {
	key, kind, num, ok := parseSubject(subject)
	if !ok {
		return
	}
	id, err := clientID(key)
	if err != nil {
		return
	}
	switch kind {
	case "s":
		if len(data) == 0 {
			s.index.set(id, nil) // the session was deleted
			s.forgetSession(id, seq)
			return
		}
		rec, err := store.DecodeSession(data, id)
		if err != nil {
			s.noteSession(id, seq, 0)
			s.errs.Log(slog.LevelWarn, "index", "ignoring a session record", "client", id, "err", err)
			return
		}
		s.noteSession(id, seq, subsPrint(rec))
		s.index.set(id, rec)
	case "r":
		if len(data) == 0 {
			return // a tombstone
		}
		rid, err := parseRoutedID(num)
		if err != nil {
			s.errs.Log(slog.LevelWarn, "index", "ignoring a routed delivery", "subject", subject, "err", err)
			return
		}
		r := routedRec{id: rid, msg: data, seq: seq}
		s.amu.Lock()
		if a := s.adopting[id]; a != nil {
			// Being adopted here: delivered once the session is.
			a.recs = append(a.recs, r)
			s.amu.Unlock()
			return
		}
		if mark := s.readThrough[id]; mark != nil {
			if seq <= mark.through {
				// The adoption of the session read past it: it gave the
				// session this delivery, or found it taken already.
				mark.skipped++
				s.amu.Unlock()
				return
			}
			delete(s.readThrough, id) // past it: nothing more to skip
			if mark.skipped > 0 {
				s.log.Debug("a follower behind an adoption skipped the routed deliveries it had read", "client", id, "through", mark.through, "skipped", mark.skipped)
			}
		}
		s.amu.Unlock()
		s.deliverRouted(id, r)
	}
}

// deliverRouted gives routed delivery r to clientID's session if this
// node holds it, deleting the record with the delivery.
func (s *Store) deliverRouted(clientID string, r routedRec) {
	if !s.b.HoldsSession(clientID) {
		return // every node reads every routed delivery: most are not ours
	}
	if s.beforeDeliver != nil {
		s.beforeDeliver(clientID)
	}
	d, ok := s.routedDelivery(clientID, r)
	if !ok {
		return
	}
	// The broker may wait before it delivers (after a pause, until it
	// knows which sessions are still its own), and an adoption of the
	// session may read past r meanwhile: it is checked again then.
	d.Taken = func() bool { return s.readPast(clientID, r.seq) }
	s.b.DeliverRouted(clientID, d)
}

// readPast reports whether this node's last adoption of clientID's
// session read its records through stream sequence seq: the adoption gave
// the session the routed delivery stored there, or found it taken. s.amu
// is not held.
func (s *Store) readPast(clientID string, seq uint64) bool {
	s.amu.Lock()
	defer s.amu.Unlock()
	mark := s.readThrough[clientID]
	if mark == nil || seq > mark.through {
		return false
	}
	mark.skipped++
	return true
}

// readMark is what a follower knows of this node's last adoption of a
// session (readThrough): the stream sequence through which it read the
// session's records, and how many routed deliveries were skipped since
// for it (logged once the follower reads past).
type readMark struct {
	through, skipped uint64
}

// noteReadThrough records that an adoption of clientID's session read its
// records through stream sequence through (the followers skip its routed
// deliveries up to there), and returns what it replaces, for an adoption
// that fails to put back (forgetReadThrough). It drops, once there are
// many, the marks the followers have read past already (those whose
// session has no routed delivery since). s.amu is not held.
func (s *Store) noteReadThrough(clientID string, through uint64) (prev uint64, had bool) {
	var at []uint64
	s.amu.Lock()
	big := len(s.readThrough) >= readThroughSweep
	s.amu.Unlock()
	if big {
		at = s.Position()
	}
	s.amu.Lock()
	defer s.amu.Unlock()
	if big {
		for id, mark := range s.readThrough {
			if mark.through <= at[s.shard(id)] {
				delete(s.readThrough, id)
			}
		}
	}
	if mark := s.readThrough[clientID]; mark != nil {
		prev, had = mark.through, true
	}
	s.readThrough[clientID] = &readMark{through: max(prev, through)}
	return prev, had
}

// forgetReadThrough puts back what noteReadThrough replaced.
func (s *Store) forgetReadThrough(clientID string, prev uint64, had bool) {
	s.amu.Lock()
	defer s.amu.Unlock()
	if had {
		s.readThrough[clientID] = &readMark{through: prev}
	} else {
		delete(s.readThrough, clientID)
	}
}

// readThroughSweep is how many adoptions' marks (readThrough) are kept
// before those the followers have read past are dropped.
const readThroughSweep = 1024

// routedDelivery decodes routed delivery r of clientID for the broker;
// false (logged) when its record is corrupt.
func (s *Store) routedDelivery(clientID string, r routedRec) (broker.RoutedDelivery, bool) {
	shared, data, err := decodeRouted(clientID, r.msg)
	if err != nil {
		s.errs.Log(slog.LevelWarn, "routed", "ignoring a routed delivery", "client", clientID, "err", err)
		return broker.RoutedDelivery{}, false
	}
	rec, err := store.DecodeMessage(data)
	if err != nil {
		s.errs.Log(slog.LevelWarn, "routed", "ignoring a routed delivery", "client", clientID, "err", err)
		return broker.RoutedDelivery{}, false
	}
	m, err := broker.MessageFromRecord(rec)
	if err != nil {
		s.errs.Log(slog.LevelWarn, "routed", "ignoring a routed delivery", "client", clientID, "err", err)
		return broker.RoutedDelivery{}, false
	}
	subject := s.sessionSubject(clientID, "r."+routedToken(r.id))
	return broker.RoutedDelivery{ID: r.id, Msg: m, Shared: shared, Remove: func(t broker.Txn) {
		if tt, ok := t.(*txn); ok {
			tt.tombstone(subject)
		}
	}}, true
}

// adoption is a session being adopted by this node: the routed deliveries
// its followers read meanwhile wait for it.
type adoption struct {
	n    int // adoptions under way
	recs []routedRec
	had  map[broker.MessageID]bool // the routed deliveries the session was given
}

// beginAdopt holds the routed deliveries of clientID read from now on
// until endAdopt: the session they are for is being adopted. Call it
// before the session's records are read.
func (s *Store) beginAdopt(clientID string) {
	s.amu.Lock()
	defer s.amu.Unlock()
	a := s.adopting[clientID]
	if a == nil {
		a = &adoption{}
		s.adopting[clientID] = a
	}
	a.n++
}

// endAdopt delivers the routed deliveries held since beginAdopt, except
// those the adoption already gave the session. The last adoption of the
// client to end does it, and the followers hold the client's routed
// deliveries until it has delivered every one, so that they reach the
// session in stream order.
func (s *Store) endAdopt(clientID string) {
	s.amu.Lock()
	a := s.adopting[clientID]
	if a == nil {
		s.amu.Unlock()
		return
	}
	if a.n--; a.n > 0 {
		s.amu.Unlock()
		return // the last one delivers
	}
	for {
		recs, had := a.recs, a.had
		a.recs = nil
		if len(recs) == 0 {
			delete(s.adopting, clientID)
			s.amu.Unlock()
			return
		}
		s.amu.Unlock()
		for _, r := range recs {
			if !had[r.id] && !s.readPast(clientID, r.seq) {
				s.deliverRouted(clientID, r)
			}
		}
		s.amu.Lock()
		if a.n > 0 {
			s.amu.Unlock()
			return // adopted again meanwhile: that adoption delivers the rest
		}
	}
}

// adoptStored makes the stored session st this node's under claim token
// (broker.AdoptSession), with its routed deliveries in stream order after
// its stored ones, then those the followers read since beginAdopt, except
// those an entry was already made from (whose record is deleted). Call it
// between beginAdopt and endAdopt.
func (s *Store) adoptStored(st *stored, token uint64) error {
	id := st.rec.ClientID
	had := make(map[broker.MessageID]bool)
	for i := range st.entries {
		if rid := broker.MessageID(st.entries[i].Routed); !rid.IsZero() {
			had[rid] = true
		}
	}
	var twins []broker.MessageID
	routed := func() []broker.RoutedDelivery {
		// Called under the session's lock, before anything else can
		// reach the session: the followers hold what they read.
		var out []broker.RoutedDelivery
		add := func(r routedRec) {
			if had[r.id] {
				twins = append(twins, r.id)
				return
			}
			had[r.id] = true
			if d, ok := s.routedDelivery(id, r); ok {
				out = append(out, d)
			}
		}
		for _, r := range st.routed {
			add(r)
		}
		s.amu.Lock()
		var held []routedRec
		if a := s.adopting[id]; a != nil {
			held, a.recs = a.recs, nil
		}
		s.amu.Unlock()
		for _, r := range held {
			if r.seq > st.through {
				add(r)
			}
		}
		return out
	}
	// A follower behind the read (a node just thawed re-reads the
	// stream from where it stopped; one waiting, after a pause, to
	// deliver a record it read before) would give the session again what
	// the read covered: new deliveries under new packet identifiers, which
	// JetStream's duplicate window alone stopped for QoS 2 (and a thawed
	// node's write published again takes a duplicate answer for its own).
	// Seen: `frozen-paho-sub got QoS 2 frozen-pub-q2-n1:981 2 times`, 50
	// QoS 2 and 50 QoS 1 messages twice after the thawed n3 adopted the
	// session back from its stream.
	prevThrough, hadThrough := s.noteReadThrough(id, st.through)
	if err := s.b.AdoptSession(st.rec, st.entries, st.inbound, token, routed); err != nil {
		s.forgetReadThrough(id, prevThrough, hadThrough)
		return err
	}
	if len(twins) > 0 {
		t := &txn{s: s}
		for _, rid := range twins {
			t.tombstone(s.sessionSubject(id, "r."+routedToken(rid)))
		}
		s.Commit(t, nil)
	}
	s.amu.Lock()
	if a := s.adopting[id]; a != nil {
		if a.had == nil {
			a.had = had
		} else {
			maps.Copy(a.had, had)
		}
	}
	s.amu.Unlock()
	return nil
}

// Position implements broker.RemoteSessions: per shard, the last stream
// sequence the index has read.
func (s *Store) Position() []uint64 {
	s.imu.Lock()
	defer s.imu.Unlock()
	return slices.Clone(s.indexed)
}

// recordSeq is what a node knows of a client's last session record: its
// stream sequence, its subscriptions' fingerprint (subsPrint), and the
// sequence of the first record of the run with those subscriptions.
type recordSeq struct {
	last, since uint64
	subs        uint64
}

// subsPrint fingerprints the subscriptions of rec that the session index
// holds (filter, QoS, No Local of the non-shared ones), in any order: two
// records with the same print route a message alike.
func subsPrint(rec *store.Session) uint64 {
	var sum uint64
	for _, r := range rec.Subs {
		_, inner, shared, err := topic.ParseShared(r.Filter)
		if err != nil || shared {
			continue
		}
		h := fnv.New64a()
		h.Write([]byte(inner))
		h.Write([]byte{0, r.QoS, boolByte(r.NoLocal)})
		sum += h.Sum64() // order-free
	}
	return sum
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// noteSession records that clientID's session record, with subscriptions
// of fingerprint subs, was written at stream sequence seq (read by a
// follower, or acknowledged to this node). A record that only rewrites
// the session (a connection, a disconnection, a takeover) keeps the run
// of its subscriptions going: a publisher whose index read the run's
// first record routed its messages for the session as durably as one
// that read the last.
func (s *Store) noteSession(clientID string, seq, subs uint64) {
	s.imu.Lock()
	defer s.imu.Unlock()
	r, ok := s.sessionSeq[clientID]
	switch {
	case ok && seq <= r.last:
		return // older news
	case ok && subs == r.subs:
		r.last = seq
	default:
		r = recordSeq{last: seq, since: seq, subs: subs}
	}
	s.sessionSeq[clientID] = r
}

// forgetSession drops what noteSession kept of clientID when its session
// was deleted at stream sequence seq (and no newer record came since).
func (s *Store) forgetSession(clientID string, seq uint64) {
	s.imu.Lock()
	defer s.imu.Unlock()
	if s.sessionSeq[clientID].last <= seq {
		delete(s.sessionSeq, clientID)
	}
}

// Covers implements broker.RemoteSessions: whether m's publisher had read
// a record of clientID's session with its current subscriptions when it
// routed m (then it wrote a routed delivery if they match m).
func (s *Store) Covers(m *broker.Message, clientID string) bool {
	n := s.shard(clientID)
	s.imu.Lock()
	since := s.sessionSeq[clientID].since
	s.imu.Unlock()
	return n < len(m.RoutedIndex) && m.RoutedIndex[n] >= since
}

// syncIndex returns once this node's index holds every session record
// written before the call.
func (s *Store) syncIndex(ctx context.Context) error {
	for n := range s.opts.Shards {
		last, err := s.streams[n].GetLastMsgForSubject(ctx, "edgeport.sessions."+strconv.Itoa(n)+".*.s")
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading shard %d: %w", n, err)
		}
		for {
			s.imu.Lock()
			done, changed := s.indexed[n] >= last.Sequence, s.indexChanged
			s.imu.Unlock()
			if done {
				break
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return fmt.Errorf("waiting for the session index of shard %d: %w", n, ctx.Err())
			}
		}
	}
	return nil
}
