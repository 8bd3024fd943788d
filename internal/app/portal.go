package app

import (
	"context"
	"fmt"
	"net"

	"github.com/edgeport/edgeport/internal/api"
	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/pki"
	"github.com/edgeport/edgeport/internal/portal"
)

// newPortal builds the operations portal over the API srv and mounts it
// at / of the HTTP address (every path the other handlers leave). It is
// started by the "portal" component, after the HTTP endpoint, so that it
// stops first and its live streams end before the server drains.
func (a *App) newPortal(srv *api.Server, token string, require bool) error {
	opts := portal.Options{
		Token:        token,
		RequireToken: require,
		API:          srv,
		Broker:       a.broker,
		Resources:    a.res.store,
		Status:       a.status.Status,
		Gatherer:     a.reg,
		Logs:         a.logs,
		Serve:        func(c net.Conn) { a.broker.ServeConn(c, broker.InternalListener) },
		Log:          a.log.With("component", "portal"),

		SampleInterval: a.cfg.PortalSampleInterval,
	}
	if a.store != nil {
		st, quota := a.store, a.cfg.Store.QuotaBytes
		opts.Storage = func() (int64, int64) { return st.Usage(), quota }
	}
	if a.cfg.CheckReport != nil {
		opts.Check = func(ctx context.Context) ([]byte, error) {
			return a.cfg.CheckReport(ctx, a.httpURL(), token)
		}
	}
	p, err := portal.New(opts)
	if err != nil {
		return err
	}
	a.portal = p
	a.http.Handle("/", p)
	return nil
}

// httpURL is the URL of the HTTP endpoint, once bound.
func (a *App) httpURL() string {
	scheme := "http"
	if a.cfg.HTTPTLSAuto || a.cfg.HTTPTLSCert != "" {
		scheme = "https"
	}
	return scheme + "://" + dialable(a.http.Addr())
}

// httpTLS gives the HTTP endpoint its TLS configuration from the same
// certificate sources as listener ports: files watched for changes, or a
// certificate issued and renewed by the data directory's CA. closeCert
// ends the renewal.
func (a *App) httpTLS() (closeCert func(), err error) {
	closeCert = func() {}
	log := a.log.With("component", "http")
	o := pki.ServerOptions{}
	if a.cfg.HTTPTLSAuto {
		host, _, _ := net.SplitHostPort(a.cfg.HTTPAddr)
		ac, err := a.res.autoCert(host, nil, log)
		if err != nil {
			return closeCert, fmt.Errorf("http tls: %w", err)
		}
		o.GetCertificate, closeCert = ac.GetCertificate, ac.Close
	} else {
		fc, err := pki.NewFileCert(a.cfg.HTTPTLSCert, a.cfg.HTTPTLSKey, pki.WatchOptions{Log: log})
		if err != nil {
			return closeCert, fmt.Errorf("http tls: %w", err)
		}
		o.GetCertificate = fc.GetCertificate
	}
	tc, err := pki.ServerConfig(o)
	if err != nil {
		closeCert()
		return func() {}, fmt.Errorf("http tls: %w", err)
	}
	a.http.SetTLS(tc)
	return closeCert, nil
}

// dialable turns a bound address into one to connect to: a wildcard
// address is reached on loopback.
func dialable(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
