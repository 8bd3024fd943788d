package opcua

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
)

// Security policies Edgeport offers: every policy that gopcua v0.8.0 and
// current servers both implement. Basic128Rsa15 and Basic256 are deprecated
// by the OPC Foundation and left out on purpose.
var Policies = []string{"None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"}

// Modes are the message security modes.
var Modes = []string{"None", "Sign", "SignAndEncrypt"}

// AuthKind says how the session's user authenticates.
type AuthKind string

// User token kinds, named as Azure Device Registry names them.
const (
	AuthAnonymous   AuthKind = "Anonymous"
	AuthUserPass    AuthKind = "UsernamePassword"
	AuthCertificate AuthKind = "Certificate"
)

// Auth is the user identity of a session.
type Auth struct {
	Kind     AuthKind
	Username string
	Password string
	// CertDER and Key are the user certificate for AuthCertificate.
	CertDER []byte
	Key     *rsa.PrivateKey
}

// Endpoint says where and how to open a session.
type Endpoint struct {
	URL    string // opc.tcp://host:port[/path]
	Policy string // one of Policies; empty means None
	Mode   string // one of Modes; empty means None, or SignAndEncrypt with a policy
	Auth   Auth

	DialTimeout    time.Duration // default 5s
	RequestTimeout time.Duration // default 10s
	SessionTimeout time.Duration // default 60s
}

// Validate checks an endpoint's fields, naming the wrong one.
func (e *Endpoint) Validate() error {
	if !strings.HasPrefix(e.URL, "opc.tcp://") {
		return fmt.Errorf("address: %q is not an opc.tcp:// URL", e.URL)
	}
	if _, _, err := net.SplitHostPort(strings.SplitN(strings.TrimPrefix(e.URL, "opc.tcp://"), "/", 2)[0]); err != nil {
		return fmt.Errorf("address: %q: %v", e.URL, err)
	}
	if e.Policy != "" && !contains(Policies, e.Policy) {
		return fmt.Errorf("securityPolicy: %q is not one of %s", e.Policy, strings.Join(Policies, ", "))
	}
	if e.Mode != "" && !contains(Modes, e.Mode) {
		return fmt.Errorf("securityMode: %q is not one of %s", e.Mode, strings.Join(Modes, ", "))
	}
	p, m := e.policyMode()
	if (p == "None") != (m == "None") {
		return fmt.Errorf("securityMode: %s does not go with securityPolicy %s", m, p)
	}
	switch e.Auth.Kind {
	case "", AuthAnonymous:
	case AuthUserPass:
		if e.Auth.Username == "" {
			return fmt.Errorf("authentication: UsernamePassword needs a username")
		}
	case AuthCertificate:
		if len(e.Auth.CertDER) == 0 || e.Auth.Key == nil {
			return fmt.Errorf("authentication: Certificate needs a certificate and its key")
		}
	default:
		return fmt.Errorf("authentication: %q is not Anonymous, UsernamePassword or Certificate", e.Auth.Kind)
	}
	return nil
}

