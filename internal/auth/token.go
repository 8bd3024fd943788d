package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// SATMethod is the MQTT 5 enhanced authentication method of Kubernetes
// service account tokens, and the user name MQTT 3.1.1 clients give with a
// token as password.
const SATMethod = "K8S-SAT"

// Signature algorithms accepted: asymmetric only, so a token can never be
// "signed" with a public key taken for an HMAC secret.
var tokenAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// tokenLeeway tolerates clock skew on nbf and iat; expiry is exact.
const tokenLeeway = 30 * time.Second

// TokenOptions configure the ServiceAccountToken method.
type TokenOptions struct {
	Audiences []string
	// Issuer, when set, must be the iss claim; without JWKSFile and
	// JWKSURL, its OIDC discovery document names the key set.
	Issuer   string
	JWKSURL  string
	JWKSFile string
	// UsernameClaim becomes the user name; default "sub".
	UsernameClaim string
	// AttributeClaims maps attribute names to claim paths ("a/b" is
	// claim b inside object claim a).
	AttributeClaims map[string]string
	// HTTPClient fetches key sets and discovery documents; default one
	// with a 10 s timeout.
	HTTPClient *http.Client
}

// Tokens is the ServiceAccountToken method: a JWT (a Kubernetes service
// account token, or any issuer's) in the Authentication Data of MQTT 5
// enhanced authentication K8S-SAT, or as the password of user K8S-SAT. The
// signature is checked against the issuer's key set, then audience, issuer
// and expiry; the token's expiry becomes the credential's, so the client
// is disconnected when it passes unless it re-authenticates.
type Tokens struct {
	o    TokenOptions
	keys *keySource
}

var _ Method = (*Tokens)(nil)

// NewTokens builds the method.
func NewTokens(o TokenOptions) (*Tokens, error) {
	if len(o.Audiences) == 0 {
		return nil, errors.New("at least one audience is required")
	}
	if o.UsernameClaim == "" {
		o.UsernameClaim = "sub"
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	return &Tokens{o: o, keys: &keySource{file: o.JWKSFile, url: o.JWKSURL, issuer: o.Issuer, client: o.HTTPClient}}, nil
}

// Name implements Method.
func (*Tokens) Name() string { return MethodServiceAccountToken }

// Applies implements Method.
func (*Tokens) Applies(ci *broker.ConnectInfo) bool {
	return ci.AuthMethod == SATMethod || ci.AuthMethod == "" && ci.HasUsername && ci.Username == SATMethod
}

// Status reports why no key set is available, if none is.
func (t *Tokens) Status() error {
	if t.o.JWKSFile == "" && t.o.JWKSURL == "" && t.o.Issuer == "" {
		return errors.New("no jwksFile, jwksUri or issuer: every token is refused")
	}
	return nil
}

// Verify implements Method.
func (t *Tokens) Verify(ctx context.Context, ci *broker.ConnectInfo) (*broker.Principal, error) {
	raw := ci.AuthData
	if ci.AuthMethod == "" {
		raw = ci.Password
	}
	if len(raw) == 0 {
		return nil, deny(MethodServiceAccountToken, packet.NotAuthorized, "no token")
	}
	tok, err := jwt.ParseSigned(string(raw), tokenAlgorithms)
	if err != nil {
		return nil, deny(MethodServiceAccountToken, packet.NotAuthorized, "malformed token")
	}
	kid := ""
	if len(tok.Headers) > 0 {
		kid = tok.Headers[0].KeyID
	}
	keys, err := t.keys.get(ctx, kid)
	if err != nil {
		return nil, unavailable(fmt.Errorf("token keys: %w", err))
	}
	var claims jwt.Claims
	var all map[string]any
	verified := false
	for i := range keys {
		if err := tok.Claims(keys[i].Key, &claims, &all); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, deny(MethodServiceAccountToken, packet.NotAuthorized, "token signature not verified by any trusted key")
	}
	now := time.Now()
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: t.o.Issuer, AnyAudience: t.o.Audiences, Time: now}, tokenLeeway); err != nil {
		return nil, deny(MethodServiceAccountToken, packet.NotAuthorized, "token "+err.Error())
	}
	if claims.Expiry == nil || !now.Before(claims.Expiry.Time()) {
		return nil, deny(MethodServiceAccountToken, packet.NotAuthorized, "token expired or without expiry")
	}
	p := &broker.Principal{Expiry: claims.Expiry.Time()}
	p.Username, _ = claimString(all, t.o.UsernameClaim)
	for name, path := range t.o.AttributeClaims {
		if v, ok := claimString(all, path); ok {
			if p.Attributes == nil {
				p.Attributes = make(map[string]string, len(t.o.AttributeClaims))
			}
			p.Attributes[name] = v
		}
	}
	return p, nil
}

