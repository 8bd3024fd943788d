// Package app wires Edgeport's components (broker, listeners, HTTP
// endpoint) from a configuration and runs and stops them as one group.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/broker/listener"
	"github.com/edgeport/edgeport/internal/connector"
	"github.com/edgeport/edgeport/internal/connector/opcua"
	mqttclient "github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/statestore"
	"github.com/edgeport/edgeport/internal/store"
	"github.com/edgeport/edgeport/internal/telemetry"
)

// Off disables a listener when given as its address.
const Off = "off"

// Config is what `edgeport serve` runs.
type Config struct {
	MQTTAddr string // TCP listener; "off" disables it
	WSAddr   string // WebSocket listener; "off" disables it
	WSPath   string
	// WSAllowedOrigins are the web origins whose pages may use the
	// WebSocket listener besides same-host ones (listener.Config).
	WSAllowedOrigins []string
	HTTPAddr         string // health, readiness and metrics; "off" disables it
	DataDir          string
	Broker           broker.Options
	// Store configures the durable store under DataDir/store; InMemory
	// runs without one (nothing survives a restart).
	Store    store.Options
	InMemory bool
	// AllowAnonymous admits unauthenticated clients on the built-in
	// listeners even when they are bound beyond loopback; without it such a
	// listener refuses every client (secure by default).
	AllowAnonymous bool
	// SelfTestInterval is the self-test probe's period; 0 disables it.
	SelfTestInterval time.Duration
	// StateStore configures the state store (quotas, authorization).
	StateStore statestore.Options
	// ConfigDir is a directory of resource files (*.yaml), applied at start
	// and watched; "" for none.
	ConfigDir string
	// APIRequireToken makes the REST API require its bearer token even
	// when the HTTP address is loopback (it always does otherwise).
	APIRequireToken bool
}

// App is a running Edgeport instance.
type App struct {
	cfg        Config
	log        *slog.Logger
	reg        *prometheus.Registry
	broker     *broker.Broker
	store      *store.Store
	guard      *listener.Guard // connection limits of every listener, the Broker resource's
	listeners  []*listener.Listener
	names      []string // listener names, parallel to listeners
	http       *telemetry.HTTPServer
	status     telemetry.StatusSource // /statusz, mounted by mountAPI
	probe      *telemetry.Probe       // nil when disabled
	state      *statestore.Server     // answers on statestore.InvokeTopic
	res        *resources             // declarative resources and their controller
	conn       *connector.Manager     // device connectors, driven by Device and Asset resources
	connClient *mqttclient.Client     // the connectors' MQTT client (publishes, state store)
	opcua      *opcua.Connector       // the Microsoft.OpcUa connector (its trust list is served by the API)
	opcuaCmd   *opcua.Commands        // OPC UA writes and method calls over MQTT request/response
	tmpPKI     string                 // OPC UA PKI folder without a data dir, removed at Stop
}

