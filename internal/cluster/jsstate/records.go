package jsstate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/store"
)

// stored is one client's records as read from its session stream.
type stored struct {
	rec     *store.Session
	entries []store.Entry
	inbound []broker.Inbound
	routed  []routedRec // in stream order
	// through is the stream sequence through which the read went: every
	// record of the session up to it was read, or was gone (a routed
	// delivery taken, its record deleted).
	through uint64
}

// routedRec is a routed delivery (<key>.r.<id>) as read from the stream.
type routedRec struct {
	id  broker.MessageID
	msg []byte // the message record (store.AppendMessage)
	seq uint64 // its stream sequence
}

// add decodes the record on subject (the part after the shard's prefix:
// "<key>.s", "<key>.e.<seq>", "<key>.i.<id>" or "<key>.r.<id>") into st.
func (st *stored) add(clientID, kind, num string, data []byte, seq uint64) error {
	switch kind {
	case "s":
		rec, err := store.DecodeSession(data, clientID)
		if err != nil {
			return err
		}
		st.rec = rec
	case "e":
		seq, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: entry number %q", store.ErrCorrupt, num)
		}
		e, err := store.DecodeEntry(data, seq)
		if err != nil {
			return err
		}
		st.entries = append(st.entries, *e)
	case "i":
		id, err := strconv.ParseUint(num, 10, 16)
		if err != nil || id == 0 {
			return fmt.Errorf("%w: packet identifier %q", store.ErrCorrupt, num)
		}
		in, err := decodeInbound(uint16(id), data)
		if err != nil {
			return err
		}
		st.inbound = append(st.inbound, in)
	case "r":
		id, err := parseRoutedID(num)
		if err != nil {
			return err
		}
		st.routed = append(st.routed, routedRec{id: id, msg: data, seq: seq})
	default:
		return fmt.Errorf("%w: record kind %q", store.ErrCorrupt, kind)
	}
	return nil
}

// sorted puts entries in sequence order and inbound identifiers in
// ascending order, as the broker restores them.
func (st *stored) sorted() {
	slices.SortFunc(st.entries, func(a, b store.Entry) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	slices.SortFunc(st.inbound, func(a, b broker.Inbound) int { return int(a.PacketID) - int(b.PacketID) })
}

// parseSubject splits a session record's subject into the client's key,
// the record kind and its number.
func parseSubject(subject string) (key, kind, num string, ok bool) {
	rest, found := strings.CutPrefix(subject, "edgeport.sessions.")
	if !found {
		return "", "", "", false
	}
	parts := strings.Split(rest, ".")
	switch {
	case len(parts) == 3 && parts[2] == "s":
		return parts[1], "s", "", true
	case len(parts) == 4 && (parts[2] == "e" || parts[2] == "i" || parts[2] == "r"):
		return parts[1], parts[2], parts[3], true
	}
	return "", "", "", false
}

// readRecords reads every record under filters in session stream n with
// one ephemeral consumer, and passes the clients' records to keep (which
// says, by client identifier, which clients to collect). The read covers
// the stream at least through sequence through, which one of filters
// holds (the fence the reader wrote just before, fence.go); 0 asks for
// no such bound.
func (s *Store) readRecords(ctx context.Context, n int, filters []string, through uint64, keep func(clientID string) bool) (map[string]*stored, error) {
	// What this node wrote to the shard before is read too, even while it
	// waits in a stalled stream (pipeline.go): delivered after the
	// adoption, a routed delivery would follow messages given directly.
	s.awaitShard(ctx, n)
	for behind := 0; ; behind++ {
		out, on, last, err := s.readRecordsOnce(ctx, n, filters, keep)
		if err != nil || last >= through {
			for _, st := range out {
				st.through = last
			}
			return out, err
		}
		// The consumer ended before the fence: JetStream placed it on a
		// replica behind the stream's leader (it places an R1 consumer on
		// any replica it counts as caught up in its meta group: a node
		// that has just thawed is, while its replicas of the streams are
		// seconds behind), which serves what that replica holds. This
		// node would adopt the session without what was written since —
		// every routed delivery of a freeze. Read again from a new
		// consumer, which JetStream places anew.
		s.readsBehind.Add(1)
		s.errs.Log(slog.LevelInfo, "records-behind", "read a session's records from a replica that is behind: reading again",
			"shard", n, "through", through, "read", last, "on", on, "attempt", behind+1)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("reading %s through sequence %d: read up to %d on %s: %w", strings.Join(filters, ", "), through, last, on, ctx.Err())
		case <-time.After(readBehindPause):
		}
	}
}

// readBehindPause is how long a read from a replica that is behind waits
// before it reads again from a new consumer.
const readBehindPause = 50 * time.Millisecond

