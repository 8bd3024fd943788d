package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/broker/listener"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Op is an operation that authorization decides on.
type Op uint8

// Operations.
const (
	OpConnect Op = iota + 1
	OpPublish
	OpSubscribe
)

func (o Op) String() string {
	switch o {
	case OpConnect:
		return "Connect"
	case OpPublish:
		return "Publish"
	case OpSubscribe:
		return "Subscribe"
	}
	return "Op?"
}

// Principal is who a connected client is, as its listener's authentication
// established it; authorization rules match it. A Principal is immutable
// once the broker has it: re-authentication replaces it whole.
type Principal struct {
	ClientID string
	// Username is the verified user name ("" for anonymous clients: the
	// CONNECT user name of a client nobody checked is not an identity).
	Username   string
	Attributes map[string]string
	// Method is the authentication method that admitted the client, the
	// metrics label: "anonymous" when none did.
	Method string
	// Expiry is when the credential stops being valid; the zero time
	// never. The broker closes the connection then, unless the client
	// re-authenticated (MQTT 5 AUTH 0x19) with a newer credential.
	Expiry time.Time
}

// ConnectInfo is what a client presents to authenticate: its CONNECT (or,
// with Reauth, its AUTH packet) and its connection.
type ConnectInfo struct {
	ClientID    string
	Username    string
	HasUsername bool
	Password    []byte
	HasPassword bool
	// AuthMethod and AuthData are MQTT 5 enhanced authentication's.
	AuthMethod string
	AuthData   []byte
	// Reauth is set for a re-authentication (AUTH 0x19) of a connected
	// client; Username is then its principal's.
	Reauth     bool
	Listener   string
	RemoteAddr net.Addr
	// TLS is the connection's TLS state (peer certificates), nil for
	// plain TCP and WebSocket.
	TLS     *tls.ConnectionState
	Version packet.Version
}

// Authenticator decides who a client connecting through a listener is. It
// returns the principal or an error: an *AuthError (or a packet.ReasonCode)
// carries the CONNACK reason, anything else means 0x87 not authorized.
// ErrNoCredentials (wrapped) says that no method applied to what the
// client presented, which the listener may accept as anonymous.
type Authenticator interface {
	Authenticate(ctx context.Context, ci *ConnectInfo) (*Principal, error)
}

// EnhancedAuthenticator is an Authenticator that also serves MQTT 5
// enhanced authentication: CONNECT with an Authentication Method, and
// re-authentication. StartAuth returns the exchange for ci.AuthMethod, or
// an *AuthError with 0x8C when none of its methods serves it.
type EnhancedAuthenticator interface {
	Authenticator
	StartAuth(ctx context.Context, ci *ConnectInfo) (AuthStepper, error)
}

// PrincipalStepper is an AuthStepper that knows who the client is once
// Step reported done. Steppers that are not give the client an anonymous
// principal named by the method.
type PrincipalStepper interface {
	AuthStepper
	Principal() *Principal
}

// Authorizer decides what principals may do through a listener: Connect
// (topic ""), Publish to a topic name, Subscribe to a topic filter (the
// filter inside $share/group/). It is called on connection goroutines, for
// every PUBLISH whose decision is not cached: it must be quick, safe for
// concurrent use, and must not call into the Broker.
type Authorizer interface {
	Allow(p *Principal, op Op, topic string) bool
}

// DecisionCacher is an Authorizer that says whether its decisions may be
// cached per client and topic (Azure IoT Operations' cache setting);
// Authorizers that are not are cached.
type DecisionCacher interface {
	CacheDecisions() bool
}

// AuthError is a refused authentication.
type AuthError struct {
	Code   packet.ReasonCode // what CONNACK (or DISCONNECT) tells the client
	Method string            // the method that decided, for metrics; "" when none applied
	Err    error             // why, for the log: never a credential
}

