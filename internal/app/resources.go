package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/api"
	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/broker/listener"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/lifecycle"
	"github.com/edgeport/edgeport/internal/lograte"
	"github.com/edgeport/edgeport/internal/store"
	"github.com/edgeport/edgeport/internal/telemetry"
)

// retryInterval is how often ports that failed to bind are tried again,
// so a port freed by another program is taken without a new apply.
const retryInterval = 5 * time.Second

// portFailLogInterval is how often a port that keeps failing is logged
// again (with the number of failed retries since).
const portFailLogInterval = 10 * time.Minute

// resources applies the declarative resources to the running components:
// a controller in the Kubernetes sense. Every change to the store marks
// its key dirty; one goroutine reconciles dirty keys against the current
// state of the store (level-triggered, so bursts coalesce) and reports
// the outcome in each resource's status.
type resources struct {
	a     *App
	log   *slog.Logger
	store *config.Store
	dir   *config.Dir // nil without --config

	mu    sync.Mutex
	dirty map[config.Key]struct{}
	wake  chan struct{}

	// portsMu guards ports, which only the reconciling goroutine changes
	// (or Start and Stop, when it is not running); Addrs reads it.
	portsMu sync.Mutex
	ports   map[string]map[int]*portRun // BrokerListener name -> port -> run

	sec           *security // authentication and authorization resources, built
	retry         time.Duration
	failLog       *lograte.Limiter // a port failing at every retry is logged every few minutes
	brokerApplied bool             // a Broker resource's options are in force
	cancel        context.CancelFunc
	wg            sync.WaitGroup
}

func newResources(a *App) (*resources, error) {
	log := a.log.With("component", "resources")
	var p config.Persister // --in-memory keeps API resources in memory too
	if a.store != nil {
		p = storedResources{a.store}
	}
	r := &resources{
		a:     a,
		log:   log,
		store: config.NewStoreWith(config.Builtin(), p, log),
		dirty: make(map[config.Key]struct{}),
		wake:  make(chan struct{}, 1),
		ports: make(map[string]map[int]*portRun),
		retry: retryInterval,
		// Ports are retried every few seconds; their failure is news
		// only when it starts, and a reminder now and then.
		failLog: lograte.New(log, portFailLogInterval),
	}
	r.sec = newSecurity(r)
	if a.cfg.ConfigDir != "" {
		d, err := config.NewDir(a.cfg.ConfigDir, r.store, log)
		if err != nil {
			return nil, err
		}
		r.dir = d
	}
	r.store.Watch(r.enqueue)
	return r, nil
}

func (r *resources) enqueue(k config.Key) {
	r.mu.Lock()
	r.dirty[k] = struct{}{}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// load reads the stored and config-directory resources and puts the
// Broker resource in force (limits, sync policy) before the broker serves
// anyone. Problems with single resources are logged, not fatal: the rest
// of the configuration and the built-in listeners still come up.
func (r *resources) load(context.Context) error {
	if err := r.migrate(); err != nil {
		return err
	}
	if err := r.store.Load(); err != nil {
		return fmt.Errorf("loading resources: %w", err)
	}
	if r.dir != nil {
		r.dir.Sync()
	}
	r.reconcile(config.Key{Kind: "Broker", Name: "default"})
	return nil
}

var _ lifecycle.Component = (*resources)(nil)

// Start reconciles everything once, synchronously, so that the listeners
// of the configuration are bound when Start returns; then follows changes
// in the background until Stop.
func (r *resources) Start(ctx context.Context) error {
	r.drain()
	for k := range r.store.Keys() {
		r.reconcile(k)
	}
	ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.run(ctx)
	}()
	if r.dir != nil {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := r.dir.Watch(ctx); err != nil {
				r.log.Error("config directory changes will not be applied", "err", err)
			}
		}()
	}
	return nil
}

