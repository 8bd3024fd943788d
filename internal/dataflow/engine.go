// Package dataflow is Edgeport's dataflow engine: it runs the Dataflow
// resources, moving messages from a source through filter and map to a
// destination, acknowledging the source only once the destination has them.
package dataflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/edgeport/edgeport/internal/lograte"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
)

// Builder makes the stages of a flow from its resolved resources. The
// engine's own (see build.go) knows every endpoint type; tests may wrap it.
type Builder interface {
	Source(ctx context.Context, p *Plan, instance int) (stage.Source, error)
	Destination(ctx context.Context, p *Plan, ep *config.DataflowEndpointSpec, d *config.DataflowDestination) (stage.Destination, error)
	Transform(p *Plan) (Transform, error)
	// Forget releases what a deleted flow's source keeps outside the
	// process (its persistent session).
	Forget(ctx context.Context, p *Plan) error
}

// Reporter receives a flow's state for its resource's status.
type Reporter func(obj *config.Object, ready bool, reason, msg string, st config.DataflowStatus)

// Options are the engine's dependencies.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics are not exported
	Builder    Builder
	Report     Reporter // nil: status is not reported
	// Backlog returns what waits in a broker session (the outage buffer's
	// fill level); nil when there is no local broker.
	Backlog func(clientID string) (messages int, bytes int64, ok bool)
	// StatusInterval is how often status and buffer levels are refreshed
	// (default 1 s).
	StatusInterval time.Duration
	// DrainTimeout bounds how long a stopping or changed flow keeps
	// delivering what it already took (default 10 s); what is left is
	// redelivered by the source later.
	DrainTimeout time.Duration
}

// Engine runs the dataflows. Sync gives it the desired resources; it starts,
// restarts (draining first) and stops flows to match, each flow on its own
// goroutines, so Sync never waits for a destination.
type Engine struct {
	o       Options
	log     *slog.Logger
	errLog  *lograte.Limiter // errors that repeat per message (dropped messages), once a minute per flow
	latency *prometheus.HistogramVec

	mu      sync.Mutex // guards flows, ctx, started and stopped
	flows   map[string]*flowRun
	ctx     context.Context // the engine's run context, from Start
	cancel  context.CancelFunc
	started bool
	// stopped is set by Stop: a Sync that comes later (the reconciler
	// outlives the engine during shutdown) starts and stops nothing, so
	// no goroutine is added to wg while Stop waits for it.
	stopped bool
	wg      sync.WaitGroup // flow supervisors, deleted flows' stops and the status loop
}

// New builds an engine; it runs nothing until Start.
func New(o Options) (*Engine, error) {
	if o.Builder == nil {
		return nil, errors.New("dataflow: Options.Builder is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.StatusInterval <= 0 {
		o.StatusInterval = time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 10 * time.Second
	}
	e := &Engine{o: o, log: o.Logger, errLog: lograte.New(o.Logger, time.Minute), latency: newLatencyVec(), flows: make(map[string]*flowRun)}
	if o.Registerer != nil {
		if err := o.Registerer.Register(collector{e}); err != nil {
			return nil, fmt.Errorf("dataflow metrics: %w", err)
		}
	}
	return e, nil
}

// Start begins running the flows given to Sync (before or after Start).
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		return errors.New("dataflow: engine already started")
	}
	e.started = true
	// The flows run until Stop, not until the caller's ctx ends.
	e.ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for _, f := range e.flows {
		e.startFlowLocked(f)
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.statusLoop(e.ctx)
	}()
	return nil
}

// Stop drains and stops every flow. Draining ends a second before ctx
// does (so the caller's other components get time too); what is not
// delivered by then stays in the sources for the next start.
func (e *Engine) Stop(ctx context.Context) error {
	e.mu.Lock()
	if !e.started || e.cancel == nil || e.stopped {
		e.mu.Unlock()
		return nil
	}
	e.stopped = true
	flows := make([]*flowRun, 0, len(e.flows))
	for _, f := range e.flows {
		flows = append(flows, f)
	}
	e.mu.Unlock()
	drain := ctx
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		drain, cancel = context.WithDeadline(ctx, d.Add(-time.Second))
		defer cancel()
	}
	for _, f := range flows {
		f.cancel()
	}
	for _, f := range flows {
		f.stop(drain)
	}
	e.cancel()
	e.wg.Wait()
	return nil
}