// readRecordsOnce is one read of readRecords: the records, the server
// the consumer was on, and the last stream sequence it read.
func (s *Store) readRecordsOnce(ctx context.Context, n int, filters []string, keep func(clientID string) bool) (out map[string]*stored, on string, last uint64, err error) {
	st := s.streams[n]
	cfg := jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute,
	}
	if len(filters) == 1 {
		cfg.FilterSubject = filters[0]
	} else {
		cfg.FilterSubjects = filters
	}
	what := strings.Join(filters, ", ")
	var cons jetstream.Consumer
	for {
		cons, err = st.CreateConsumer(ctx, cfg)
		if err == nil {
			break
		}
		if err := retryable(ctx, err); err != nil {
			return nil, "", 0, fmt.Errorf("reading %s: %w", what, err)
		}
	}
	defer func() {
		// Deleted now rather than after InactiveThreshold, within ctx: a
		// caller that gave up (Ownership.Stop ends an adoption; a claim
		// runs out of ClaimTimeout) does not wait for a JetStream that may
		// not answer (no quorum: a node left alone took the 5 s of this
		// deletion to stop). The server removes the consumer itself then.
		if ctx.Err() != nil {
			return
		}
		dctx, cancel := context.WithTimeout(ctx, consumerDeleteTimeout)
		defer cancel()
		_ = st.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	if ci := cons.CachedInfo().Cluster; ci != nil {
		on = ci.Leader
	}
	out = make(map[string]*stored)
	empty := 0
	if cons.CachedInfo().NumPending == 0 {
		return out, on, 0, nil
	}
	for {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			if err := retryable(ctx, err); err != nil {
				return nil, on, last, fmt.Errorf("reading %s: %w", what, err)
			}
			continue
		}
		got, done := 0, false
		for m := range batch.Messages() {
			got++
			var seq uint64
			if md, err := m.Metadata(); err == nil {
				seq = md.Sequence.Stream
				last = max(last, seq)
				done = done || md.NumPending == 0
			}
			if len(m.Data()) == 0 {
				continue // a tombstone
			}
			key, kind, num, ok := parseSubject(m.Subject())
			if !ok {
				if !isFence(m.Subject()) {
					s.log.Warn("ignoring a session record", "subject", m.Subject())
				}
				continue
			}
			id, err := clientID(key)
			if err != nil || !keep(id) {
				continue
			}
			rec := out[id]
			if rec == nil {
				rec = &stored{}
				out[id] = rec
			}
			if err := rec.add(id, kind, num, m.Data(), seq); err != nil {
				return nil, on, last, fmt.Errorf("reading %s: %w", m.Subject(), err)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			if err := retryable(ctx, err); err != nil {
				return nil, on, last, fmt.Errorf("reading %s: %w", what, err)
			}
			continue
		}
		if done {
			break // the consumer said nothing more is pending
		}
		if got > 0 {
			empty = 0
		} else {
			// Nothing now, though the last message did not say so: the
			// pull may have come before the consumer had its messages,
			// or the last ones were tombstones that expired. A few short
			// looks tell them apart.
			if empty++; empty == emptyLooks {
				break
			}
			select {
			case <-ctx.Done():
				return nil, on, last, fmt.Errorf("reading %s: %w", what, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	for _, rec := range out {
		rec.sorted()
	}
	return out, on, last, nil
}

// isFence reports whether subject is a session's fence
// (edgeport.sessions.<shard>.<key>, fence.go).
func isFence(subject string) bool {
	rest, ok := strings.CutPrefix(subject, "edgeport.sessions.")
	return ok && strings.Count(rest, ".") == 1
}

// Load implements broker.Durable: the internal clients' sessions from the
// local store (a store that held a single node's sessions before keeps
// them, unused). The sessions this node owns in JetStream are restored by
// the Ownership once JetStream is ready (restoreOwned), and retained
// messages come from the bucket's watch.
func (s *Store) Load(fn store.LoadFuncs) error {
	if fn.Session == nil || s.local == nil {
		return nil
	}
	return s.local.Load(store.LoadFuncs{Session: func(rec *store.Session, entries []store.Entry, inbound []uint16) error {
		if !internal(rec.ClientID) {
			return nil
		}
		return fn.Session(rec, entries, inbound)
	}})
}

// loadSession reads the stored session of clientID, through its fence at
// stream sequence fenced (which this node wrote before the read: fence);
// nil when there is none.
func (s *Store) loadSession(ctx context.Context, id string, fenced uint64) (*stored, error) {
	filters := []string{s.fenceSubject(id), s.sessionSubject(id, ">")}
	recs, err := s.readRecords(ctx, s.shard(id), filters, fenced, func(got string) bool { return got == id })
	if err != nil {
		return nil, err
	}
	r := recs[id]
	if r == nil || r.rec == nil {
		return nil, nil
	}
	return r, nil
}

// consumerDeleteTimeout bounds the deletion of a read's consumer.
const consumerDeleteTimeout = 5 * time.Second

// emptyLooks is how many empty fetches in a row end a read whose last
// message was not seen.
const emptyLooks = 5

// retryable returns nil after a short pause when err is NATS's "no
// responders", which JetStream answers while a stream's leader is being
// elected or a new consumer's interest has not yet reached this server;
// otherwise (or once ctx ends) it returns err.
func retryable(ctx context.Context, err error) error {
	if !errors.Is(err, nats.ErrNoResponders) {
		return err
	}
	select {
	case <-ctx.Done():
		return err
	case <-time.After(20 * time.Millisecond):
		return nil
	}
}
