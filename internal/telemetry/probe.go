package telemetry

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/lifecycle"
	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// SelfTestTopicPrefix is where the probe publishes. Topics beginning with $
// are invisible to a client's # subscription and refused to ordinary
// clients' publishes, so the probe neither shows up in nor can be spoofed by
// user traffic.
const SelfTestTopicPrefix = "$edgeport/selftest/"

// ProbeClientID is the self-test probe's MQTT client identifier.
const ProbeClientID = broker.InternalClientIDPrefix + "selftest"

// DefaultProbeTimeout bounds one round when ProbeOptions.Timeout is zero and
// the interval is longer.
const DefaultProbeTimeout = 5 * time.Second

// ProbeOptions configure a Probe.
type ProbeOptions struct {
	// Interval is the time between rounds; it must be positive.
	Interval time.Duration
	// Timeout is how long a round may take before it counts as failed;
	// zero means the shorter of Interval and DefaultProbeTimeout.
	Timeout time.Duration
}

// ProbeStatus is the probe's latest outcome, as /statusz reports it.
type ProbeStatus struct {
	IntervalSeconds     float64   `json:"intervalSeconds"`
	Runs                uint64    `json:"runs"`
	Failures            uint64    `json:"failures"`
	ConsecutiveFailures uint64    `json:"consecutiveFailures"`
	LastRun             time.Time `json:"lastRun,omitzero"`
	LastLatencySeconds  float64   `json:"lastLatencySeconds"`
	LastError           string    `json:"lastError,omitempty"`
}

// Healthy reports whether the probe has run and its last round succeeded.
func (s ProbeStatus) Healthy() bool { return s.Runs > 0 && s.ConsecutiveFailures == 0 }

// Probe measures the broker's publish-to-delivery latency continuously: it
// is an internal MQTT client (internal/mqtt/client over an in-process
// pipe), so every round goes through the same decode, routing, session and
// encode path as a network client's message, without a socket or a port.
type Probe struct {
	serve    func(net.Conn)
	log      *slog.Logger
	interval time.Duration
	timeout  time.Duration
	clientID string
	topic    string

	latency   prometheus.Histogram
	last      prometheus.Gauge
	failures  prometheus.Counter
	runsTotal prometheus.Counter

	mu     sync.Mutex // guards status
	status ProbeStatus

	// Owned by the run goroutine.
	c         *client.Client // nil between a failed round and the next
	delivered chan uint64    // sequence numbers the subscription received
	seq       uint64

	lifeMu sync.Mutex // guards cancel and done
	cancel context.CancelFunc
	done   chan struct{}
}

// NewProbe returns a probe that hands each connection it opens to serve
// (the broker's ServeConn with an internal listener name) and registers its
// metrics with reg. A nil log discards log output.
func NewProbe(serve func(net.Conn), reg prometheus.Registerer, log *slog.Logger, opts ProbeOptions) (*Probe, error) {
	if opts.Interval <= 0 {
		return nil, errors.New("telemetry: self-test interval must be positive")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = min(opts.Interval, DefaultProbeTimeout)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id := randomHex(8)
	p := &Probe{
		serve:    serve,
		log:      log,
		interval: opts.Interval,
		timeout:  opts.Timeout,
		// The identifier is in the broker's reserved internal space: no
		// network client may claim it and take the probe's session over.
		clientID: ProbeClientID,
		topic:    SelfTestTopicPrefix + id,
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edgeport_selftest_latency_seconds",
			Help: "Self-test publish-to-delivery latency through the broker (QoS 1).",
			// 25 µs to 5 s (the longest default timeout): an idle broker
			// delivers in tens of microseconds, a saturated one in tens of
			// milliseconds.
			Buckets: []float64{.000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgeport_selftest_last_latency_seconds",
			Help: "Latency of the latest successful self-test round.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeport_selftest_failures_total",
			Help: "Self-test rounds whose message was not delivered in time.",
		}),
		runsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeport_selftest_runs_total",
			Help: "Self-test rounds run, successful or not.",
		}),
	}
	p.status.IntervalSeconds = opts.Interval.Seconds()
	if reg != nil {
		for _, c := range []prometheus.Collector{p.latency, p.last, p.failures, p.runsTotal} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("telemetry: registering self-test metrics: %w", err)
			}
		}
	}
	return p, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Topic returns the topic the probe publishes and subscribes to.
func (p *Probe) Topic() string { return p.topic }

// Status returns the latest outcome.
func (p *Probe) Status() ProbeStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

var _ lifecycle.Component = (*Probe)(nil)

// Start runs a first round at once, then one every interval, until Stop.
// A second Start is a no-op.
func (p *Probe) Start(ctx context.Context) error {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	if p.done != nil {
		return nil
	}
	ctx, p.cancel = context.WithCancel(context.WithoutCancel(ctx))
	p.done = make(chan struct{})
	go p.run(ctx, p.done)
	return nil
}

