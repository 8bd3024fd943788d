package dataflow

import (
	"context"
	"sync"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	"github.com/edgeport/edgeport/internal/testwait"
)

// gatedSource is a source whose subscription the test grants: the point
// of the test is the engine's order of events, which no real broker lets a
// test hold still. It delivers nothing.
type gatedSource struct{ subscribed chan struct{} }

func (s *gatedSource) Subscribed() <-chan struct{} { return s.subscribed }

func (s *gatedSource) Run(ctx context.Context, _ func(context.Context, stage.Delivery) error) error {
	<-ctx.Done()
	return nil
}

// gatedBuilder builds every flow from one gated source and a recording
// destination.
type gatedBuilder struct {
	src *gatedSource
	dst *recordingDest
}

func (b gatedBuilder) Source(context.Context, *Plan, int) (stage.Source, error) { return b.src, nil }
func (b gatedBuilder) Destination(context.Context, *Plan, *config.DataflowEndpointSpec, *config.DataflowDestination) (stage.Destination, error) {
	return b.dst, nil
}
func (b gatedBuilder) Transform(*Plan) (Transform, error)  { return nil, nil }
func (b gatedBuilder) Forget(context.Context, *Plan) error { return nil }

// A flow is Ready only once its source's subscription is granted: a
// message published after Ready must reach the flow (before, it would be
// lost to a new session). Until then the status says Subscribing.
func TestFlowReadyOnlyOnceSubscribed(t *testing.T) {
	b := gatedBuilder{src: &gatedSource{subscribed: make(chan struct{})}, dst: &recordingDest{}}
	type report struct {
		ready  bool
		reason string
	}
	var mu sync.Mutex
	var reports []report
	e := startEngine(t, Options{Builder: b, Logger: testLogger(t),
		Report: func(_ *config.Object, ready bool, reason, _ string, _ config.DataflowStatus) {
			mu.Lock()
			reports = append(reports, report{ready, reason})
			mu.Unlock()
		}})
	flow := mustCheck(t, "Dataflow", "gated", &config.DataflowSpec{Operations: []config.DataflowOperation{
		{OperationType: "Source", SourceSettings: &config.DataflowSource{EndpointRef: "default", DataSources: []string{"a/#"}}},
		{OperationType: "Destination", DestinationSettings: &config.DataflowDestination{EndpointRef: "default", DataDestination: "b"}},
	}})
	e.Sync(Resolve([]*config.Object{flow}, nil, nil))
	last := func() report {
		mu.Lock()
		defer mu.Unlock()
		if len(reports) == 0 {
			return report{}
		}
		return reports[len(reports)-1]
	}
	testwait.For(t, "status Subscribing", func() bool { return last().reason == "Subscribing" })
	if st := e.States(); len(st) != 1 || st[0].Ready || !st[0].Running {
		t.Fatalf("states before the subscription: %+v", st)
	}
	mu.Lock()
	for _, r := range reports {
		if r.ready {
			t.Fatalf("reported Ready before the subscription: %+v", reports)
		}
	}
	mu.Unlock()
	close(b.src.subscribed)
	testwait.For(t, "status Running", func() bool { return last() == report{true, "Running"} })
}