func (e *AuthError) Error() string {
	msg := e.Code.String()
	if e.Method != "" {
		msg = e.Method + ": " + msg
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *AuthError) Unwrap() error { return e.Err }

var (
	// ErrNoCredentials says that no authentication method applied to what
	// the client presented.
	ErrNoCredentials = errors.New("no authentication method applies to the client's credentials")
	// ErrAuthUnavailable says that credentials could not be checked for a
	// reason that may pass (an unreachable webhook). A re-authenticating
	// client is told to continue (AUTH 0x18) and may try again.
	ErrAuthUnavailable = errors.New("authentication service unavailable")
)

// Metrics label of clients refused because nothing authenticated them.
const authMethodNone = "none"

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
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == c && b.pruneSubscriptionsLocked(s, sec, p) > 0 {
		b.commit(b.saveSessionLocked(s, 0), nil)
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
		b.subs.Unsubscribe(sub.inner, sub.group, s)
		s.count(&b.stats.subscriptions, -1)
		b.log.Info("subscription no longer authorized: removed", "client", s.id, "filter", filter)
		n++
	}
	return n
}

// clientAuth is a connection's authentication state. The will of the
// connection points to it too, to be checked when it is published.
type clientAuth struct {
	sec       *secHolder
	ls        *listenerStats
	principal atomic.Pointer[Principal]
	label     string // metrics label of the method that authenticated; set during CONNECT

	// Publish decisions, reader goroutine only; valid for one security and
	// one principal.
	cacheFor *listenerSecurity
	cacheP   *Principal
	pubCache map[string]bool

	expMu    sync.Mutex
	expTimer *time.Timer
	ended    bool // the connection is gone: no timer may start
}

// connectInfo describes the connection and what cp presents.
func (c *client) connectInfo(cp *packet.Connect) *ConnectInfo {
	ci := &ConnectInfo{
		ClientID: c.id, Username: cp.Username, HasUsername: cp.HasUsername, Password: cp.Password, HasPassword: cp.HasPassword,
		Listener: c.ls.name, RemoteAddr: c.conn.RemoteAddr(), Version: c.version,
	}
	if c.version == packet.V5 && cp.Properties.Has(packet.PropAuthMethod) {
		ci.AuthMethod, ci.AuthData = cp.Properties.AuthMethod, cp.Properties.AuthData
	}
	if st, ok := listener.TLSState(c.conn); ok {
		ci.TLS = &st
	}
	return ci
}

// authenticate decides who a connecting client is and whether it may
// connect, filling CONNACK's authentication properties. A refusal is
// counted and returned as the CONNACK reason.
func (c *client) authenticate(cp *packet.Connect, ack *packet.ConnAck) (packet.ReasonCode, string) {
	if c.trusted {
		c.authMethod = ""
		return packet.Success, ""
	}
	a := &clientAuth{sec: c.b.secFor(c.ls.name), ls: c.ls}
	c.auth = a
	sec := a.sec.p.Load()
	enhanced := c.version == packet.V5 && cp.Properties.Has(packet.PropAuthMethod)
	fail := func(label string, code packet.ReasonCode, reason string) (packet.ReasonCode, string) {
		c.ls.countAuth(label, authOutcome(code))
		return code, reason
	}
	if sec != nil && sec.closed() {
		return fail(authMethodNone, packet.NotAuthorized, "authentication required")
	}
	var p *Principal
	switch {
	case sec == nil || sec.authn == nil:
		if !enhanced {
			p = &Principal{ClientID: c.id, Method: authMethodAnonymous}
			break
		}
		// Methods registered with RegisterEnhancedAuth serve listeners
		// without an Authenticator.
		method := cp.Properties.AuthMethod
		ea := c.b.enhanced[method]
		if ea == nil {
			return fail(authMethodUnsupported, packet.BadAuthenticationMethod, "authentication method "+method+" is not supported")
		}
		st := ea.Start(c.id)
		if code, reason, _ := c.enhancedAuth(cp, st, ack); code != packet.Success {
			return fail(method, code, reason)
		}
		p = stepperPrincipal(st, c.id, method)
	default:
		ctx, cancel := context.WithTimeout(context.Background(), c.b.o().ConnectTimeout)
		defer cancel()
		ci := c.connectInfo(cp)
		if enhanced {
			ea, ok := sec.authn.(EnhancedAuthenticator)
			if !ok {
				return fail(authMethodUnsupported, packet.BadAuthenticationMethod, "authentication method "+ci.AuthMethod+" is not supported")
			}
			st, err := ea.StartAuth(ctx, ci)
			if err != nil {
				code, label := authRefusal(err)
				c.logAuthFailure(ci, err)
				return fail(label, code, "authentication failed")
			}
			if code, reason, err := c.enhancedAuth(cp, st, ack); code != packet.Success {
				label := authMethodNone
				if err != nil {
					_, label = authRefusal(err)
					c.logAuthFailure(ci, err)
				}
				return fail(label, code, reason)
			}
			p = stepperPrincipal(st, c.id, ci.AuthMethod)
			break
		}
		var err error
		p, err = sec.authn.Authenticate(ctx, ci)
		switch {
		case err == nil:
		case errors.Is(err, ErrNoCredentials) && sec.anonymous:
			p = &Principal{ClientID: c.id, Method: authMethodAnonymous}
		default:
			code, label := authRefusal(err)
			c.logAuthFailure(ci, err)
			return fail(label, code, "authentication failed")
		}
	}
	p = ownPrincipal(p, c.id)
	if !p.Expiry.IsZero() && !time.Now().Before(p.Expiry) {
		return fail(p.Method, packet.NotAuthorized, "credential expired")
	}
	if sec != nil && sec.authz != nil && !sec.authz.Allow(p, OpConnect, "") {
		c.ls.countAuth(p.Method, authSuccess)
		c.ls.authzDenied.Add(1)
		c.log.Debug("connect not authorized", "client", c.id, "listener", c.ls.name)
		return packet.NotAuthorized, "not authorized"
	}
	a.principal.Store(p)
	a.label = p.Method
	return packet.Success, ""
}

