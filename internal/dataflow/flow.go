package dataflow

import (
	"context"
	"errors"
	"fmt"
	"github.com/edgeport/edgeport/internal/lograte"
	"log/slog"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
)

// Transform enriches, filters and maps one message. keep false means a
// filter dropped it; an error means the message cannot be transformed (it
// is dead-lettered). Apply is called from one goroutine at a time.
type Transform interface {
	Apply(m *stage.Message) (out *stage.Message, keep bool, err error)
}

// Dead-letter user properties: why a message was dead-lettered.
const (
	PropError     = "edgeport-error"
	PropErrorKind = "edgeport-error-kind"
	PropDataflow  = "edgeport-dataflow"
	PropErrorTime = "edgeport-error-time"
	// A message that failed its schema also says which schema, and where
	// in the message and which keyword failed.
	PropSchema       = "edgeport-schema"
	PropErrorPath    = "edgeport-error-path"
	PropErrorKeyword = "edgeport-error-keyword"
)

// runner moves the messages of one flow instance from its source through
// the transformation to the destination. One worker goroutine handles the
// messages in the order the source delivered them, so per-topic order is
// kept at the destination; a message is acknowledged to the source only
// after the destination accepted it (or it was filtered, expired or
// dead-lettered), and acknowledgements are given in delivery order.
type runner struct {
	name string
	src  stage.Source
	tr   Transform // nil: pass through
	// in checks what the source delivers, out what the transformation
	// makes (nil: no schemaRef); a message that fails is dead-lettered.
	in, out  *schemaCheck
	dst      stage.Destination
	dead     stage.Destination // nil: dead letters are logged and dropped
	batching stage.Batching
	backoff  backoff
	m        *flowMetrics
	log      *slog.Logger
	errLog   *lograte.Limiter // per-message errors, once a minute per flow and kind
	now      func() time.Time
	notify   func() // readiness changed (the destination started or stopped failing)

	deliveries chan stage.Delivery // from the source goroutine to the worker
}

// item is a delivery on its way, with its transformed message.
type item struct {
	d   stage.Delivery
	out *stage.Message // nil when filtered, expired or dead-lettered
}

// run runs the source and the worker until srcCtx ends (stop taking
// messages) and then drains what was taken until workCtx ends. It returns
// the source's error if the source failed.
func (r *runner) run(srcCtx, workCtx context.Context) error {
	var wg sync.WaitGroup
	srcErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := r.src.Run(srcCtx, func(ctx context.Context, d stage.Delivery) error {
			select {
			case r.deliveries <- d:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			case <-srcCtx.Done():
				// Stopping: the source keeps the message for later.
				return srcCtx.Err()
			}
		})
		srcErr <- err
		close(r.deliveries)
	}()
	r.work(workCtx)
	wg.Wait()
	return <-srcErr
}

// work processes deliveries until the source closes r.in or workCtx ends;
// what is left unacknowledged is redelivered by the source later.
func (r *runner) work(ctx context.Context) {
	maxN := max(r.batching.MaxMessages, 1)
	var timer *time.Timer
	for {
		first, ok := <-r.deliveries
		if !ok {
			return
		}
		batch := []item{{d: first}}
		size := len(first.Msg.Payload)
		if maxN > 1 && r.batching.Latency > 0 {
			if timer == nil {
				timer = time.NewTimer(r.batching.Latency)
			} else {
				timer.Reset(r.batching.Latency)
			}
		collect:
			for len(batch) < maxN && (r.batching.MaxBytes <= 0 || size < r.batching.MaxBytes) {
				select {
				case d, ok := <-r.deliveries:
					if !ok {
						break collect
					}
					batch = append(batch, item{d: d})
					size += len(d.Msg.Payload)
				case <-timer.C:
					break collect
				}
			}
			timer.Stop()
		} else if maxN > 1 {
			// No latency: take what is already waiting.
		more:
			for len(batch) < maxN {
				select {
				case d, ok := <-r.deliveries:
					if !ok {
						break more
					}
					batch = append(batch, item{d: d})
				default:
					break more
				}
			}
		}
		if !r.process(ctx, batch) {
			return
		}
	}
}

