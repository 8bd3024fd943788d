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

// A stream reader reads the messages of a stream that match its filter
// subjects, in the stream's order, from an ephemeral R1 consumer that
// JetStream places on any server holding a replica of the stream: the
// bucket watches (owners, retained, state store) and the session
// followers (routed.go) are stream readers. nats.go's own readers (its
// key-value watch, an ordered push consumer; its ordered pull consumer)
// can stop reading while they look alive, or for long:
//
//   - a consumer placed on a replica that is behind (a node cut off from
//     the others, then healed) delivers what that replica holds, and the
//     replica catches up out of band (a Raft catch-up, not the log),
//     which does not wake the consumer: it goes on sending heartbeats and
//     delivers nothing more until the stream's next write, or while the
//     catch-up fails and is tried again ("Expected first catchup entry to
//     be a snapshot and peerstate, will retry"), nothing at all. The
//     isolation fault test saw it: after the heal, the healed node's
//     retained index lacked every change made while it was cut off, and
//     a SUBSCRIBE there got none of them;
//   - the key-value watch's heartbeat is 5 s, not settable: a consumer on
//     a lost server is made again only after 10 s, a failed attempt only
//     at the next missed heartbeat, and an attempt failing otherwise ends
//     the watch (its updates close) for good;
//   - the ordered pull consumer tries again with a backoff growing to
//     10 s, each attempt waiting up to 10 s: after a partition heals, up
//     to 20 s more.
//
// So the reader makes its consumers itself, with a heartbeat of
// readHeartbeat, and checks them: when it has read nothing for
// readCheck it asks the stream's leader for the stream's last sequence,
// and a reader that stays behind a sequence the leader has, without
// reading anything, for readStall (or whose consumer fails, misses two
// heartbeats, or skips a delivery) gets a new consumer that starts after
// the last message it read.
type streamReader struct {
	stream  jetstream.Stream
	what    string   // what it reads, for logs
	filters []string // the subjects it reads
	some    bool     // not every subject of the stream
	first   jetstream.DeliverPolicy
	// opened is told, for each new consumer, how many messages it had to
	// deliver when made; read gets each message, in the stream's order.
	// Either returns false when the reader's life ended.
	opened func(pending uint64) bool
	read   func(msg jetstream.Msg, md *jetstream.MsgMetadata) bool
	// stopped, when set, is called once the reader stopped reading.
	stopped func()
	wg      *sync.WaitGroup
	errs    *lograte.Limiter
	note    *lograte.Limiter // restarts, each worth a line but not a flood

	mu   sync.Mutex // guards the fields below
	next uint64     // the first sequence not read (0: nothing read yet)
	// readAt is when the reader last read a message, or got a new consumer.
	readAt time.Time
	// behind is a last sequence of the stream the reader has not read
	// yet (0: none known), behindAt since when it has read nothing.
	behind   uint64
	behindAt time.Time
	it       jetstream.MessagesContext // the consumer's messages; nil between consumers
	consumer string                    // its consumer's name
	server   string                    // the server JetStream placed it on
	restarts int                       // consumers made after a stall
}

const (
	// readHeartbeat is how often JetStream tells a reader its consumer
	// is alive while there is nothing to read; two missed and the reader
	// makes a new one. nats.go's default for ordered consumers, 5 s, left
	// a survivor's routed deliveries and session index stalled for 10 s
	// after a node was lost; at 1 s it is 2 s, for one small message a
	// second per reader.
	readHeartbeat = time.Second
	// readCheck is how long a reader may read nothing before it asks the
	// stream's leader whether it is behind (one request a second per
	// idle reader).
	readCheck = time.Second
	// readStall is how long a reader may stay behind a sequence the
	// leader has without reading anything before it gets a new consumer.
	readStall = time.Second
	// readOpenTimeout bounds making a consumer (JetStream answers in
	// milliseconds; without a quorum it does not).
	readOpenTimeout = 5 * time.Second
	// A reader waits between failed attempts to make a consumer from
	// readRetryMin, doubling up to readRetryMax.
	readRetryMin = 100 * time.Millisecond
	readRetryMax = time.Second
	// readSettle is how long a reader waits between making a consumer
	// and its first pull request. JetStream answers the creation before
	// the other servers know where the consumer takes its requests, and a
	// request sent at once to another server is dropped (nats.go ignores
	// the "no responders" it gets): the reader then got nothing until its
	// heartbeats were missed, 2 s (2 in 15 consumers of a three-node test
	// cluster; 0 in 15 after a 100 ms wait, which only makes it rarer).
	readSettle = 100 * time.Millisecond
	// readInactive is how long JetStream keeps a reader's consumer nobody
	// pulls from (one the reader replaced, or whose node is gone).
	readInactive = 30 * time.Second
)