// ownPrincipal returns p for client id, copied when it needs the client ID
// or a method label, so that what an Authenticator returned is not changed.
func ownPrincipal(p *Principal, id string) *Principal {
	if p.ClientID == id && p.Method != "" {
		return p
	}
	own := *p
	own.ClientID = id
	if own.Method == "" {
		own.Method = authMethodNone
	}
	return &own
}

// stepperPrincipal is who an enhanced authentication exchange says the
// client is, or an anonymous principal named by the method.
func stepperPrincipal(st AuthStepper, clientID, method string) *Principal {
	if ps, ok := st.(PrincipalStepper); ok {
		if p := ps.Principal(); p != nil {
			return p
		}
	}
	return &Principal{ClientID: clientID, Method: method}
}

// authRefusal maps an authentication error to the CONNACK reason and the
// metrics label.
func authRefusal(err error) (packet.ReasonCode, string) {
	var ae *AuthError
	if errors.As(err, &ae) {
		label := ae.Method
		if label == "" {
			label = authMethodNone
		}
		code := ae.Code
		if !code.IsError() {
			code = packet.NotAuthorized
		}
		return code, label
	}
	return authCode(err), authMethodNone
}

// reauthDisconnectCode is the DISCONNECT reason for a failed
// re-authentication: CONNACK's bad user name or password, banned and bad
// authentication method are not DISCONNECT reasons, so they become 0x87.
func reauthDisconnectCode(code packet.ReasonCode) packet.ReasonCode {
	switch code {
	case packet.NotAuthorized, packet.UnspecifiedError, packet.MalformedPacket, packet.ProtocolError,
		packet.ImplementationSpecificError, packet.ServerBusy, packet.AdministrativeAction, packet.QuotaExceeded:
		return code
	}
	return packet.NotAuthorized
}

// logAuthFailure logs a refused authentication; the error never carries a
// credential, and neither does anything else logged here.
func (c *client) logAuthFailure(ci *ConnectInfo, err error) {
	c.log.Debug("authentication failed", "client", ci.ClientID, "listener", ci.Listener, "remote", ci.RemoteAddr.String(), "err", err)
}

// authenticated completes a successful CONNECT's authentication: it is
// counted, and the credential's expiry is watched.
func (c *client) authenticated() {
	if c.auth == nil {
		c.ls.countAuth(c.b.authMethodLabel(c.authMethod), authSuccess)
		return
	}
	c.ls.countAuth(c.auth.label, authSuccess)
	c.armExpiry()
}

