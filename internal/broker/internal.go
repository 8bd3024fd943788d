package broker

import (
	"sync/atomic"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// InternalListener is the listener name for Edgeport's own in-process
// clients, such as the self-test probe, which reach ServeConn over a pipe
// rather than through a network listener.
//
// Connections served under this name are trusted: they may publish to
// topics beginning with $ (the probe uses $edgeport/selftest/..., which no
// user # subscription sees and no network client may publish to). Their
// sessions are left out of the connected/total session and subscription
// gauges, so an idle broker reports zero sessions; their traffic is still
// counted, under listener="internal".
const InternalListener = "internal"

// InternalClientIDPrefix begins the client identifier of every internal
// client ($edgeport/statestore, $edgeport/selftest, ...). The prefix is
// reserved: a client connecting through any other listener with such an
// identifier is refused with 0x85 (3.1.1: identifier rejected), before
// authentication and whatever the policy says, so that nobody can take an
// internal client's session over.
const InternalClientIDPrefix = "$edgeport/"

// OriginProperty is the user property the broker adds to every message it
// delivers to an internal client: the publishing client's ID, verified by
// the broker. Components serving requests (the state store) identify the
// requester by it rather than by what the request claims. The broker strips
// the property from what network clients publish, so it cannot be forged.
const OriginProperty = "$edgeport.origin"

// Accepting reports whether the broker takes new connections; it turns
// false when Shutdown begins.
func (b *Broker) Accepting() bool { return !b.closing.Load() }

// count adds d to a session gauge unless s belongs to an internal client.
func (s *session) count(g *atomic.Int64, d int64) {
	if !s.internal {
		g.Add(d)
	}
}

// Authentication outcomes, as the authentication metrics label them.
const (
	authSuccess = iota
	authDeny    // the credentials were checked and refused
	authFailure // the check could not be made (unsupported method, broken exchange)
	numAuthOutcomes
)

// Authentication method labels besides registered enhanced methods.
const (
	authMethodAnonymous   = "anonymous"
	authMethodUnsupported = "unsupported" // a method no EnhancedAuth provides: not echoed, to bound label values
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

// authMethodLabel names an enhanced authentication method for the metrics.
func (b *Broker) authMethodLabel(method string) string {
	if method == "" {
		return authMethodAnonymous
	}
	if _, ok := b.enhanced[method]; ok {
		return method
	}
	return authMethodUnsupported
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
