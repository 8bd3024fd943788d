// Package auth authenticates MQTT clients (passwords, X.509 certificates,
// JWTs and Kubernetes service account tokens, a webhook) and authorizes them with Azure IoT Operations' rules.
package auth

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Method names, as the resources spell them and the metrics label them.
const (
	MethodUsernamePassword    = "UsernamePassword"
	MethodX509                = "X509"
	MethodServiceAccountToken = "ServiceAccountToken"
	MethodCustom              = "Custom"
)

// Method is one authentication method of a Chain. Methods are safe for
// concurrent use.
type Method interface {
	// Name is the method's name, the metrics label.
	Name() string
	// Applies reports whether the client presented credentials for this
	// method (for MQTT 5 enhanced authentication, ci.AuthMethod names it).
	Applies(ci *broker.ConnectInfo) bool
	// Verify checks the credentials. An error wrapping
	// broker.ErrAuthUnavailable means they could not be checked: the next
	// method that applies gets them. Any other error denies the client.
	Verify(ctx context.Context, ci *broker.ConnectInfo) (*broker.Principal, error)
}

// Closer is a Method holding resources until its Chain is closed.
type Closer interface{ Close() }

// Chain is a BrokerAuthentication: methods tried in order. The first that
// applies to what the client presented decides; one that cannot decide
// (its service is unreachable) hands over to the next. When none applies
// the client has no credentials for this listener (broker.ErrNoCredentials),
// which the listener refuses unless it admits anonymous clients.
type Chain struct {
	methods  []Method
	throttle *Throttle
	timeout  time.Duration // of one enhanced authentication step
	log      *slog.Logger
}

var _ broker.EnhancedAuthenticator = (*Chain)(nil)

// NewChain returns a chain of methods; failures slow down their source
// address through throttle (nil: never).
func NewChain(methods []Method, throttle *Throttle, log *slog.Logger) *Chain {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Chain{methods: methods, throttle: throttle, timeout: 10 * time.Second, log: log}
}

// Methods returns the chain's methods, in order.
func (c *Chain) Methods() []Method { return c.methods }

// Close releases what the methods hold.
func (c *Chain) Close() {
	for _, m := range c.methods {
		if cl, ok := m.(Closer); ok {
			cl.Close()
		}
	}
}

// Authenticate implements broker.Authenticator.
func (c *Chain) Authenticate(ctx context.Context, ci *broker.ConnectInfo) (*broker.Principal, error) {
	if err := c.throttle.Wait(ctx, ci.RemoteAddr); err != nil {
		return nil, &broker.AuthError{Code: packet.ServerBusy, Err: err}
	}
	p, err := c.run(ctx, ci)
	if err != nil {
		var ae *broker.AuthError
		if errors.As(err, &ae) && ae.Method != "" && !errors.Is(err, broker.ErrAuthUnavailable) {
			c.throttle.Failed(ci.RemoteAddr)
		}
	}
	return p, err
}

func (c *Chain) run(ctx context.Context, ci *broker.ConnectInfo) (*broker.Principal, error) {
	var unavailable error
	for _, m := range c.methods {
		if !m.Applies(ci) {
			continue
		}
		p, err := m.Verify(ctx, ci)
		if err == nil {
			if p.Method == "" {
				p.Method = m.Name()
			}
			p.ClientID = ci.ClientID
			return p, nil
		}
		if errors.Is(err, broker.ErrAuthUnavailable) {
			unavailable = err
			continue
		}
		var ae *broker.AuthError
		if errors.As(err, &ae) {
			if ae.Method == "" {
				ae.Method = m.Name()
			}
			return nil, ae
		}
		return nil, &broker.AuthError{Code: packet.NotAuthorized, Method: m.Name(), Err: err}
	}
	code := packet.NotAuthorized
	switch {
	case ci.AuthMethod != "":
		code = packet.BadAuthenticationMethod
	case ci.HasUsername || ci.HasPassword:
		code = packet.BadUserNameOrPassword
	}
	if unavailable != nil {
		return nil, &broker.AuthError{Code: code, Err: errors.Join(broker.ErrNoCredentials, unavailable)}
	}
	return nil, &broker.AuthError{Code: code, Err: broker.ErrNoCredentials}
}

// StartAuth implements broker.EnhancedAuthenticator: the exchange is one
// step, the Authentication Data of CONNECT or AUTH checked like any other
// credential.
func (c *Chain) StartAuth(ctx context.Context, ci *broker.ConnectInfo) (broker.AuthStepper, error) {
	for _, m := range c.methods {
		if m.Applies(ci) {
			cp := *ci
			return &chainStep{c: c, ci: &cp}, nil
		}
	}
	return nil, &broker.AuthError{Code: packet.BadAuthenticationMethod, Err: errors.New("no method serves " + ci.AuthMethod)}
}

type chainStep struct {
	c  *Chain
	ci *broker.ConnectInfo
	p  *broker.Principal
}

func (s *chainStep) Step(data []byte) ([]byte, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.c.timeout)
	defer cancel()
	s.ci.AuthData = data
	p, err := s.c.Authenticate(ctx, s.ci)
	if err != nil {
		return nil, false, err
	}
	s.p = p
	return nil, true, nil
}

func (s *chainStep) Principal() *broker.Principal { return s.p }

// deny is a refusal of credentials that were checked.
func deny(method string, code packet.ReasonCode, why string) error {
	return &broker.AuthError{Code: code, Method: method, Err: errors.New(why)}
}

// unavailable marks a failure to check credentials.
func unavailable(err error) error {
	return errors.Join(broker.ErrAuthUnavailable, err)
}
