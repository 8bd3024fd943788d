package cluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/cluster/wire"
	"github.com/edgeport/edgeport/internal/lifecycle"
	"github.com/edgeport/edgeport/internal/lograte"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Router is live routing between the nodes, on core NATS and without
// consensus (docs/cluster.md, "Live routing"). It is the broker's
// Forwarder: what a client of this node publishes is published on NATS
// under the topic's subject, and for every filter this node's sessions
// subscribe it holds one NATS subscription (reference-counted), whose
// messages it routes to the local subscribers.
//
// Two connections: pub publishes and holds the plain subscriptions with
// no echo, so a node never receives its own publications back (its local
// subscribers already have them); q holds one queue subscription per
// shared subscription group and filter, with echo, so that the group's
// one delivery may fall on this node's members too.
//
// A message matching several of a node's filters reaches it once per
// matching NATS subscription; the copies are dropped by sequence number:
// each router numbers its publications, and a node's publications reach
// another node in order (one publisher connection, one route), so a copy
// is one whose number is not above the last seen from its router.
type Router struct {
	node *Node
	b    *broker.Broker
	log  *slog.Logger
	errs *lograte.Limiter

	pub, q *nats.Conn
	in     chan *nats.Msg // plain subscriptions' messages, in arrival order
	qin    chan *nats.Msg // queue subscriptions' messages
	id     [8]byte        // this router's incarnation, new at each start

	mu       sync.Mutex // guards interest
	interest map[interestKey]*interest

	pubMu sync.Mutex // guards seq, out, meta, b64: numbers and publishes in one order
	seq   uint64
	out   nats.Msg
	meta  []byte
	b64   []byte
	hdr   []string // out.Header[metaHeader], reused
	// subjects caches topic → subject: devices publish on few topics
	// over and over (bounded: cleared when full).
	subjects map[string]string

	drainMu sync.Mutex // guards drains
	drains  map[*nats.Msg]chan struct{}

	last map[[8]byte]uint64 // receive goroutine only: last sequence seen per router
	// topics caches subject → topic and raw is the decoded header, for
	// the plain subscriptions' receive goroutine only.
	topics map[string]string
	raw    []byte

	quit chan struct{}  // closed by Stop: ends the receive goroutines
	wg   sync.WaitGroup // the two receive goroutines

	stats routerStats
}

type routerStats struct {
	forwarded, received, duplicates, undecodable, unmatched, sharedDurable atomic.Uint64
	subscriptions                                                          atomic.Int64
}

type interestKey struct{ group, filter string }

type interest struct {
	n    int
	subs []*nats.Subscription
}

var _ lifecycle.Component = (*Router)(nil)
var _ broker.Forwarder = (*Router)(nil)

// metaHeader carries the MQTT side of a message (see encodeMeta); the
// payload is the MQTT payload as it is, so NATS clients can read it.
const metaHeader = "Edgeport-Mqtt"

// inboundQueue bounds the messages received and not yet routed; beyond it
// nats.go counts the subscription a slow consumer and drops.
const inboundQueue = 1 << 16

// subjectCache bounds the topic ↔ subject caches (entries).
const subjectCache = 4096

// NewRouter builds the router of node for b; Start attaches it to the
// broker, so it starts before the broker does.
func NewRouter(node *Node, b *broker.Broker, log *slog.Logger) *Router {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Router{node: node, b: b, log: log, errs: lograte.New(log, time.Minute),
		interest: make(map[interestKey]*interest), drains: make(map[*nats.Msg]chan struct{})}
	b.AttachForwarder(r)
	node.router.Store(r)
	return r
}

func (r *Router) routerSyncSubject(name string) string {
	return "edgeport.cluster." + r.node.cfg.ClusterName + ".route-sync." + name
}