// Plan is one flow's resolved configuration: its spec with the endpoints
// and profile it refers to. A flow restarts when its plan changes.
type Plan struct {
	Name        string
	Obj         *config.Object `json:"-"`
	UID         string
	Spec        *config.DataflowSpec
	Source      *config.DataflowEndpointSpec
	Destination *config.DataflowEndpointSpec
	DeadLetter  *config.DataflowEndpointSpec `json:",omitempty"`
	// SourceSchema checks the messages the source delivers; OutputSchema
	// checks the transformation's output and gives a Parquet destination
	// its columns.
	SourceSchema *PlanSchema `json:",omitempty"`
	OutputSchema *PlanSchema `json:",omitempty"`
	Instances    int
	// Err is why the flow cannot run (a missing endpoint, an unsupported
	// combination); the flow then reports it and waits for a change.
	Err error `json:"-"`
	key string
	// PrevFilters are the source filters of the plan this one replaces,
	// for the source to unsubscribe what it no longer needs.
	PrevFilters []string `json:"-"`
	// AssetTopics are the MQTT topics the source's assetRef publishes its
	// datasets to (part of the key: a changed asset restarts the flow).
	AssetTopics []string `json:",omitempty"`
}

// SourceFilters are the topic filters the source subscribes to: its
// dataSources and its asset's dataset topics.
func (p *Plan) SourceFilters() []string {
	src := p.Spec.Source()
	if src == nil {
		return nil
	}
	out := append([]string(nil), src.DataSources...)
	for _, t := range p.AssetTopics {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// Instances returns the flow instances' client-ID suffixes and the
// shared-subscription group, if the profile runs several.
func (p *Plan) sharedGroup() string {
	if p.Instances > 1 {
		return "edgeport-dataflow-" + p.Name
	}
	return ""
}

// ClientID is the local broker client ID of instance i of the flow: its
// persistent session is the flow's outage buffer.
func (p *Plan) ClientID(prefix string, i int) string {
	if p.Instances > 1 {
		return prefix + p.Name + "/" + strconv.Itoa(i)
	}
	return prefix + p.Name
}

// DefaultEndpoint is what endpointRef "default" means when no
// DataflowEndpoint of that name exists: the local broker, as in Azure IoT
// Operations.
func DefaultEndpoint() *config.DataflowEndpointSpec {
	s := &config.DataflowEndpointSpec{EndpointType: config.EndpointMqtt, MqttSettings: &config.MqttEndpointSettings{}}
	obj := &config.Object{APIVersion: config.APIVersion, Kind: "DataflowEndpoint", Metadata: config.Metadata{Name: config.DefaultEndpoint}, Spec: s}
	_ = config.Builtin().Check(obj) // defaults
	return s
}

// Resolve builds the plans of flows from the current resources; a flow
// with a schemaRef needs ResolveAll.
func Resolve(flows, endpoints, profiles []*config.Object) []*Plan {
	return ResolveAll(flows, endpoints, profiles, nil)
}

// ResolveAll builds the plans of flows from the current resources, the
// Schemas their schemaRefs name and the Assets their sources' assetRef
// names included.
func ResolveAll(flows, endpoints, profiles, schemas []*config.Object, assets ...*config.Object) []*Plan {
	sch := make(map[string]*config.Object, len(schemas))
	for _, o := range schemas {
		sch[o.Metadata.Name] = o
	}
	eps := map[string]*config.DataflowEndpointSpec{}
	for _, o := range endpoints {
		eps[o.Metadata.Name] = o.Spec.(*config.DataflowEndpointSpec)
	}
	if _, ok := eps[config.DefaultEndpoint]; !ok {
		eps[config.DefaultEndpoint] = DefaultEndpoint()
	}
	profs := map[string]*config.DataflowProfileSpec{}
	for _, o := range profiles {
		profs[o.Metadata.Name] = o.Spec.(*config.DataflowProfileSpec)
	}
	var out []*Plan
	for _, o := range flows {
		spec := o.Spec.(*config.DataflowSpec)
		p := &Plan{Name: o.Metadata.Name, Obj: o, UID: o.Metadata.UID, Spec: spec, Instances: 1}
		var errs []error
		src, dst := spec.Source(), spec.Destination()
		if src != nil {
			if p.Source = eps[src.EndpointRef]; p.Source == nil {
				errs = append(errs, fmt.Errorf("source endpointRef %q: no such DataflowEndpoint", src.EndpointRef))
			}
		}
		if dst != nil {
			if p.Destination = eps[dst.EndpointRef]; p.Destination == nil {
				errs = append(errs, fmt.Errorf("destination endpointRef %q: no such DataflowEndpoint", dst.EndpointRef))
			}
		}
		if dl := spec.DeadLetter; dl != nil {
			if p.DeadLetter = eps[dl.EndpointRef]; p.DeadLetter == nil {
				errs = append(errs, fmt.Errorf("deadLetter endpointRef %q: no such DataflowEndpoint", dl.EndpointRef))
			}
		}
		if src != nil && src.AssetRef != "" {
			topics, err := assetTopics(src.AssetRef, assets)
			if err != nil {
				errs = append(errs, err)
			}
			p.AssetTopics = topics
		}
		if prof, ok := profs[spec.ProfileRef]; ok {
			p.Instances = *prof.InstanceCount
		} else if spec.ProfileRef != config.DefaultProfile {
			errs = append(errs, fmt.Errorf("profileRef %q: no such DataflowProfile", spec.ProfileRef))
		}
		errs = append(errs, p.resolveSchemas(sch)...)
		p.Err = errors.Join(errs...)
		key, _ := json.Marshal(p)
		p.key = string(key)
		out = append(out, p)
	}
	return out
}

// Sync makes the running flows match plans: new flows start, changed ones
// drain and restart, missing ones stop and their buffers are released.
func (e *Engine) Sync(plans []*Plan) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		// The flows were drained and stopped; what changed since is
		// applied at the next start.
		return
	}
	want := make(map[string]*Plan, len(plans))
	for _, p := range plans {
		want[p.Name] = p
	}
	for name, f := range e.flows {
		if p, ok := want[name]; !ok || p.UID != f.uid {
			delete(e.flows, name)
			e.latency.DeleteLabelValues(name)
			// A flow deleted (or recreated under the same name) forgets
			// its buffer; it stops on its own goroutine.
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				ctx, cancel := context.WithTimeout(context.WithoutCancel(e.baseCtx()), e.o.DrainTimeout+5*time.Second)
				defer cancel()
				f.stop(ctx)
				f.forget(ctx)
			}()
		}
	}
	for name, p := range want {
		f := e.flows[name]
		if f == nil {
			m := newFlowMetrics()
			m.latency = e.latency.WithLabelValues(name)
			f = &flowRun{e: e, name: name, uid: p.UID, metrics: m, update: make(chan struct{}, 1)}
			e.flows[name] = f
			f.setPlan(p)
			if e.started {
				e.startFlowLocked(f)
			}
			continue
		}
		f.setPlan(p)
	}
}