// claimString finds a claim by path and renders it as a string (numbers
// and booleans as JSON writes them); objects and arrays are not values.
func claimString(claims map[string]any, path string) (string, bool) {
	var cur any = claims
	for _, k := range strings.Split(path, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = m[k]; !ok {
			return "", false
		}
	}
	switch v := cur.(type) {
	case string:
		return v, v != ""
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(v), true
	}
	return "", false
}

// keySource provides an issuer's signing keys: from a file (reloaded when
// it changes), a URL, or the jwks_uri of the issuer's OIDC discovery
// document; fetched keys are kept for keyTTL and fetched again sooner when
// a token names a key they lack (at most every keyRefetch).
type keySource struct {
	file, url, issuer string
	client            *http.Client

	mu      sync.Mutex
	set     *jose.JSONWebKeySet
	stamp   fileStamp
	fetched time.Time
	jwksURL string // discovered
}

const (
	keyTTL     = 10 * time.Minute
	keyRefetch = 30 * time.Second
	maxKeyDoc  = 1 << 20
)

func (k *keySource) get(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	switch {
	case k.file != "":
		st, err := statFile(k.file)
		if err != nil {
			return nil, err
		}
		if k.set == nil || st != k.stamp {
			data, err := readLimited(k.file)
			if err != nil {
				return nil, err
			}
			var set jose.JSONWebKeySet
			if err := json.Unmarshal(data, &set); err != nil {
				return nil, fmt.Errorf("%s: %w", k.file, err)
			}
			k.set, k.stamp = &set, st
		}
	case k.url != "" || k.issuer != "":
		stale := k.set == nil || now.Sub(k.fetched) > keyTTL
		missing := k.set != nil && kid != "" && len(k.set.Key(kid)) == 0 && now.Sub(k.fetched) > keyRefetch
		if stale || missing {
			set, err := k.fetchLocked(ctx)
			switch {
			case err == nil:
				k.set, k.fetched = set, now
			case k.set == nil:
				return nil, err
			}
			// A failed refresh keeps the keys known so far.
		}
	default:
		return nil, errors.New("no key source configured")
	}
	if kid != "" {
		return k.set.Key(kid), nil
	}
	return k.set.Keys, nil
}

func (k *keySource) fetchLocked(ctx context.Context) (*jose.JSONWebKeySet, error) {
	u := k.url
	if u == "" {
		if k.jwksURL == "" {
			var doc struct {
				Issuer  string `json:"issuer"`
				JWKSURI string `json:"jwks_uri"`
			}
			if err := k.getJSON(ctx, strings.TrimSuffix(k.issuer, "/")+"/.well-known/openid-configuration", &doc); err != nil {
				return nil, fmt.Errorf("OIDC discovery: %w", err)
			}
			if doc.Issuer != k.issuer || doc.JWKSURI == "" {
				return nil, fmt.Errorf("OIDC discovery of %s: issuer %q, jwks_uri %q", k.issuer, doc.Issuer, doc.JWKSURI)
			}
			k.jwksURL = doc.JWKSURI
		}
		u = k.jwksURL
	}
	var set jose.JSONWebKeySet
	if err := k.getJSON(ctx, u, &set); err != nil {
		return nil, err
	}
	return &set, nil
}

func (k *keySource) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxKeyDoc))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}