// Start connects the router's two connections and starts routing what
// they receive.
func (r *Router) Start(context.Context) error {
	if _, err := rand.Read(r.id[:]); err != nil {
		return err
	}
	slow := nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
		r.errs.Log(slog.LevelError, "nats", "cluster routing: NATS error", "err", err)
	})
	var err error
	if r.pub, err = r.node.Dial("route", nats.NoEcho(), slow); err != nil {
		return fmt.Errorf("connecting the router: %w", err)
	}
	if r.q, err = r.node.Dial("route-shared", slow); err != nil {
		r.pub.Close()
		return fmt.Errorf("connecting the router: %w", err)
	}
	r.in, r.qin = make(chan *nats.Msg, inboundQueue), make(chan *nats.Msg, inboundQueue)
	r.last = make(map[[8]byte]uint64)
	r.subjects, r.topics = make(map[string]string), make(map[string]string)
	r.hdr = make([]string, 1)
	r.out.Header = nats.Header{metaHeader: r.hdr}
	if _, err := r.pub.ChanSubscribe(r.routerSyncSubject(r.node.Name()), r.in); err != nil {
		r.close()
		return fmt.Errorf("subscribing to route sync: %w", err)
	}
	r.quit = make(chan struct{})
	r.wg.Add(2)
	go r.receive(r.in, false)
	go r.receive(r.qin, true)
	return nil
}

// Stop closes the connections (their subscriptions go with them) and
// waits for the receive goroutines.
func (r *Router) Stop(context.Context) error {
	r.close()
	if r.quit != nil {
		close(r.quit)
		r.wg.Wait()
		r.quit = nil
	}
	return nil
}

func (r *Router) close() {
	if r.pub != nil {
		r.pub.Close()
	}
	if r.q != nil {
		r.q.Close()
	}
}

// Subscribed holds a NATS subscription for the filter while any local
// session subscribes to it (broker.Forwarder).
func (r *Router) Subscribed(group, filter string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := interestKey{group, filter}
	if e := r.interest[k]; e != nil {
		e.n++
		return
	}
	e := &interest{n: 1}
	for _, subj := range FilterSubjects(filter) {
		var sub *nats.Subscription
		var err error
		if group == "" {
			sub, err = r.pub.ChanSubscribe(subj, r.in)
		} else {
			sub, err = r.q.ChanQueueSubscribe(subj, QueueName(group, filter), r.qin)
		}
		if err != nil {
			// The connection is closed (stopping): nothing to route to.
			r.errs.Log(slog.LevelError, "subscribe", "cluster routing: subscribing", "subject", subj, "err", err)
			continue
		}
		e.subs = append(e.subs, sub)
	}
	r.interest[k] = e
	r.stats.subscriptions.Add(int64(len(e.subs)))
}

// Unsubscribed drops the NATS subscription when the last local session
// subscribed to the filter leaves it (broker.Forwarder).
func (r *Router) Unsubscribed(group, filter string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := interestKey{group, filter}
	e := r.interest[k]
	if e == nil {
		return
	}
	if e.n--; e.n > 0 {
		return
	}
	delete(r.interest, k)
	for _, s := range e.subs {
		_ = s.Unsubscribe() // fails only on a closed connection, which dropped it
	}
	r.stats.subscriptions.Add(-int64(len(e.subs)))
}

// Interest returns the NATS subjects the router subscribes to, for
// status and tests.
func (r *Router) Interest() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.interest))
	for k, e := range r.interest {
		name := k.filter
		if k.group != "" {
			name = "$share/" + k.group + "/" + k.filter
		}
		out[name] = e.n
	}
	return out
}

// Forward publishes m on NATS (broker.Forwarder) and returns its
// identifier: this router's incarnation and its sequence number. Core
// NATS is at most once between nodes; a publish that fails (disconnected
// past nats.go's reconnect buffer) is counted and logged, never blocks the
// publisher.
func (r *Router) Forward(m *broker.Message) broker.MessageID {
	now := time.Now()
	r.pubMu.Lock()
	r.seq++
	id := m.RoutedID // stored before it was routed (two phases)
	if id.IsZero() {
		copy(id[:8], r.id[:])
		binary.BigEndian.PutUint64(id[8:], r.seq)
	}
	r.meta = encodeMeta(r.meta[:0], r.id, r.seq, m, now)
	r.b64 = base64.RawStdEncoding.AppendEncode(r.b64[:0], r.meta)
	r.hdr[0] = string(r.b64)
	subj, ok := r.subjects[m.Topic]
	if !ok {
		if len(r.subjects) >= subjectCache {
			clear(r.subjects)
		}
		subj = Subject(m.Topic)
		r.subjects[m.Topic] = subj
	}
	r.out.Subject = subj
	r.out.Data = m.Payload
	err := r.pub.PublishMsg(&r.out)
	r.out.Data = nil
	r.pubMu.Unlock()
	if err != nil {
		r.errs.Log(slog.LevelError, "publish", "cluster routing: publishing", "err", err)
		return id
	}
	r.stats.forwarded.Add(1)
	return id
}

