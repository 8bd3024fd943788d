package otlp

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// PushConfig turns the push of Edgeport's own metrics and logs on.
type PushConfig struct {
	Options
	// Interval between metric exports; 0 means 15 s.
	Interval time.Duration
	// Logs exports log records at LogLevel and above.
	Logs     bool
	LogLevel slog.Level
}

// maxPendingLogs bounds the log records waiting for an export; beyond it
// new records are dropped (and counted) rather than growing without bound
// while the collector is away.
const maxPendingLogs = 10000

// logFlushInterval is how often waiting log records are exported.
const logFlushInterval = time.Second

// Pusher exports a Prometheus registry's metrics and the process's log
// records to a collector. It is a lifecycle component; Configure changes
// or stops the export at any time (the Broker resource's diagnostics.otlp
// block, or the serve flags). A failed metrics export is dropped (the
// next carries the cumulative values); log records stay queued, bounded.
type Pusher struct {
	gather   prometheus.Gatherer
	log      *slog.Logger // the pusher's own messages: never teed back into it
	resource map[string]string
	start    time.Time
	level    atomic.Int64 // lowest level exported; logsOff when logs are off
	wake     chan struct{}
	dropped  atomic.Uint64

	mu     sync.Mutex // guards cfg, client, logs, prev
	cfg    *PushConfig
	client *Client
	prev   *Client // replaced, closed by the run loop
	logs   []logEntry

	cancel context.CancelFunc
	done   chan struct{}
}

const logsOff = int64(1 << 40)

type logEntry struct {
	t     time.Time
	level slog.Level
	msg   string
	attrs []slog.Attr // keys already prefixed by their groups
}

// NewPusher makes a stopped pusher; log receives the pusher's own
// messages (failed exports) and must not be the tee of this pusher.
func NewPusher(g prometheus.Gatherer, resource map[string]string, log *slog.Logger) *Pusher {
	p := &Pusher{gather: g, log: log, resource: resource, start: time.Now(), wake: make(chan struct{}, 1)}
	p.level.Store(logsOff)
	return p
}

// Configure replaces the configuration; nil turns the export off.
func (p *Pusher) Configure(c *PushConfig) error {
	var client *Client
	if c != nil {
		var err error
		if client, err = NewClient(c.Options); err != nil {
			return err
		}
		cc := *c
		if cc.Interval <= 0 {
			cc.Interval = 15 * time.Second
		}
		c = &cc
	}
	p.mu.Lock()
	if p.client != nil {
		if p.prev != nil {
			_ = p.prev.Close()
		}
		p.prev = p.client
	}
	p.cfg, p.client = c, client
	if c == nil {
		p.logs = nil
	}
	p.mu.Unlock()
	if c != nil && c.Logs {
		p.level.Store(int64(c.LogLevel))
	} else {
		p.level.Store(logsOff)
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

// Start runs the export loop.
func (p *Pusher) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		p.run(ctx)
	}()
	return nil
}

// Stop exports once more (bounded by ctx), so that the last interval's
// metrics and the shutdown's log lines are not lost, and stops.
func (p *Pusher) Stop(ctx context.Context) error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	<-p.done
	p.mu.Lock()
	c := p.client
	p.mu.Unlock()
	if c != nil {
		p.pushMetrics(ctx, c)
		p.pushLogs(ctx, c)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var err error
	if p.client != nil {
		err = p.client.Close()
	}
	if p.prev != nil {
		err = errors.Join(err, p.prev.Close())
	}
	p.client, p.prev = nil, nil
	return err
}

func (p *Pusher) run(ctx context.Context) {
	logTick := time.NewTicker(logFlushInterval)
	defer logTick.Stop()
	metricTimer := time.NewTimer(time.Hour)
	defer metricTimer.Stop()
	reset := func() {
		p.mu.Lock()
		cfg := p.cfg
		p.mu.Unlock()
		d := time.Hour
		if cfg != nil {
			d = cfg.Interval
		}
		metricTimer.Reset(d)
	}
	reset()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
			p.closePrev()
			reset()
			// Export at once so that a new configuration shows at once.
			if c := p.current(); c != nil {
				p.pushMetrics(ctx, c)
			}
		case <-metricTimer.C:
			reset()
			if c := p.current(); c != nil {
				p.pushMetrics(ctx, c)
			}
		case <-logTick.C:
			if c := p.current(); c != nil {
				p.pushLogs(ctx, c)
			}
		}
	}
}

func (p *Pusher) current() *Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.client
}

func (p *Pusher) closePrev() {
	p.mu.Lock()
	prev := p.prev
	p.prev = nil
	p.mu.Unlock()
	if prev != nil {
		_ = prev.Close()
	}
}

func (p *Pusher) newResource(r pcommon.Resource) {
	for k, v := range p.resource {
		r.Attributes().PutStr(k, v)
	}
}

func (p *Pusher) pushMetrics(ctx context.Context, c *Client) {
	mfs, err := p.gather.Gather()
	if err != nil && len(mfs) == 0 {
		p.log.Warn("OTLP push: gathering metrics", "err", err)
		return
	}
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	p.newResource(rm.Resource())
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName("edgeport")
	FromPrometheus(mfs, sm, p.start, time.Now())
	if err := c.ExportMetrics(ctx, md); err != nil && ctx.Err() == nil {
		p.log.Warn("OTLP push: exporting metrics", "err", err)
	}
}

