package dataflow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
)

// ClientIDPrefix starts the local broker client IDs of flow sources; the
// broker bounds such sessions by its storage quota only.
const ClientIDPrefix = broker.OutageBufferPrefix

// flowRun supervises one flow: it builds its stages from the current plan,
// runs one runner per instance, and rebuilds them when the plan changes or
// a source fails.
type flowRun struct {
	e        *Engine
	name     string
	uid      string
	metrics  *flowMetrics
	update   chan struct{} // a new plan was set
	cancel   context.CancelFunc
	abort    context.CancelFunc // ends draining too: what is left waits in the source
	abortCtx context.Context
	done     chan struct{} // closed when supervise returned

	mu      sync.Mutex // guards plan, ready, reason, msg and running
	plan    *Plan
	ready   bool
	reason  string
	msg     string
	running bool
}

func (f *flowRun) setPlan(p *Plan) {
	f.mu.Lock()
	if old := f.plan; old != nil && old != p && old.Spec.Source() != nil && p.Spec.Source() != nil {
		var gone []string
		for _, fl := range old.SourceFilters() {
			if !slices.Contains(p.SourceFilters(), fl) {
				gone = append(gone, fl)
			}
		}
		p.PrevFilters = append(gone, old.PrevFilters...)
	}
	f.plan = p
	f.mu.Unlock()
	select {
	case f.update <- struct{}{}:
	default:
	}
}

func (f *flowRun) currentPlan() *Plan {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.plan
}

func (f *flowRun) setState(ready, running bool, reason, msg string) {
	f.mu.Lock()
	changed := f.ready != ready || f.reason != reason || f.msg != msg || f.running != running
	f.ready, f.running, f.reason, f.msg = ready, running, reason, msg
	f.mu.Unlock()
	if changed {
		f.report()
	}
}

// state returns the flow's readiness; a running flow whose destination is
// failing is not ready.
func (f *flowRun) state() (ready bool, reason, msg string, running bool) {
	f.mu.Lock()
	ready, reason, msg, running = f.ready, f.reason, f.msg, f.running
	f.mu.Unlock()
	if running && f.metrics.failing.Load() {
		st := f.metrics.status()
		return false, "Retrying", "the destination does not accept messages; they wait in the flow's buffer: " + st.LastError, true
	}
	return ready, reason, msg, running
}

func (f *flowRun) report() {
	if f.e.o.Report == nil {
		return
	}
	p := f.currentPlan()
	if p == nil || p.Obj == nil {
		return
	}
	ready, reason, msg, _ := f.state()
	f.e.o.Report(p.Obj, ready, reason, msg, f.metrics.status())
}

// sampleBacklog reads the fill level of the flow's sessions.
func (f *flowRun) sampleBacklog() {
	p := f.currentPlan()
	if f.e.o.Backlog == nil || p == nil || !localMQTT(p.Source) {
		return
	}
	var msgs, bytes int64
	for i := range p.Instances {
		if n, b, ok := f.e.o.Backlog(p.ClientID(ClientIDPrefix, i)); ok {
			msgs += int64(n)
			bytes += b
		}
	}
	f.metrics.bufferedMsgs.Store(msgs)
	f.metrics.bufferedBytes.Store(bytes)
}

func localMQTT(ep *config.DataflowEndpointSpec) bool {
	return ep != nil && ep.EndpointType == config.EndpointMqtt && ep.MqttSettings != nil && ep.MqttSettings.Local()
}

// stop ends the supervisor, which drains the running instances until
// they are done or ctx ends; unacknowledged messages stay in the source.
func (f *flowRun) stop(ctx context.Context) {
	if f.cancel == nil {
		return
	}
	f.cancel()
	select {
	case <-f.done:
		return
	case <-ctx.Done():
	}
	f.abort()
	<-f.done
}

// forget releases the deleted flow's buffer.
func (f *flowRun) forget(ctx context.Context) {
	p := f.currentPlan()
	if p == nil {
		return
	}
	if err := f.e.o.Builder.Forget(ctx, p); err != nil {
		f.e.log.Warn("releasing a deleted dataflow's buffer", "dataflow", f.name, "err", err)
	}
}

func (f *flowRun) supervise(ctx context.Context) {
	failures := 0
	for {
		p := f.currentPlan()
		var err error
		switch {
		case p.Err != nil:
			f.setState(false, false, "InvalidReference", p.Err.Error())
		case p.Spec.Mode == config.ModeDisabled:
			f.setState(false, false, "Disabled", "mode is Disabled; a local source keeps buffering in the flow's session")
		default:
			err = f.runPlan(ctx, p)
			if err == nil && ctx.Err() == nil {
				failures = 0
				continue // the plan changed
			}
		}
		if ctx.Err() != nil {
			f.setState(false, false, "Stopped", "")
			return
		}
		var wait <-chan time.Time
		var timer *time.Timer
		if err != nil {
			failures++
			f.metrics.errors(stage.KindSource).Inc()
			f.metrics.setError(err, time.Now())
			f.setState(false, false, "Failed", err.Error())
			f.e.log.Error("dataflow failed; restarting", "dataflow", f.name, "err", err)
			timer = time.NewTimer(backoff{initial: time.Second, max: time.Minute}.delay(failures - 1))
			wait = timer.C
		}
		select {
		case <-ctx.Done():
		case <-f.update:
			failures = 0
		case <-wait:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			f.setState(false, false, "Stopped", "")
			return
		}
	}
}

