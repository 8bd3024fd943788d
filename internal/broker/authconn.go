package broker

// One connection's authentication, as a state machine driven by the reader
// goroutine: CONNECT (plain credentials, or an enhanced exchange of AUTH
// packets before CONNACK), then optionally re-authentication (AUTH 0x19,
// continued with 0x18) while connected; the credential's expiry closes the
// connection unless a re-authentication replaced it in time.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/broker/listener"
	"github.com/edgeport/edgeport/internal/clock"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Metrics label of clients refused because nothing authenticated them.
const authMethodNone = "none"

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
	expTimer clock.Timer
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
		// Enhanced authentication needs an EnhancedAuthenticator.
		return fail(authMethodUnsupported, packet.BadAuthenticationMethod, "authentication method "+cp.Properties.AuthMethod+" is not supported")
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
				if code == packet.BadAuthenticationMethod && label == authMethodNone {
					label = authMethodUnsupported // the client's method name is not a label
				}
				c.logAuthFailure(ci, err)
				return fail(label, code, "authentication failed")
			}
			if code, reason, err := c.enhancedAuth(cp, st, ack); code != packet.Success {
				// StartAuth accepted the method, so its name is a bounded
				// label when the refusal names no other.
				label := ci.AuthMethod
				if err != nil {
					if _, l := authRefusal(err); l != authMethodNone {
						label = l
					}
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
	if !p.Expiry.IsZero() && !c.b.clk.Now().Before(p.Expiry) {
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
// counted, and the credential's expiry is watched. Internal clients (no
// clientAuth) count as anonymous.
func (c *client) authenticated() {
	if c.auth == nil {
		c.ls.countAuth(authMethodAnonymous, authSuccess)
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
	a.expTimer = c.b.clk.AfterFunc(p.Expiry.Sub(c.b.clk.Now()), c.credentialExpired)
}

// credentialExpired closes the connection whose credential expired without
// a re-authentication. As in Azure IoT Operations the client gets no
// DISCONNECT: the network connection is closed, and the broker logs why.
func (c *client) credentialExpired() {
	p := c.auth.principal.Load()
	if c.b.clk.Now().Before(p.Expiry) {
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
// connection authenticated with, by the listener's EnhancedAuthenticator
// in force now (the listener's security may have changed since CONNECT).
func (c *client) startReauth(in *packet.Auth) (AuthStepper, error) {
	if c.auth == nil {
		return nil, packet.BadAuthenticationMethod
	}
	sec := c.auth.sec.p.Load()
	if sec == nil || sec.authn == nil {
		return nil, packet.BadAuthenticationMethod
	}
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

// reauthenticated puts the principal of a completed re-authentication in
// force: its expiry is watched anew, and the listener's rules are applied
// to it as to a policy change. Only a connection with a clientAuth gets
// here: startReauth refuses the others.
func (c *client) reauthenticated(st AuthStepper) {
	a := c.auth
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
	if label == authMethodNone && c.auth != nil {
		label = c.auth.principal.Load().Method
	}
	c.ls.countAuth(label, authOutcome(code))
	c.log.Debug("re-authentication failed", "client", c.id, "listener", c.ls.name, "err", err)
}

// enhancedAuth runs the AUTH exchange of a CONNECT carrying an
// Authentication Method with st. On success it sets the connection's method
// and CONNACK's authentication properties; a failure returns the reason and
// the method's error, if it gave one.
func (c *client) enhancedAuth(cp *packet.Connect, st AuthStepper, ack *packet.ConnAck) (packet.ReasonCode, string, error) {
	method := cp.Properties.AuthMethod
	data := cp.Properties.AuthData
	for {
		reply, done, err := st.Step(data)
		if err != nil {
			code, _ := authRefusal(err)
			return code, "authentication failed", err
		}
		if done {
			c.authMethod = method
			if len(reply) > 0 {
				ack.Properties.AuthData = reply
				ack.Properties.Set(packet.PropAuthData)
			}
			ack.Properties.AuthMethod = method
			ack.Properties.Set(packet.PropAuthMethod)
			return packet.Success, "", nil
		}
		ap := packet.Auth{ReasonCode: packet.ContinueAuthentication}
		ap.Properties.AuthMethod = method
		ap.Properties.Set(packet.PropAuthMethod)
		if len(reply) > 0 {
			ap.Properties.AuthData = reply
			ap.Properties.Set(packet.PropAuthData)
		}
		c.writePacket(&ap)
		_ = c.conn.SetReadDeadline(time.Now().Add(c.b.o().ConnectTimeout))
		h, body, err := c.r.Next(c.b.o().MaxPacketSize)
		if err != nil {
			return packet.UnspecifiedError, "no AUTH answer", nil
		}
		var in packet.Auth
		if h.Type != packet.AUTH {
			return packet.ProtocolError, "expected AUTH", nil
		}
		if err := in.Decode(h.Flags, body, c.version); err != nil {
			return packet.MalformedPacket, err.Error(), nil
		}
		if in.ReasonCode != packet.ContinueAuthentication || in.Properties.AuthMethod != method {
			return packet.ProtocolError, "AUTH must continue the same method", nil
		}
		data = in.Properties.AuthData
	}
}

func authCode(err error) packet.ReasonCode {
	var rc packet.ReasonCode
	if errors.As(err, &rc) && rc.IsError() {
		return rc
	}
	return packet.NotAuthorized
}

// handleAuth processes AUTH after CONNACK: re-authentication (0x19) and its
// continuation (0x18) with the method the connection authenticated with.
func (c *client) handleAuth(flags byte, body []byte) error {
	if c.version != packet.V5 {
		return packet.Errorf(packet.ProtocolError, "AUTH in MQTT 3.1.1")
	}
	var in packet.Auth
	if err := in.Decode(flags, body, c.version); err != nil {
		return err
	}
	if c.authMethod == "" || in.Properties.AuthMethod != c.authMethod {
		return packet.Errorf(packet.ProtocolError, "AUTH without the connection's authentication method")
	}
	switch in.ReasonCode {
	case packet.ReAuthenticate:
		st, err := c.startReauth(&in)
		if err != nil {
			c.reauthFailed(err)
			code, _ := authRefusal(err)
			return packet.Errorf(reauthDisconnectCode(code), "re-authentication failed")
		}
		c.reauth = st
	case packet.ContinueAuthentication:
		if c.reauth == nil {
			return packet.Errorf(packet.ProtocolError, "AUTH continue without re-authentication")
		}
	default:
		return packet.Errorf(packet.ProtocolError, "AUTH reason %s from a client", in.ReasonCode)
	}
	st := c.reauth
	reply, done, err := st.Step(in.Properties.AuthData)
	if err != nil {
		c.reauth = nil
		if errors.Is(err, ErrAuthUnavailable) {
			// The credential could not be checked now (Azure IoT
			// Operations' behaviour): the client keeps its connection and
			// its current credential, and may try again.
			c.log.Debug("re-authentication unavailable", "client", c.id, "listener", c.ls.name, "err", err)
			out := packet.Auth{ReasonCode: packet.ContinueAuthentication}
			out.Properties.AuthMethod = c.authMethod
			out.Properties.Set(packet.PropAuthMethod)
			c.writePacket(&out)
			return nil
		}
		c.reauthFailed(err)
		code, _ := authRefusal(err)
		return packet.Errorf(reauthDisconnectCode(code), "re-authentication failed")
	}
	out := packet.Auth{ReasonCode: packet.ContinueAuthentication}
	if done {
		out.ReasonCode = packet.Success
		c.reauth = nil
	}
	out.Properties.AuthMethod = c.authMethod
	out.Properties.Set(packet.PropAuthMethod)
	if len(reply) > 0 {
		out.Properties.AuthData = reply
		out.Properties.Set(packet.PropAuthData)
	}
	if done {
		// In force before the client reads its AUTH success.
		c.reauthenticated(st)
	}
	c.writePacket(&out)
	return nil
}

// Authentication outcomes, as the authentication metrics label them.
const (
	authSuccess = iota
	authDeny    // the credentials were checked and refused
	authFailure // the check could not be made (unsupported method, broken exchange)
	numAuthOutcomes
)

// Authentication method labels besides the methods of Authenticators.
const (
	authMethodAnonymous   = "anonymous"
	authMethodUnsupported = "unsupported" // a method no Authenticator serves: not echoed, to bound label values
)

// authCounters count one listener's authentication outcomes for one method.
type authCounters [numAuthOutcomes]atomic.Uint64

// AuthCounters are one listener's authentication outcomes for one method.
type AuthCounters struct {
	Successes, Deny, Failures uint64
}

// countAuth records an authentication outcome. CONNECTs are far rarer than
// publishes, so a map behind the listener's mutex is cheap enough here.
func (ls *listenerStats) countAuth(method string, outcome int) {
	ls.authMu.Lock()
	ac := ls.auth[method]
	if ac == nil {
		if ls.auth == nil {
			ls.auth = make(map[string]*authCounters)
		}
		ac = new(authCounters)
		ls.auth[method] = ac
	}
	ls.authMu.Unlock()
	ac[outcome].Add(1)
}

func (ls *listenerStats) authSnapshot() map[string]AuthCounters {
	ls.authMu.Lock()
	defer ls.authMu.Unlock()
	m := make(map[string]AuthCounters, len(ls.auth))
	for method, ac := range ls.auth {
		m[method] = AuthCounters{Successes: ac[authSuccess].Load(), Deny: ac[authDeny].Load(), Failures: ac[authFailure].Load()}
	}
	return m
}

// authOutcome classifies a refused authentication: a decision on the
// credentials is a deny, anything else kept the check from being made.
func authOutcome(code packet.ReasonCode) int {
	switch code {
	case packet.NotAuthorized, packet.BadUserNameOrPassword, packet.Banned:
		return authDeny
	}
	return authFailure
}
