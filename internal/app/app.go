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
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/broker/listener"
	"github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/cluster/jsstate"
	"github.com/edgeport/edgeport/internal/connector"
	"github.com/edgeport/edgeport/internal/connector/modbus"
	"github.com/edgeport/edgeport/internal/connector/opcua"
	"github.com/edgeport/edgeport/internal/dataflow"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	"github.com/edgeport/edgeport/internal/lifecycle"
	mqttclient "github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/otlp"
	"github.com/edgeport/edgeport/internal/portal"
	"github.com/edgeport/edgeport/internal/schemaregistry"
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
	// CheckReport runs edgeport check against server (the HTTP endpoint's
	// URL) with token and returns the JSON report, for the portal's
	// support bundle; nil leaves the report out. The CLI provides it.
	CheckReport func(ctx context.Context, server, token string) ([]byte, error)
	// HTTPTLSCert and HTTPTLSKey serve the HTTP address (API, portal,
	// metrics) over TLS with these PEM files, reloaded when they change;
	// HTTPTLSAuto does with a certificate issued by the data directory's
	// CA (as a listener port's tls mode Automatic). Neither: plain HTTP.
	HTTPTLSCert, HTTPTLSKey string
	HTTPTLSAuto             bool
	// PortalSampleInterval is the resolution of the portal's charts (0:
	// portal.DefaultSampleInterval).
	PortalSampleInterval time.Duration
	// OTLP pushes metrics and logs to an OpenTelemetry collector.
	OTLP OTLPConfig
	// ClusterEnabled runs this instance as a node of a cluster on NATS
	// (serve --cluster or --nats-url), configured by Cluster; its
	// StoreDir is DataDir/cluster. Off: no NATS at all.
	ClusterEnabled bool
	Cluster        cluster.Config
}

// App is a running Edgeport instance: components built by New from the
// configuration and run as one lifecycle.Group (see ARCHITECTURE.md,
// Lifecycle).
type App struct {
	cfg          Config
	log          *slog.Logger
	reg          *prometheus.Registry
	group        *lifecycle.Group // every component, in start order
	broker       *broker.Broker
	store        *store.Store    // nil with InMemory
	guard        *listener.Guard // connection limits of every listener, the Broker resource's
	listeners    []*listener.Listener
	names        []string // listener names, parallel to listeners
	http         *telemetry.HTTPServer
	status       telemetry.StatusSource  // /statusz, mounted by mountAPI
	probe        *telemetry.Probe        // nil when disabled
	state        *statestore.Server      // answers on statestore.InvokeTopic
	res          *resources              // declarative resources and their controller
	conn         *connector.Manager      // device connectors, driven by Device and Asset resources
	connClient   *mqttclient.Client      // the connectors' MQTT client (publishes, state store)
	opcua        *opcua.Connector        // the Microsoft.OpcUa connector (its trust list is served by the API)
	opcuaCmd     *opcua.Commands         // OPC UA writes and method calls over MQTT request/response
	schemas      *schemaregistry.Service // the schema registry API over MQTT request/response
	modbus       *modbus.Connector
	modbusCmd    *modbus.Commands             // Modbus writes over MQTT request/response
	tmpPKI       string                       // OPC UA PKI folder without a data dir, removed at Stop
	flows        *dataflow.Engine             // dataflows, driven by Dataflow, DataflowEndpoint and DataflowProfile resources
	datasets     *dataflow.StateStoreDatasets // the flows' $context datasets, from the state store
	logs         *portal.LogRing              // recent log records, for the portal
	portal       *portal.Portal               // built by mountAPI; nil without an HTTP address
	push         *otlp.Pusher                 // metrics and logs to an OpenTelemetry collector, when configured
	node         *cluster.Node                // cluster membership and NATS; nil in single-node mode
	router       *cluster.Router              // live routing between the nodes; nil in single-node mode
	ssBucket     *jsstate.StateBackend        // the state store's keys in cluster mode; nil in single-node mode
	clusterState *jsstate.Store               // the broker's durable state on JetStream; nil in single-node mode
	ownership    *jsstate.Ownership           // session ownership across the nodes; nil in single-node mode
}

