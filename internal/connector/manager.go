package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Manager.
type Options struct {
	Store      *config.Store
	Connectors []Connector
	Publisher  Publisher
	// StateStore serves BrokerStateStore destinations; nil drops their
	// messages (counted as no_state_store).
	StateStore StateStore
	// Schemas registers the schemas of what datasets publish
	// (Dataset.RegisterSchema); nil: none are registered.
	Schemas SchemaRegistry
	// SecretsDir holds the secrets credentials refer to
	// (<data-dir>/secrets).
	SecretsDir string
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// BufferSize bounds the messages waiting for the broker (default
	// 10000); Senders is how many are sent concurrently (default 4).
	BufferSize int
	Senders    int
	// StatusInterval is how often status is written (default 1s).
	StatusInterval time.Duration
	// RestartBackoff is the pause after a driver's Run failed (default 1s,
	// doubling up to 30s).
	RestartBackoff time.Duration
	Now            func() time.Time
}

// Manager runs the connectors: it watches the registry's Devices and
// Assets and keeps one driver run per enabled device endpoint whose type
// has a connector, restarting it when the device or its assets change,
// and writes their status back to the resources.
type Manager struct {
	opts       Options
	log        *slog.Logger
	store      *config.Store
	connectors map[string]Connector
	m          *metrics
	out        *outbox
	wake       chan struct{} // capacity 1: the registry changed

	mu       sync.Mutex      // guards the maps below
	runs     map[string]*run // by device/endpoint
	epStats  map[string]*endpointStats
	dsStats  map[string]*datasetStats // by asset/dataset (events: asset/group/event)
	problems map[string]string        // asset name → why it does not run

	cancel    context.CancelFunc // ends the control loop and the drivers
	stopSend  context.CancelFunc // ends the senders, after the drivers
	stopFlush context.CancelFunc // ends the senders' final flush
	wg        sync.WaitGroup     // the control loop
}

type run struct {
	fingerprint string
	ep          *Endpoint
	cancel      context.CancelFunc
	done        chan struct{}
}