func (p *Pusher) pushLogs(ctx context.Context, c *Client) {
	p.mu.Lock()
	entries := p.logs
	p.logs = nil
	p.mu.Unlock()
	if len(entries) == 0 {
		return
	}
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	p.newResource(rl.Resource())
	sl := rl.ScopeLogs().AppendEmpty()
	sl.Scope().SetName("edgeport")
	for _, e := range entries {
		lr := sl.LogRecords().AppendEmpty()
		lr.SetTimestamp(pcommon.NewTimestampFromTime(e.t))
		lr.SetObservedTimestamp(pcommon.NewTimestampFromTime(e.t))
		lr.SetSeverityNumber(severity(e.level))
		lr.SetSeverityText(e.level.String())
		lr.Body().SetStr(e.msg)
		for _, a := range e.attrs {
			putAttr(lr.Attributes(), a.Key, a.Value)
		}
	}
	err := c.ExportLogs(ctx, ld)
	if err == nil || errors.Is(err, ErrRejected) {
		return
	}
	// Retryable: put them back in front, within the bound.
	p.mu.Lock()
	keep := append(entries, p.logs...)
	if over := len(keep) - maxPendingLogs; over > 0 {
		p.dropped.Add(uint64(over))
		keep = keep[over:]
	}
	p.logs = keep
	p.mu.Unlock()
	if ctx.Err() == nil {
		p.log.Warn("OTLP push: exporting logs; kept for the next attempt", "records", len(entries), "err", err)
	}
}

func severity(l slog.Level) plog.SeverityNumber {
	switch {
	case l < slog.LevelInfo:
		return plog.SeverityNumberDebug
	case l < slog.LevelWarn:
		return plog.SeverityNumberInfo
	case l < slog.LevelError:
		return plog.SeverityNumberWarn
	}
	return plog.SeverityNumberError
}

func putAttr(m pcommon.Map, k string, v slog.Value) {
	switch v.Kind() {
	case slog.KindString:
		m.PutStr(k, v.String())
	case slog.KindInt64:
		m.PutInt(k, v.Int64())
	case slog.KindUint64:
		m.PutInt(k, int64(min(v.Uint64(), 1<<63-1)))
	case slog.KindFloat64:
		m.PutDouble(k, v.Float64())
	case slog.KindBool:
		m.PutBool(k, v.Bool())
	case slog.KindDuration:
		m.PutStr(k, v.Duration().String())
	case slog.KindTime:
		m.PutStr(k, v.Time().Format(time.RFC3339Nano))
	default:
		m.PutStr(k, v.String())
	}
}

// enabled reports whether records at l are exported.
func (p *Pusher) enabled(l slog.Level) bool { return int64(l) >= p.level.Load() }

func (p *Pusher) enqueue(e logEntry) {
	p.mu.Lock()
	if p.client == nil {
		p.mu.Unlock()
		return
	}
	if len(p.logs) >= maxPendingLogs {
		p.mu.Unlock()
		p.dropped.Add(1)
		return
	}
	p.logs = append(p.logs, e)
	p.mu.Unlock()
}

// DroppedLogs counts log records dropped because too many waited.
func (p *Pusher) DroppedLogs() uint64 { return p.dropped.Load() }

// Handler returns a slog.Handler that passes every record to next and,
// while log export is on, also queues it for the collector.
func (p *Pusher) Handler(next slog.Handler) slog.Handler { return &tee{next: next, p: p} }

type tee struct {
	next   slog.Handler
	p      *Pusher
	attrs  []slog.Attr // from WithAttrs, keys prefixed
	prefix string      // open groups, "a.b."
}

var _ slog.Handler = (*tee)(nil)

func (t *tee) Enabled(ctx context.Context, l slog.Level) bool {
	return t.next.Enabled(ctx, l) || t.p.enabled(l)
}

func (t *tee) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if t.next.Enabled(ctx, r.Level) {
		err = t.next.Handle(ctx, r)
	}
	if t.p.enabled(r.Level) {
		e := logEntry{t: r.Time, level: r.Level, msg: r.Message, attrs: append([]slog.Attr(nil), t.attrs...)}
		r.Attrs(func(a slog.Attr) bool {
			e.attrs = flattenAttr(e.attrs, t.prefix, a)
			return true
		})
		t.p.enqueue(e)
	}
	return err
}

func (t *tee) WithAttrs(as []slog.Attr) slog.Handler {
	c := *t
	c.next = t.next.WithAttrs(as)
	c.attrs = append([]slog.Attr(nil), t.attrs...)
	for _, a := range as {
		c.attrs = flattenAttr(c.attrs, t.prefix, a)
	}
	return &c
}

func (t *tee) WithGroup(name string) slog.Handler {
	if name == "" {
		return t
	}
	c := *t
	c.next = t.next.WithGroup(name)
	c.prefix = t.prefix + name + "."
	return &c
}

func flattenAttr(out []slog.Attr, prefix string, a slog.Attr) []slog.Attr {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			out = flattenAttr(out, p, g)
		}
		return out
	}
	if a.Key == "" {
		return out
	}
	return append(out, slog.Attr{Key: prefix + a.Key, Value: v})
}