// newStreamReader returns a reader of stream's subjects filters (some:
// not all of the stream's) whose first consumer starts by policy first;
// set its callbacks, then start it.
func newStreamReader(stream jetstream.Stream, what string, filters []string, some bool, first jetstream.DeliverPolicy,
	wg *sync.WaitGroup, log *slog.Logger) *streamReader {
	return &streamReader{stream: stream, what: what, filters: filters, some: some, first: first, wg: wg,
		errs: lograte.New(log, time.Minute), note: lograte.New(log, 10*time.Second), readAt: time.Now()}
}

// start reads until life ends (wg waits for it).
func (r *streamReader) start(life context.Context) {
	r.wg.Add(2)
	go r.feed(life)
	go r.check(life)
}

// feed reads from one consumer after another until life ends.
func (r *streamReader) feed(life context.Context) {
	defer r.wg.Done()
	if r.stopped != nil {
		defer r.stopped()
	}
	defer context.AfterFunc(life, r.stopConsumer)()
	wait := readRetryMin
	for life.Err() == nil {
		it, pending, err := r.open(life)
		if err != nil {
			if life.Err() == nil {
				r.errs.Log(slog.LevelWarn, "open", "making a consumer", "of", r.what, "err", err)
			}
			select {
			case <-life.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, readRetryMax)
			continue
		}
		wait = readRetryMin
		if !r.opened(pending) {
			it.Stop()
			return
		}
		var delivered uint64 // the consumer's sequence of the last message read
		for {
			msg, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					r.errs.Log(slog.LevelInfo, "read", "making a new consumer", "of", r.what, "err", err)
				}
				break
			}
			md, err := msg.Metadata()
			if err != nil || md.Sequence.Consumer != delivered+1 {
				break // not in order: read again from the last one read
			}
			delivered = md.Sequence.Consumer
			if !r.read(msg, md) {
				break
			}
			r.readTo(md.Sequence.Stream)
		}
		it.Stop()
		r.mu.Lock()
		r.it = nil
		r.mu.Unlock()
	}
}

// open makes a consumer that starts after the last message read (at
// first: as r.first says) and returns its messages and how many it had to
// deliver when made.
func (r *streamReader) open(life context.Context) (jetstream.MessagesContext, uint64, error) {
	r.mu.Lock()
	next := r.next
	r.mu.Unlock()
	cfg := jetstream.ConsumerConfig{
		DeliverPolicy:     r.first,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: readInactive,
	}
	if len(r.filters) == 1 {
		cfg.FilterSubject = r.filters[0]
	} else {
		cfg.FilterSubjects = r.filters
	}
	if next > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = next
	}
	var cons jetstream.Consumer
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(life, readOpenTimeout)
		c, err := r.stream.CreateConsumer(ctx, cfg)
		cancel()
		if err != nil {
			return nil, 0, err
		}
		cons = c
		if attempt == placeAttempts {
			break
		}
		server, lagging := r.lagging(life, c)
		if !lagging {
			break
		}
		r.note.Log(slog.LevelInfo, "placed", "a reader's new consumer is on a replica that is behind: making another",
			"of", r.what, "consumer", c.CachedInfo().Name, "on", server)
		ctx, cancel = context.WithTimeout(life, readCheck)
		_ = r.stream.DeleteConsumer(ctx, c.CachedInfo().Name) // else it goes after readInactive
		cancel()
	}
	select {
	case <-life.Done():
		return nil, 0, life.Err()
	case <-time.After(readSettle):
	}
	it, err := cons.Messages(jetstream.PullHeartbeat(readHeartbeat), jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return nil, 0, err
	}
	info := cons.CachedInfo()
	r.mu.Lock()
	defer r.mu.Unlock()
	if life.Err() != nil { // stopConsumer has run: nobody stops this one
		it.Stop()
		return nil, 0, life.Err()
	}
	r.it, r.consumer, r.readAt = it, info.Name, time.Now()
	r.server = ""
	if info.Cluster != nil {
		r.server = info.Cluster.Leader
	}
	return it, info.NumPending, nil
}

