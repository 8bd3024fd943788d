package statestore

import (
	"bytes"
	"container/heap"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	wallclock "github.com/edgeport/edgeport/internal/clock"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
)

// The executor owns every piece of state and runs on one goroutine, so
// requests need no locks and are linearised in arrival order. It takes
// requests in batches: executes a batch against memory, writes its changes
// to the store as one Txn and waits until that Txn is durable before any
// answer of the batch leaves. While it waits more requests queue up, so the
// batches grow with the load and a single fsync covers many requests. No
// answer reveals a change that is not durable, and a batch whose Txn fails
// is rolled back and retried one request at a time, so that only the
// requests that cannot be stored fail.
type executor struct {
	s    *Server
	opts *Options

	keys  map[string]*entry
	count int64 // len(keys)
	bytes int64 // sum of len(key)+len(value)
	exp   expiryHeap
	clock clock
	// The next key expiry wakes the run loop through wake (capacity 1);
	// timer is armed only while the loop waits. Run loop only.
	timer wallclock.Timer
	wake  chan struct{}

	watchers map[string]*watcher              // by client ID
	watched  map[string]map[*watcher]struct{} // by key

	cache cmdCache

	// A shared backend's (cluster mode). Run loop only.
	shared bool
	live   bool              // the backend's initial content is applied: its changes are notified
	tomb   map[string]uint64 // the revision of each key deleted in the backend, which a write recreating it expects
	// sweepAfter holds expiry back after a sweep's deletion failed (no
	// quorum): the next sweep waits for it rather than retrying each round.
	sweepAfter time.Time

	// Per batch.
	batch   []*request
	undo    []undoRecord
	delta   delta
	now     time.Time
	ws      []Write             // the batch's writes, for the backend
	wen     []*entry            // per write: its new entry (nil: a deletion)
	wreq    []int               // per write: its request's index in the batch; -1: the sweep's
	wundo   []int               // per write: its undo record
	marks   []mark              // per request executed: where its effects begin
	written map[string]struct{} // shared: the keys the batch writes
	retry   []*request          // shared: requests to execute again (their key changed meanwhile)

	// Scratch, reused across requests.
	args   [][]byte
	out    []byte // RESP payload being built
	props  []packet.UserProperty
	ckey   []byte // cache key
	hexBuf []byte
	nodes  map[string]string
}

// maxBatch bounds the requests executed under one Txn, which bounds the
// latency a request can add to the others in its batch; maxChunk bounds
// the answers a batch accumulates before they can be sent.
const (
	maxBatch = 256
	maxChunk = 4 << 20
)

// mark is where a request's effects begin in a batch: its answers in the
// chunk, its undo records, and the metrics before it.
type mark struct {
	msgs, undo int
	delta      delta
}

type watcher struct {
	clientID string
	prefix   string // notification topic up to the key: .../{HEX(clientID)}/command/notify/
	keys     map[string]struct{}
}

// delta collects the metrics of a batch, applied once it is durable.
type delta struct {
	insertions, modifications, deletions, expired int
	retrievals, keyNotify, notifications          int
	requests                                      [numCommands]int
	errors                                        [numErrKinds]int
}

type undoKind byte

const (
	undoKey   undoKind = iota // keys[key] was prev (nil: absent)
	undoWatch                 // the watch of (client, key) was present or not
	undoCache                 // a cache entry was added under key
)

type undoRecord struct {
	kind    undoKind
	key     string
	prev    *entry
	client  string
	present bool
}

func newExecutor(s *Server) (*executor, error) {
	e := &executor{
		s:        s,
		opts:     &s.opts,
		keys:     make(map[string]*entry),
		wake:     make(chan struct{}, 1),
		watchers: make(map[string]*watcher),
		watched:  make(map[string]map[*watcher]struct{}),
		nodes:    make(map[string]string),
		tomb:     make(map[string]uint64),
		written:  make(map[string]struct{}),
		shared:   s.shared != nil,
	}
	e.clock.last.Node = s.opts.NodeID
	e.cache.init(s.opts.CacheEntries)
	if err := e.restore(); err != nil {
		return nil, err
	}
	e.s.metrics.keys.Set(float64(e.count))
	e.s.metrics.bytes.Set(float64(e.bytes))
	s.view.keys = maps.Clone(e.keys)
	return e, nil
}

