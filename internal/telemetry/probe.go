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
// is an MQTT 5 client over an in-process pipe, so every round goes through
// the same decode, routing, session and encode path as a network client's
// message, without a socket or a port.
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
	conn      net.Conn
	r         *packet.Reader
	wbuf      []byte
	seq       uint64
	nextID    uint16
	oneShot   bool        // the server's keep alive is shorter than a round trip: reconnect every round
	stopClose func() bool // detaches the close-on-stop hook of conn

	lifeMu  sync.Mutex // guards cancel and done
	cancel  context.CancelFunc
	done    chan struct{}
	serveWG sync.WaitGroup // ServeConn calls of the probe's connections
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

// Start runs a first round at once, then one every interval, until Stop or
// the end of ctx. A second Start is a no-op.
func (p *Probe) Start(ctx context.Context) {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	if p.done != nil {
		return
	}
	ctx, p.cancel = context.WithCancel(ctx)
	p.done = make(chan struct{})
	go p.run(ctx, p.done)
}

// Stop ends the probe, closes its connection and waits until the broker has
// finished serving it. It is safe to call more than once, or before Start.
func (p *Probe) Stop() {
	p.lifeMu.Lock()
	cancel, done := p.cancel, p.done
	p.lifeMu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	p.serveWG.Wait()
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
	if p.oneShot {
		p.closeConn()
	}
}

// measure runs one publish/deliver exchange and returns the latency from
// writing the PUBLISH to reading its delivery.
func (p *Probe) measure(ctx context.Context) (time.Duration, error) {
	deadline := time.Now().Add(p.timeout)
	if p.conn == nil {
		if err := p.connect(ctx, deadline); err != nil {
			return 0, err
		}
	}
	_ = p.conn.SetDeadline(deadline)
	p.seq++
	var payload [8]byte
	binary.BigEndian.PutUint64(payload[:], p.seq)
	id := p.packetID()
	pub := packet.Publish{QoS: 1, Topic: p.topic, PacketID: id, Payload: payload[:]}
	start := time.Now()
	if err := p.write(&pub); err != nil {
		return 0, fmt.Errorf("publishing: %w", err)
	}
	var latency time.Duration
	delivered, acked := false, false
	for !delivered || !acked {
		h, body, err := p.r.Next(0)
		if err != nil {
			return 0, p.readErr(err, delivered, acked)
		}
		switch h.Type {
		case packet.PUBLISH:
			var in packet.Publish
			if err := in.Decode(h.Flags, body, packet.V5); err != nil {
				return 0, fmt.Errorf("decoding delivery: %w", err)
			}
			if !delivered && in.Topic == p.topic && len(in.Payload) == 8 && binary.BigEndian.Uint64(in.Payload) == p.seq {
				latency = time.Since(start)
				delivered = true
			}
			// A late delivery of an earlier round is acknowledged and ignored.
			if in.QoS == 1 {
				if err := p.write(&packet.Ack{Type: packet.PUBACK, PacketID: in.PacketID}); err != nil {
					return 0, fmt.Errorf("acknowledging delivery: %w", err)
				}
			}
		case packet.PUBACK:
			var a packet.Ack
			if err := a.Decode(h.Type, h.Flags, body, packet.V5); err != nil {
				return 0, fmt.Errorf("decoding PUBACK: %w", err)
			}
			if a.PacketID != id {
				continue
			}
			if a.ReasonCode != packet.Success {
				// 0x10 (no matching subscribers) means the probe's own
				// subscription is gone: as much a failure as a refusal.
				return 0, fmt.Errorf("broker answered the publish with %v", a.ReasonCode)
			}
			acked = true
		case packet.DISCONNECT:
			var d packet.Disconnect
			_ = d.Decode(h.Flags, body, packet.V5)
			return 0, fmt.Errorf("broker disconnected the probe: %v", d.ReasonCode)
		}
	}
	return latency, nil
}