// Stop ends the probe, closes its connection and waits until the broker has
// finished serving it: closing the connection ends a round at once, so ctx
// is not needed. It is safe to call more than once, or before Start.
func (p *Probe) Stop(context.Context) error {
	p.lifeMu.Lock()
	cancel, done := p.cancel, p.done
	p.lifeMu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	<-done
	return nil
}

func (p *Probe) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	defer p.closeConn()
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		p.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// round publishes one message and waits for its delivery, recording the outcome.
func (p *Probe) round(ctx context.Context) {
	latency, err := p.measure(ctx)
	if ctx.Err() != nil {
		return // stopping: an interrupted round is not a broker failure
	}
	p.runsTotal.Inc()
	p.mu.Lock()
	p.status.Runs++
	p.status.LastRun = time.Now()
	recovered := false
	if err != nil {
		p.status.Failures++
		p.status.ConsecutiveFailures++
		p.status.LastError = err.Error()
	} else {
		recovered = p.status.ConsecutiveFailures > 0
		p.status.ConsecutiveFailures = 0
		p.status.LastError = ""
		p.status.LastLatencySeconds = latency.Seconds()
	}
	failures := p.status.ConsecutiveFailures
	p.mu.Unlock()
	if err != nil {
		p.failures.Inc()
		p.log.Warn("self-test failed", "topic", p.topic, "consecutive_failures", failures, "err", err)
		p.closeConn() // start the next round from a fresh connection
		return
	}
	p.latency.Observe(latency.Seconds())
	p.last.Set(latency.Seconds())
	if recovered {
		p.log.Info("self-test recovered", "latency", latency)
	}
}

// measure runs one publish/deliver exchange and returns the latency from
// handing over the PUBLISH to its delivery.
func (p *Probe) measure(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if p.c == nil {
		if err := p.connect(ctx); err != nil {
			return 0, err
		}
	}
	p.seq++
	seq := p.seq
	var payload [8]byte
	binary.BigEndian.PutUint64(payload[:], seq)
	type ack struct {
		code packet.ReasonCode
		err  error
	}
	acked := make(chan ack, 1)
	start := time.Now()
	p.c.PublishAsync(&client.Message{Topic: p.topic, QoS: 1, Payload: payload[:]}, func(code packet.ReasonCode, err error) {
		acked <- ack{code, err}
	})
	var latency time.Duration
	delivered, gotAck := false, false
	for !delivered || !gotAck {
		select {
		case n := <-p.delivered:
			// A late delivery of an earlier round is ignored.
			if n == seq && !delivered {
				latency = time.Since(start)
				delivered = true
			}
		case a := <-acked:
			if a.err != nil {
				return 0, fmt.Errorf("publishing: %w", a.err)
			}
			if a.code != packet.Success {
				// 0x10 (no matching subscribers) means the probe's own
				// subscription is gone: as much a failure as a refusal.
				return 0, fmt.Errorf("broker answered the publish with %v", a.code)
			}
			gotAck = true
		case <-ctx.Done():
			switch {
			case !delivered && !gotAck:
				return 0, fmt.Errorf("no PUBACK and no delivery within %v", p.timeout)
			case !delivered:
				return 0, fmt.Errorf("publish acknowledged but not delivered within %v", p.timeout)
			default:
				return 0, fmt.Errorf("delivered but not acknowledged within %v", p.timeout)
			}
		}
	}
	return latency, nil
}

// connect makes a new client with a clean session, subscribed to the
// probe topic. It does not reconnect by itself: a failed round starts the
// next from a fresh connection, so a failure is always measured as one.
func (p *Probe) connect(ctx context.Context) error {
	delivered := make(chan uint64, 16)
	c, err := client.New(client.Options{
		Dialer:         client.NewInProcess(p.serve),
		ClientID:       p.clientID,
		CleanStart:     true,
		NoReconnect:    true,
		ConnectTimeout: p.timeout,
		Logger:         p.log,
	})
	if err != nil {
		return err
	}
	if err := c.Connect(ctx); err != nil {
		_ = c.Close()
		return fmt.Errorf("connecting: %w", err)
	}
	err = c.Subscribe(ctx, client.Subscription{
		Filters: []packet.Subscription{{Filter: p.topic, QoS: 1}},
		Handler: func(_ context.Context, m *client.Message) {
			if len(m.Payload) == 8 {
				select {
				case delivered <- binary.BigEndian.Uint64(m.Payload):
				default: // the round waiting for it has given up
				}
			}
		},
	})
	if err != nil {
		_ = c.Close()
		return fmt.Errorf("subscribing: %w", err)
	}
	p.c, p.delivered = c, delivered
	return nil
}

// closeConn ends the current connection (DISCONNECT, then waiting for the
// broker to finish serving it).
func (p *Probe) closeConn() {
	if p.c == nil {
		return
	}
	_ = p.c.Close()
	p.c, p.delivered = nil, nil
}
