package broker

// Enforcement: each listener's security in force (SetListenerSecurity), the
// authorization checks on CONNECT, PUBLISH, SUBSCRIBE and wills, the
// per-client cache of publish decisions, and re-checking connected clients
// and their subscriptions when a listener's security changes.

import (
	"reflect"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// maxCachedDecisions bounds a client's cache of publish decisions; a client
// publishing to more distinct topics starts the cache over.
const maxCachedDecisions = 256

// listenerSecurity is a listener's authentication and authorization in
// force; SetListenerSecurity replaces it whole.
type listenerSecurity struct {
	authn     Authenticator
	authz     Authorizer
	anonymous bool // clients no method applies to are accepted
	cache     bool // publish decisions may be cached per client
}

// closed reports whether the listener admits nobody: it requires
// authentication and has nothing to authenticate with.
func (s *listenerSecurity) closed() bool { return s.authn == nil && !s.anonymous }

// secHolder is where a listener's security lives; clients keep a pointer
// to it, so a change reaches them without a lookup per operation. A nil
// value is an open listener: no authentication, no authorization.
type secHolder struct {
	p atomic.Pointer[listenerSecurity]
}

type securityRegistry struct {
	mu        sync.Mutex
	m         map[string]*secHolder
	withAuthz atomic.Int32 // listeners with an Authorizer
}

func (b *Broker) secFor(listener string) *secHolder {
	b.sec.mu.Lock()
	defer b.sec.mu.Unlock()
	h := b.sec.m[listener]
	if h == nil {
		if b.sec.m == nil {
			b.sec.m = make(map[string]*secHolder)
		}
		h = new(secHolder)
		b.sec.m[listener] = h
	}
	return h
}

// SetListenerSecurity puts a listener's authentication and authorization
// in force. authn nil with allowAnonymous admits everyone (the default of a
// listener never set); authn nil without it admits nobody. authz nil allows
// every operation; otherwise it is the only judge. A change applies to the
// next operation at once: connected clients of the listener that may no
// longer connect are disconnected (MQTT 5: DISCONNECT 0x87), subscriptions
// no longer allowed are removed without telling the client, and everyone
// else stays connected.
func (b *Broker) SetListenerSecurity(listener string, authn Authenticator, authz Authorizer, allowAnonymous bool) {
	h := b.secFor(listener)
	old := h.p.Load()
	if old != nil && sameValue(old.authn, authn) && sameValue(old.authz, authz) && old.anonymous == allowAnonymous {
		return
	}
	s := &listenerSecurity{authn: authn, authz: authz, anonymous: allowAnonymous, cache: true}
	if dc, ok := authz.(DecisionCacher); ok {
		s.cache = dc.CacheDecisions()
	}
	h.p.Store(s)
	if had, has := old != nil && old.authz != nil, authz != nil; had != has {
		if has {
			b.sec.withAuthz.Add(1)
		} else {
			b.sec.withAuthz.Add(-1)
		}
	}
	b.enforce(listener, s)
}

// AuthorizationInUse reports whether any listener has an Authorizer.
func (b *Broker) AuthorizationInUse() bool { return b.sec.withAuthz.Load() > 0 }

// sameValue compares two interface values without panicking on
// incomparable dynamic types (which never compare equal here).
func sameValue(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if reflect.TypeOf(a) != reflect.TypeOf(b) || !reflect.TypeOf(a).Comparable() {
		return false
	}
	return a == b
}

// enforce applies a listener's new security to its connected clients.
func (b *Broker) enforce(listener string, sec *listenerSecurity) {
	type pair struct {
		c *client
		s *session
	}
	var live []pair
	b.sessMu.Lock()
	for _, s := range b.sessions {
		s.mu.Lock()
		if c := s.client; c != nil && c.auth != nil && c.ls.name == listener {
			live = append(live, pair{c, s})
		}
		s.mu.Unlock()
	}
	b.sessMu.Unlock()
	n := 0
	for _, l := range live {
		if !b.recheck(l.c, l.s, sec) {
			n++
		}
	}
	if len(live) > 0 {
		b.log.Info("listener security changed", "listener", listener, "clients", len(live), "disconnected", n)
	}
}

// recheck holds a connected client to sec: it is disconnected when it may
// no longer connect, and loses the subscriptions it may no longer have. It
// reports whether the client stays.
func (b *Broker) recheck(c *client, s *session, sec *listenerSecurity) bool {
	p := c.auth.principal.Load()
	if !sec.admits(p) {
		c.ls.authzDenied.Add(1)
		c.log.Info("client no longer authorized to connect: disconnecting", "client", p.ClientID, "listener", c.ls.name)
		c.disconnect(packet.NotAuthorized, "not authorized")
		return false
	}
	defer b.flush() // after the unlock below
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == c && b.pruneSubscriptionsLocked(s, sec, p) > 0 {
		b.submit(b.saveSessionLocked(s, 0), nil)
	}
	return true
}

// admits reports whether p may (still) be connected through the listener.
func (s *listenerSecurity) admits(p *Principal) bool {
	if s.closed() || p.Method == authMethodAnonymous && !s.anonymous {
		return false
	}
	return s.authz == nil || s.authz.Allow(p, OpConnect, "")
}

// pruneSubscriptionsLocked removes the subscriptions of s that sec does not
// allow p; it returns how many. The client is not told: MQTT has no packet
// for it, and its deliveries simply stop. s.mu is held.
func (b *Broker) pruneSubscriptionsLocked(s *session, sec *listenerSecurity, p *Principal) int {
	if sec.authz == nil {
		return 0
	}
	n := 0
	for filter, sub := range s.subs {
		if sec.authz.Allow(p, OpSubscribe, sub.inner) {
			continue
		}
		delete(s.subs, filter)
		b.unsubscribe(s, sub)
		s.count(&b.stats.subscriptions, -1)
		b.log.Info("subscription no longer authorized: removed", "client", s.id, "filter", filter)
		n++
	}
	return n
}

// allowPublish reports whether the client may publish to name, counting
// the decision. Reader goroutine.
func (c *client) allowPublish(name string) bool {
	if a := c.auth; a != nil {
		if sec := a.sec.p.Load(); sec != nil && sec.authz != nil && !a.allowCached(sec, name) {
			c.ls.authzDenied.Add(1)
			c.log.Debug("publish not authorized", "client", c.id, "topic", name)
			return false
		}
	}
	c.stats.authzAllowed.Add(1)
	return true
}

func (a *clientAuth) allowCached(sec *listenerSecurity, topic string) bool {
	p := a.principal.Load()
	if !sec.cache {
		return sec.authz.Allow(p, OpPublish, topic)
	}
	if a.cacheFor != sec || a.cacheP != p {
		a.cacheFor, a.cacheP = sec, p
		clear(a.pubCache)
	}
	if v, ok := a.pubCache[topic]; ok {
		return v
	}
	v := sec.authz.Allow(p, OpPublish, topic)
	if a.pubCache == nil {
		a.pubCache = make(map[string]bool)
	} else if len(a.pubCache) >= maxCachedDecisions {
		clear(a.pubCache)
	}
	a.pubCache[strings.Clone(topic)] = v
	return v
}

// refusePublish answers a PUBLISH authorization denied: MQTT 5 QoS 1 and 2
// get 0x87; 3.1.1 cannot refuse, so the message is dropped and
// acknowledged as the specification allows (MQTT-3.3.5-2).
func (c *client) refusePublish(p *packet.Publish) {
	if p.QoS == 0 {
		return
	}
	code := packet.NotAuthorized
	if c.version != packet.V5 {
		code = packet.Success
	}
	c.ackAfter(c.b.newTxn(), p.QoS, p.PacketID, code)
}

// allowSubscribe reports whether the client may subscribe to filter (the
// filter inside $share/group/ for a shared subscription), counting the
// decision.
func (c *client) allowSubscribe(filter string) bool {
	if a := c.auth; a != nil {
		if sec := a.sec.p.Load(); sec != nil && sec.authz != nil && !sec.authz.Allow(a.principal.Load(), OpSubscribe, filter) {
			c.ls.authzDenied.Add(1)
			c.log.Debug("subscription not authorized", "client", c.id, "filter", filter)
			return false
		}
	}
	c.stats.authzAllowed.Add(1)
	return true
}

// pruneOnResume applies the listener's rules to the subscriptions of a
// resumed session: the policy may have changed while it was offline, or
// another principal may have resumed it. s.mu is held.
func (c *client) pruneOnResume(s *session) {
	if a := c.auth; a != nil {
		if sec := a.sec.p.Load(); sec != nil {
			c.b.pruneSubscriptionsLocked(s, sec, a.principal.Load())
		}
	}
}

// willAllowed checks a will against its owner's principal when it is
// published: the listener's rules may have changed since CONNECT, and a
// restart may have come in between (the owner is stored with the session).
// The owner must still be admitted by its listener and allowed to publish
// to the will's topic.
func (b *Broker) willAllowed(m *Message) bool {
	a := m.owner
	if a == nil {
		return true // an internal client's
	}
	m.owner = nil // not needed any more; the retained copy must not keep it
	sec := a.sec.p.Load()
	if sec == nil {
		return true // an open listener
	}
	p := a.principal.Load()
	if p != nil && sec.admits(p) && (sec.authz == nil || sec.authz.Allow(p, OpPublish, m.Topic)) {
		return true
	}
	a.ls.authzDenied.Add(1)
	b.log.Info("will not authorized: dropped", "client", m.Origin, "topic", m.Topic)
	return false
}

// ClientPrincipal returns the principal of a connected client and the
// Authorizer of the listener it came through (nil: none), for components
// that authorize requests on the broker's behalf, such as the state store.
// ok is false when the client is not connected or is an internal one.
func (b *Broker) ClientPrincipal(clientID string) (p *Principal, authz Authorizer, ok bool) {
	b.sessMu.Lock()
	s := b.sessions[clientID]
	b.sessMu.Unlock()
	if s == nil {
		return nil, nil, false
	}
	s.mu.Lock()
	c := s.client
	s.mu.Unlock()
	if c == nil || c.auth == nil {
		return nil, nil, false
	}
	if sec := c.auth.sec.p.Load(); sec != nil {
		authz = sec.authz
	}
	return c.auth.principal.Load(), authz, true
}

// ClientAllowed reports whether a connected client may perform op on topic
// through its listener; false when it is not connected.
func (b *Broker) ClientAllowed(clientID string, op Op, topic string) bool {
	p, az, ok := b.ClientPrincipal(clientID)
	return ok && (az == nil || az.Allow(p, op, topic))
}
