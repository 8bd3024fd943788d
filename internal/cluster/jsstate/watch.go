package jsstate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/lograte"
)

// A bucket watch reads every change of a key-value bucket, in the
// bucket's order, from an ephemeral R1 consumer that JetStream places on
// any server holding a replica of the bucket's stream. nats.go's own
// key-value watch (an ordered push consumer) does that too, but it can
// stop reading for good while looking alive:
//
//   - its consumer placed on a replica that is behind (a node cut off from
//     the others, then healed) delivers what that replica holds, and the
//     replica catches up out of band (a Raft catch-up, not the log),
//     which does not wake the consumer: it goes on sending heartbeats and
//     delivers nothing more until the bucket's next write. The isolation
//     fault test saw it: after the heal, the healed node's retained
//     index lacked every change made while it was cut off, and a
//     SUBSCRIBE there got none of them;
//   - its heartbeat is 5 s, not settable: a consumer on a lost server is
//     made again only after 10 s, and a failed attempt is retried only at
//     the next missed heartbeat;
//   - an attempt that fails otherwise ends the watch (its updates close)
//     and nothing makes it again.
//
// So the watch is made here, with a pull consumer of watchHeartbeat, and
// checked: when it has read nothing for watchCheck it asks the stream's
// leader for the bucket's last revision, and a watch that stays behind a
// revision the leader has, without reading anything, for watchStall (or
// whose consumer fails, misses two heartbeats, or skips a delivery) is
// given a new consumer that starts after the last revision it read.
type bucketWatch struct {
	stream  jetstream.Stream
	bucket  string
	prefix  string // the bucket's subjects' ($KV.<bucket>.)
	updates chan jetstream.KeyValueEntry
	wg      *sync.WaitGroup
	errs    *lograte.Limiter
	note    *lograte.Limiter   // restarts, each worth a line but not a flood
	end     context.CancelFunc // ends the watch before its life does

	mu   sync.Mutex // guards the fields below
	next uint64     // the first revision not read (0: nothing read yet)
	// readAt is when the watch last read a change, or got a new consumer.
	readAt time.Time
	// behind is a last revision of the bucket the watch has not read
	// yet (0: none known), behindAt since when it has read nothing.
	behind   uint64
	behindAt time.Time
	it       jetstream.MessagesContext // the consumer's messages; nil between consumers
	consumer string                    // its consumer's name
	restarts int                       // consumers made after a stall
}

const (
	// watchHeartbeat is how often JetStream tells a watch its consumer
	// is alive while there is nothing to read; two missed and the watch
	// makes a new one (as the session followers, followHeartbeat).
	watchHeartbeat = followHeartbeat
	// watchCheck is how long a watch may read nothing before it asks the
	// stream's leader whether it is behind (one request a second while a
	// bucket is idle).
	watchCheck = time.Second
	// watchStall is how long a watch may stay behind a revision the
	// leader has without reading anything before it gets a new consumer.
	watchStall = time.Second
	// watchOpenTimeout bounds making a consumer (JetStream answers in
	// milliseconds; without a quorum it does not).
	watchOpenTimeout = 5 * time.Second
	// The watch waits between failed attempts to make a consumer from
	// watchRetryMin, doubling up to watchRetryMax.
	watchRetryMin = 100 * time.Millisecond
	watchRetryMax = time.Second
)

// The values of a key-value deletion's kvOperation header (nats.go's).
const (
	kvDelete = "DEL"
	kvPurge  = "PURGE"
)

// watchBucket starts a watch of bucket and run on it (run calls wg.Done
// when its updates end, and closes caughtUp on the nil entry that follows
// the bucket's content). It returns once run has caught up with the
// bucket's current entries (at most ctx; past it the watch is ended).
// The watch lasts until life ends (wg waits for its goroutines). Ending
// it sends nothing to JetStream: the server removes a consumer nobody
// pulls from after watchInactive.
func watchBucket(ctx, life context.Context, js jetstream.JetStream, bucket string, wg *sync.WaitGroup,
	log *slog.Logger, run func(jetstream.KeyWatcher, chan<- struct{})) (*bucketWatch, error) {
	stream, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("watching bucket %s: %w", bucket, err)
	}
	life, end := context.WithCancel(life)
	w := &bucketWatch{
		stream:  stream,
		bucket:  bucket,
		prefix:  "$KV." + bucket + ".",
		updates: make(chan jetstream.KeyValueEntry, 256),
		wg:      wg,
		errs:    lograte.New(log, time.Minute),
		note:    lograte.New(log, 10*time.Second),
		readAt:  time.Now(),
		end:     end,
	}
	caughtUp := make(chan struct{})
	wg.Add(3)
	go w.feed(life)
	go w.check(life)
	go run(w, caughtUp)
	select {
	case <-caughtUp:
		return w, nil
	case <-ctx.Done():
		w.end()
		return nil, fmt.Errorf("reading bucket %s: %w", bucket, ctx.Err())
	}
}