// New validates cfg and builds the components without starting them: the
// group of components, in dependency order, that Start starts.
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
	// Recent log records are kept for the portal's diagnostics page and
	// support bundle: every component's logger derives from this one.
	logs := portal.NewLogRing(2000, slog.LevelInfo)
	log = slog.New(logs.Tee(log.Handler()))
	reg := prometheus.NewRegistry()
	// The OTLP push comes first: every component's logger tees to it.
	push, log, err := newPusher(cfg, reg, log)
	if err != nil {
		return nil, err
	}
	b, err := broker.New(cfg.Broker, log.With("component", "broker"))
	if err != nil {
		return nil, fmt.Errorf("broker options: %w", err)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), b.Collector())
	a := &App{cfg: cfg, log: log, reg: reg, broker: b, push: push, group: &lifecycle.Group{Log: log}, logs: logs}
	g := a.group
	// Started first and stopped last, so that it carries the shutdown's
	// log lines and the final metrics.
	g.Add("otlp push", push)
	if cfg.DataDir != "" {
		g.Add("data dir", &dirLock{dir: cfg.DataDir})
	}
	if !cfg.InMemory {
		opts := cfg.Store
		if opts.Logger == nil {
			opts.Logger = log.With("component", "store")
		}
		if a.store, err = store.New(filepath.Join(cfg.DataDir, "store"), opts); err != nil {
			return nil, err
		}
		b.AttachStore(a.store)
		g.Add("store", a.store)
	}
	if a.guard, err = listener.NewGuard(baseLimits(cfg.Broker)); err != nil {
		return nil, err
	}
	if a.res, err = newResources(a); err != nil {
		return nil, err
	}
	// The resources are loaded before the broker serves anyone, so that
	// the Broker resource's limits and sync policy are in force.
	g.Add("resources", lifecycle.Hook{OnStart: a.res.load})
	var afterBroker []namedComponent
	if cfg.ClusterEnabled {
		if afterBroker, err = a.newCluster(log); err != nil {
			return nil, err
		}
	}
	g.Add("broker", b)
	for _, c := range afterBroker {
		g.Add(c.name, c.c)
	}

	ssOpts := cfg.StateStore
	if ssOpts.Authorizer == nil {
		// stateStoreResources of the requester's listener policy.
		ssOpts.Authorizer = stateStoreAuthorizer{b}
	}
	ssOpts.Registerer, ssOpts.Logger = reg, log.With("component", "statestore")
	if ssOpts.Disconnect == nil {
		ssOpts.Disconnect = func(id, reason string) { b.DisconnectClient(id, packet.ProtocolError, reason) }
	}
	if a.ssBucket != nil {
		// Cluster mode: the keys are the bucket every node shares, and
		// versions name the node that made them.
		ssOpts.Backend, ssOpts.NodeID = a.ssBucket, a.node.Name()
	}
	serve := func(c net.Conn) { b.ServeConn(c, broker.InternalListener) }
	if a.state, err = statestore.New(a.store, b, ssOpts); err != nil {
		return nil, fmt.Errorf("state store: %w", err)
	}
	b.OnSessionEnd(a.state.ClientDisconnected)
	g.Add("statestore", a.state)

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
		g.Add("listener "+l.Name, &builtinListener{Listener: ln, name: l.Name, flag: "--" + l.Name + "-addr", a: a})
	}
	g.Add("reconciler", a.res)
	// Every listener's security is in force now: restored wills may be
	// judged by it.
	g.Add("wills", lifecycle.Hook{OnStart: func(context.Context) error { b.ReleaseWills(); return nil }})

	secrets := ""
	if cfg.DataDir != "" {
		secrets = filepath.Join(cfg.DataDir, "secrets")
	}
	conns, err := a.connectors(log)
	if err != nil {
		return nil, err
	}
	if a.tmpPKI != "" {
		g.Add("opcua pki", lifecycle.Hook{OnStop: func(context.Context) error { return os.RemoveAll(a.tmpPKI) }})
	}
	// The connectors publish through their own internal client, as any
	// client would (it connects when the app starts).
	var refusedOnce sync.Once
	connLog := log.With("component", "connector-client")
	if a.connClient, err = mqttclient.New(mqttclient.Options{
		Dialer:     mqttclient.NewInProcess(serve),
		ClientID:   "$edgeport/connector",
		CleanStart: true,
		Logger:     connLog,
		OnConnectError: func(err error) {
			refusedOnce.Do(func() { connLog.Warn("the broker refused the connectors' client; retrying", "err", err) })
		},
	}); err != nil {
		return nil, err
	}
	g.Add("connector client", lifecycle.Hook{
		// Connected in the background (and reconnected): a broker that
		// refuses it (limits that no CONNECT fits) must not keep Edgeport
		// from starting; until it is connected the connectors' messages
		// wait in their bounded buffer and are retried.
		OnStart: a.connClient.Start,
		OnStop:  func(ctx context.Context) error { return a.connClient.Stop(ctx) },
	})
	if a.conn, err = connector.New(connector.Options{
		Store:      a.res.store,
		Schemas:    &schemaregistry.Client{MQTT: a.connClient},
		Publisher:  connector.ClientPublisher{Client: a.connClient},
		StateStore: &connector.StateStoreClient{Client: a.connClient},
		Connectors: conns,
		SecretsDir: secrets,
		Registerer: reg,
		Logger:     log.With("component", "connector"),
	}); err != nil {
		return nil, err
	}
	g.Add("connectors", a.conn)
	a.modbusCmd = modbus.NewCommands(a.modbus, a.connClient, log.With("component", "modbus-commands"))
	a.modbusCmd.AuthorizeResponse = mayReceive(b)
	g.Add("modbus commands", a.modbusCmd)
	a.opcuaCmd = opcua.NewCommands(a.opcua, a.connClient, log.With("component", "opcua-commands"))
	a.opcuaCmd.AuthorizeResponse = mayReceive(b)
	g.Add("opcua commands", a.opcuaCmd)
	// The schema registry API (put/get over MQTT) shares the connectors'
	// client: connectors are its first users. It starts after them (a
	// driver that registers before the API subscribed is answered "no
	// responder" and asks again, Dataset.RegisterSchema).
	a.schemas = schemaregistry.New(a.res.store, a.connClient, log.With("component", "schemaregistry"))
	g.Add("schema registry", a.schemas)

	// Dataflows read and write the broker as clients, each source with its
	// own persistent session; they stop first, draining while the broker
	// still runs.
	env := stage.Env{DataDir: cfg.DataDir}
	a.datasets = dataflow.NewStateStoreDatasets(serve, log.With("component", "dataflow"))
	g.Add("dataflow datasets", lifecycle.Hook{OnStop: a.datasets.Close})
	if a.flows, err = dataflow.New(dataflow.Options{
		Logger:     log.With("component", "dataflow"),
		Registerer: reg,
		Builder: &dataflow.StageBuilder{Env: env, Compile: dataflow.CompileMapping(a.datasets),
			MQTT: &dataflow.MQTTStages{Local: serve, Env: env, Log: log.With("component", "dataflow")}},
		Report:  a.res.reportFlow,
		Backlog: b.SessionBacklog,
	}); err != nil {
		return nil, err
	}
	g.Add("dataflows", a.flows)

	if cfg.SelfTestInterval > 0 {
		if a.probe, err = telemetry.NewProbe(serve, reg, log.With("component", "selftest"), telemetry.ProbeOptions{Interval: cfg.SelfTestInterval}); err != nil {
			return nil, err
		}
		g.Add("selftest", a.probe)
	}
	if !isOff(cfg.HTTPAddr) {
		a.http = telemetry.NewHTTPServer(cfg.HTTPAddr, reg, log.With("component", "http"))
		listeners := func() []telemetry.ListenerInfo {
			ls := append(telemetry.DescribeListeners(a.listeners), a.res.listenerInfos()...)
			for i := range ls {
				ls[i].Admits = string(b.ListenerAdmission(ls[i].Name))
			}
			return ls
		}
		ready := telemetry.ReadinessSource{Broker: b, Listeners: listeners, DataDir: cfg.DataDir}
		if a.store != nil {
			ready.StoreFull = a.store.Full
		}
		if a.node != nil {
			ready.Cluster = a.clusterReady
		}
		a.http.AddReadyCheck("broker", ready.ReadyCheck())
		// Mounted with the API, under its token rules: it names the data
		// path, every listener and the policies.
		a.status = telemetry.StatusSource{Broker: b, Probe: a.probe, DataDir: cfg.DataDir, Listeners: listeners, Readiness: ready.Readiness, Cluster: a.node}
		g.Add("api", lifecycle.Hook{OnStart: func(context.Context) error { return a.mountAPI() }})
		if cfg.HTTPTLSAuto || cfg.HTTPTLSCert != "" {
			closeCert := func() {}
			g.Add("http tls", lifecycle.Hook{
				OnStart: func(context.Context) (err error) { closeCert, err = a.httpTLS(); return err },
				OnStop:  func(context.Context) error { closeCert(); return nil },
			})
		}
		g.Add("http", &httpEndpoint{HTTPServer: a.http, addr: cfg.HTTPAddr, log: log})
		// After the endpoint, so that it stops before: its live streams
		// end and the server's graceful shutdown does not wait for them.
		g.Add("portal", lifecycle.Hook{
			OnStart: func(ctx context.Context) error {
				if err := a.portal.Start(ctx); err != nil {
					return err
				}
				log.Info("operations portal", "url", a.httpURL()+"/")
				return nil
			},
			OnStop: func(ctx context.Context) error { return a.portal.Stop(ctx) },
		})
	}
	if a.clusterState != nil {
		// Last to start, first to stop: see clusterStopping.
		g.Add("cluster stopping", lifecycle.Hook{OnStop: a.clusterStopping})
	}
	return a, nil
}