func (e *Endpoint) policyMode() (policy, mode string) {
	policy, mode = e.Policy, e.Mode
	if policy == "" {
		policy = "None"
	}
	if mode == "" {
		if policy == "None" {
			mode = "None"
		} else {
			mode = "SignAndEncrypt"
		}
	}
	return policy, mode
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func durOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Dialer opens OPC UA sessions with Edgeport's application certificate, after
// checking the server's certificate against the trust list.
type Dialer struct {
	App   *AppCert
	Trust *TrustList
	// Now is the clock certificate checks use; nil means time.Now.
	Now func() time.Time
}

func (d *Dialer) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// ErrNoEndpoint says the server offers no endpoint with the requested
// security policy and mode.
var ErrNoEndpoint = errors.New("server offers no matching endpoint")

// Dial opens a secure channel and an activated session. gopcua's own
// reconnect is off: the Session supervisor rebuilds from scratch, which is
// the one path that always works (see session.go).
func (d *Dialer) Dial(ctx context.Context, ep *Endpoint) (*opcua.Client, error) {
	if err := ep.Validate(); err != nil {
		return nil, err
	}
	policy, mode := ep.policyMode()
	dialTimeout := durOr(ep.DialTimeout, 5*time.Second)

	// GetEndpoints runs over an unsecured channel, which every server
	// offers for discovery; its answer carries the server certificate that
	// the trust list must accept before any secret goes out.
	eps, err := getEndpoints(ctx, ep.URL, dialTimeout, durOr(ep.RequestTimeout, 10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("getting endpoints of %s: %w", ep.URL, err)
	}
	sel := selectEndpoint(eps, policy, mode)
	if sel == nil {
		var offered []string
		for _, e := range eps {
			offered = append(offered, shortPolicy(e.SecurityPolicyURI)+"/"+shortMode(e.SecurityMode))
		}
		return nil, fmt.Errorf("%w for %s/%s at %s (it offers %s)", ErrNoEndpoint, policy, mode, ep.URL, strings.Join(offered, ", "))
	}
	if mode != "None" {
		if _, err := d.Trust.Verify(sel.ServerCertificate, ep.URL, d.now()); err != nil {
			return nil, err
		}
	}

	tokenType := ua.UserTokenTypeAnonymous
	opts := []opcua.Option{
		opcua.AutoReconnect(false),
		opcua.DialTimeout(dialTimeout),
		opcua.RequestTimeout(durOr(ep.RequestTimeout, 10*time.Second)),
		opcua.SessionTimeout(durOr(ep.SessionTimeout, 60*time.Second)),
		opcua.SessionName("edgeport"),
		opcua.ApplicationName("Edgeport"),
		opcua.ProductURI("urn:edgeport"),
		opcua.Certificate(d.App.DER),
		opcua.PrivateKey(d.App.Key),
		opcua.ApplicationURI(d.App.URI),
	}
	switch ep.Auth.Kind {
	case AuthUserPass:
		tokenType = ua.UserTokenTypeUserName
		opts = append(opts, opcua.AuthUsername(ep.Auth.Username, ep.Auth.Password))
	case AuthCertificate:
		tokenType = ua.UserTokenTypeCertificate
		opts = append(opts, opcua.AuthCertificate(ep.Auth.CertDER), opcua.AuthPrivateKey(ep.Auth.Key))
	default:
		opts = append(opts, opcua.AuthAnonymous())
	}
	if !offersToken(sel, tokenType) {
		return nil, fmt.Errorf("server endpoint %s/%s does not accept %s users", policy, mode, authName(ep.Auth.Kind))
	}
	// SecurityFromEndpoint sets policy, mode, the remote certificate checked
	// above and the user token policy id; it keeps the token chosen above.
	opts = append(opts, opcua.SecurityFromEndpoint(sel, tokenType))
	c, err := opcua.NewClient(ep.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("configuring client: %w", err)
	}
	if err := connect(ctx, c, dialTimeout+3*durOr(ep.RequestTimeout, 10*time.Second)); err != nil {
		if uerr := userRejected(err, &ep.Auth); uerr != nil {
			return nil, fmt.Errorf("%w (connecting to %s, %s/%s)", uerr, ep.URL, policy, mode)
		}
		return nil, fmt.Errorf("connecting to %s (%s/%s): %w", ep.URL, policy, mode, explain(err))
	}
	return c, nil
}

// getEndpoints asks the server at url for its endpoints, and gives up at
// once when ctx ends. gopcua v0.8.0 itself is never cancelled mid-way:
// when the secure channel's open returns early (its context ended) while
// the channel's reader goroutine is still taking the server's answer,
// both touch the channel's opening state unsynchronised — the race
// detector failed TestConnectorEndToEnd 2 runs in 30 (a session stopped
// or restarted while it dialled). The abandoned request ends within its
// own timeouts.
func getEndpoints(ctx context.Context, url string, dialTimeout, requestTimeout time.Duration) ([]*ua.EndpointDescription, error) {
	type answer struct {
		eps []*ua.EndpointDescription
		err error
	}
	done := make(chan answer, 1)
	go func() {
		gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dialTimeout+requestTimeout)
		defer cancel()
		eps, err := opcua.GetEndpoints(gctx, url, opcua.DialTimeout(dialTimeout), opcua.RequestTimeout(requestTimeout))
		done <- answer{eps, err}
	}()
	select {
	case a := <-done:
		return a.eps, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// connect opens c's secure channel and session, and gives up at once
// when ctx ends, for the reason getEndpoints does: Connect opens its
// secure channel the same way. An abandoned connect goes on within
// limit (a dial and three requests: the channel, CreateSession and
// ActivateSession), then its client is closed. On an error c is closed.
func connect(ctx context.Context, c *opcua.Client, limit time.Duration) error {
	done := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit)
		defer cancel()
		done <- c.Connect(cctx)
	}()
	select {
	case err := <-done:
		if err != nil {
			c.Close(context.Background())
		}
		return err
	case <-ctx.Done():
		go func() {
			<-done
			c.Close(context.Background())
		}()
		return ctx.Err()
	}
}

func authName(k AuthKind) string {
	if k == "" {
		return string(AuthAnonymous)
	}
	return string(k)
}

// explain adds what a person can do about the common refusals.
func explain(err error) error {
	var sc ua.StatusCode
	if errors.As(err, &sc) {
		switch sc {
		case ua.StatusBadSecurityChecksFailed, ua.StatusBadCertificateUntrusted:
			return fmt.Errorf("%w: the server does not trust Edgeport's certificate yet; trust it on the server (`edgeport connector opcua certs show-own` prints it)", err)
		}
	}
	return err
}

// ErrUserRejected says the server refused the session's user identity: a
// wrong username or password, or a user certificate it does not trust.
var ErrUserRejected = errors.New("user rejected by the server")

// userRejected turns ActivateSession's refusal of the user token into a
// message that names the user and what to do; nil when err is something else.
func userRejected(err error, a *Auth) error {
	var sc ua.StatusCode
	if !errors.As(err, &sc) {
		return nil
	}
	switch sc {
	case ua.StatusBadIdentityTokenInvalid, ua.StatusBadIdentityTokenRejected, ua.StatusBadUserAccessDenied, ua.StatusBadUserSignatureInvalid:
	default:
		return nil
	}
	switch a.Kind {
	case AuthCertificate:
		subject := "unparsable certificate"
		if c, perr := x509.ParseCertificate(a.CertDER); perr == nil {
			subject = c.Subject.String()
		}
		return &userRejectedError{status: sc, msg: fmt.Sprintf("user certificate rejected by the server: %s (subject %q, thumbprint %s): add it to the server's trusted user certificates",
			StatusName(uint32(sc)), subject, Thumbprint(a.CertDER))}
	case AuthUserPass:
		return &userRejectedError{status: sc, msg: fmt.Sprintf("user %q rejected by the server: %s: check the username and password secrets",
			a.Username, StatusName(uint32(sc)))}
	}
	return &userRejectedError{status: sc, msg: fmt.Sprintf("anonymous user rejected by the server: %s: the endpoint needs a username or a certificate", StatusName(uint32(sc)))}
}

// userRejectedError is ErrUserRejected with the server's status code.
type userRejectedError struct {
	status ua.StatusCode
	msg    string
}

func (e *userRejectedError) Error() string { return e.msg }

func (e *userRejectedError) Is(target error) bool { return target == ErrUserRejected }

func (e *userRejectedError) Unwrap() error { return e.status }

func offersToken(ep *ua.EndpointDescription, t ua.UserTokenType) bool {
	for _, p := range ep.UserIdentityTokens {
		if p.TokenType == t {
			return true
		}
	}
	return false
}

func selectEndpoint(eps []*ua.EndpointDescription, policy, mode string) *ua.EndpointDescription {
	uri := ua.FormatSecurityPolicyURI(policy)
	var m ua.MessageSecurityMode
	switch mode {
	case "None":
		m = ua.MessageSecurityModeNone
	case "Sign":
		m = ua.MessageSecurityModeSign
	case "SignAndEncrypt":
		m = ua.MessageSecurityModeSignAndEncrypt
	}
	for _, e := range eps {
		if e.SecurityPolicyURI == uri && e.SecurityMode == m {
			return e
		}
	}
	return nil
}

func shortPolicy(uri string) string {
	if i := strings.LastIndexByte(uri, '#'); i >= 0 {
		return uri[i+1:]
	}
	return uri
}

func shortMode(m ua.MessageSecurityMode) string {
	switch m {
	case ua.MessageSecurityModeNone:
		return "None"
	case ua.MessageSecurityModeSign:
		return "Sign"
	case ua.MessageSecurityModeSignAndEncrypt:
		return "SignAndEncrypt"
	}
	return m.String()
}