// placeAttempts bounds the consumers a reader makes in a row because
// JetStream placed them on a replica that is behind; the last one is
// kept (read from until it stalls).
const placeAttempts = 3

// lagging reports whether JetStream placed cons on a replica of the
// stream that is not current (its leader says: it is catching up, or
// unreachable), and names that server. JetStream places a consumer on
// any replica, and one on a replica that catches up out of band reads
// nothing until it stalls and is replaced (see streamReader): a node
// just healed from a partition, whose own replicas are behind, would
// otherwise often read from them. On failure to tell, it reports false.
func (r *streamReader) lagging(life context.Context, cons jetstream.Consumer) (string, bool) {
	ci := cons.CachedInfo()
	if ci.Cluster == nil || ci.Cluster.Leader == "" {
		return "", false
	}
	server := ci.Cluster.Leader
	ctx, cancel := context.WithTimeout(life, readCheck)
	defer cancel()
	info, err := r.stream.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == server {
		return server, false
	}
	for _, p := range info.Cluster.Replicas {
		if p.Name == server {
			return server, !p.Current || p.Offline
		}
	}
	return server, false
}

// stopConsumer ends the current consumer's messages: feed makes a new
// one, unless the reader's life ended.
func (r *streamReader) stopConsumer() {
	r.mu.Lock()
	it := r.it
	r.mu.Unlock()
	if it != nil {
		it.Stop()
	}
}

// readTo notes that the reader read the message at sequence seq.
func (r *streamReader) readTo(seq uint64) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next, r.readAt = seq+1, now
	if r.behind != 0 {
		if r.behind < r.next {
			r.behind = 0
		} else {
			r.behindAt = now
		}
	}
}

// noteLast tells the reader the stream's leader had sequence last.
func (r *streamReader) noteLast(last uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if last < max(r.next, 1) {
		return // read already
	}
	if r.behind == 0 {
		r.behindAt = time.Now()
	}
	r.behind = max(r.behind, last)
}