func isOff(addr string) bool { return addr == "" || strings.EqualFold(addr, Off) }

// Broker returns the broker, for in-process use.
func (a *App) Broker() *broker.Broker { return a.broker }

// Registry returns the metrics registry.
func (a *App) Registry() *prometheus.Registry { return a.reg }

// Start starts every component in dependency order; when one fails, those
// already started are stopped in reverse order and nothing is left open.
func (a *App) Start(ctx context.Context) error {
	if a.cfg.DataDir != "" {
		if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("creating data dir: %w", err)
		}
		a.checkDataDirMode()
	}
	return a.group.Start(ctx)
}

// Stop stops accepting, disconnects clients gracefully and stops the
// rest, in the reverse order of Start. A second Stop does nothing.
func (a *App) Stop(ctx context.Context) error { return a.group.Stop(ctx) }

// checkDataDirMode warns when other users may enter the data directory:
// it holds retained payloads, queued messages, state store values, the CA
// key and the API token. The store keeps its own files private whatever
// the data directory's mode, but the operator should know.
func (a *App) checkDataDirMode() {
	fi, err := os.Stat(a.cfg.DataDir)
	if err != nil {
		return // opening the store reports it
	}
	groups, _ := os.Getgroups()
	if dataDirExposed(fi, append(groups, os.Getegid())) {
		a.log.Warn("data directory is accessible to other users; restrict it with chmod 700",
			"dir", a.cfg.DataDir, "mode", fmt.Sprintf("%#o", fi.Mode().Perm()))
	}
}