// Meta encoding, version 1, before base64 (std, unpadded):
//
//	byte    version (1)
//	byte    flags: bits 0-1 QoS, bit 2 retain, bit 3 properties follow,
//	        bit 4 durably routed (broker.Message.DurablyRouted), bit 5
//	        its own identifier follows, bit 6 shared groups follow
//	8 bytes the sending router's incarnation
//	uvarint the sending router's sequence number
//	uvarint message expiry left, in milliseconds + 1 (0: none)
//	uvarint length of the publisher's client id, then the id (No Local)
//	        when durably routed: uvarint count, then that many uvarints,
//	        the publisher's session index position (RoutedIndex)
//	        bit 5 set: the message's identifier, 16 bytes (RoutedID; a
//	        message routed in two phases); otherwise it is the sending
//	        router's incarnation and sequence number
//	        bit 6 set: uvarint count, then that many shared subscription
//	        groups (uvarint length and group, uvarint length and filter)
//	        whose delivery the publishing node made (SharedDurable)
//	rest    MQTT 5 PUBLISH properties as a property block (user properties,
//	        content type, response topic, correlation data, payload format)
const metaVersion = 1

func encodeMeta(dst []byte, id [8]byte, seq uint64, m *broker.Message, now time.Time) []byte {
	flags := m.QoS & 3
	if m.Retain {
		flags |= 4
	}
	if m.Props != nil && !m.Props.Empty() {
		flags |= 8
	}
	if m.DurablyRouted {
		flags |= 16
	}
	if !m.RoutedID.IsZero() {
		flags |= 32
	}
	if len(m.SharedDurable) > 0 {
		flags |= 64
	}
	dst = append(dst, metaVersion, flags)
	dst = append(dst, id[:]...)
	dst = binary.AppendUvarint(dst, seq)
	var left uint64
	if m.Expiry != 0 {
		ms := (m.Expiry - now.UnixNano()) / int64(time.Millisecond)
		left = uint64(max(ms, 1)) + 1
	}
	dst = binary.AppendUvarint(dst, left)
	dst = binary.AppendUvarint(dst, uint64(len(m.Origin)))
	dst = append(dst, m.Origin...)
	if flags&16 != 0 {
		dst = binary.AppendUvarint(dst, uint64(len(m.RoutedIndex)))
		for _, seq := range m.RoutedIndex {
			dst = binary.AppendUvarint(dst, seq)
		}
	}
	if flags&32 != 0 {
		dst = append(dst, m.RoutedID[:]...)
	}
	if flags&64 != 0 {
		dst = binary.AppendUvarint(dst, uint64(len(m.SharedDurable)))
		for _, g := range m.SharedDurable {
			dst = binary.AppendUvarint(dst, uint64(len(g.Group)))
			dst = append(dst, g.Group...)
			dst = binary.AppendUvarint(dst, uint64(len(g.Filter)))
			dst = append(dst, g.Filter...)
		}
	}
	if flags&8 != 0 {
		dst = packet.AppendProperties(dst, m.Props)
	}
	return dst
}

// maxSharedDurable bounds the shared subscription groups a header may
// name.
const maxSharedDurable = 1024

// maxRoutedIndex bounds the index position a header may carry (one per
// shard).
const maxRoutedIndex = 1024

var errMeta = errors.New("malformed " + metaHeader + " header")

