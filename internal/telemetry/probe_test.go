package telemetry

import (
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/testwait"
)

// startTestBroker runs a broker without network listeners; the probe
// reaches it over pipes.
func startTestBroker(t *testing.T, opts broker.Options) *broker.Broker {
	t.Helper()
	opts.SysInterval = -1
	b, err := broker.New(opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Start(t.Context())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Errorf("broker Shutdown: %v", err)
		}
	})
	return b
}

func internalServe(b *broker.Broker) func(net.Conn) {
	return func(c net.Conn) { b.ServeConn(c, broker.InternalListener) }
}

func startProbe(t *testing.T, serve func(net.Conn), reg prometheus.Registerer, opts ProbeOptions) *Probe {
	t.Helper()
	p, err := NewProbe(serve, reg, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	return p
}

// waitStatus polls the probe until cond holds.
func waitStatus(t *testing.T, p *Probe, what string, cond func(ProbeStatus) bool) ProbeStatus {
	t.Helper()
	var st ProbeStatus
	if !testwait.Within(testwait.Timeout, func() bool { st = p.Status(); return cond(st) }) {
		t.Fatalf("waiting for %s: status %+v", what, st)
	}
	return st
}

func TestProbeMeasuresThroughTheBroker(t *testing.T) {
	b := startTestBroker(t, broker.Options{})
	reg := prometheus.NewPedanticRegistry()
	p := startProbe(t, internalServe(b), reg, ProbeOptions{Interval: 20 * time.Millisecond})
	if !strings.HasPrefix(p.Topic(), SelfTestTopicPrefix) {
		t.Fatalf("topic %q", p.Topic())
	}
	st := waitStatus(t, p, "three rounds", func(s ProbeStatus) bool { return s.Runs >= 3 })
	if !st.Healthy() || st.Failures != 0 || st.LastLatencySeconds <= 0 || st.LastLatencySeconds > 5 {
		t.Fatalf("status %+v", st)
	}
	// The rounds went through the broker as an internal client.
	c := b.Counters().Listeners[broker.InternalListener]
	if c.MessagesIn < 3 || c.MessagesOut < 3 || c.Connects != 1 {
		t.Fatalf("internal listener counters %+v: want >= 3 publishes each way over one connection", c)
	}
	if c := b.Counters(); c.Connected != 0 || c.Subscriptions != 0 {
		t.Fatalf("probe counted as a user session: %+v", c)
	}
	if n := gatherValue(t, reg, "edgeport_selftest_latency_seconds"); n < 3 {
		t.Errorf("latency histogram count %v, want >= 3", n)
	}
	if n := gatherValue(t, reg, "edgeport_selftest_runs_total"); n < 3 {
		t.Errorf("runs %v, want >= 3", n)
	}
	if n := gatherValue(t, reg, "edgeport_selftest_failures_total"); n != 0 {
		t.Errorf("failures %v, want 0", n)
	}
	if v := gatherValue(t, reg, "edgeport_selftest_last_latency_seconds"); v <= 0 {
		t.Errorf("last latency gauge %v", v)
	}
}

func TestProbeCountsFailuresAndRecovers(t *testing.T) {
	b := startTestBroker(t, broker.Options{})
	var broken atomic.Bool
	broken.Store(true)
	serve := func(c net.Conn) {
		if broken.Load() {
			// A broker that reads everything and answers nothing.
			_, _ = io.Copy(io.Discard, c)
			c.Close()
			return
		}
		b.ServeConn(c, broker.InternalListener)
	}
	reg := prometheus.NewRegistry()
	p := startProbe(t, serve, reg, ProbeOptions{Interval: 20 * time.Millisecond, Timeout: 50 * time.Millisecond})
	st := waitStatus(t, p, "two failures", func(s ProbeStatus) bool { return s.ConsecutiveFailures >= 2 })
	if st.Healthy() || st.LastError == "" || st.Failures < 2 {
		t.Fatalf("status while broken %+v", st)
	}
	if got := gatherValue(t, reg, "edgeport_selftest_failures_total"); got < 2 {
		t.Fatalf("failures counter %v", got)
	}
	broken.Store(false)
	st = waitStatus(t, p, "recovery", func(s ProbeStatus) bool { return s.Healthy() })
	if st.LastError != "" || st.LastLatencySeconds <= 0 {
		t.Fatalf("status after recovery %+v", st)
	}
}

func TestProbeStopIsPromptAndBrokerShutsDownCleanly(t *testing.T) {
	b := startTestBroker(t, broker.Options{})
	// A long interval: Stop must not wait for the next round.
	p := startProbe(t, internalServe(b), nil, ProbeOptions{Interval: time.Hour})
	waitStatus(t, p, "first round", func(s ProbeStatus) bool { return s.Runs == 1 })
	start := time.Now()
	if err := p.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Stop took %v", d)
	}
	if err := p.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if open := b.Counters().Listeners[broker.InternalListener].Open; open != 0 {
		t.Fatalf("%d internal connections left after Stop", open)
	}
}

func TestProbeKeepsItsConnectionUnderShortKeepAlive(t *testing.T) {
	// A server keep alive shorter than the interval would end an idle
	// connection between rounds: the probe's client pings instead, so one
	// connection serves every round without keep-alive timeouts.
	b := startTestBroker(t, broker.Options{MaxKeepAlive: time.Second})
	p := startProbe(t, internalServe(b), nil, ProbeOptions{Interval: 1500 * time.Millisecond, Timeout: time.Second})
	waitStatus(t, p, "two rounds", func(s ProbeStatus) bool { return s.Runs >= 2 })
	c := b.Counters()
	if st := p.Status(); !st.Healthy() {
		t.Fatalf("status %+v", st)
	}
	if c.ProtocolErrors != 0 || c.Listeners[broker.InternalListener].Connects != 1 {
		t.Fatalf("protocol errors %d, connects %d", c.ProtocolErrors, c.Listeners[broker.InternalListener].Connects)
	}
}

func TestNewProbeValidation(t *testing.T) {
	if _, err := NewProbe(func(net.Conn) {}, nil, nil, ProbeOptions{}); err == nil {
		t.Fatal("zero interval accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := NewProbe(func(net.Conn) {}, reg, nil, ProbeOptions{Interval: time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewProbe(func(net.Conn) {}, reg, nil, ProbeOptions{Interval: time.Second}); err == nil {
		t.Fatal("registering the metrics twice succeeded")
	}
}

// gatherValue returns the value of the single series of family name: a
// counter's or gauge's value, a histogram's sample count.
func gatherValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		if len(mf.GetMetric()) != 1 {
			t.Fatalf("%s has %d series", name, len(mf.GetMetric()))
		}
		m := mf.GetMetric()[0]
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