// runPlan runs the plan's instances until the plan changes (nil), ctx ends
// (nil) or an instance fails (its error). In each case the instances drain
// before it returns.
func (f *flowRun) runPlan(ctx context.Context, p *Plan) error {
	b := f.e.o.Builder
	tr := make([]Transform, p.Instances)
	srcs := make([]stage.Source, p.Instances)
	var dsts, deads []stage.Destination
	closeAll := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for _, d := range append(dsts, deads...) {
			if d != nil {
				if err := d.Close(cctx); err != nil {
					f.e.log.Warn("closing a dataflow destination", "dataflow", f.name, "err", err)
				}
			}
		}
	}
	var err error
	for i := range p.Instances {
		if tr[i], err = b.Transform(p); err != nil {
			closeAll()
			return fmt.Errorf("transformation: %w", err)
		}
		d, err := b.Destination(ctx, p, p.Destination, p.Spec.Destination())
		if err != nil {
			closeAll()
			return fmt.Errorf("destination: %w", err)
		}
		dsts = append(dsts, d)
		if p.Spec.DeadLetter != nil {
			dl, err := b.Destination(ctx, p, p.DeadLetter, p.Spec.DeadLetter)
			if err != nil {
				closeAll()
				return fmt.Errorf("deadLetter: %w", err)
			}
			deads = append(deads, dl)
		}
		if srcs[i], err = b.Source(ctx, p, i); err != nil {
			closeAll()
			return fmt.Errorf("source: %w", err)
		}
	}
	srcCtx, srcCancel := context.WithCancel(ctx)
	defer srcCancel()
	workCtx, workCancel := context.WithCancel(f.abortCtx)
	defer workCancel()
	errs := make(chan error, p.Instances)
	var wg sync.WaitGroup
	for i := range p.Instances {
		r := &runner{
			name: f.name, src: srcs[i], tr: tr[i], dst: dsts[i], m: f.metrics, log: f.e.log, errLog: f.e.errLog, now: time.Now, notify: f.report,
			backoff: backoff{
				initial: time.Duration(*p.Spec.Retry.InitialBackoffMs) * time.Millisecond,
				max:     time.Duration(*p.Spec.Retry.MaxBackoffMs) * time.Millisecond,
			},
		}
		if bt, ok := dsts[i].(stage.Batcher); ok {
			r.batching = bt.Batching()
		}
		if len(deads) > 0 {
			r.dead = deads[i]
		}
		r.in, r.out = f.metrics.checks(p)
		r.deliveries = make(chan stage.Delivery, max(r.batching.MaxMessages, 16))
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := r.run(srcCtx, workCtx)
			if srcCtx.Err() == nil {
				// The source ended on its own: a failure, or a bug if
				// it reports none.
				if err == nil {
					err = errors.New("the source stopped")
				}
				errs <- err
			}
		}()
	}
	f.metrics.failing.Store(false)
	// Ready once every source receives what is published from now on:
	// a source that subscribes first says so (stage.Subscriber).
	var subscribing []<-chan struct{}
	for _, s := range srcs {
		if sub, ok := s.(stage.Subscriber); ok {
			subscribing = append(subscribing, sub.Subscribed())
		}
	}
	running := func() {
		f.setState(true, true, "Running", fmt.Sprintf("%d instance(s)", p.Instances))
		f.e.log.Info("dataflow running", "dataflow", f.name, "instances", p.Instances)
	}
	if len(subscribing) == 0 {
		running()
	} else {
		f.setState(false, true, "Subscribing", "connecting to the source and subscribing")
	}
	var result error
	for waiting := true; waiting; {
		var next <-chan struct{} // nil (never ready) when none is left
		if len(subscribing) > 0 {
			next = subscribing[0]
		}
		select {
		case <-next:
			if subscribing = subscribing[1:]; len(subscribing) == 0 {
				running()
			}
		case <-ctx.Done():
			waiting = false
		case err := <-errs:
			result = err
			waiting = false
		case <-f.update:
			if np := f.currentPlan(); np.key != p.key {
				f.e.log.Info("dataflow changed; draining and restarting", "dataflow", f.name)
				waiting = false
			}
		}
	}
	// Drain: stop taking messages, finish what was taken, for a while.
	srcCancel()
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	t := time.NewTimer(f.e.o.DrainTimeout)
	select {
	case <-drained:
	case <-t.C:
		workCancel()
		<-drained
	}
	t.Stop()
	closeAll()
	f.setState(false, false, "Restarting", "")
	return result
}