// decodeMeta fills m from a meta block; it returns the sender and its
// sequence number.
func decodeMeta(b []byte, m *broker.Message, now time.Time) (id [8]byte, seq uint64, err error) {
	if len(b) < 10 || b[0] != metaVersion {
		return id, 0, errMeta
	}
	flags := b[1]
	if flags&3 == 3 || flags>>7 != 0 {
		return id, 0, errMeta
	}
	m.QoS, m.Retain, m.DurablyRouted = flags&3, flags&4 != 0, flags&16 != 0
	copy(id[:], b[2:10])
	b = b[10:]
	var k int
	if seq, k = binary.Uvarint(b); k <= 0 {
		return id, 0, errMeta
	}
	b = b[k:]
	left, k := binary.Uvarint(b)
	if k <= 0 || left > 1<<40 {
		return id, 0, errMeta
	}
	b = b[k:]
	if left > 0 {
		m.Expiry = now.Add(time.Duration(left-1) * time.Millisecond).UnixNano()
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return id, 0, errMeta
	}
	m.Origin = string(b[k : k+int(n)])
	b = b[k+int(n):]
	if m.DurablyRouted {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > maxRoutedIndex {
			return id, 0, errMeta
		}
		b = b[k:]
		m.RoutedIndex = make([]uint64, n)
		for i := range m.RoutedIndex {
			if m.RoutedIndex[i], k = binary.Uvarint(b); k <= 0 {
				return id, 0, errMeta
			}
			b = b[k:]
		}
		copy(m.RoutedID[:8], id[:])
		binary.BigEndian.PutUint64(m.RoutedID[8:], seq)
	}
	if flags&32 != 0 {
		if len(b) < len(m.RoutedID) {
			return id, 0, errMeta
		}
		copy(m.RoutedID[:], b)
		b = b[len(m.RoutedID):]
		if m.RoutedID.IsZero() {
			return id, 0, errMeta
		}
	}
	if flags&64 != 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n == 0 || n > maxSharedDurable {
			return id, 0, errMeta
		}
		b = b[k:]
		m.SharedDurable = make([]broker.SharedGroup, n)
		for i := range m.SharedDurable {
			var g, f string
			var ok1, ok2 bool
			g, b, ok1 = wire.String(b)
			f, b, ok2 = wire.String(b)
			if !ok1 || !ok2 || g == "" {
				return id, 0, errMeta
			}
			m.SharedDurable[i] = broker.SharedGroup{Group: g, Filter: f}
		}
	}
	if flags&8 != 0 {
		m.Props = new(packet.Properties)
		if err := packet.DecodeProperties(b, m.Props); err != nil {
			return id, 0, fmt.Errorf("%w: %w", errMeta, err)
		}
	} else if len(b) != 0 {
		return id, 0, errMeta
	}
	return id, seq, nil
}

// receive routes what one channel brings, until Stop closes it.
func (r *Router) receive(ch chan *nats.Msg, shared bool) {
	defer r.wg.Done()
	for {
		var msg *nats.Msg
		select {
		case msg = <-ch:
		case <-r.quit:
			return
		}
		if done := r.takeDrain(msg); done != nil {
			close(done)
			continue
		}
		if msg.Sub != nil && msg.Sub.Subject == r.routerSyncSubject(r.node.Name()) {
			// Everything the asker published before reached this node
			// before this request: it is routed now.
			_ = msg.Respond(nil)
			continue
		}
		r.route(msg, shared)
	}
}

func (r *Router) route(msg *nats.Msg, shared bool) {
	now := time.Now()
	m := &broker.Message{Payload: msg.Data}
	var raw []byte
	var err error
	if shared {
		raw, err = base64.RawStdEncoding.DecodeString(msg.Header.Get(metaHeader))
	} else {
		r.raw, err = base64.RawStdEncoding.AppendDecode(r.raw[:0], []byte(msg.Header.Get(metaHeader)))
		raw = r.raw
	}
	var id [8]byte
	var seq uint64
	if err == nil {
		id, seq, err = decodeMeta(raw, m, now)
	}
	if err == nil {
		m.Topic, err = r.topic(msg.Subject, shared)
	}
	if err != nil {
		r.stats.undecodable.Add(1)
		r.errs.Log(slog.LevelWarn, "decode", "cluster routing: dropped a message from NATS", "subject", msg.Subject, "err", err)
		return
	}
	if shared {
		group, filter, ok := parseQueueName(msg.Sub.Queue)
		if !ok {
			r.stats.undecodable.Add(1)
			return
		}
		r.stats.received.Add(1)
		if m.SharedDurableFor(broker.SharedGroup{Group: group, Filter: filter}) {
			// Its publishing node gave the group's one delivery itself.
			r.stats.sharedDurable.Add(1)
			return
		}
		if !r.b.RouteSharedFromPeer(m, group, filter) {
			r.stats.unmatched.Add(1)
		}
		return
	}
	if last, ok := r.last[id]; ok && seq <= last {
		r.stats.duplicates.Add(1) // another of this node's filters matched it too
		return
	}
	if len(r.last) >= 4096 {
		clear(r.last) // routers that restarted; the live ones start again from here
	}
	r.last[id] = seq
	r.stats.received.Add(1)
	if r.b.RouteFromPeer(m) == 0 {
		r.stats.unmatched.Add(1)
	}
}

