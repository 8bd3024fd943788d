package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// issuer signs tokens with a key generated for the test and serves its
// key set and OIDC discovery document.
type issuer struct {
	key     crypto.Signer
	kid     string
	alg     jose.SignatureAlgorithm
	srv     *httptest.Server
	fetches atomic.Int32
}

func newIssuer(t *testing.T, ec bool) *issuer {
	t.Helper()
	is := &issuer{kid: "k1", alg: jose.RS256}
	var err error
	if ec {
		is.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		is.alg = jose.ES256
	} else {
		is.key, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	is.srv = httptest.NewTLSServer(mux)
	t.Cleanup(is.srv.Close)
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/keys"})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		is.fetches.Add(1)
		_ = json.NewEncoder(w).Encode(is.jwks())
	})
	return is
}

func (is *issuer) jwks() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: is.key.Public(), KeyID: is.kid, Algorithm: string(is.alg), Use: "sig"}}}
}

// token signs claims; exp is relative to now.
func (is *issuer) token(t *testing.T, sub string, aud []string, exp time.Duration, extra map[string]any) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: is.alg, Key: is.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), is.kid))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c := jwt.Claims{Subject: sub, Issuer: is.srv.URL, Audience: aud, IssuedAt: jwt.NewNumericDate(now),
		Expiry: jwt.NewNumericDate(now.Add(exp))}
	b := jwt.Signed(sig).Claims(c)
	if extra != nil {
		b = b.Claims(extra)
	}
	s, err := b.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func satInfo(tok string) *broker.ConnectInfo {
	return &broker.ConnectInfo{ClientID: "c", AuthMethod: SATMethod, AuthData: []byte(tok)}
}

func TestTokens(t *testing.T) {
	is := newIssuer(t, false)
	m, err := NewTokens(TokenOptions{
		Audiences: []string{"edgeport"}, Issuer: is.srv.URL, HTTPClient: is.srv.Client(),
		AttributeClaims: map[string]string{"namespace": "kubernetes.io/namespace", "group": "group"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sa := map[string]any{"kubernetes.io": map[string]any{"namespace": "plant", "serviceaccount": map[string]any{"name": "line1"}}, "group": "ops"}
	good := is.token(t, "system:serviceaccount:plant:line1", []string{"other", "edgeport"}, time.Hour, sa)
	p, err := m.Verify(ctx, satInfo(good))
	if err != nil {
		t.Fatal(err)
	}
	if p.Username != "system:serviceaccount:plant:line1" || p.Attributes["namespace"] != "plant" || p.Attributes["group"] != "ops" {
		t.Fatalf("principal %+v", p)
	}
	if d := time.Until(p.Expiry); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("expiry in %v, want the token's", d)
	}
	// MQTT 3.1.1 form: user K8S-SAT, the token as password.
	ci := &broker.ConnectInfo{ClientID: "c", Username: SATMethod, HasUsername: true, Password: []byte(good), HasPassword: true}
	if !m.Applies(ci) {
		t.Fatal("user K8S-SAT does not apply")
	}
	if _, err := m.Verify(ctx, ci); err != nil {
		t.Fatal(err)
	}

	other := newIssuer(t, true)
	for name, tok := range map[string]string{
		"wrong audience": is.token(t, "x", []string{"somebody"}, time.Hour, nil),
		"expired":        is.token(t, "x", []string{"edgeport"}, -time.Minute, nil),
		"foreign key":    other.token(t, "x", []string{"edgeport"}, time.Hour, nil), // other issuer, same kid
		"garbage":        "not.a.jwt",
		"empty":          "",
	} {
		_, err := m.Verify(ctx, satInfo(tok))
		wantCode(t, err, packet.NotAuthorized)
		t.Logf("%s: %v", name, err)
	}
	// An HMAC token made with the public key as secret (algorithm confusion).
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("public-key-bytes")}, nil)
	hsTok, _ := jwt.Signed(hs).Claims(jwt.Claims{Audience: []string{"edgeport"}, Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}).Serialize()
	_, err = m.Verify(ctx, satInfo(hsTok))
	wantCode(t, err, packet.NotAuthorized)

	// Keys are cached: one discovery, one fetch, whatever the number of checks.
	if n := is.fetches.Load(); n != 1 {
		t.Fatalf("%d key fetches, want 1", n)
	}
	// The issuer is down: with no keys known, the method cannot decide.
	m2, _ := NewTokens(TokenOptions{Audiences: []string{"edgeport"}, JWKSURL: "https://127.0.0.1:1/keys", HTTPClient: is.srv.Client()})
	if _, err := m2.Verify(ctx, satInfo(good)); !isUnavailable(err) {
		t.Fatalf("unreachable key set: %v", err)
	}
}

func isUnavailable(err error) bool {
	return err != nil && errors.Is(err, broker.ErrAuthUnavailable)
}

func TestTokensFromFile(t *testing.T) {
	is := newIssuer(t, true)
	file := filepath.Join(t.TempDir(), "jwks.json")
	data, _ := json.Marshal(is.jwks())
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := NewTokens(TokenOptions{Audiences: []string{"a"}, JWKSFile: file})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok := is.token(t, "dev", []string{"a"}, time.Hour, nil)
	if _, err := m.Verify(ctx, satInfo(tok)); err != nil {
		t.Fatal(err)
	}
	// Key rotation: a new key replaces the file; old tokens stop working.
	rotated := newIssuer(t, true)
	data, _ = json.Marshal(rotated.jwks())
	if err := os.WriteFile(file, append(data, ' '), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = m.Verify(ctx, satInfo(tok))
	wantCode(t, err, packet.NotAuthorized)
	if _, err := m.Verify(ctx, satInfo(rotated.token(t, "dev", []string{"a"}, time.Hour, nil))); err != nil {
		t.Fatal(err)
	}
}