// Updates implements jetstream.KeyWatcher: the bucket's entries (the
// last of each key, then a nil entry, then every change), closed when
// the watch's life ends.
func (w *bucketWatch) Updates() <-chan jetstream.KeyValueEntry { return w.updates }

// Stop implements jetstream.KeyWatcher; the watch ends with its life.
func (w *bucketWatch) Stop() error { return nil }

// feed reads the bucket from one consumer after another until life ends,
// then closes the updates.
func (w *bucketWatch) feed(life context.Context) {
	defer w.wg.Done()
	defer close(w.updates)
	defer context.AfterFunc(life, w.stopConsumer)()
	initDone := false
	var initLeft uint64 // entries of the bucket's content still to read
	wait := watchRetryMin
	for life.Err() == nil {
		it, pending, err := w.open(life)
		if err != nil {
			if life.Err() == nil {
				w.errs.Log(slog.LevelWarn, "watch-open", "watching a bucket: making its consumer", "bucket", w.bucket, "err", err)
			}
			select {
			case <-life.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, watchRetryMax)
			continue
		}
		wait = watchRetryMin
		if !initDone {
			initLeft = pending
			if pending == 0 {
				initDone = true
				if !w.send(life, nil) {
					return
				}
			}
		}
		var delivered uint64 // the consumer's sequence of the last message read
		for {
			msg, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					w.errs.Log(slog.LevelInfo, "watch-read", "watching a bucket: making a new consumer", "bucket", w.bucket, "err", err)
				}
				break
			}
			md, err := msg.Metadata()
			if err != nil || md.Sequence.Consumer != delivered+1 {
				break // not in order: read again from the last one read
			}
			delivered = md.Sequence.Consumer
			e := w.entry(msg, md)
			if e != nil && !w.send(life, e) {
				break
			}
			w.read(md.Sequence.Stream)
			if !initDone {
				if initLeft > 0 {
					initLeft--
				}
				if initLeft == 0 || md.NumPending == 0 {
					initDone = true
					if !w.send(life, nil) {
						break
					}
				}
			}
		}
		it.Stop()
		w.mu.Lock()
		w.it = nil
		w.mu.Unlock()
	}
}

// open makes a consumer that starts after the last revision read (at
// first: the last entry of each key) and returns its messages and how
// many it had to deliver when made.
func (w *bucketWatch) open(life context.Context) (jetstream.MessagesContext, uint64, error) {
	w.mu.Lock()
	next := w.next
	w.mu.Unlock()
	cfg := jetstream.ConsumerConfig{
		FilterSubject:     w.prefix + ">",
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: watchInactive,
	}
	if next == 0 {
		cfg.DeliverPolicy = jetstream.DeliverLastPerSubjectPolicy
	} else {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = next
	}
	ctx, cancel := context.WithTimeout(life, watchOpenTimeout)
	cons, err := w.stream.CreateConsumer(ctx, cfg)
	cancel()
	if err != nil {
		return nil, 0, err
	}
	it, err := cons.Messages(jetstream.PullHeartbeat(watchHeartbeat), jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return nil, 0, err
	}
	info := cons.CachedInfo()
	w.mu.Lock()
	defer w.mu.Unlock()
	if life.Err() != nil { // stopConsumer has run: nobody stops this one
		it.Stop()
		return nil, 0, life.Err()
	}
	w.it, w.consumer, w.readAt = it, info.Name, time.Now()
	return it, info.NumPending, nil
}

// watchInactive is how long JetStream keeps a watch's consumer nobody
// pulls from (one the watch replaced, or whose node is gone).
const watchInactive = 30 * time.Second