// topic maps a subject back, through the cache on the plain goroutine.
func (r *Router) topic(subject string, shared bool) (string, error) {
	if shared {
		return Topic(subject)
	}
	if t, ok := r.topics[subject]; ok {
		return t, nil
	}
	t, err := Topic(subject)
	if err != nil {
		return "", err
	}
	if len(r.topics) >= subjectCache {
		clear(r.topics)
	}
	r.topics[subject] = t
	return t, nil
}

func parseQueueName(q string) (group, filter string, ok bool) {
	i := strings.IndexByte(q, '/')
	if i < 0 {
		return "", "", false
	}
	var g, f strings.Builder
	if unescape(&g, q[:i], false) != nil || unescape(&f, q[i+1:], true) != nil {
		return "", "", false
	}
	return g.String(), f.String(), true
}

func (r *Router) takeDrain(msg *nats.Msg) chan struct{} {
	if msg.Sub != nil {
		return nil
	}
	r.drainMu.Lock()
	defer r.drainMu.Unlock()
	done := r.drains[msg]
	delete(r.drains, msg)
	return done
}

// Sync returns once every subscription this router made before the call
// is known to every other member's NATS server and everything it
// published before has been routed by them, and everything this node
// received before is routed: the readiness signal tests wait on instead
// of sleeping. A ping to each member's router travels the same route as
// the subscriptions and messages before it and is answered by the
// goroutine that routes them.
func (r *Router) Sync(ctx context.Context) error {
	if err := r.q.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("flushing shared subscriptions: %w", err)
	}
	for _, mb := range r.node.Members() {
		if mb.Self {
			continue
		}
		_, err := r.pub.RequestWithContext(ctx, r.routerSyncSubject(mb.Name), nil)
		if errors.Is(err, nats.ErrNoResponders) && !mb.Healthy {
			continue // a member that is gone has nothing to sync
		}
		if err != nil {
			return fmt.Errorf("syncing with %s: %w", mb.Name, err)
		}
	}
	return r.drain(ctx)
}

// drain waits until every message received before the call is routed.
func (r *Router) drain(ctx context.Context) error {
	if err := r.pub.FlushWithContext(ctx); err != nil {
		return err
	}
	if err := r.q.FlushWithContext(ctx); err != nil {
		return err
	}
	for _, ch := range []chan *nats.Msg{r.in, r.qin} {
		mark := new(nats.Msg)
		done := make(chan struct{})
		r.drainMu.Lock()
		r.drains[mark] = done
		r.drainMu.Unlock()
		select {
		case ch <- mark:
		case <-ctx.Done():
			return ctx.Err()
		case <-r.quit:
			return errors.New("router stopped")
		}
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// RouterStats are the router's counters.
type RouterStats struct {
	Forwarded   uint64 `json:"forwarded"`   // messages published to the other nodes
	Received    uint64 `json:"received"`    // messages from the other nodes routed here
	Duplicates  uint64 `json:"duplicates"`  // copies dropped (several filters matched)
	Undecodable uint64 `json:"undecodable"` // messages that were not ours or were malformed
	Unmatched   uint64 `json:"unmatched"`   // received but no local session took it
	// SharedDurable counts messages a shared subscription's queue group
	// brought whose publishing node had given the group its delivery.
	SharedDurable uint64 `json:"sharedDurable"`
	Subscriptions int64  `json:"subscriptions"` // NATS subscriptions held
}

// Stats returns the counters.
func (r *Router) Stats() RouterStats {
	return RouterStats{
		Forwarded: r.stats.forwarded.Load(), Received: r.stats.received.Load(),
		Duplicates: r.stats.duplicates.Load(), Undecodable: r.stats.undecodable.Load(),
		Unmatched: r.stats.unmatched.Load(), SharedDurable: r.stats.sharedDurable.Load(),
		Subscriptions: r.stats.subscriptions.Load(),
	}
}
