package app

import (
	"fmt"
	"net"
	"strings"

	"github.com/edgeport/edgeport/internal/auth"
	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/config"
)

// security turns BrokerAuthentication and BrokerAuthorization resources
// into live chains and policies, and puts them in force on the ports that
// reference them. Only the reconciling goroutine uses it.
type security struct {
	r        *resources
	throttle *auth.Throttle
	chains   map[string]*builtChain
	policies map[string]*builtPolicy
}

// builtChain is a BrokerAuthentication generation, built.
type builtChain struct {
	uid      string
	gen      int64
	chain    *auth.Chain // nil when it failed to build
	warnings []string
	err      error
}

type builtPolicy struct {
	uid string
	gen int64
	pol *auth.Policy // nil when it failed to compile
	err error
}

func newSecurity(r *resources) *security {
	return &security{r: r, throttle: auth.NewThrottle(0, 0),
		chains: make(map[string]*builtChain), policies: make(map[string]*builtPolicy)}
}

// chain returns the BrokerAuthentication's chain, built again when the
// resource changed; nil when it does not exist or failed to build.
func (s *security) chain(name string) *builtChain {
	obj, ok := s.r.store.Get(config.Key{Kind: "BrokerAuthentication", Name: name})
	old := s.chains[name]
	if !ok {
		if old != nil {
			if old.chain != nil {
				old.chain.Close()
			}
			delete(s.chains, name)
		}
		return nil
	}
	if old != nil && old.uid == obj.Metadata.UID && old.gen == obj.Metadata.Generation {
		return old
	}
	if old != nil && old.chain != nil {
		old.chain.Close()
	}
	b := &builtChain{uid: obj.Metadata.UID, gen: obj.Metadata.Generation}
	b.chain, b.warnings, b.err = auth.BuildChain(obj.Spec.(*config.BrokerAuthenticationSpec), auth.Env{
		DataDir: s.r.a.cfg.DataDir, Throttle: s.throttle, Log: s.r.a.log.With("component", "auth", "authentication", name),
	})
	s.chains[name] = b
	return b
}

// policy returns the BrokerAuthorization's policy, compiled again when the
// resource changed; nil when it does not exist.
func (s *security) policy(name string) *builtPolicy {
	obj, ok := s.r.store.Get(config.Key{Kind: "BrokerAuthorization", Name: name})
	if !ok {
		delete(s.policies, name)
		return nil
	}
	old := s.policies[name]
	if old != nil && old.uid == obj.Metadata.UID && old.gen == obj.Metadata.Generation {
		return old
	}
	b := &builtPolicy{uid: obj.Metadata.UID, gen: obj.Metadata.Generation}
	b.pol, b.err = auth.NewPolicy(obj.Spec.(*config.BrokerAuthorizationSpec))
	s.policies[name] = b
	return b
}

// reconcileAuthn builds a changed BrokerAuthentication and reports it.
func (s *security) reconcileAuthn(k config.Key) {
	b := s.chain(k.Name)
	obj, ok := s.r.store.Get(k)
	if !ok || b == nil {
		return
	}
	if b.err != nil {
		s.r.setReady(obj, false, "InvalidSettings", b.err.Error()+"; ports that reference it refuse every client")
		return
	}
	msg := "in force on the ports that reference it"
	if len(b.warnings) > 0 {
		msg += "; " + strings.Join(b.warnings, "; ")
	}
	s.r.setReady(obj, true, "Applied", msg)
}

// reconcileAuthz compiles a changed BrokerAuthorization and reports it.
func (s *security) reconcileAuthz(k config.Key) {
	b := s.policy(k.Name)
	obj, ok := s.r.store.Get(k)
	if !ok || b == nil {
		return
	}
	if b.err != nil {
		s.r.setReady(obj, false, "InvalidRules", b.err.Error()+"; ports that reference it deny every operation")
		return
	}
	s.r.setReady(obj, true, "Applied", "in force on the ports that reference it")
}

