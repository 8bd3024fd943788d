package statestore

import (
	"sync"
	"sync/atomic"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// GETs are answered on their publisher's goroutine from view, a copy
// of the key map that holds only durable entries: the executor updates it
// after each batch's Txn is durable and before the batch's answers leave.
// A GET so never waits for a commit nor queues behind SETs, and still
// sees every change whose answer was sent, and none that could be lost.
//
// A client's own order is kept per key: a GET of a key the same client has
// a SET, DEL or VDEL of still in the executor goes through the executor
// behind it, so a client that pipelines SET k then GET k reads its write,
// as it did when every request went through the executor.
// Anything but a plain, valid GET (errors included) also goes through the
// executor, which writes every error answer.
type view struct {
	mu   sync.RWMutex
	keys map[string]*entry // guarded by mu; entries are immutable
}

func (v *view) get(key []byte) *entry {
	v.mu.RLock()
	en := v.keys[string(key)]
	v.mu.RUnlock()
	return en
}

// pending counts the writes (SET, DEL, VDEL) handed to the executor and
// not yet answered, per invoker and key (see writeKey).
type pending struct {
	mu sync.RWMutex
	n  map[string]int // guarded by mu; absent = 0
	// total is the sum of n, written under mu: a GET-only load (no write
	// in the executor) reads it and skips the lock and the map.
	total atomic.Int64
}

// writeKey is the pending map's key of a write of key by invoker.
func appendWriteKey(dst []byte, invoker string, key []byte) []byte {
	dst = append(dst, invoker...)
	dst = append(dst, 0)
	return append(dst, key...)
}

func (p *pending) add(k string) {
	p.mu.Lock()
	p.n[k]++
	p.total.Add(1)
	p.mu.Unlock()
}

// idle reports whether no write of k is in the executor. A client's write
// is added on its publisher's goroutine before its next request is routed
// there, so the client's own GET after it always sees it.
func (p *pending) idle(k []byte) bool {
	if p.total.Load() == 0 {
		return true
	}
	p.mu.RLock()
	n := p.n[string(k)]
	p.mu.RUnlock()
	return n == 0
}

// forget forgets the write of a request that leaves unanswered.
func (p *pending) forget(r *request) {
	if r.pkey == "" {
		return
	}
	p.mu.Lock()
	p.forgetLocked(r.pkey)
	p.mu.Unlock()
}

func (p *pending) forgetLocked(k string) {
	p.total.Add(-1)
	if n := p.n[k] - 1; n > 0 {
		p.n[k] = n
	} else {
		delete(p.n, k)
	}
}

// done forgets the writes of a batch, taking the lock once.
func (p *pending) done(batch []*request) {
	locked := false
	for _, r := range batch {
		if r.pkey == "" {
			continue
		}
		if !locked {
			p.mu.Lock()
			locked = true
		}
		p.forgetLocked(r.pkey)
	}
	if locked {
		p.mu.Unlock()
	}
}

// fastScratch is what route and fastGet reuse, from Server.scratchPool:
// GETs are answered on many publishers' goroutines at once.
type fastScratch struct {
	args  [][]byte
	wkey  []byte
	out   []byte
	props [3]packet.UserProperty
}

// route answers r on the publisher's goroutine when it is a valid GET of a
// key its client has no write of in the executor, and reports whether it
// did. Otherwise it notes r's write, if r is one, in s.pending, for the
// executor to forget once it has answered it.
func (s *Server) route(r *request) bool {
	sc := s.scratchPool.Get().(*fastScratch)
	defer s.scratchPool.Put(sc)
	args, err := parseRequest(r.payload, sc.args)
	sc.args = args
	r.pkey = ""
	if err != nil || len(args) < 2 || len(args[1]) == 0 {
		return false
	}
	switch {
	case equalFold(args[0], "GET"):
		// One the shared backend could not sync is answered 503 by the
		// executor.
		return len(args) == 2 && !r.unavailable && s.fastGet(r, args[1], sc)
	case equalFold(args[0], "SET"), equalFold(args[0], "DEL"), equalFold(args[0], "VDEL"):
		r.pkey = string(appendWriteKey(sc.wkey[:0], r.invoker, args[1]))
		s.pending.add(r.pkey)
	}
	return false
}

func (s *Server) fastGet(r *request, key []byte, sc *fastScratch) bool {
	if r.qos != 1 || len(r.corr) == 0 || !r.hasRespTopic || (r.hasProtVer && !supportedVersion(r.protVer)) ||
		!validResponseTopic(r.respTopic) {
		return false
	}
	sc.wkey = appendWriteKey(sc.wkey[:0], r.invoker, key)
	if !s.pending.idle(sc.wkey) {
		return false
	}
	if a := s.opts.Authorizer; a != nil {
		if !a.Authorize(r.invoker, "", nil, key, false) {
			return false
		}
		if ra, ok := a.(ResponseAuthorizer); ok && !ra.AuthorizeResponse(r.invoker, r.respTopic) {
			return false
		}
	}
	now := s.opts.Clock.Now()
	if r.hasTS || r.hasFT {
		limit := now.Add(s.opts.MaxClockSkew).UnixMilli()
		if r.hasTS {
			if ts, ok := ParseHLC(r.ts); !ok || ts.Wall > limit {
				return false
			}
		}
		if r.hasFT {
			if ft, ok := ParseHLC(r.ft); !ok || ft.IsZero() || ft.Wall > limit {
				return false
			}
		}
	}
	en := s.view.get(key)
	if en != nil && en.expiry != 0 && en.expiry <= now.UnixMilli() {
		en = nil // expired; the executor's next sweep deletes it
	}
	sc.props[0] = packet.UserProperty{Key: propStatus, Value: "200"}
	sc.props[1] = packet.UserProperty{Key: propProtocolVersion, Value: protocolVersion}
	props := sc.props[:2]
	if en == nil {
		sc.out = appendNull(sc.out[:0])
	} else {
		sc.out = appendBulk(sc.out[:0], en.value)
		sc.props[2] = packet.UserProperty{Key: propTimestamp, Value: en.ts}
		props = sc.props[:3]
	}
	if mp := s.b.MaxPacketSize(); mp > 0 && len(sc.out)+len(r.respTopic)+len(r.corr)+256 > mp {
		return false // the executor answers that it does not fit
	}
	m := s.newMessage(r.respTopic, sc.out, r.corr, r.expiry, props, now)
	// Counted before the answer leaves, as the executor does.
	s.metrics.requestsBy[cmdGet].Inc()
	s.metrics.retrievals.Inc()
	s.b.Publish(m)
	return true
}
