package app

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	"github.com/edgeport/edgeport/internal/otlp"
)

// OTLPConfig is the serve flags' push of metrics and logs to an
// OpenTelemetry collector (--otlp-*); Endpoint "" turns it off. A Broker
// resource's spec.diagnostics.otlp replaces it while present.
type OTLPConfig struct {
	Endpoint string
	Protocol string // grpc, http, or "" for what the endpoint's form implies
	Interval time.Duration
	Headers  map[string]string
	LogLevel string // debug, info, warn, error or off
}

// newPusher builds the pusher and returns the logger whose records it
// tees to the collector; the pusher's own messages go to log only.
func newPusher(cfg Config, g prometheus.Gatherer, log *slog.Logger) (*otlp.Pusher, *slog.Logger, error) {
	host, _ := os.Hostname()
	res := map[string]string{"service.name": "edgeport", "service.version": cfg.Broker.Version, "host.name": host}
	p := otlp.NewPusher(g, res, log.With("component", "otlp"))
	pc, err := flagsPushConfig(cfg.OTLP)
	if err != nil {
		return nil, nil, err
	}
	if err := p.Configure(pc); err != nil {
		return nil, nil, fmt.Errorf("--otlp-endpoint: %w", err)
	}
	return p, slog.New(p.Handler(log.Handler())), nil
}

func flagsPushConfig(c OTLPConfig) (*otlp.PushConfig, error) {
	if c.Endpoint == "" {
		return nil, nil
	}
	proto, endpoint, _, err := otlp.Resolve(c.Endpoint, c.Protocol, false)
	if err != nil {
		return nil, fmt.Errorf("--otlp-endpoint: %w", err)
	}
	pc := &otlp.PushConfig{Options: otlp.Options{Protocol: proto, Endpoint: endpoint, Headers: c.Headers}, Interval: c.Interval}
	if err := pushLogLevel(pc, c.LogLevel); err != nil {
		return nil, fmt.Errorf("--otlp-log-level: %w", err)
	}
	return pc, nil
}

func pushLogLevel(pc *otlp.PushConfig, level string) error {
	if level == "" || strings.EqualFold(level, "off") {
		return nil
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("%q is not debug, info, warn, error or off", level)
	}
	pc.Logs, pc.LogLevel = true, lv
	return nil
}

// resourcePushConfig resolves a Broker resource's diagnostics.otlp block,
// reading its secrets and CA bundle.
func resourcePushConfig(o *config.BrokerOTLP, env stage.Env) (*otlp.PushConfig, error) {
	proto, endpoint, serverName, err := otlp.Resolve(o.Endpoint, o.Protocol, o.TLS.Enabled())
	if err != nil {
		return nil, err
	}
	var cert *config.SecretRef
	if o.Authentication.Method == config.AuthX509Certificate {
		cert = o.Authentication.X509CertificateSettings
	}
	tlsConf, err := env.TLS(o.TLS, cert, serverName)
	if err != nil {
		return nil, err
	}
	headers := map[string]string{}
	for k, v := range o.Headers {
		headers[k] = v
	}
	if o.Authentication.Method == config.AuthAccessToken {
		tok, err := env.Secret(o.Authentication.AccessTokenSettings.SecretRef, "token")
		if err != nil {
			return nil, err
		}
		headers["Authorization"] = "Bearer " + tok
	}
	pc := &otlp.PushConfig{
		Options:  otlp.Options{Protocol: proto, Endpoint: endpoint, Headers: headers, TLS: tlsConf},
		Interval: time.Duration(*o.IntervalSeconds) * time.Second,
	}
	if err := pushLogLevel(pc, o.Logs.Level); err != nil {
		return nil, err
	}
	return pc, nil
}

// applyOTLP puts a Broker resource's diagnostics.otlp in force; without
// the block the serve flags' push applies.
func (a *App) applyOTLP(o *config.BrokerOTLP) error {
	var pc *otlp.PushConfig
	var err error
	if o == nil {
		pc, err = flagsPushConfig(a.cfg.OTLP)
	} else {
		pc, err = resourcePushConfig(o, stage.Env{DataDir: a.cfg.DataDir})
	}
	if err != nil {
		return err
	}
	return a.push.Configure(pc)
}