// restore loads the keys from the backend and deletes those that expired
// while the broker was down. A shared backend delivers its keys later,
// through Watch.
func (e *executor) restore() error {
	nowMs := e.opts.Clock.Now().UnixMilli()
	var expired []Write
	err := e.s.be.Load(func(k, v []byte) error {
		en, err := decodeRecord(v, e.intern)
		if err != nil {
			return fmt.Errorf("%w: state store key %q: %w", store.ErrCorrupt, k, err)
		}
		e.clock.observe(en.version)
		if en.expiry != 0 && en.expiry <= nowMs {
			expired = append(expired, Write{Key: string(k), Delete: true})
			return nil
		}
		key := string(k)
		e.keys[key] = en
		e.count++
		e.bytes += int64(len(key) + len(en.value))
		if en.expiry != 0 {
			heap.Push(&e.exp, expiryItem{at: en.expiry, key: key, e: en})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("statestore: restoring keys: %w", err)
	}
	if len(expired) > 0 {
		if err := e.s.be.Commit(expired); err != nil {
			return fmt.Errorf("statestore: deleting keys that expired while stopped: %w", err)
		}
		e.s.metrics.expired.Add(float64(len(expired)))
	}
	return nil
}

func (e *executor) intern(b []byte) string {
	if string(b) == e.opts.NodeID {
		return e.opts.NodeID
	}
	if s, ok := e.nodes[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(e.nodes) < 1024 {
		e.nodes[s] = s
	}
	return s
}

func (e *executor) run() {
	defer e.stopTimer()
	for {
		if len(e.batch) == 0 {
			e.armTimer()
			select {
			case r := <-e.s.reqs:
				e.batch = append(e.batch, r)
			case f := <-e.s.control:
				f()
				continue
			case b := <-e.s.changes:
				e.apply(b)
				continue
			case <-e.wake:
			case <-e.s.stopping:
				return
			}
		}
	drain:
		for len(e.batch) < maxBatch {
			select {
			case r := <-e.s.reqs:
				e.batch = append(e.batch, r)
			default:
				break drain
			}
		}
		e.process()
		select {
		case <-e.s.stopping:
			return
		default:
		}
	}
}

// armTimer wakes the executor when the next key expires, so that expiry
// notifications go out on time even when no request comes.
func (e *executor) armTimer() {
	e.stopTimer()
	if len(e.exp) == 0 {
		return
	}
	d := time.UnixMilli(e.exp[0].at).Sub(e.opts.Clock.Now())
	e.timer = e.opts.Clock.AfterFunc(max(d, 0), func() {
		select {
		case e.wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	})
}

// stopTimer disarms the expiry timer. A wake-up it already sent stays in
// wake: it costs one sweep that finds nothing, whereas draining it could
// lose the wake-up of a timer that fired just before being re-armed.
func (e *executor) stopTimer() {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
}

// process executes the queued batch (and due expiries) and hands the
// answers to the connection once they are durable. Once the answers pass
// maxChunk it stops and leaves the rest of the batch for the next round,
// which bounds the memory a batch of large values holds. With a shared
// backend it also stops before a request for a key the batch already
// writes: each write then depends only on what was there before the
// batch, so one refused by a compare-and-set is undone alone.
func (e *executor) process() {
	e.now = e.opts.Clock.Now()
	c := e.s.getChunk()
	e.begin()
	e.sweep(c)
	n := 0
	for _, r := range e.batch {
		if n > 0 && c.size >= maxChunk {
			break
		}
		if e.shared && len(e.written) > 0 && e.touchesWritten(r) {
			break
		}
		e.marks = append(e.marks, mark{msgs: len(c.msgs), undo: len(e.undo), delta: e.delta})
		e.handle(r, c)
		n++
	}
	batch := e.batch[:n]
	err := e.s.be.Commit(e.ws)
	switch {
	case e.shared:
		batch = e.settle(batch, c, err)
		e.finish()
	case err != nil:
		e.rollback()
		c.reset()
		e.isolate(batch, c, err)
	default:
		e.finish()
	}
	e.cache.sweep(e.now)
	e.s.publish(c)
	// Answered: their clients' GETs may take the fast path again.
	e.s.pending.done(batch)
	for _, r := range batch {
		e.s.putRequest(r)
	}
	rest := e.batch[n:]
	if len(e.retry) > 0 {
		// Executed again first, in their order.
		rest = append(e.retry, rest...)
		e.retry = e.retry[:0]
	}
	k := copy(e.batch, rest)
	clear(e.batch[k:])
	e.batch = e.batch[:k]
}

// touchesWritten reports whether r names a key the batch writes.
func (e *executor) touchesWritten(r *request) bool {
	args, err := parseRequest(r.payload, e.args)
	e.args = args
	if err != nil || len(args) < 2 {
		return false
	}
	_, ok := e.written[string(args[1])]
	return ok
}

// isolate re-executes a failed batch one request per commit, so that a
// request the local store refuses (its disk quota) does not fail the
// others.
func (e *executor) isolate(batch []*request, c *chunk, cause error) {
	e.s.log.Warn("a batch could not be stored; retrying its requests one by one", "err", cause)
	e.begin()
	e.sweep(c)
	if err := e.s.be.Commit(e.ws); err != nil {
		e.rollback()
	} else {
		e.finish()
	}
	for _, r := range batch {
		mark, size := len(c.msgs), c.size
		e.begin()
		e.handle(r, c)
		err := e.s.be.Commit(e.ws)
		if err == nil {
			e.finish()
			continue
		}
		e.rollback()
		clear(c.msgs[mark:])
		c.msgs, c.size = c.msgs[:mark], size
		e.delta = delta{}
		if errors.Is(err, store.ErrQuotaExceeded) {
			e.delta.errors[errKindQuota]++
			e.respondPayload(r, c, appendError(e.out[:0], errQuotaExceeded), "", false)
		} else {
			e.s.errLog.Log(slog.LevelError, "store", "storing a change failed", "err", err)
			e.delta.errors[errKindStorage]++
			e.respondStatus(r, c, 500, "the state store could not store the change", false)
		}
		e.finish()
	}
}

func (e *executor) begin() {
	e.undo = e.undo[:0]
	e.delta = delta{}
	clear(e.ws)
	e.ws = e.ws[:0]
	clear(e.wen)
	e.wen = e.wen[:0]
	e.wreq = e.wreq[:0]
	e.wundo = e.wundo[:0]
	e.marks = e.marks[:0]
	clear(e.written)
}

// finish publishes the batch's metrics once it is durable.
func (e *executor) finish() {
	m, d := e.s.metrics, &e.delta
	add := func(c interface{ Add(float64) }, n int) {
		if n > 0 {
			c.Add(float64(n))
		}
	}
	add(m.insertions, d.insertions)
	add(m.modifications, d.modifications)
	add(m.deleted, d.deletions)
	add(m.expired, d.expired)
	add(m.retrievals, d.retrievals)
	add(m.keyNotify, d.keyNotify)
	add(m.notifications, d.notifications)
	for i, n := range d.requests {
		add(m.requestsBy[i], n)
	}
	for i, n := range d.errors {
		add(m.errorsBy[i], n)
	}
	m.keys.Set(float64(e.count))
	m.bytes.Set(float64(e.bytes))
	e.publishView()
	e.undo = e.undo[:0]
}

// publishView copies the keys the batch changed, now durable, into the
// view GETs read, before any of the batch's answers leave.
func (e *executor) publishView() {
	v := &e.s.view
	locked := false
	for i := range e.undo {
		u := &e.undo[i]
		if u.kind != undoKey {
			continue
		}
		if !locked {
			v.mu.Lock()
			locked = true
		}
		if en := e.keys[u.key]; en != nil {
			v.keys[u.key] = en
		} else {
			delete(v.keys, u.key)
		}
	}
	if locked {
		v.mu.Unlock()
	}
}

// rollback undoes the batch's changes to memory, newest first.
func (e *executor) rollback() {
	for i := len(e.undo) - 1; i >= 0; i-- {
		u := &e.undo[i]
		switch u.kind {
		case undoKey:
			if cur := e.keys[u.key]; cur != nil {
				e.count--
				e.bytes -= int64(len(u.key) + len(cur.value))
				delete(e.keys, u.key)
			}
			if u.prev != nil {
				e.keys[u.key] = u.prev
				e.count++
				e.bytes += int64(len(u.key) + len(u.prev.value))
				if u.prev.expiry != 0 {
					// The sweep may have popped it.
					heap.Push(&e.exp, expiryItem{at: u.prev.expiry, key: u.key, e: u.prev})
				}
			}
		case undoWatch:
			if u.present {
				e.addWatch(u.client, u.key)
			} else {
				e.removeWatch(u.client, u.key)
			}
		case undoCache:
			e.cache.remove(u.key)
		}
	}
	e.undo = e.undo[:0]
}

// setKey installs en under key (prev is the current entry or nil) in
// memory and adds its write to the batch.
func (e *executor) setKey(key string, en, prev *entry) {
	e.addWrite(key, en, Write{Key: key, Data: appendRecord(nil, en), Expect: e.revOf(key)})
	if prev != nil {
		e.bytes -= int64(len(key) + len(prev.value))
	} else {
		e.count++
	}
	e.bytes += int64(len(key) + len(en.value))
	e.keys[key] = en
	if en.expiry != 0 {
		heap.Push(&e.exp, expiryItem{at: en.expiry, key: key, e: en})
	}
}

// deleteKey removes key (whose entry is prev) from memory and adds its
// deletion, made at version ver, to the batch.
func (e *executor) deleteKey(key string, prev *entry, ver HLC) {
	e.addWrite(key, nil, Write{Key: key, Delete: true, Data: appendHLC(nil, ver), Expect: prev.rev})
	e.count--
	e.bytes -= int64(len(key) + len(prev.value))
	delete(e.keys, key)
}

// addWrite notes a write of key, and what undoes it, for the request being
// executed (the last mark; none: the sweep).
func (e *executor) addWrite(key string, en *entry, w Write) {
	e.wundo = append(e.wundo, len(e.undo))
	e.undo = append(e.undo, undoRecord{kind: undoKey, key: key, prev: e.keys[key]})
	e.ws = append(e.ws, w)
	e.wen = append(e.wen, en)
	e.wreq = append(e.wreq, len(e.marks)-1)
	if e.shared {
		e.written[key] = struct{}{}
	}
}

// revOf is the revision of key in a shared backend that a write replacing
// it expects: its entry's, its deletion's, or 0 when it was never written.
func (e *executor) revOf(key string) uint64 {
	if en := e.keys[key]; en != nil {
		return en.rev
	}
	return e.tomb[key]
}

// sweep deletes the keys whose expiry has passed and notifies their watchers.
func (e *executor) sweep(c *chunk) {
	if e.now.Before(e.sweepAfter) {
		return
	}
	nowMs := e.now.UnixMilli()
	for len(e.exp) > 0 && e.exp[0].at <= nowMs {
		it := heap.Pop(&e.exp).(expiryItem)
		if cur := e.keys[it.key]; cur == nil || cur != it.e {
			continue // overwritten or deleted since
		}
		ver := e.clock.tick(e.now, nil)
		e.deleteKey(it.key, it.e, ver)
		e.delta.expired++
		e.notifyWrite(c, it.key, nil, ver)
	}
}

// mayRespond asks an Authorizer that also implements ResponseAuthorizer
// whether the requester may receive on its response topic, so that the
// trusted state store never publishes where the client itself may not.
func (e *executor) mayRespond(r *request) bool {
	ra, ok := e.opts.Authorizer.(ResponseAuthorizer)
	return !ok || ra.AuthorizeResponse(r.invoker, r.respTopic)
}

// handle answers one request into c.
func (e *executor) handle(r *request, c *chunk) {
	if !r.hasRespTopic || !validResponseTopic(r.respTopic) || !e.mayRespond(r) {
		// Nowhere to answer, or an answer there would be a forged request
		// or notification, or a publish to a topic reserved for Edgeport
		// (the state store may publish to $ topics): dropped. A response
		// topic equal to the invoke topic disconnects its client, as Azure
		// IoT Operations does.
		e.delta.errors[errKindProtocol]++
		if r.respTopic == InvokeTopic && r.invoker != "" && e.opts.Disconnect != nil {
			// Answering there would loop through the state store itself.
			e.opts.Disconnect(r.invoker, "the response topic of a state store request must not be its invoke topic")
			return
		}
		e.s.log.Debug("request without a usable response topic dropped",
			"response_topic", r.respTopic, "invoker", r.invoker)
		return
	}
	if len(r.corr) > 0 {
		if hit := e.cache.get(e.cacheKey(r), e.now); hit != nil {
			e.encodeResponse(r, c, hit.payload, hit.props)
			return
		}
	}
	if r.hasProtVer && !supportedVersion(r.protVer) {
		e.delta.errors[errKindProtocol]++
		e.respondStatus(r, c, 505, "unsupported protocol version", true,
			packet.UserProperty{Key: propSupportedMajor, Value: supportedMajorVersions},
			packet.UserProperty{Key: propRequestVersion, Value: r.protVer})
		return
	}
	if len(r.corr) == 0 {
		e.delta.errors[errKindProtocol]++
		e.respondStatus(r, c, 400, "correlation data missing", false,
			packet.UserProperty{Key: propInvalidName, Value: "Correlation Data"})
		return
	}
	if r.qos != 1 {
		e.delta.errors[errKindProtocol]++
		e.respondStatus(r, c, 400, "state store requests must be published with QoS 1", true)
		return
	}
	e.execute(r, c)
}

// supportedVersion accepts protocol 1.x; an empty version means 1.0.
func supportedVersion(v string) bool {
	if v == "" {
		return true
	}
	major, minor, ok := strings.Cut(v, ".")
	if !ok || !digitsOnly(minor) || minor == "" {
		return false
	}
	n, err := strconv.Atoi(major)
	return err == nil && digitsOnly(major) && n == 1
}

// validResponseTopic refuses topics the state store must not publish to.
func validResponseTopic(t string) bool {
	return t != "" && t != InvokeTopic && !strings.HasPrefix(t, notifyTopicPrefix) &&
		t[0] != '$' && !strings.ContainsAny(t, "+#") && packet.ValidUTF8String(t)
}

func (e *executor) cacheKey(r *request) []byte {
	e.ckey = e.ckey[:0]
	if r.invoker != "" {
		e.ckey = append(e.ckey, 'i')
		e.ckey = append(e.ckey, r.invoker...)
	} else {
		e.ckey = append(e.ckey, 't')
		e.ckey = append(e.ckey, r.respTopic...)
	}
	e.ckey = append(e.ckey, 0)
	return append(e.ckey, r.corr...)
}

// respondStatus answers with an RPC-level error: no payload, __stat and
// __stMsg and any extra properties.
func (e *executor) respondStatus(r *request, c *chunk, status int, msg string, cache bool, extra ...packet.UserProperty) {
	props := append(e.props[:0],
		packet.UserProperty{Key: propStatus, Value: strconv.Itoa(status)},
		packet.UserProperty{Key: propProtocolVersion, Value: protocolVersion},
		packet.UserProperty{Key: propStatusMessage, Value: msg})
	props = append(props, extra...)
	e.props = props
	e.finishResponse(r, c, nil, props, cache)
}

// respondPayload answers with status 200 and a RESP payload, with the
// version ts in __ts when there is one.
func (e *executor) respondPayload(r *request, c *chunk, payload []byte, ts string, cache bool) {
	props := append(e.props[:0],
		packet.UserProperty{Key: propStatus, Value: "200"},
		packet.UserProperty{Key: propProtocolVersion, Value: protocolVersion})
	if ts != "" {
		props = append(props, packet.UserProperty{Key: propTimestamp, Value: ts})
	}
	e.props = props
	e.finishResponse(r, c, payload, props, cache)
}

func (e *executor) finishResponse(r *request, c *chunk, payload []byte, props []packet.UserProperty, cache bool) {
	if cache && len(r.corr) > 0 {
		key := e.cacheKey(r)
		ttl := e.opts.CacheTTL
		if r.hasExpiry && r.expiry > 0 {
			ttl = time.Duration(r.expiry) * time.Second
		}
		if k, ok := e.cache.put(key, bytes.Clone(payload), slices.Clone(props), e.now.Add(ttl)); ok {
			e.undo = append(e.undo, undoRecord{kind: undoCache, key: k})
		}
	}
	e.encodeResponse(r, c, payload, props)
}

// encodeResponse appends the response PUBLISH: QoS 1 to the request's
// response topic with its correlation data and (as the SDKs' executors do)
// its message expiry.
func (e *executor) encodeResponse(r *request, c *chunk, payload []byte, props []packet.UserProperty) {
	p := packet.Publish{QoS: 1, PacketID: 1, Topic: r.respTopic, Payload: payload}
	p.Properties.CorrelationData = r.corr
	if len(r.corr) > 0 {
		p.Properties.Set(packet.PropCorrelationData)
	}
	if r.hasExpiry {
		p.Properties.MessageExpiry = r.expiry
		p.Properties.Set(packet.PropMessageExpiry)
	}
	p.Properties.User = props
	if mp := e.s.b.MaxPacketSize(); mp > 0 && p.Size(packet.V5) > mp {
		// Larger than the broker takes from any publisher.
		p.Payload = nil
		p.Properties.User = []packet.UserProperty{
			{Key: propStatus, Value: "500"},
			{Key: propProtocolVersion, Value: protocolVersion},
			{Key: propStatusMessage, Value: "the response exceeds the broker's maximum packet size"},
		}
	}
	var expiry uint32
	if p.Properties.Has(packet.PropMessageExpiry) {
		expiry = p.Properties.MessageExpiry
	}
	c.add(e.s.newMessage(p.Topic, p.Payload, p.Properties.CorrelationData, expiry, p.Properties.User, e.now))
}

// notify publishes a change of key to its watchers: the new value, or a
// deletion when value is nil.
func (e *executor) notify(c *chunk, key string, value []byte, version HLC) {
	ws := e.watched[key]
	if len(ws) == 0 {
		return
	}
	if value != nil {
		e.out = appendNotifySet(e.out[:0], value)
	} else {
		e.out = append(e.out[:0], notifyDelete...)
	}
	e.hexBuf = appendUpperHex(e.hexBuf[:0], []byte(key))
	props := []packet.UserProperty{
		{Key: propTimestamp, Value: version.String()},
		{Key: propProtocolVersion, Value: protocolVersion},
		{Key: propSourceID, Value: e.s.clientID},
	}
	for w := range ws {
		p := packet.Publish{QoS: 1, PacketID: 1, Topic: w.prefix + string(e.hexBuf), Payload: e.out}
		p.Properties.User = props
		if mp := e.s.b.MaxPacketSize(); mp > 0 && p.Size(packet.V5) > mp {
			e.s.errLog.Log(slog.LevelWarn, "notification size "+w.clientID, "notification exceeds the broker's maximum packet size; not sent",
				"client", w.clientID, "bytes", p.Size(packet.V5))
			continue
		}
		m := e.s.newMessage(p.Topic, p.Payload, nil, 0, props, e.now)
		// Delivered to the registering client's session whether or not it
		// subscribed to its notification topic, as Azure IoT Operations'
		// SDKs expect (they register a handler and never subscribe).
		m.DeliverTo = w.clientID
		c.add(m)
		e.delta.notifications++
	}
}

const hexDigits = "0123456789ABCDEF"

// appendUpperHex is RFC 4648 base16, the encoding of client IDs and keys in
// notification topics.
func appendUpperHex(dst, b []byte) []byte {
	for _, x := range b {
		dst = append(dst, hexDigits[x>>4], hexDigits[x&0x0F])
	}
	return dst
}

func (e *executor) addWatch(clientID, key string) {
	w := e.watchers[clientID]
	if w == nil {
		w = &watcher{
			clientID: clientID,
			prefix:   notifyTopicPrefix + string(appendUpperHex(nil, []byte(clientID))) + "/command/notify/",
			keys:     make(map[string]struct{}),
		}
		e.watchers[clientID] = w
	}
	w.keys[key] = struct{}{}
	ws := e.watched[key]
	if ws == nil {
		ws = make(map[*watcher]struct{})
		e.watched[key] = ws
	}
	ws[w] = struct{}{}
}

func (e *executor) removeWatch(clientID, key string) {
	w := e.watchers[clientID]
	if w == nil {
		return
	}
	delete(w.keys, key)
	if len(w.keys) == 0 {
		delete(e.watchers, clientID)
	}
	if ws := e.watched[key]; ws != nil {
		delete(ws, w)
		if len(ws) == 0 {
			delete(e.watched, key)
		}
	}
}

func (e *executor) watching(clientID, key string) bool {
	w := e.watchers[clientID]
	if w == nil {
		return false
	}
	_, ok := w.keys[key]
	return ok
}

func (e *executor) forgetClient(clientID string) {
	w := e.watchers[clientID]
	if w == nil {
		return
	}
	for key := range w.keys {
		e.removeWatch(clientID, key)
	}
}

// expiryHeap orders keys by expiry. Items go stale when their key is
// overwritten or deleted; the sweep skips those.
type expiryItem struct {
	at  int64
	key string
	e   *entry
}

type expiryHeap []expiryItem

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryItem)) }
func (h *expiryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = expiryItem{}
	*h = old[:len(old)-1]
	return it
}