// process transforms and delivers one batch and acknowledges it. It
// returns false when ctx ended before the batch was delivered: the batch is
// then left unacknowledged.
func (r *runner) process(ctx context.Context, batch []item) bool {
	now := r.now()
	var out []*stage.Message
	type failure struct {
		m    *stage.Message
		kind stage.ErrorKind
		err  error
	}
	var failed []failure
	for i := range batch {
		it := &batch[i]
		m := it.d.Msg
		r.m.received.Inc()
		if m.Received.IsZero() {
			m.Received = now
		}
		if m.SourceTopic == "" {
			m.SourceTopic = m.Topic
		}
		if !m.Expiry.IsZero() && !now.Before(m.Expiry) {
			r.m.expired.Inc()
			continue
		}
		if r.in != nil {
			if err := r.in.check(m); err != nil {
				r.m.errors(stage.KindSchema).Inc()
				r.m.setError(fmt.Errorf("a message from %s: %w", m.Topic, err), now)
				failed = append(failed, failure{m, stage.KindSchema, err})
				continue
			}
		}
		res, keep, err := m, true, error(nil)
		if r.tr != nil {
			res, keep, err = r.tr.Apply(m)
		}
		kind := stage.KindTransform
		if err == nil && keep && r.out != nil {
			err, kind = r.out.check(res), stage.KindSchema
		}
		switch {
		case err != nil && kind == stage.KindSchema:
			r.m.errors(kind).Inc()
			r.m.setError(fmt.Errorf("a message from %s: %w", m.Topic, err), now)
			failed = append(failed, failure{m, kind, err})
		case err != nil:
			r.m.errors(stage.KindTransform).Inc()
			r.m.setError(fmt.Errorf("transforming a message from %s: %w", m.Topic, err), now)
			failed = append(failed, failure{m, stage.KindTransform, err})
		case !keep:
			r.m.filtered.Inc()
		default:
			if res.SourceTopic == "" {
				res.SourceTopic = m.SourceTopic
			}
			if res.Received.IsZero() {
				res.Received = m.Received
			}
			it.out = res
			out = append(out, res)
		}
	}
	if len(out) > 0 && !r.send(ctx, out) {
		return false
	}
	// Dead letters after the batch, so that both destinations see the
	// source's order.
	for _, f := range failed {
		if !r.deadLetter(ctx, f.m, f.kind, f.err) {
			return false
		}
	}
	done := r.now()
	for i := range batch {
		if o := batch[i].out; o != nil {
			r.m.latency.Observe(done.Sub(o.Received).Seconds())
		}
		batch[i].d.Ack()
	}
	return true
}

// send delivers msgs, retrying with backoff until the destination accepts
// them or rejects them permanently (then they are dead-lettered one by
// one). It returns false when ctx ended first.
func (r *runner) send(ctx context.Context, msgs []*stage.Message) bool {
	for attempt := 0; ; attempt++ {
		err := r.dst.Send(ctx, msgs)
		if err == nil {
			if r.m.failing.Swap(false) && r.notify != nil {
				r.notify()
			}
			r.m.sent.add(len(msgs))
			r.m.sentBatches.Inc()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if errors.Is(err, stage.ErrPermanent) {
			if len(msgs) > 1 {
				// Find the messages the destination refuses; the others
				// go through.
				for _, m := range msgs {
					if !r.send(ctx, []*stage.Message{m}) {
						return false
					}
				}
				return true
			}
			r.m.errors(stage.KindRejected).Inc()
			r.m.setError(fmt.Errorf("destination rejected a message from %s: %w", msgs[0].SourceTopic, err), r.now())
			return r.deadLetter(ctx, msgs[0], stage.KindRejected, err)
		}
		r.m.errors(stage.KindDestination).Inc()
		r.m.retries.Inc()
		r.m.setError(fmt.Errorf("sending: %w", err), r.now())
		if !r.m.failing.Swap(true) && r.notify != nil {
			r.notify()
		}
		if attempt == 0 || attempt%20 == 0 {
			r.log.Warn("destination did not accept messages; retrying", "dataflow", r.name, "messages", len(msgs), "attempt", attempt+1, "err", err)
		}
		if !sleepCtx(ctx, r.backoff.delay(attempt)) {
			return false
		}
	}
}

// deadLetter sends m, with the error in user properties, to the dead-letter
// destination (retrying like any send); without one it is logged. It
// returns false when ctx ended first.
func (r *runner) deadLetter(ctx context.Context, m *stage.Message, kind stage.ErrorKind, cause error) bool {
	r.m.deadLettered.Inc()
	if r.dead == nil {
		r.errLog.Log(slog.LevelError, "dropped "+r.name+" "+string(kind), "message dropped: no deadLetter destination",
			"dataflow", r.name, "topic", m.Topic, "kind", string(kind), "err", cause)
		return true
	}
	dl := m.Clone()
	if dl.SourceTopic == "" {
		dl.SourceTopic = m.Topic
	}
	dl.UserProperties = append(dl.UserProperties,
		stage.UserProperty{Key: PropError, Value: cause.Error()},
		stage.UserProperty{Key: PropErrorKind, Value: string(kind)},
		stage.UserProperty{Key: PropDataflow, Value: r.name},
		stage.UserProperty{Key: PropErrorTime, Value: r.now().UTC().Format(time.RFC3339Nano)},
	)
	var se *SchemaError
	if errors.As(cause, &se) {
		dl.UserProperties = append(dl.UserProperties, stage.UserProperty{Key: PropSchema, Value: se.Ref})
		var me *config.MessageError
		if errors.As(se.Err, &me) {
			path := me.InstancePath
			if path == "" {
				path = "/"
			}
			dl.UserProperties = append(dl.UserProperties,
				stage.UserProperty{Key: PropErrorPath, Value: path},
				stage.UserProperty{Key: PropErrorKeyword, Value: me.Keyword})
		}
	}
	for attempt := 0; ; attempt++ {
		err := r.dead.Send(ctx, []*stage.Message{dl})
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if errors.Is(err, stage.ErrPermanent) {
			r.errLog.Log(slog.LevelError, "dead-letter rejected "+r.name, "dead-letter destination rejected a message; dropped",
				"dataflow", r.name, "topic", m.Topic, "err", err)
			return true
		}
		r.m.retries.Inc()
		if !sleepCtx(ctx, r.backoff.delay(attempt)) {
			return false
		}
	}
}

// backoff doubles from initial up to max.
type backoff struct {
	initial, max time.Duration
}

func (b backoff) delay(attempt int) time.Duration {
	d := b.initial
	for range min(attempt, 40) {
		d *= 2
		if d >= b.max {
			return b.max
		}
	}
	return min(d, b.max)
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