// dataDirExposed reports whether users other than the process's own may
// enter a directory. Group access counts only when the directory's group is
// not one the process is in: Kubernetes gives a pod's volume its fsGroup
// with mode 2770, and that group is the pod's own, not other users.
func dataDirExposed(fi os.FileInfo, groups []int) bool {
	mode := fi.Mode().Perm()
	if mode&0o007 != 0 {
		return true
	}
	if mode&0o070 == 0 {
		return false
	}
	gid, ok := fileGroup(fi)
	if !ok {
		return true // no owner information: judge by the mode alone
	}
	return !slices.Contains(groups, gid)
}

// Addrs returns the bound addresses by name ("mqtt", "ws", "http", and
// "<BrokerListener>:<port>" for each port of a BrokerListener resource).
func (a *App) Addrs() map[string]net.Addr {
	m := make(map[string]net.Addr)
	for i, l := range a.listeners {
		if addr := l.Addr(); addr != nil {
			m[a.names[i]] = addr
		}
	}
	if a.http != nil && a.http.Addr() != nil {
		m["http"] = a.http.Addr()
	}
	a.res.addrs(m)
	return m
}

// builtinListener is a listener of the serve flags: once bound, it is
// logged, and beyond loopback it is closed to anonymous clients unless
// they are explicitly allowed.
type builtinListener struct {
	*listener.Listener
	name string
	flag string // the serve flag that sets its address, named when it cannot bind
	a    *App
}

var _ lifecycle.Component = (*builtinListener)(nil)

func (l *builtinListener) Start(ctx context.Context) error {
	if err := l.Listener.Start(ctx); err != nil {
		return bindError(l.flag, l.Listener.Config().Addr, err)
	}
	addr := l.Addr().String()
	l.a.log.Info("listening", "listener", l.name, "addr", addr)
	if host, _, _ := net.SplitHostPort(addr); !loopback(host) {
		// The serve flags' listeners have no authentication: beyond
		// loopback they admit nobody unless anonymous access is asked for.
		if l.a.cfg.AllowAnonymous {
			l.a.log.Warn("listener admits anonymous clients from the network (--allow-anonymous)",
				"listener", l.name, "addr", addr)
		} else {
			l.a.broker.SetListenerSecurity(l.name, nil, nil, false)
			l.a.log.Error("listener is not on loopback and has no authentication: it refuses every client; pass --allow-anonymous to open it, or serve authenticated clients on a BrokerListener resource with an authenticationRef",
				"listener", l.name, "addr", addr)
		}
	}
	return nil
}

// httpEndpoint logs the HTTP endpoint's address once bound.
type httpEndpoint struct {
	*telemetry.HTTPServer
	addr string // --http-addr
	log  *slog.Logger
}

func (h *httpEndpoint) Start(ctx context.Context) error {
	if err := h.HTTPServer.Start(ctx); err != nil {
		return bindError("--http-addr", h.addr, err)
	}
	h.log.Info("listening", "listener", "http", "addr", h.Addr().String())
	return nil
}

// bindError names the serve flag to change when a built-in listener's
// address is taken, rather than leaving the user with the system's
// "bind: address already in use" alone.
func bindError(flag, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s %s: address already in use; choose another with %s, or turn the listener off with %s off: %w", flag, addr, flag, flag, err)
	}
	return err
}