func (p *Probe) readErr(err error, delivered, acked bool) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		switch {
		case !delivered && !acked:
			return fmt.Errorf("no PUBACK and no delivery within %v", p.timeout)
		case !delivered:
			return fmt.Errorf("publish acknowledged but not delivered within %v", p.timeout)
		default:
			return fmt.Errorf("delivered but not acknowledged within %v", p.timeout)
		}
	}
	return fmt.Errorf("reading from the broker: %w", err)
}

// connect opens a pipe to the broker, connects with a clean session and
// subscribes to the probe topic.
func (p *Probe) connect(ctx context.Context, deadline time.Time) error {
	client, server := net.Pipe()
	p.serveWG.Add(1)
	go func() {
		defer p.serveWG.Done()
		p.serve(server)
	}()
	p.conn = client
	p.r = packet.NewReader(client, 512)
	// Stop must not wait for a round's deadline: closing the pipe ends a
	// blocked read at once.
	p.stopClose = context.AfterFunc(ctx, func() { client.Close() })
	_ = client.SetDeadline(deadline)

	if err := p.write(&packet.Connect{Version: packet.V5, CleanStart: true, ClientID: p.clientID}); err != nil {
		p.closeConn()
		return fmt.Errorf("connecting: %w", err)
	}
	var ack packet.ConnAck
	if err := p.expect(packet.CONNACK, func(h packet.FixedHeader, body []byte) error {
		return ack.Decode(h.Flags, body, packet.V5)
	}); err != nil {
		p.closeConn()
		return fmt.Errorf("connecting: %w", err)
	}
	if ack.ReasonCode != packet.Success {
		p.closeConn()
		return fmt.Errorf("connecting: broker refused with %v", ack.ReasonCode)
	}
	p.oneShot = false
	if ack.Properties.Has(packet.PropServerKeepAlive) && ack.Properties.ServerKeepAlive > 0 {
		// The broker would end an idle connection before the next round;
		// reconnecting each round avoids keep-alive timeouts without pings.
		ka := time.Duration(ack.Properties.ServerKeepAlive) * time.Second
		p.oneShot = ka <= p.interval+p.timeout
	}

	sub := packet.Subscribe{PacketID: p.packetID(), Subscriptions: []packet.Subscription{{Filter: p.topic, QoS: 1}}}
	if err := p.write(&sub); err != nil {
		p.closeConn()
		return fmt.Errorf("subscribing: %w", err)
	}
	var suback packet.SubAck
	if err := p.expect(packet.SUBACK, func(h packet.FixedHeader, body []byte) error {
		return suback.Decode(h.Flags, body, packet.V5)
	}); err != nil {
		p.closeConn()
		return fmt.Errorf("subscribing: %w", err)
	}
	if len(suback.ReasonCodes) != 1 || suback.ReasonCodes[0].IsError() {
		p.closeConn()
		return fmt.Errorf("subscribing: broker refused with %v", suback.ReasonCodes)
	}
	return nil
}

// expect reads the next packet, which must be of type t.
func (p *Probe) expect(t packet.Type, decode func(packet.FixedHeader, []byte) error) error {
	h, body, err := p.r.Next(0)
	if err != nil {
		return fmt.Errorf("waiting for %v: %w", t, err)
	}
	if h.Type != t {
		return fmt.Errorf("got %v, want %v", h.Type, t)
	}
	return decode(h, body)
}

func (p *Probe) write(pk packet.Packet) error {
	p.wbuf = pk.Append(p.wbuf[:0], packet.V5)
	_, err := p.conn.Write(p.wbuf)
	return err
}

func (p *Probe) packetID() uint16 {
	p.nextID++
	if p.nextID == 0 {
		p.nextID = 1
	}
	return p.nextID
}

// closeConn ends the current connection, with a DISCONNECT when it is
// healthy enough to take one, so the broker counts no protocol error.
func (p *Probe) closeConn() {
	if p.conn == nil {
		return
	}
	_ = p.conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_ = p.write(&packet.Disconnect{})
	p.stopClose()
	p.conn.Close()
	p.conn, p.r, p.stopClose = nil, nil, nil
}
