package broker

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/clock"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// subscription is one filter of a session as stored in the trie.
type subscription struct {
	filter            string // as subscribed, $share prefix included
	qos               byte
	noLocal           bool
	retainAsPublished bool
	retainHandling    byte
	id                uint32 // subscription identifier, 0 = none
	group             string // shared subscription group, "" = not shared
	inner             string // filter without the $share prefix
}

// delivery is a message on its way to one session: the effective QoS, the
// retain flag to send and the subscription identifiers that matched.
type delivery struct {
	msg    *Message
	qos    byte
	retain bool
	subIDs []uint32
	// single marks a message routed to this session alone: its PUBLISH is
	// encoded straight into the connection's buffer rather than into a
	// cached encoding nobody else would reuse.
	single bool
	// shared names the shared subscription that chose this session, so the
	// message can go to another member if this one leaves unacknowledged.
	shared *sharedRef
	// seq identifies the delivery's store entry; 0 when not persisted.
	seq uint64
	// tx is the txnCtx that puts the entry, until it is known to be
	// submitted: writes for the entry go into it while it is pending.
	tx *txnCtx
	// routed is the routed delivery (cluster mode) this delivery was made
	// from, stored with its entry; zero when none (see DeliverRouted).
	routed MessageID
	// once marks a delivery whose entry is still to be written for the
	// first time, once cluster-wide (OnceTxn: keyed by routed and the
	// session); first is what became of that write, once it was made.
	once bool
	// parked marks a delivery made from a routed delivery whose
	// transaction is parked on the session (parked.go).
	parked bool
	first  *onceWrite
}

// onceWrite is what became of the first write of a delivery's entry made
// once cluster-wide (OnceTxn), set by the Durable before the commit's
// done; shared by the copies of the delivery (queue, flight).
type onceWrite struct {
	// stored: the Durable stored the entry. The delivery is durable and
	// is sent even if its transaction failed after (a commit refused once
	// its writes were stored): the session has nothing else of it, and a
	// later routing of the message under its id is dropped as a copy of
	// this very entry.
	stored atomic.Bool
	// copied: the write was dropped as a copy of one made already
	// (another node's, or an earlier routing's): the session has the
	// delivery there, and this one is not sent.
	copied atomic.Bool
}

type sharedRef struct{ group, filter string }

// flight is an outbound QoS 1/2 delivery awaiting acknowledgement.
type flight struct {
	delivery
	id       uint16
	released bool // QoS 2: PUBREC received, PUBREL sent, awaiting PUBCOMP
	// fresh marks a restored delivery given a new packet identifier: it
	// is resent as a new PUBLISH, without DUP (see restoreDeliveries).
	fresh bool
	// held marks a delivery not yet resent to the connection that resumed
	// the session, beyond its Receive Maximum (see client.resumeLocked).
	held       bool
	prev, next *flight
}

// session is the state that outlives a connection: subscriptions, the
// inflight window, the queue and half-done inbound QoS 2 exchanges.
//
// mu guards every field below it. Lock order: Broker.sessMu, then
// session.mu, then client.outMu.
type session struct {
	id       string
	internal bool // created by an internal client: left out of the session gauges

	mu     sync.Mutex
	client *client     // current connection, nil when offline
	online atomic.Bool // client != nil, readable without mu (shared subscription choice)
	subs   map[string]*subscription
	// inflight: by packet ID and in send order (oldest first) for redelivery.
	inflight       map[uint16]*flight
	oldest, newest *flight
	held           int // flights marked held, awaiting room in the window
	nextID         uint16
	queue          ring
	awaitingRel    map[uint16]struct{} // inbound QoS 2 IDs between PUBREC and PUBREL
	// phased holds, by packet identifier, the inbound QoS 2 PUBLISHes of
	// awaitingRel handled in two phases (cluster mode, phased.go) that
	// are being routed here, or that another node stored and this one has
	// not routed.
	phased       map[uint16]*phased
	expiry       time.Duration // session expiry interval
	expiryTimer  clock.Timer
	will         *Message
	willDelay    time.Duration
	willTimer    clock.Timer
	offlineSince int64 // UnixNano of the last disconnection, as stored
	// owner is the principal the session belongs to and ownerListener
	// the listener it came through; nil for internal clients' sessions
	// and sessions stored before owners were kept.
	owner         *Principal
	ownerListener string
	ended         bool   // removed from the broker; late deliveries are dropped
	seq           uint64 // last store entry sequence number
	stored        bool   // a session record is in the store
	claim         uint64 // cluster mode: the token of this node's claim (Ownership), 0 when none
	// adopted is, in cluster mode, the token of the claim under way here
	// that adopted the session (NoteClaim), until its connection attaches
	// and claim holds it: news of an older claim is stale for it too.
	adopted uint64
	// routed remembers the last routedMemory routed deliveries the session
	// had (cluster mode), a ring whose next slot is routedNext once full.
	routed     []MessageID
	routedNext int
	// parked are transactions of deliveries made from routed deliveries
	// waiting for their PUBACK (parked.go), in order, submitted by
	// parkTimer at the latest.
	parked    []*txnCtx
	parkTimer clock.Timer
	version   packet.Version
}