// armExpiry (re)starts the timer that closes the connection when the
// principal's credential expires.
func (c *client) armExpiry() {
	a := c.auth
	p := a.principal.Load()
	a.expMu.Lock()
	defer a.expMu.Unlock()
	if a.expTimer != nil {
		a.expTimer.Stop()
		a.expTimer = nil
	}
	if a.ended || p == nil || p.Expiry.IsZero() {
		return
	}
	a.expTimer = time.AfterFunc(time.Until(p.Expiry), c.credentialExpired)
}

// credentialExpired closes the connection whose credential expired without
// a re-authentication. As in Azure IoT Operations the client gets no
// DISCONNECT: the network connection is closed, and the broker logs why.
func (c *client) credentialExpired() {
	p := c.auth.principal.Load()
	if time.Now().Before(p.Expiry) {
		c.armExpiry() // re-authenticated in the meantime
		return
	}
	c.log.Info("credential expired: closing the connection", "client", c.id, "listener", c.ls.name, "method", p.Method)
	c.closeAfterFlush()
}

// endAuth stops watching the credential of a connection that ended.
func (c *client) endAuth() {
	a := c.auth
	if a == nil {
		return
	}
	a.expMu.Lock()
	a.ended = true
	if a.expTimer != nil {
		a.expTimer.Stop()
		a.expTimer = nil
	}
	a.expMu.Unlock()
}

// startReauth begins a re-authentication (AUTH 0x19) with the method the
// connection authenticated with.
func (c *client) startReauth(in *packet.Auth) (AuthStepper, error) {
	if c.auth != nil {
		if sec := c.auth.sec.p.Load(); sec != nil && sec.authn != nil {
			ea, ok := sec.authn.(EnhancedAuthenticator)
			if !ok {
				return nil, packet.BadAuthenticationMethod
			}
			ctx, cancel := context.WithTimeout(context.Background(), c.b.o().ConnectTimeout)
			defer cancel()
			p := c.auth.principal.Load()
			ci := &ConnectInfo{
				ClientID: c.id, Username: p.Username, HasUsername: p.Username != "", AuthMethod: c.authMethod,
				AuthData: in.Properties.AuthData, Reauth: true, Listener: c.ls.name, RemoteAddr: c.conn.RemoteAddr(), Version: c.version,
			}
			if st, ok := listener.TLSState(c.conn); ok {
				ci.TLS = &st
			}
			return ea.StartAuth(ctx, ci)
		}
	}
	ea := c.b.enhanced[c.authMethod]
	if ea == nil {
		return nil, packet.BadAuthenticationMethod
	}
	return ea.Start(c.id), nil
}

// reauthenticated puts the principal of a completed re-authentication in
// force: its expiry is watched anew, and the listener's rules are applied
// to it as to a policy change.
func (c *client) reauthenticated(st AuthStepper) {
	a := c.auth
	label := c.b.authMethodLabel(c.authMethod)
	if a == nil {
		c.ls.countAuth(label, authSuccess)
		return
	}
	p := ownPrincipal(stepperPrincipal(st, c.id, c.authMethod), c.id)
	a.principal.Store(p)
	c.ls.countAuth(p.Method, authSuccess)
	c.armExpiry()
	if sec := a.sec.p.Load(); sec != nil {
		c.b.recheck(c, c.sess, sec)
	}
}

// reauthFailed counts a refused re-authentication.
func (c *client) reauthFailed(err error) {
	code, label := authRefusal(err)
	if c.auth == nil {
		label = c.b.authMethodLabel(c.authMethod)
	} else if label == authMethodNone {
		label = c.auth.principal.Load().Method
	}
	c.ls.countAuth(label, authOutcome(code))
	c.log.Debug("re-authentication failed", "client", c.id, "listener", c.ls.name, "err", err)
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
// published: the listener's rules may have changed since CONNECT.
func (b *Broker) willAllowed(m *Message) bool {
	a := m.owner
	if a == nil {
		return true
	}
	m.owner = nil // not needed any more; the retained copy must not keep it
	sec := a.sec.p.Load()
	if sec == nil || sec.authz == nil {
		return true
	}
	p := a.principal.Load()
	if p != nil && sec.authz.Allow(p, OpPublish, m.Topic) {
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