// New builds a manager; it registers its watcher with the store and its
// metrics with the registerer.
func New(opts Options) (*Manager, error) {
	if opts.Store == nil || opts.Publisher == nil {
		return nil, errors.New("connector: Store and Publisher are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BufferSize <= 0 {
		opts.BufferSize = 10000
	}
	if opts.Senders <= 0 {
		opts.Senders = 4
	}
	if opts.StatusInterval <= 0 {
		opts.StatusInterval = time.Second
	}
	if opts.RestartBackoff <= 0 {
		opts.RestartBackoff = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Manager{
		opts: opts, log: opts.Logger, store: opts.Store,
		connectors: map[string]Connector{},
		m:          newMetrics(opts.Registerer),
		wake:       make(chan struct{}, 1),
		runs:       map[string]*run{}, epStats: map[string]*endpointStats{}, dsStats: map[string]*datasetStats{},
		problems: map[string]string{},
	}
	for _, c := range opts.Connectors {
		if _, dup := m.connectors[c.EndpointType()]; dup {
			return nil, fmt.Errorf("connector: two connectors for %s", c.EndpointType())
		}
		m.connectors[c.EndpointType()] = c
	}
	m.out = newOutbox(opts.Publisher, opts.StateStore, m.m, opts.Senders, opts.BufferSize)
	opts.Store.Watch(func(k config.Key) {
		if k.Kind == "Device" || k.Kind == "Asset" {
			m.poke()
		}
	})
	return m, nil
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Start starts the senders and the control loop, which starts the drivers.
// ctx is used for its values only: the manager runs until Stop.
func (m *Manager) Start(ctx context.Context) error {
	if m.cancel != nil {
		return errors.New("connector: already started")
	}
	base := context.WithoutCancel(ctx)
	var runCtx, sendCtx, flushCtx context.Context
	runCtx, m.cancel = context.WithCancel(base)
	sendCtx, m.stopSend = context.WithCancel(base)
	flushCtx, m.stopFlush = context.WithCancel(base)
	m.out.start(sendCtx, flushCtx)
	m.poke()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.loop(runCtx)
	}()
	return nil
}

// Stop stops every driver, then sends what is buffered until ctx ends
// (dropping the rest, counted), and writes a last status.
func (m *Manager) Stop(ctx context.Context) error {
	if m.cancel == nil {
		return nil
	}
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	runs := m.runs
	m.runs = map[string]*run{}
	m.mu.Unlock()
	for _, r := range runs {
		r.cancel()
	}
	for _, r := range runs {
		<-r.done
	}
	stop := context.AfterFunc(ctx, m.stopFlush)
	defer stop()
	m.stopSend()
	m.out.wait()
	m.stopFlush()
	m.writeStatus()
	return nil
}

func (m *Manager) loop(ctx context.Context) {
	t := time.NewTicker(m.opts.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
			m.reconcile(ctx)
			m.writeStatus()
		case <-t.C:
			m.writeStatus()
		}
	}
}

// plan is what should run for one device endpoint.
type plan struct {
	dev    *config.Object
	name   string
	ep     config.InboundEndpoint
	conn   Connector
	assets []*config.Object
}

func epKey(device, endpoint string) string { return device + "/" + endpoint }

// reconcile compares what runs with what the registry says (level-
// triggered: it reads everything, so a burst of changes costs one pass).
func (m *Manager) reconcile(ctx context.Context) {
	plans := map[string]*plan{}
	problems := map[string]string{}
	disabled := map[string]string{} // device/endpoint → state when not run
	for _, dev := range m.store.List("Device", config.Selector{}) {
		spec := dev.Spec.(*config.DeviceSpec)
		for name, ep := range spec.Endpoints.Inbound {
			k := epKey(dev.Metadata.Name, name)
			c := m.connectors[ep.EndpointType]
			switch {
			case !spec.IsEnabled():
				disabled[k] = StateDisabled
			case c == nil:
				disabled[k] = StateError
			default:
				plans[k] = &plan{dev: dev, name: name, ep: ep, conn: c}
			}
		}
	}
	for _, a := range m.store.List("Asset", config.Selector{}) {
		spec := a.Spec.(*config.AssetSpec)
		ref := spec.DeviceRef
		k := epKey(ref.DeviceName, ref.EndpointName)
		dev, devOK := m.store.Get(config.Key{Kind: "Device", Name: ref.DeviceName})
		switch p := plans[k]; {
		case !spec.IsEnabled():
			problems[a.Metadata.Name] = "Disabled: the asset is disabled"
		case !devOK:
			problems[a.Metadata.Name] = fmt.Sprintf("DeviceNotFound: device %q does not exist", ref.DeviceName)
		case disabled[k] == StateDisabled:
			problems[a.Metadata.Name] = fmt.Sprintf("DeviceDisabled: device %q is disabled", ref.DeviceName)
		case p == nil && disabled[k] == StateError:
			problems[a.Metadata.Name] = fmt.Sprintf("NoConnector: this Edgeport has no connector for endpointType %s",
				dev.Spec.(*config.DeviceSpec).Endpoints.Inbound[ref.EndpointName].EndpointType)
		case p == nil:
			problems[a.Metadata.Name] = fmt.Sprintf("EndpointNotFound: device %q has no inbound endpoint %q", ref.DeviceName, ref.EndpointName)
		default:
			if errs := config.ValidateAssetFor(p.ep.EndpointType, spec); len(errs) > 0 {
				problems[a.Metadata.Name] = "Invalid: " + strings.Join(errs.Strings(), "; ")
				continue
			}
			p.assets = append(p.assets, a)
		}
	}

	m.mu.Lock()
	m.problems = problems
	var stopping []*run
	for k, r := range m.runs {
		if p := plans[k]; p == nil || fingerprint(p) != r.fingerprint {
			stopping = append(stopping, r)
			delete(m.runs, k)
		}
	}
	m.mu.Unlock()
	for _, r := range stopping {
		r.cancel()
	}
	for _, r := range stopping {
		<-r.done
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	for k, st := range disabled {
		es := m.endpointStats(k)
		es.mu.Lock()
		es.state = st
		if st == StateError {
			es.lastErr = "no connector for this endpointType in this Edgeport"
		}
		es.mu.Unlock()
	}
	keepDS := map[string]bool{}
	for k, p := range plans {
		for _, a := range p.assets {
			spec := a.Spec.(*config.AssetSpec)
			for _, ds := range spec.Datasets {
				keepDS[a.Metadata.Name+"/"+ds.Name] = true
			}
			for _, g := range spec.EventGroups {
				for _, e := range g.Events {
					keepDS[a.Metadata.Name+"/"+g.Name+"/"+e.Name] = true
				}
			}
		}
		if _, running := m.runs[k]; running {
			continue
		}
		m.startLocked(ctx, k, p)
	}
	for k := range m.epStats {
		if plans[k] == nil && disabled[k] == "" {
			delete(m.epStats, k)
			dev, ep, _ := strings.Cut(k, "/")
			for _, c := range m.connectors {
				m.m.connected.DeleteLabelValues(c.EndpointType(), dev, ep)
			}
		}
	}
	for k := range m.dsStats {
		if !keepDS[k] {
			delete(m.dsStats, k)
		}
	}
}

func (m *Manager) endpointStats(k string) *endpointStats {
	st := m.epStats[k]
	if st == nil {
		st = &endpointStats{state: StateConnecting}
		m.epStats[k] = st
	}
	return st
}

// fingerprint changes when anything a driver was given changes.
func fingerprint(p *plan) string {
	var b strings.Builder
	b.WriteString(p.dev.Metadata.UID + ":" + strconv.FormatInt(p.dev.Metadata.Generation, 10))
	names := make([]string, 0, len(p.assets))
	for _, a := range p.assets {
		names = append(names, a.Metadata.Name+"="+a.Metadata.UID+":"+strconv.FormatInt(a.Metadata.Generation, 10))
	}
	slices.Sort(names)
	b.WriteString("|" + strings.Join(names, ","))
	return b.String()
}

// startLocked starts a driver run for plan p. m.mu is held.
func (m *Manager) startLocked(ctx context.Context, k string, p *plan) {
	typ := p.ep.EndpointType
	devName := p.dev.Metadata.Name
	ep := &Endpoint{
		Device: devName, Name: p.name,
		DeviceSpec: p.dev.Spec.(*config.DeviceSpec), Spec: &p.ep,
		Secrets: Secrets{Dir: m.opts.SecretsDir},
		Log:     m.log.With("connector", typ, "device", devName, "endpoint", p.name),
		typ:     typ, st: m.endpointStats(k),
		connected: m.m.connected.WithLabelValues(typ, devName, p.name),
		reconnect: m.m.reconnects.WithLabelValues(typ, devName, p.name),
		m:         m.m, out: m.out, reg: m.opts.Schemas, now: m.opts.Now,
	}
	slices.SortFunc(p.assets, func(a, b *config.Object) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	for _, a := range p.assets {
		spec := a.Spec.(*config.AssetSpec)
		asset := &Asset{Name: a.Metadata.Name, Spec: spec}
		for i := range spec.Datasets {
			ds := &spec.Datasets[i]
			asset.Datasets = append(asset.Datasets, m.dataset(ep, asset, ds.Name, ds.Name, ds.DataSource, ds.TypeRef, ds.DataPoints,
				spec.DatasetConfiguration(i), spec.DatasetDestinations(i)))
		}
		for g := range spec.EventGroups {
			grp := &spec.EventGroups[g]
			for j := range grp.Events {
				e := &grp.Events[j]
				cfg := e.EventConfiguration
				if len(cfg) == 0 {
					cfg = grp.EventGroupConfiguration
				}
				if len(cfg) == 0 {
					cfg = spec.DefaultEventsConfiguration
				}
				src := e.DataSource
				if src == "" {
					src = grp.DataSource
				}
				asset.Events = append(asset.Events, m.dataset(ep, asset, grp.Name+"/"+e.Name, e.Name, src, e.TypeRef, e.DataPoints,
					cfg, spec.EventDestinations(g, j)))
			}
		}
		ep.Assets = append(ep.Assets, asset)
	}
	ep.st.mu.Lock()
	if ep.st.state == StateDisabled || ep.st.state == StateError {
		ep.st.state = StateConnecting
	}
	ep.st.mu.Unlock()
	rctx, cancel := context.WithCancel(ctx)
	r := &run{fingerprint: fingerprint(p), ep: ep, cancel: cancel, done: make(chan struct{})}
	m.runs[k] = r
	go func() {
		defer close(r.done)
		m.supervise(rctx, p.conn, ep)
	}()
}

// dataset builds a Dataset, keeping its statistics when its points are
// unchanged. m.mu is held.
func (m *Manager) dataset(ep *Endpoint, a *Asset, key, name, src, typeRef string, points []config.DataPoint, cfg config.JSON, dst []config.Destination) *Dataset {
	sk := a.Name + "/" + key
	st := m.dsStats[sk]
	if st == nil || !st.samePoints(points) {
		st = newDatasetStats(a.Name, key, points)
		m.dsStats[sk] = st
	}
	topic := ""
	for _, d := range dst {
		if d.Target == config.TargetMqtt {
			topic = d.Configuration.Topic
			break
		}
	}
	st.setTopic(topic)
	return &Dataset{
		Asset: a, Name: name, DataSource: src, TypeRef: typeRef, DataPoints: points,
		Configuration: cfg, Destinations: dst,
		ep: ep, st: st, samples: m.m.samples.WithLabelValues(ep.typ, a.Name, key),
	}
}

// supervise runs a driver until ctx ends, restarting it with backoff when
// it fails.
func (m *Manager) supervise(ctx context.Context, c Connector, ep *Endpoint) {
	backoff := m.opts.RestartBackoff
	for {
		err := c.Run(ctx, ep)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("driver stopped")
		}
		ep.Log.Warn("connector driver failed; restarting", "err", err, "in", backoff)
		ep.SetState(StateError, err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}