// stopConsumer ends the current consumer's messages: feed makes a new
// one, unless the watch's life ended.
func (w *bucketWatch) stopConsumer() {
	w.mu.Lock()
	it := w.it
	w.mu.Unlock()
	if it != nil {
		it.Stop()
	}
}

// send hands e to the watch's reader; false when life ended first.
func (w *bucketWatch) send(life context.Context, e jetstream.KeyValueEntry) bool {
	select {
	case w.updates <- e:
		return true
	case <-life.Done():
		return false
	}
}

// read notes that the watch read revision rev.
func (w *bucketWatch) read(rev uint64) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.next, w.readAt = rev+1, now
	if w.behind != 0 {
		if w.behind < w.next {
			w.behind = 0
		} else {
			w.behindAt = now
		}
	}
}

// noteLast tells the watch the bucket's stream leader had revision last.
func (w *bucketWatch) noteLast(last uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if last < max(w.next, 1) {
		return // read already
	}
	if w.behind == 0 {
		w.behindAt = time.Now()
	}
	w.behind = max(w.behind, last)
}

// check makes a new consumer for a watch that stays behind the bucket
// without reading anything, asking the stream's leader for the bucket's
// last revision when the watch has been idle for watchCheck.
func (w *bucketWatch) check(life context.Context) {
	defer w.wg.Done()
	tick := time.NewTicker(watchStall / 4)
	defer tick.Stop()
	var asked time.Time
	for {
		select {
		case <-life.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		w.mu.Lock()
		open := w.it != nil
		stalled := open && w.behind != 0 && now.Sub(w.behindAt) >= watchStall
		idle := open && w.behind == 0 && now.Sub(w.readAt) >= watchCheck && now.Sub(asked) >= watchCheck
		w.mu.Unlock()
		switch {
		case stalled:
			w.restart()
		case idle:
			asked = now
			ctx, cancel := context.WithTimeout(life, watchCheck)
			info, err := w.stream.Info(ctx)
			cancel()
			if err == nil {
				w.noteLast(info.State.LastSeq)
			}
		}
	}
}

// restart replaces the watch's consumer with one that starts after the
// last revision read.
func (w *bucketWatch) restart() {
	w.mu.Lock()
	it, consumer, from, last := w.it, w.consumer, w.next, w.behind
	w.behind = 0
	w.restarts++
	w.mu.Unlock()
	w.note.Log(slog.LevelInfo, "restart", "bucket watch behind its bucket and reading nothing: reading it again from a new consumer",
		"bucket", w.bucket, "from", from, "last", last, "consumer", consumer)
	if it != nil {
		it.Stop()
	}
}

// entry is the key-value entry of msg, nil when msg is no key's.
func (w *bucketWatch) entry(msg jetstream.Msg, md *jetstream.MsgMetadata) jetstream.KeyValueEntry {
	key, ok := strings.CutPrefix(msg.Subject(), w.prefix)
	if !ok || key == "" {
		return nil
	}
	e := &watchEntry{bucket: w.bucket, key: key, value: msg.Data(), rev: md.Sequence.Stream,
		created: md.Timestamp, delta: md.NumPending, op: jetstream.KeyValuePut}
	h := msg.Headers()
	switch op, reason := h.Get(kvOperation), h.Get(jetstream.MarkerReasonHeader); {
	case op == kvDelete, op == "" && reason == "Remove":
		e.op = jetstream.KeyValueDelete
	case op == kvPurge, op == "" && (reason == "MaxAge" || reason == "Purge"):
		e.op = jetstream.KeyValuePurge
	}
	return e
}

// watchEntry is a jetstream.KeyValueEntry a bucketWatch read.
type watchEntry struct {
	bucket, key string
	value       []byte
	rev, delta  uint64
	created     time.Time
	op          jetstream.KeyValueOp
}

func (e *watchEntry) Bucket() string                  { return e.bucket }
func (e *watchEntry) Key() string                     { return e.key }
func (e *watchEntry) Value() []byte                   { return e.value }
func (e *watchEntry) Revision() uint64                { return e.rev }
func (e *watchEntry) Created() time.Time              { return e.created }
func (e *watchEntry) Delta() uint64                   { return e.delta }
func (e *watchEntry) Operation() jetstream.KeyValueOp { return e.op }