// apply puts a port's authentication and authorization in force; the
// broker applies a change to the clients already connected. It returns
// what the listener's status should say about the port, if anything. A
// reference that cannot be resolved fails closed.
func (s *security) apply(name string, p config.ListenerPort) string {
	var authn broker.Authenticator
	var authz broker.Authorizer
	anonymous := p.AllowAnonymous
	var notes []string
	switch {
	case p.AuthenticationRef != "":
		b := s.chain(p.AuthenticationRef)
		switch {
		case b == nil:
			anonymous = false
			notes = append(notes, fmt.Sprintf("BrokerAuthentication %q not found: every client is refused", p.AuthenticationRef))
		case b.chain == nil:
			anonymous = false
			notes = append(notes, fmt.Sprintf("BrokerAuthentication %q is invalid: every client is refused", p.AuthenticationRef))
		default:
			authn = b.chain
		}
	case loopback(p.Address):
		anonymous = true // a development port, private to the machine
	case !anonymous:
		notes = append(notes, "no authenticationRef on a non-loopback address: every client is refused (set authenticationRef, or allowAnonymous: true)")
	}
	if p.AuthorizationRef != "" {
		b := s.policy(p.AuthorizationRef)
		switch {
		case b == nil:
			authz = auth.DenyAll
			notes = append(notes, fmt.Sprintf("BrokerAuthorization %q not found: every operation is denied", p.AuthorizationRef))
		case b.pol == nil:
			authz = auth.DenyAll
			notes = append(notes, fmt.Sprintf("BrokerAuthorization %q is invalid: every operation is denied", p.AuthorizationRef))
		default:
			authz = b.pol
		}
	}
	s.r.a.broker.SetListenerSecurity(name, authn, authz, anonymous)
	if len(notes) == 0 {
		return ""
	}
	return fmt.Sprintf("port %d: %s", *p.Port, strings.Join(notes, "; "))
}

// wantsClientCert reports whether the BrokerAuthentication has an X509
// method, whose port must ask TLS clients for their certificate.
func (s *security) wantsClientCert(ref string) bool {
	if ref == "" {
		return false
	}
	obj, ok := s.r.store.Get(config.Key{Kind: "BrokerAuthentication", Name: ref})
	if !ok {
		return false
	}
	for _, m := range obj.Spec.(*config.BrokerAuthenticationSpec).AuthenticationMethods {
		if m.Method == config.AuthnX509 {
			return true
		}
	}
	return false
}

func (s *security) close() {
	for _, b := range s.chains {
		if b.chain != nil {
			b.chain.Close()
		}
	}
}

// loopback reports whether a listen address is private to the machine.
func loopback(addr string) bool {
	if addr == "localhost" {
		return true
	}
	ip := net.ParseIP(addr)
	return ip != nil && ip.IsLoopback()
}

// keyAuthorizer is an Authorizer that also judges state store keys.
type keyAuthorizer interface {
	AllowKey(p *broker.Principal, key []byte, write bool) bool
}

// stateStoreAuthorizer applies the requester's listener policy
// (stateStoreResources) to state store requests. The requester is the
// client the broker vouches for; once it is gone its listener is unknown,
// so its requests are refused while any listener has a policy.
type stateStoreAuthorizer struct{ b *broker.Broker }

func (s stateStoreAuthorizer) Authorize(clientID, _ string, _ map[string]string, key []byte, write bool) bool {
	p, az, ok := s.b.ClientPrincipal(clientID)
	if !ok {
		return !s.b.AuthorizationInUse()
	}
	if az == nil {
		return true
	}
	ka, ok := az.(keyAuthorizer)
	return ok && ka.AllowKey(p, key, write)
}

// AuthorizeResponse lets the state store answer only on topics the
// requester may subscribe to.
func (s stateStoreAuthorizer) AuthorizeResponse(clientID, topic string) bool {
	if _, _, ok := s.b.ClientPrincipal(clientID); !ok {
		return !s.b.AuthorizationInUse()
	}
	return s.b.ClientAllowed(clientID, broker.OpSubscribe, topic)
}

// mayReceive reports whether a client may subscribe to a topic, for the
// services that answer requests (the connectors' write and call servers):
// they publish a response only where the requester could read it, or a
// client could have them deliver to topics it may not see. A requester
// that is not a connected network client is refused once any listener
// enforces authorization.
func mayReceive(b *broker.Broker) func(origin, topic string) bool {
	return func(origin, topic string) bool {
		if _, _, ok := b.ClientPrincipal(origin); !ok {
			return !b.AuthorizationInUse()
		}
		return b.ClientAllowed(origin, broker.OpSubscribe, topic)
	}
}
