package auth

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sort"

	"github.com/edgeport/edgeport/internal/config"
)

// Env is what building methods from resources needs.
type Env struct {
	// DataDir holds ConfigMaps (DataDir/configmaps/<name>/, every PEM file
	// in it) and secrets (DataDir/secrets/<name>/tls.crt and tls.key).
	DataDir  string
	Throttle *Throttle
	Log      *slog.Logger
	// HTTPClient fetches token key sets; nil: a default one.
	HTTPClient *http.Client
}

// ConfigMapDir is where a ConfigMap's files live on a single machine.
func ConfigMapDir(dataDir, name string) string { return filepath.Join(dataDir, "configmaps", name) }

// SecretDir is where a secret's files live on a single machine.
func SecretDir(dataDir, name string) string { return filepath.Join(dataDir, "secrets", name) }

// statuser is a method that can say why it cannot authenticate anyone.
type statuser interface{ Status() error }

// BuildChain builds a BrokerAuthentication's chain. A method that cannot
// authenticate anyone for now (its password file or CAs are missing) is
// built anyway and refuses until that is fixed: its problem is returned
// among warnings, for the resource's status. Errors are settings that
// cannot work at all.
func BuildChain(spec *config.BrokerAuthenticationSpec, env Env) (*Chain, []string, error) {
	if env.Log == nil {
		env.Log = slog.New(slog.DiscardHandler)
	}
	var methods []Method
	var warnings []string
	for i, m := range spec.AuthenticationMethods {
		built, err := buildMethod(&m, env)
		if err != nil {
			for _, b := range methods {
				if c, ok := b.(Closer); ok {
					c.Close()
				}
			}
			return nil, nil, fmt.Errorf("authenticationMethods[%d] (%s): %w", i, m.Method, err)
		}
		if s, ok := built.(statuser); ok {
			if err := s.Status(); err != nil {
				warnings = append(warnings, fmt.Sprintf("%s: %v", m.Method, err))
			}
		}
		methods = append(methods, built)
	}
	return NewChain(methods, env.Throttle, env.Log), warnings, nil
}

func buildMethod(m *config.AuthenticationMethod, env Env) (Method, error) {
	log := env.Log.With("method", m.Method)
	switch m.Method {
	case config.AuthnUsernamePassword:
		s := m.UsernamePasswordSettings
		users := make([]PasswordUser, 0, len(s.Users))
		for _, u := range s.Users {
			users = append(users, PasswordUser{Username: u.Username, PasswordHash: u.PasswordHash, Attributes: u.Attributes})
		}
		return NewPasswords(s.PasswordFile, users, log)
	case config.AuthnX509:
		s := m.X509Settings
		path := s.TrustedClientCaCertFile
		if path == "" {
			path = ConfigMapDir(env.DataDir, s.TrustedClientCaCert)
		}
		names := make([]string, 0, len(s.AuthorizationAttributes))
		for k := range s.AuthorizationAttributes {
			names = append(names, k)
		}
		sort.Strings(names)
		var attrs []SubjectAttributes
		for _, k := range names {
			a := s.AuthorizationAttributes[k]
			attrs = append(attrs, SubjectAttributes{Subject: a.Subject, Attributes: a.Attributes})
		}
		return NewCertificates(path, attrs)
	case config.AuthnServiceAccountToken:
		s := m.ServiceAccountTokenSettings
		return NewTokens(TokenOptions{
			Audiences: s.Audiences, Issuer: s.Issuer, JWKSURL: s.JwksURI, JWKSFile: s.JwksFile,
			UsernameClaim: s.UsernameClaim, AttributeClaims: s.AttributeClaims, HTTPClient: env.HTTPClient,
		})
	case config.AuthnCustom:
		s := m.CustomSettings
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if s.CACertConfigMap != "" {
			_, files, err := pathStamp(ConfigMapDir(env.DataDir, s.CACertConfigMap))
			if err != nil {
				return nil, fmt.Errorf("caCertConfigMap %s: %w", s.CACertConfigMap, err)
			}
			pool, err := loadPool(files)
			if err != nil {
				return nil, fmt.Errorf("caCertConfigMap %s: %w", s.CACertConfigMap, err)
			}
			tc.RootCAs = pool
		}
		if s.Auth != nil && s.Auth.X509 != nil {
			dir := SecretDir(env.DataDir, s.Auth.X509.SecretRef)
			cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
			if err != nil {
				return nil, fmt.Errorf("auth.x509.secretRef %s: %w", s.Auth.X509.SecretRef, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		return NewWebhook(WebhookOptions{Endpoint: s.Endpoint, Headers: s.Headers, TLS: tc, Log: log})
	}
	return nil, fmt.Errorf("unknown method %q", m.Method)
}
