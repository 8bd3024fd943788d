package app

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"

	"github.com/edgeport/edgeport/internal/api"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector/opcua"
)

// mountAPI serves the REST API on the HTTP server. Its token lives in the
// data directory (generated on first start); the API requires it unless
// the HTTP address is loopback. /statusz follows the same rules.
func (a *App) mountAPI() error {
	var token string
	if a.cfg.DataDir != "" {
		t, err := api.EnsureToken(a.cfg.DataDir)
		if err != nil {
			return err
		}
		token = t
	} else {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("generating API token: %w", err)
		}
		token = hex.EncodeToString(b[:])
	}
	require := a.cfg.APIRequireToken || !IsLoopback(a.cfg.HTTPAddr)
	srv := a.res.api(token, require)
	a.http.Handle(api.Prefix+"/", srv)
	// The discovery document at /api/v1 itself, not a redirect to /api/v1/
	// (clients that do not follow redirects, and kubectl habits).
	a.http.Handle(api.Prefix, srv)
	a.http.Handle("GET /statusz", srv.Protect(a.status))
	if a.opcua != nil {
		a.http.Handle(opcua.APIPath, srv.Protect(&opcua.API{Trust: a.opcua.Trust(), App: a.opcua.App(), Sessions: a.opcua, Store: a.res.store}))
	}
	a.log.Info("REST API mounted", "path", api.Prefix, "token_required", require)
	return a.newPortal(srv, token, require)
}

// IsLoopback reports whether a listen address (host:port) binds only
// loopback: 127.0.0.0/8, ::1 or localhost. An empty host binds every
// interface.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Resources returns the registry of declarative resources: what the REST
// API and the config directory change, for in-process use.
func (a *App) Resources() *config.Store { return a.res.store }