// addFlight assigns a free packet identifier and appends f to the window.
func (s *session) addFlight(f *flight) {
	if s.inflight == nil {
		s.inflight = make(map[uint16]*flight)
	}
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, used := s.inflight[s.nextID]; !used {
			break
		}
	}
	f.id = s.nextID
	s.inflight[f.id] = f
	f.prev, f.next = s.newest, nil
	if s.newest != nil {
		s.newest.next = f
	} else {
		s.oldest = f
	}
	s.newest = f
}

func (s *session) removeFlight(f *flight) {
	if f.held {
		f.held = false
		s.held--
	}
	delete(s.inflight, f.id)
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		s.oldest = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else {
		s.newest = f.prev
	}
	f.prev, f.next = nil, nil
}

// ring is a growable FIFO of deliveries.
type ring struct {
	buf        []delivery
	head, size int
	bytes      int64 // payload bytes held
}

func (r *ring) len() int { return r.size }

func (r *ring) push(d delivery) {
	if r.size == len(r.buf) {
		n := 2 * len(r.buf)
		if n == 0 {
			n = 8
		}
		nb := make([]delivery, n)
		for i := 0; i < r.size; i++ {
			nb[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.size)%len(r.buf)] = d
	r.size++
	r.bytes += int64(len(d.msg.Payload))
}

func (r *ring) pop() (delivery, bool) {
	if r.size == 0 {
		return delivery{}, false
	}
	d := r.buf[r.head]
	r.buf[r.head] = delivery{}
	r.bytes -= int64(len(d.msg.Payload))
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	if r.size == 0 && len(r.buf) > 64 {
		r.buf, r.head = nil, 0 // give a drained backlog's memory back
	}
	return d, true
}

// filter keeps the deliveries for which keep returns true, in order.
func (r *ring) filter(keep func(*delivery) bool) {
	n := 0
	for i := 0; i < r.size; i++ {
		d := r.buf[(r.head+i)%len(r.buf)]
		if keep(&d) {
			r.buf[(r.head+n)%len(r.buf)] = d
			n++
		} else {
			r.bytes -= int64(len(d.msg.Payload))
		}
	}
	for i := n; i < r.size; i++ {
		r.buf[(r.head+i)%len(r.buf)] = delivery{}
	}
	r.size = n
}

// resumableBy reports whether client c may resume s: only the principal
// that owns it may (the same user name from the same authentication
// method; anonymous clients of a listener are all one nobody). A session
// stored before owners were kept has no owner and is resumed by nobody.
// Internal clients resume their own sessions, whose identifiers no network
// client may use. s.mu is held.
func (s *session) resumableBy(c *client) bool {
	if c.trusted || s.internal {
		return c.trusted && s.internal
	}
	if s.owner == nil || c.auth == nil {
		return false
	}
	p := c.auth.principal.Load()
	return p != nil && p.Username == s.owner.Username && p.Method == s.owner.Method
}

// setOwner makes c's principal the session's owner. s.mu is held.
func (s *session) setOwner(c *client) {
	if c.auth == nil {
		s.owner, s.ownerListener = nil, ""
		return
	}
	s.owner, s.ownerListener = c.auth.principal.Load(), c.ls.name
}
