package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// takeoverWait bounds how long a move may take: the new connection's
// handshake, and the old connection's DISCONNECT after it.
const takeoverWait = 10 * time.Second

// takeover moves Clients persistent sessions from server to server for
// Duration, at Rate moves per second over all of them (0: each as fast as
// it goes). Each client identifier connects again, with Clean Start 0,
// on the next server while its previous connection is still open; a move
// is timed from the new connection's dial to its CONNACK (which must say
// Session Present) and to the old connection's DISCONNECT 0x8E (Session
// taken over) or, from a server that sends none, its end: the moment the
// session has left the old server. With one
// server the session moves on that server, the single-node baseline.
func (r *runner) takeover(ctx context.Context) (*Result, error) {
	n := r.o.Clients
	id := func(i int) string { return fmt.Sprintf("%s-t%d", r.id, i) }
	opts := func(i int) ClientOptions {
		return ClientOptions{ClientID: id(i), ReadBuffer: 4 << 10, Persistent: true, Version: r.o.Version}
	}
	r.progress("takeover: connecting %d persistent sessions", n)
	// Each session holds a subscription, so that a move carries state.
	first, _, err := r.dialMany(ctx, n, r.server, opts, func(ctx context.Context, i int, c *Client) error {
		return c.Subscribe(ctx, packet.Subscription{Filter: fmt.Sprintf("%s/takeover/%d", r.prefix, i), QoS: 1})
	})
	if err != nil {
		return nil, err
	}
	r.progress("takeover: moving them between %d server(s) for %s", len(r.o.Servers), r.o.Duration)
	start := time.Now()
	// Moving stops at the deadline; a move under way then uses ctx.
	runCtx, cancel := context.WithDeadline(ctx, start.Add(r.o.Duration))
	defer cancel()
	movers := make([]*mover, n)
	var wg sync.WaitGroup
	for i := range movers {
		m := &mover{r: r, opts: opts(i), at: i % len(r.o.Servers), cur: first[i],
			toGone: NewHistogram(), toAck: NewHistogram()}
		movers[i] = m
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.run(ctx, runCtx.Done(), r.o.Rate/float64(n))
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.progress("takeover: ending the sessions")
	// Leave nothing behind: a clean start ends each session.
	for _, m := range movers {
		m.end(ctx)
	}

	res := r.result()
	res.Connections = n
	res.Seconds = elapsed.Seconds()
	gone, ack := NewHistogram(), NewHistogram()
	for _, m := range movers {
		gone.Merge(m.toGone)
		ack.Merge(m.toAck)
		res.Takeovers += m.moved
		res.Untold += m.untold
		res.Errors += m.failed
		if res.FirstError == "" && m.firstErr != nil {
			res.FirstError = m.firstErr.Error()
		}
	}
	res.TakeoverRate = float64(res.Takeovers) / elapsed.Seconds()
	res.Latency = summarize(gone)
	al := summarize(ack)
	res.ConnAckLatency = &al
	return res, nil
}

// mover is one client identifier moving its session; its fields are its
// goroutine's until run returns.
type mover struct {
	r        *runner
	opts     ClientOptions
	at       int     // index of the server cur is connected to
	cur      *Client // the connection holding the session, nil after a failure
	toGone   *Histogram
	toAck    *Histogram
	moved    int64
	untold   int64 // moves whose old connection was closed without DISCONNECT
	failed   int64
	firstErr error
}

func (m *mover) fail(err error) {
	m.failed++
	if m.firstErr == nil {
		m.firstErr = fmt.Errorf("%s: %w", m.opts.ClientID, err)
	}
}

// run moves the session until end is closed, at rate moves per second (0:
// one after the other). A move under way when end closes is finished
// (bounded by ctx) and counted, so that the end of the run never passes
// for a failure.
func (m *mover) run(ctx context.Context, end <-chan struct{}, rate float64) {
	servers := m.r.o.Servers
	var timer *time.Timer
	if rate > 0 {
		timer = time.NewTimer(time.Hour)
		defer timer.Stop()
	}
	start := time.Now()
	for n := 0; ; n++ {
		select {
		case <-end:
			return
		default:
		}
		if rate > 0 {
			due := start.Add(time.Duration(float64(n) / rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-end:
					return
				}
			}
		}
		m.at = (m.at + 1) % len(servers)
		if err := m.move(ctx, servers[m.at]); err != nil {
			if ctx.Err() != nil {
				return
			}
			m.fail(err)
		}
	}
}

// move connects the session on addr and waits for the old connection to
// be told it was taken over.
func (m *mover) move(ctx context.Context, addr string) error {
	old := m.cur
	dctx, cancel := context.WithTimeout(ctx, takeoverWait)
	defer cancel()
	t0 := time.Now()
	next, err := Dial(dctx, addr, m.opts)
	if err != nil {
		return err
	}
	acked := time.Since(t0)
	m.cur = next
	if old == nil {
		return nil // the previous move failed: this one only reconnects
	}
	defer old.Close()
	if !next.SessionPresent() {
		return fmt.Errorf("CONNACK on %s without Session Present", addr)
	}
	wait := time.NewTimer(takeoverWait)
	defer wait.Stop()
	select {
	case <-old.Done():
	case <-wait.C:
		return fmt.Errorf("old connection not told of the takeover by %s within %s", addr, takeoverWait)
	case <-ctx.Done():
		return ctx.Err()
	}
	// MQTT 5 wants DISCONNECT 0x8E; mosquitto 2.0 (and any 3.1.1 server)
	// closes the connection without a word, which ends the session there
	// too, and is counted.
	var rc packet.ReasonCode
	if errors.As(old.Err(), &rc) {
		if rc != packet.SessionTakenOver {
			return fmt.Errorf("old connection told %v, not %v", rc, packet.SessionTakenOver)
		}
	} else {
		m.untold++
	}
	m.moved++
	m.toAck.Record(int64(acked))
	m.toGone.Record(int64(old.DoneAt().Sub(t0)))
	return nil
}

// end ends the session with a clean start on its last server.
func (m *mover) end(ctx context.Context) {
	if m.cur != nil {
		m.cur.Close()
	}
	ctx, cancel := context.WithTimeout(ctx, takeoverWait)
	defer cancel()
	o := m.opts
	o.Persistent = false
	if c, err := Dial(ctx, m.r.o.Servers[m.at], o); err == nil {
		c.Close()
	}
}