// Stop ends reconciling and closes the resource listeners; their clients
// are disconnected by the broker's Stop that follows.
func (r *resources) Stop(ctx context.Context) error {
	if r.cancel != nil {
		r.cancel()
	}
	r.wg.Wait()
	r.portsMu.Lock()
	defer r.portsMu.Unlock()
	var errs []error
	for _, ports := range r.ports {
		for _, p := range ports {
			if err := p.close(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	r.ports = map[string]map[int]*portRun{}
	r.sec.close()
	return errors.Join(errs...)
}

func (r *resources) run(ctx context.Context) {
	retry := time.NewTicker(r.retry)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-retry.C:
			r.retryFailed()
		}
		for _, k := range r.drain() {
			if ctx.Err() != nil {
				return
			}
			r.reconcile(k)
		}
	}
}

// drain takes the dirty keys, in a stable order.
func (r *resources) drain() []config.Key {
	r.mu.Lock()
	keys := make([]config.Key, 0, len(r.dirty))
	for k := range r.dirty {
		keys = append(keys, k)
	}
	clear(r.dirty)
	r.mu.Unlock()
	slices.SortFunc(keys, func(a, b config.Key) int { return strings.Compare(a.String(), b.String()) })
	return keys
}

func (r *resources) retryFailed() {
	r.portsMu.Lock()
	var failed []string
	for name, ports := range r.ports {
		for _, p := range ports {
			if p.ln == nil {
				failed = append(failed, name)
				break
			}
		}
	}
	r.portsMu.Unlock()
	for _, name := range failed {
		r.enqueue(config.Key{Kind: "BrokerListener", Name: name})
	}
}

func (r *resources) reconcile(k config.Key) {
	switch k.Kind {
	case "Broker":
		r.reconcileBroker(k)
	case "BrokerListener":
		r.reconcileListener(k)
	case "Dataflow", "DataflowEndpoint", "DataflowProfile", "Schema", "Asset":
		// A Schema changes what a flow's schemaRef resolves to, an Asset
		// the topics of a flow's assetRef.
		r.syncFlows()
	case "BrokerAuthentication", "BrokerAuthorization":
		if k.Kind == "BrokerAuthentication" {
			r.sec.reconcileAuthn(k)
		} else {
			r.sec.reconcileAuthz(k)
		}
		// Listeners put the change in force on their ports.
		for _, l := range r.store.List("BrokerListener", config.Selector{}) {
			r.enqueue(l.Key())
		}
	}
}

func (r *resources) setReady(obj *config.Object, ok bool, reason, msg string) {
	r.setStatus(obj, config.Status{}, ok, reason, msg)
}

func (r *resources) setStatus(obj *config.Object, st config.Status, ok bool, reason, msg string) {
	status := config.ConditionFalse
	if ok {
		status = config.ConditionTrue
	}
	st.Conditions = []config.Condition{{Type: config.ConditionReady, Status: status, Reason: reason, Message: msg}}
	r.store.SetStatus(obj.Key(), obj.Metadata.UID, obj.Metadata.Generation, st)
}

// reconcileBroker puts the Broker resource's limits in force, or the serve
// flags' limits when it is deleted.
func (r *resources) reconcileBroker(k config.Key) {
	b := r.a.broker
	obj, ok := r.store.Get(k)
	if !ok {
		if r.brokerApplied {
			if err := b.SetOptions(r.a.cfg.Broker); err != nil {
				r.log.Error("restoring the serve flags' broker limits", "err", err)
			}
			if err := r.a.guard.SetLimits(baseLimits(r.a.cfg.Broker)); err != nil {
				r.log.Error("restoring the connection limits", "err", err)
			}
			r.a.state.SetLimits(r.a.cfg.StateStore.MaxKeys, r.a.cfg.StateStore.MaxBytes)
			if r.a.store != nil {
				_ = r.a.store.SetSync(r.a.cfg.Store.Sync) // valid: the store was built with it
			}
			if pc, err := flagsPushConfig(r.a.cfg.OTLP); err == nil {
				_ = r.a.push.Configure(pc) // valid: New configured it
			}
			r.brokerApplied = false
			r.log.Info("Broker resource deleted: the serve flags' limits apply")
		}
		return
	}
	spec := obj.Spec.(*config.BrokerSpec)
	if err := b.SetOptions(brokerOptions(spec, r.a.cfg.Broker)); err != nil {
		r.setReady(obj, false, "InvalidOptions", err.Error())
		return
	}
	if err := r.a.guard.SetLimits(connectionLimits(spec)); err != nil {
		r.setReady(obj, false, "InvalidOptions", err.Error())
		return
	}
	if r.a.store != nil && spec.Persistence.SyncPolicy != "" {
		if err := r.a.store.SetSync(store.SyncPolicy(spec.Persistence.SyncPolicy)); err != nil {
			r.setReady(obj, false, "InvalidOptions", err.Error())
			return
		}
	}
	r.a.state.SetLimits(spec.StateStore.MaxKeys, spec.StateStore.MaxBytes)
	if err := r.a.applyOTLP(spec.Diagnostics.OTLP); err != nil {
		r.setReady(obj, false, "InvalidOptions", "spec.diagnostics.otlp: "+err.Error())
		return
	}
	r.brokerApplied = true
	msg := "limits in force"
	if r.a.cfg.InMemory {
		msg += "; persistence is off (serve --in-memory)"
	}
	if spec.Cluster != nil {
		if r.a.node == nil {
			msg += "; spec.cluster is not used: serve runs without --cluster"
		} else {
			msg += "; spec.cluster is read when the node starts"
		}
	}
	r.setReady(obj, true, "Applied", msg)
	r.log.Info("broker limits applied", "generation", obj.Metadata.Generation)
}

// brokerOptions maps a Broker spec onto the broker's options. The
// resource replaces the serve flags' limits whole; only the version is
// kept.
func brokerOptions(s *config.BrokerSpec, base broker.Options) broker.Options {
	c := s.Advanced.Clients
	// FromUser turns the resource's 0 ("no limit", "off") into the
	// broker's Unlimited; see broker.Options for the one rule.
	n := func(b broker.Bound, v int64) int { return int(b.FromUser(v)) }
	sec := func(b broker.Bound, v int64) time.Duration { return time.Duration(b.FromUser(v)) * time.Second }
	o := broker.Options{
		MaxPacketSize:             n(broker.BoundMaxPacketSize, int64(*c.MaxPacketSizeBytes)),
		ReceiveMaximum:            n(broker.BoundReceiveMaximum, int64(*c.MaxReceiveMaximum)),
		MaxInflight:               n(broker.BoundMaxInflight, int64(*c.MaxInflight)),
		MaxQueuedMessages:         n(broker.BoundMaxQueuedMessages, *c.SubscriberQueueLimit.Length),
		MaxQueuedBytes:            broker.BoundMaxQueuedBytes.FromUser(c.SubscriberQueueLimit.MaxBytes),
		QueuePolicy:               broker.DropNew,
		MaxOutboundBytes:          n(broker.BoundMaxOutboundBytes, int64(*c.MaxOutboundBytes)),
		TopicAliasMaximum:         n(broker.BoundTopicAliasMaximum, int64(*c.TopicAliasMaximum)),
		MaxSessionExpiry:          sec(broker.BoundMaxSessionExpiry, *c.MaxSessionExpirySeconds),
		MaxMessageExpiry:          sec(broker.BoundMaxMessageExpiry, c.MaxMessageExpirySeconds),
		MaxKeepAlive:              sec(broker.BoundMaxKeepAlive, int64(*c.MaxKeepAliveSeconds)),
		ConnectTimeout:            sec(broker.BoundConnectTimeout, int64(*c.ConnectTimeoutSeconds)),
		SysInterval:               sec(broker.BoundSysInterval, int64(*s.Diagnostics.SysIntervalSeconds)),
		MaxTopicLength:            n(broker.BoundMaxTopicLength, int64(s.Advanced.Topics.MaxLength)),
		MaxTopicLevels:            n(broker.BoundMaxTopicLevels, int64(s.Advanced.Topics.MaxLevels)),
		MaxSubscriptionsPerClient: n(broker.BoundMaxSubscriptions, int64(c.MaxSubscriptionsPerClient)),
		Version:                   base.Version,
	}
	if c.SubscriberQueueLimit.Strategy == config.QueueStrategyDropOldest {
		o.QueuePolicy = broker.DropOldest
	}
	return o
}

// connectionLimits maps spec.advanced.connections onto the listeners'
// Guard; the CONNECT deadline bounds TLS handshakes too.
func connectionLimits(s *config.BrokerSpec) listener.Limits {
	c := s.Advanced.Connections
	return listener.Limits{
		MaxConnections:           c.MaxConnections,
		MaxConnectionsPerAddress: c.MaxConnectionsPerAddress,
		ConnectRate:              float64(c.ConnectRatePerSecond),
		ConnectBurst:             c.ConnectBurst,
		HandshakeTimeout:         time.Duration(*s.Advanced.Clients.ConnectTimeoutSeconds) * time.Second,
	}
}

// baseLimits are the connection limits without a Broker resource: none,
// and the serve flags' CONNECT deadline for TLS handshakes.
func baseLimits(o broker.Options) listener.Limits {
	return listener.Limits{HandshakeTimeout: max(o.ConnectTimeout, 0)}
}

// api builds the REST API over the store.
func (r *resources) api(token string, requireToken bool) *api.Server {
	return api.New(r.store, api.Options{Token: token, RequireToken: requireToken, Dir: r.dir}, r.log.With("component", "api"))
}

// addrs adds the bound resource ports, by listener name, to m.
func (r *resources) addrs(m map[string]net.Addr) {
	r.portsMu.Lock()
	defer r.portsMu.Unlock()
	for _, ports := range r.ports {
		for _, p := range ports {
			if p.ln != nil {
				m[p.name] = p.ln.Addr()
			}
		}
	}
}

// listenerInfos describes the resource ports for /statusz and /readyz; a
// port that failed to bind has no address.
func (r *resources) listenerInfos() []telemetry.ListenerInfo {
	r.portsMu.Lock()
	defer r.portsMu.Unlock()
	var out []telemetry.ListenerInfo
	for _, ports := range r.ports {
		for _, p := range ports {
			li := telemetry.ListenerInfo{
				Name: p.name, Protocol: p.cfg.protocol, TLS: p.cfg.tls != "",
				Authentication: p.cfg.authn, Authorization: p.cfg.authz, Configured: p.cfg.addr,
			}
			if p.err != nil {
				li.Error = p.err.Error()
			}
			if p.cfg.protocol == listener.ProtocolWebSocket {
				li.Path = p.cfg.path
			}
			if p.ln != nil {
				li.Address = p.ln.Addr().String()
			}
			out = append(out, li)
		}
	}
	slices.SortFunc(out, func(a, b telemetry.ListenerInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}