func (e *Engine) baseCtx() context.Context {
	if e.ctx != nil {
		return e.ctx
	}
	return context.Background()
}

func (e *Engine) startFlowLocked(f *flowRun) {
	ctx, cancel := context.WithCancel(e.ctx)
	f.cancel = cancel
	f.abortCtx, f.abort = context.WithCancel(context.WithoutCancel(e.ctx))
	f.done = make(chan struct{})
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer close(f.done)
		f.supervise(ctx)
	}()
}

// FlowState is a flow's state for `edgeport check` and the status.
type FlowState struct {
	Name    string
	Running bool
	Ready   bool
	Reason  string
	Message string
	Status  config.DataflowStatus
}

type flowSnap struct {
	name    string
	metrics *flowMetrics
	running bool
}

func (e *Engine) snapshot() []flowSnap {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]flowSnap, 0, len(e.flows))
	for name, f := range e.flows {
		_, _, _, running := f.state()
		out = append(out, flowSnap{name, f.metrics, running})
	}
	slices.SortFunc(out, func(a, b flowSnap) int {
		if a.name < b.name {
			return -1
		}
		if a.name > b.name {
			return 1
		}
		return 0
	})
	return out
}

// States returns every flow's state.
func (e *Engine) States() []FlowState {
	e.mu.Lock()
	flows := make([]*flowRun, 0, len(e.flows))
	for _, f := range e.flows {
		flows = append(flows, f)
	}
	e.mu.Unlock()
	out := make([]FlowState, 0, len(flows))
	for _, f := range flows {
		ready, reason, msg, running := f.state()
		out = append(out, FlowState{Name: f.name, Running: running, Ready: ready, Reason: reason, Message: msg, Status: f.metrics.status()})
	}
	slices.SortFunc(out, func(a, b FlowState) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return out
}

// statusLoop samples buffer levels and reports every flow's status.
func (e *Engine) statusLoop(ctx context.Context) {
	t := time.NewTicker(e.o.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e.mu.Lock()
		flows := make([]*flowRun, 0, len(e.flows))
		for _, f := range e.flows {
			flows = append(flows, f)
		}
		e.mu.Unlock()
		for _, f := range flows {
			f.sampleBacklog()
			f.report()
		}
	}
}
