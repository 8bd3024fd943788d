package lifecycle

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a component that writes what happens to it into a shared log
// and fails its Start or Stop when told to.
type recorder struct {
	name             string
	log              *[]string
	failStart, fails bool
	started          bool
}

func (r *recorder) Start(context.Context) error {
	if r.failStart {
		*r.log = append(*r.log, "fail "+r.name)
		return errors.New(r.name + " broke")
	}
	r.started = true
	*r.log = append(*r.log, "start "+r.name)
	return nil
}

func (r *recorder) Stop(context.Context) error {
	if !r.started {
		*r.log = append(*r.log, "STOP WITHOUT START "+r.name)
	}
	r.started = false
	*r.log = append(*r.log, "stop "+r.name)
	if r.fails {
		return errors.New(r.name + " would not stop")
	}
	return nil
}

func group(log *[]string, names ...string) (*Group, map[string]*recorder) {
	g := &Group{}
	rs := map[string]*recorder{}
	for _, n := range names {
		r := &recorder{name: n, log: log}
		rs[n] = r
		g.Add(n, r)
	}
	return g, rs
}

func TestGroupStartsInOrderStopsInReverse(t *testing.T) {
	var log []string
	g, _ := group(&log, "store", "broker", "listener")
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := g.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := []string{"start store", "start broker", "start listener", "stop listener", "stop broker", "stop store"}
	if !slices.Equal(log, want) {
		t.Fatalf("got %q, want %q", log, want)
	}
	// A second Stop finds nothing running.
	log = nil
	if err := g.Stop(t.Context()); err != nil || len(log) != 0 {
		t.Fatalf("second Stop: %v, %q", err, log)
	}
}

func TestGroupUnwindsWhenEachFails(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	for i, failing := range names {
		t.Run(failing, func(t *testing.T) {
			var log []string
			g, rs := group(&log, names...)
			rs[failing].failStart = true
			err := g.Start(t.Context())
			if err == nil || !strings.Contains(err.Error(), "starting "+failing+": "+failing+" broke") {
				t.Fatalf("Start: %v", err)
			}
			var want []string
			for _, n := range names[:i] {
				want = append(want, "start "+n)
			}
			want = append(want, "fail "+failing)
			for j := i - 1; j >= 0; j-- {
				want = append(want, "stop "+names[j])
			}
			if !slices.Equal(log, want) {
				t.Fatalf("got %q, want %q", log, want)
			}
			for _, r := range rs {
				if r.started {
					t.Errorf("%s left running", r.name)
				}
			}
			// After a failed start the group can be started again.
			rs[failing].failStart = false
			if err := g.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := g.Stop(t.Context()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestGroupStopGoesOnPastFailures(t *testing.T) {
	var log []string
	g, rs := group(&log, "a", "b", "c")
	rs["b"].fails = true
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	err := g.Stop(t.Context())
	if err == nil || !strings.Contains(err.Error(), "stopping b: b would not stop") {
		t.Fatalf("Stop: %v", err)
	}
	if want := []string{"start a", "start b", "start c", "stop c", "stop b", "stop a"}; !slices.Equal(log, want) {
		t.Fatalf("got %q, want %q", log, want)
	}
}

func TestGroupUnwindReportsStopFailures(t *testing.T) {
	var log []string
	g, rs := group(&log, "a", "b", "c")
	rs["a"].fails = true
	rs["c"].failStart = true
	err := g.Start(t.Context())
	if err == nil || !strings.Contains(err.Error(), "starting c: c broke") || !strings.Contains(err.Error(), "stopping a: a would not stop") {
		t.Fatalf("Start: %v", err)
	}
}

// A cancelled start context stops the start before the next component,
// and the unwinding still gets a live context.
func TestGroupCancelledStart(t *testing.T) {
	var log []string
	g := &Group{}
	ctx, cancel := context.WithCancel(t.Context())
	first := &recorder{name: "a", log: &log}
	g.Add("a", Hook{
		OnStart: func(ctx context.Context) error { cancel(); return first.Start(ctx) },
		OnStop: func(ctx context.Context) error {
			if ctx.Err() != nil {
				t.Errorf("unwinding with a dead context: %v", ctx.Err())
			}
			return first.Stop(ctx)
		},
	})
	g.Add("b", &recorder{name: "b", log: &log})
	err := g.Start(ctx)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "starting b") {
		t.Fatalf("Start: %v", err)
	}
	if want := []string{"start a", "stop a"}; !slices.Equal(log, want) {
		t.Fatalf("got %q, want %q", log, want)
	}
}

func TestNestedGroups(t *testing.T) {
	var log []string
	inner, _ := group(&log, "x", "y")
	outer, rs := group(&log, "a")
	outer.Add("inner", inner)
	z := &recorder{name: "z", log: &log, failStart: true}
	rs["z"] = z
	outer.Add("z", z)
	if err := outer.Start(t.Context()); err == nil {
		t.Fatal("started")
	}
	if want := []string{"start a", "start x", "start y", "fail z", "stop y", "stop x", "stop a"}; !slices.Equal(log, want) {
		t.Fatalf("got %q, want %q", log, want)
	}
}

func TestReplace(t *testing.T) {
	var log []string
	g, _ := group(&log, "a", "b")
	if !g.Replace("b", func(c Component) Component {
		return Hook{OnStart: func(context.Context) error { return errors.New("injected") }}
	}) {
		t.Fatal("b not found")
	}
	if g.Replace("nope", func(c Component) Component { return c }) {
		t.Fatal("found a component that is not there")
	}
	if err := g.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "starting b: injected") {
		t.Fatalf("Start: %v", err)
	}
	if want := []string{"start a", "stop a"}; !slices.Equal(log, want) {
		t.Fatalf("got %q, want %q", log, want)
	}
	if got := g.Names(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Names: %q", got)
	}
}