// check makes a new consumer for a reader that stays behind the stream
// without reading anything, asking the stream's leader for its last
// sequence when the reader has been idle for readCheck.
func (r *streamReader) check(life context.Context) {
	defer r.wg.Done()
	tick := time.NewTicker(readStall / 4)
	defer tick.Stop()
	var asked time.Time
	for {
		select {
		case <-life.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		r.mu.Lock()
		open := r.it != nil
		stalled := open && r.behind != 0 && now.Sub(r.behindAt) >= readStall
		idle := open && r.behind == 0 && now.Sub(r.readAt) >= readCheck && now.Sub(asked) >= readCheck
		r.mu.Unlock()
		switch {
		case stalled:
			r.restart()
		case idle:
			asked = now
			ctx, cancel := context.WithTimeout(life, readCheck)
			last, err := r.lastSeq(ctx)
			cancel()
			if err == nil {
				r.noteLast(last)
			}
		}
	}
}

// lastSeq asks the stream's leader for the sequence of the last message
// the reader reads: the stream's last, unless the reader reads only some
// of its subjects and the stream's last is one it has not read; then the
// last of its subjects (one request more per subject).
func (r *streamReader) lastSeq(ctx context.Context) (uint64, error) {
	info, err := r.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	next := r.next
	r.mu.Unlock()
	last := info.State.LastSeq
	if !r.some || last < next {
		return last, nil
	}
	last = 0
	for _, f := range r.filters {
		// Not a direct get, which any replica answers (the session
		// streams do not allow them): the leader's.
		m, err := r.stream.GetLastMsgForSubject(ctx, f)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		last = max(last, m.Sequence)
	}
	return last, nil
}

// restart replaces the reader's consumer with one that starts after the
// last message read.
func (r *streamReader) restart() {
	r.mu.Lock()
	it, consumer, server, from, last := r.it, r.consumer, r.server, r.next, r.behind
	// The next consumer is judged afresh (a sequence it can never read,
	// a tombstone that expired, is not held against it).
	r.behind = 0
	r.restarts++
	r.mu.Unlock()
	r.note.Log(slog.LevelInfo, "restart", "reader behind its stream and reading nothing: reading on from a new consumer",
		"of", r.what, "from", from, "last", last, "consumer", consumer, "on", server)
	if it != nil {
		it.Stop()
	}
}

// bucketWatch is a key-value bucket's watch: a jetstream.KeyWatcher on a
// streamReader of the bucket's stream.
type bucketWatch struct {
	*streamReader
	bucket  string
	prefix  string // the bucket's subjects' ($KV.<bucket>.)
	updates chan jetstream.KeyValueEntry
	end     context.CancelFunc // ends the watch before its life does
	// initDone is set once the nil entry that follows the bucket's
	// content is sent, initLeft counts the entries of the content still to
	// read (both feed's only).
	initDone bool
	initLeft uint64
}

// watchBucket starts a watch of bucket and run on it (run calls wg.Done
// when its updates end, and closes caughtUp on the nil entry that follows
// the bucket's content). It returns once run has caught up with the
// bucket's current entries (at most ctx; past it the watch is ended).
// The watch lasts until life ends (wg waits for its goroutines). Ending
// it sends nothing to JetStream: the server removes a consumer nobody
// pulls from after readInactive.
func watchBucket(ctx, life context.Context, js jetstream.JetStream, bucket string, wg *sync.WaitGroup,
	log *slog.Logger, run func(jetstream.KeyWatcher, chan<- struct{})) (*bucketWatch, error) {
	stream, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("watching bucket %s: %w", bucket, err)
	}
	life, end := context.WithCancel(life)
	w := &bucketWatch{
		bucket:  bucket,
		prefix:  "$KV." + bucket + ".",
		updates: make(chan jetstream.KeyValueEntry, 256),
		end:     end,
	}
	w.streamReader = newStreamReader(stream, "bucket "+bucket, []string{w.prefix + ">"}, false,
		jetstream.DeliverLastPerSubjectPolicy, wg, log)
	w.opened = func(pending uint64) bool {
		if w.initDone {
			return true
		}
		w.initLeft = pending
		if pending > 0 {
			return true
		}
		w.initDone = true
		return w.send(life, nil)
	}
	w.read = func(msg jetstream.Msg, md *jetstream.MsgMetadata) bool {
		if e := w.entry(msg, md); e != nil && !w.send(life, e) {
			return false
		}
		if !w.initDone {
			if w.initLeft > 0 {
				w.initLeft--
			}
			if w.initLeft == 0 || md.NumPending == 0 {
				w.initDone = true
				return w.send(life, nil)
			}
		}
		return true
	}
	w.stopped = func() { close(w.updates) }
	caughtUp := make(chan struct{})
	w.start(life)
	wg.Add(1)
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

// send hands e to the watch's reader; false when life ended first.
func (w *bucketWatch) send(life context.Context, e jetstream.KeyValueEntry) bool {
	select {
	case w.updates <- e:
		return true
	case <-life.Done():
		return false
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

// The values of a key-value deletion's kvOperation header (nats.go's).
const (
	kvDelete = "DEL"
	kvPurge  = "PURGE"
)

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