// New validates cfg and builds the components without starting them.
func New(cfg Config, log *slog.Logger) (*App, error) {
	if cfg.WSPath == "" {
		cfg.WSPath = "/mqtt"
	}
	if cfg.DataDir != "" {
		// Before any component creates something under it (with its own
		// modes for its subdirectories): the data directory itself is
		// private.
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("creating data dir: %w", err)
		}
	}
	b, err := broker.New(cfg.Broker, log.With("component", "broker"))
	if err != nil {
		return nil, fmt.Errorf("broker options: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), b.Collector())
	a := &App{cfg: cfg, log: log, reg: reg, broker: b}
	if a.guard, err = listener.NewGuard(baseLimits(cfg.Broker)); err != nil {
		return nil, err
	}
	if a.res, err = newResources(a); err != nil {
		return nil, err
	}
	for _, l := range []listener.Config{
		{Name: "mqtt", Addr: cfg.MQTTAddr, Protocol: "tcp", Guard: a.guard},
		{Name: "ws", Addr: cfg.WSAddr, Protocol: "websocket", Path: cfg.WSPath, Guard: a.guard, AllowedOrigins: cfg.WSAllowedOrigins},
	} {
		if isOff(l.Addr) {
			continue
		}
		ln, err := listener.New(l, b, log.With("component", "listener"))
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", l.Name, err)
		}
		a.listeners = append(a.listeners, ln)
		a.names = append(a.names, l.Name)
	}
	if cfg.SelfTestInterval > 0 {
		serve := func(c net.Conn) { b.ServeConn(c, broker.InternalListener) }
		if a.probe, err = telemetry.NewProbe(serve, reg, log.With("component", "selftest"), telemetry.ProbeOptions{Interval: cfg.SelfTestInterval}); err != nil {
			return nil, err
		}
	}
	ssOpts := cfg.StateStore
	if ssOpts.Authorizer == nil {
		// stateStoreResources of the requester's listener policy.
		ssOpts.Authorizer = stateStoreAuthorizer{b}
	}
	ssOpts.Registerer, ssOpts.Logger = reg, log.With("component", "statestore")
	if a.state, err = statestore.New(ssOpts); err != nil {
		return nil, fmt.Errorf("state store: %w", err)
	}
	a.broker.OnDisconnect(a.state.ClientDisconnected)
	secrets := ""
	if cfg.DataDir != "" {
		secrets = filepath.Join(cfg.DataDir, "secrets")
	}
	conns, err := a.connectors(log)
	if err != nil {
		return nil, err
	}
	// The connectors publish through their own internal client, as any
	// client would (it connects when the app starts).
	if a.connClient, err = mqttclient.New(mqttclient.Options{
		Dialer:     mqttclient.NewInProcess(func(c net.Conn) { b.ServeConn(c, broker.InternalListener) }),
		ClientID:   "$edgeport/connector",
		CleanStart: true,
		Logger:     log.With("component", "connector-client"),
	}); err != nil {
		return nil, err
	}
	if a.conn, err = connector.New(connector.Options{
		Store:      a.res.store,
		Publisher:  connector.ClientPublisher{Client: a.connClient},
		StateStore: &connector.StateStoreClient{Client: a.connClient},
		Connectors: conns,
		SecretsDir: secrets,
		Registerer: reg,
		Logger:     log.With("component", "connector"),
	}); err != nil {
		return nil, err
	}
	if !isOff(cfg.HTTPAddr) {
		a.http = telemetry.NewHTTPServer(cfg.HTTPAddr, reg, log.With("component", "http"))
		listeners := func() []telemetry.ListenerInfo {
			return append(telemetry.DescribeListeners(a.listeners), a.res.listenerInfos()...)
		}
		a.http.AddReadyCheck("broker", telemetry.BrokerReadyCheck(b, listeners))
		// Mounted with the API, under its token rules: it names the data
		// path, every listener and the policies.
		a.status = telemetry.StatusSource{Broker: b, Probe: a.probe, DataDir: cfg.DataDir, Listeners: listeners}
	}
	return a, nil
}

func isOff(addr string) bool { return addr == "" || strings.EqualFold(addr, Off) }

// Broker returns the broker, for in-process use.
func (a *App) Broker() *broker.Broker { return a.broker }

// Registry returns the metrics registry.
func (a *App) Registry() *prometheus.Registry { return a.reg }

