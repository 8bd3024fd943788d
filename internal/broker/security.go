package broker

// The broker's security contract: what a listener's authentication and
// authorization plug in (Authenticator, EnhancedAuthenticator, AuthStepper,
// Authorizer) and the values they exchange with the broker. internal/auth
// implements them. How a connection authenticates is in authconn.go; how
// the decisions are applied and kept in force is in enforce.go.

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

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

// AuthStepper runs one authentication exchange. Step gets the client's
// Authentication Data and returns the data to send back, whether the client
// is now authenticated, or an error — a packet.ReasonCode to tell the client,
// NotAuthorized when it is anything else.
type AuthStepper interface {
	Step(data []byte) (reply []byte, done bool, err error)
}
