package connector

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"
	"time"
)

// item is one message waiting to be sent.
type item struct {
	msg *Message
	key string // state store key; msg.Topic is empty then
	ds  *datasetStats
	typ string    // connector type, a metric label
	src time.Time // oldest source timestamp, for the latency histogram
}

// outbox is the bounded publish buffer between drivers and the broker.
// Drivers enqueue without ever blocking; a full shard drops the new message
// and counts it. Messages are sharded by topic (or key), so one topic's
// messages leave in order, and each shard has a sender goroutine that
// waits for the broker's acknowledgement before sending the next.
type outbox struct {
	pub     Publisher
	ss      StateStore
	m       *metrics
	retries int
	backoff time.Duration
	seed    maphash.Seed
	shards  []*shard
	wg      sync.WaitGroup // the senders
}

type shard struct {
	mu sync.Mutex
	q  []item // guarded by mu
	// taken counts items the sender took from q and has not finished;
	// guarded by mu. len(q)+taken is bounded by max.
	taken int
	max   int
	wake  chan struct{} // capacity 1: something was queued
}

func newOutbox(pub Publisher, ss StateStore, m *metrics, shards, capacity int) *outbox {
	o := &outbox{pub: pub, ss: ss, m: m, retries: 3, backoff: 100 * time.Millisecond, seed: maphash.MakeSeed()}
	per := max(capacity/shards, 1)
	for range shards {
		o.shards = append(o.shards, &shard{max: per, wake: make(chan struct{}, 1)})
	}
	return o
}

// enqueue queues it, or drops it when its shard is full.
func (o *outbox) enqueue(it item) bool {
	k := it.key
	if it.msg != nil && it.msg.Topic != "" {
		k = it.msg.Topic
	}
	s := o.shards[maphash.String(o.seed, k)%uint64(len(o.shards))]
	s.mu.Lock()
	if len(s.q)+s.taken >= s.max {
		s.mu.Unlock()
		o.drop(it, dropBufferFull)
		return false
	}
	s.q = append(s.q, it)
	s.mu.Unlock()
	o.m.buffered.Inc()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

func (o *outbox) drop(it item, reason string) {
	o.m.dropped.WithLabelValues(it.typ, reason).Inc()
	if it.ds != nil {
		it.ds.addDropped()
	}
}

// start runs a sender per shard until ctx ends; then each sender sends
// what is queued with flush (the stop deadline), and drops the rest.
func (o *outbox) start(ctx, flush context.Context) {
	for _, s := range o.shards {
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			o.send(ctx, flush, s)
		}()
	}
}

func (o *outbox) wait() { o.wg.Wait() }

func (o *outbox) send(ctx, flush context.Context, s *shard) {
	var batch []item
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			batch, s.q = s.q, nil
			s.mu.Unlock()
			for _, it := range batch {
				o.m.buffered.Dec()
				if flush.Err() != nil {
					o.drop(it, dropShutdown)
					continue
				}
				o.deliver(flush, it)
			}
			return
		case <-s.wake:
		}
		s.mu.Lock()
		batch, s.q = s.q, batch[:0]
		s.taken = len(batch)
		s.mu.Unlock()
		for i, it := range batch {
			o.deliver(ctx, it)
			batch[i] = item{} // let the message be collected
			o.m.buffered.Dec()
			s.mu.Lock()
			s.taken--
			s.mu.Unlock()
		}
	}
}

// deliver sends one item, retrying a few times with backoff (a broker
// restarting, a client reconnecting) before dropping it.
func (o *outbox) deliver(ctx context.Context, it item) {
	var err error
	for attempt := 0; ; attempt++ {
		if it.msg != nil && it.key == "" {
			err = o.pub.Publish(ctx, it.msg)
		} else if o.ss == nil {
			o.drop(it, dropNoStateStore)
			return
		} else {
			err = o.ss.Set(ctx, it.key, it.msg.Payload)
		}
		if err == nil {
			break
		}
		if attempt >= o.retries || errors.Is(err, context.Canceled) || ctx.Err() != nil {
			o.drop(it, dropPublishError)
			if it.ds != nil {
				it.ds.setPublishError(err)
			}
			return
		}
		t := time.NewTimer(o.backoff << attempt)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	if it.ds != nil {
		it.ds.addMessage()
		o.m.messages.WithLabelValues(it.typ, it.ds.asset, it.ds.name).Inc()
	}
	if !it.src.IsZero() {
		o.m.latency.WithLabelValues(it.typ).Observe(time.Since(it.src).Seconds())
	}
}