// Start starts every component; on failure it stops what it started.
func (a *App) Start(ctx context.Context) error {
	if a.cfg.DataDir != "" {
		if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("creating data dir: %w", err)
		}
		a.checkDataDirMode()
	}
	if err := a.res.load(); err != nil {
		return err
	}
	if policy, ok := a.res.syncPolicy(); ok {
		// The Broker resource, when there is one, decides over the flag.
		a.cfg.Store.Sync = store.SyncPolicy(policy)
	}
	if !a.cfg.InMemory {
		opts := a.cfg.Store
		if opts.Logger == nil {
			opts.Logger = a.log.With("component", "store")
		}
		st, err := store.Open(filepath.Join(a.cfg.DataDir, "store"), opts)
		if err != nil {
			return fmt.Errorf("opening the store: %w", err)
		}
		if err := a.broker.AttachStore(st); err != nil {
			_ = st.Close()
			return fmt.Errorf("restoring broker state: %w", err)
		}
		a.store = st
	}
	a.res.applyBroker()
	a.broker.Start(ctx)
	if err := a.state.Start(ctx, a.store, func(c net.Conn) { a.broker.ServeConn(c, broker.InternalListener) }); err != nil {
		_ = a.broker.Shutdown(ctx)
		return err
	}
	for i, l := range a.listeners {
		if err := l.Start(ctx); err != nil {
			for _, started := range a.listeners[:i] {
				_ = started.Stop(ctx)
			}
			_ = a.state.Stop(ctx)
			_ = a.broker.Shutdown(ctx)
			return err
		}
		a.log.Info("listening", "listener", a.names[i], "addr", l.Addr().String())
		if host, _, _ := net.SplitHostPort(l.Addr().String()); !loopback(host) {
			// The serve flags' listeners have no authentication: beyond
			// loopback they admit nobody unless anonymous access is asked for.
			if a.cfg.AllowAnonymous {
				a.log.Warn("listener admits anonymous clients from the network (--allow-anonymous)",
					"listener", a.names[i], "addr", l.Addr().String())
			} else {
				a.broker.SetListenerSecurity(a.names[i], nil, nil, false)
				a.log.Error("listener is not on loopback and has no authentication: it refuses every client; pass --allow-anonymous to open it, or serve authenticated clients on a BrokerListener resource with an authenticationRef",
					"listener", a.names[i], "addr", l.Addr().String())
			}
		}
	}
	a.res.start(ctx)
	// Every listener's security is in force now: restored wills may be
	// judged by it.
	a.broker.ReleaseWills()
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	err := a.connClient.Connect(cctx)
	ccancel()
	if err != nil {
		_ = a.Stop(ctx)
		return fmt.Errorf("connector client: %w", err)
	}
	if err := a.conn.Start(ctx); err != nil {
		_ = a.Stop(ctx)
		return err
	}
	a.opcuaCmd = opcua.NewCommands(a.opcua, func(c net.Conn) { a.broker.ServeConn(c, broker.InternalListener) }, a.log.With("component", "opcua-commands"))
	if err := a.opcuaCmd.Start(ctx); err != nil {
		_ = a.Stop(ctx)
		return err
	}
	if a.probe != nil {
		a.probe.Start(ctx)
	}
	if a.http != nil {
		if err := a.mountAPI(); err != nil {
			_ = a.Stop(ctx)
			return err
		}
		if err := a.http.Start(ctx); err != nil {
			_ = a.Stop(ctx)
			return err
		}
		a.log.Info("listening", "listener", "http", "addr", a.http.Addr().String())
	}
	return nil
}

// checkDataDirMode warns when other users may enter the data directory:
// it holds retained payloads, queued messages, state store values, the CA
// key and the API token. The store keeps its own files private whatever
// the data directory's mode, but the operator should know.
func (a *App) checkDataDirMode() {
	fi, err := os.Stat(a.cfg.DataDir)
	if err != nil {
		return // opening the store reports it
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		a.log.Warn("data directory is accessible to other users; restrict it with chmod 700",
			"dir", a.cfg.DataDir, "mode", fmt.Sprintf("%#o", mode))
	}
}

// Addrs returns the bound addresses by name ("mqtt", "ws", "http", and
// "<BrokerListener>:<port>" for each port of a BrokerListener resource).
func (a *App) Addrs() map[string]net.Addr {
	m := make(map[string]net.Addr)
	for i, l := range a.listeners {
		m[a.names[i]] = l.Addr()
	}
	if a.http != nil {
		m["http"] = a.http.Addr()
	}
	a.res.addrs(m)
	return m
}

// Stop stops accepting, disconnects clients gracefully and stops the rest.
func (a *App) Stop(ctx context.Context) error {
	var errs []error
	if a.probe != nil {
		a.probe.Stop()
	}
	if a.opcuaCmd != nil {
		errs = append(errs, a.opcuaCmd.Stop(ctx))
	}
	errs = append(errs, a.conn.Stop(ctx))
	errs = append(errs, a.connClient.Stop(ctx))
	errs = append(errs, a.state.Stop(ctx))
	errs = append(errs, a.res.stop(ctx))
	for _, l := range a.listeners {
		errs = append(errs, l.Stop(ctx))
	}
	errs = append(errs, a.broker.Shutdown(ctx))
	if a.store != nil {
		errs = append(errs, a.store.Close())
		a.store = nil // a second Stop is a no-op, like the components'
	}
	if a.http != nil {
		errs = append(errs, a.http.Stop(ctx))
	}
	if a.tmpPKI != "" {
		os.RemoveAll(a.tmpPKI)
	}
	return errors.Join(errs...)
}
