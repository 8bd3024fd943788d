package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// drainIdle ends the wait for late deliveries when nothing arrived for this long.
const drainIdle = time.Second

// Run executes one scenario and returns its result. It stops by itself after
// the scenario's duration (plus connection set-up and draining), and closes
// every connection it opened before returning.
func Run(ctx context.Context, o Options) (*Result, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &runner{
		o:      o,
		id:     fmt.Sprintf("eb%08x", rand.Uint32()),
		tag:    rand.Uint32(),
		prefix: fmt.Sprintf("%s/%08x", o.TopicPrefix, rand.Uint32()),
	}
	var res *Result
	switch o.Scenario {
	case ConnStorm:
		res, err = r.connStorm(ctx)
	case Idle:
		res, err = r.idle(ctx)
	case StateStore:
		res, err = r.stateStore(ctx)
	case Takeover:
		res, err = r.takeover(ctx)
	default:
		res, err = r.messaging(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Scenario, err)
	}
	return res, nil
}

type runner struct {
	o      Options
	id     string // client identifier prefix, unique per run
	tag    uint32 // marks this run's payloads
	prefix string // topic prefix with this run's random level
}

func (r *runner) progress(format string, args ...any) {
	if r.o.Progress != nil {
		fmt.Fprintf(r.o.Progress, format+"\n", args...)
	}
}

func (r *runner) result() *Result {
	return &Result{
		Scenario:     r.o.Scenario,
		Addr:         r.o.Addr,
		Servers:      r.o.Servers,
		Cross:        r.o.Cross,
		MQTTVersion:  versionName(r.o.Version),
		QoS:          int(r.o.QoS),
		PayloadBytes: r.o.Payload,
		TargetRate:   r.o.Rate,
		Window:       r.o.Window,
		TopicPrefix:  r.prefix,
	}
}

// server is where connection i of a group goes: the servers in turn.
func (r *runner) server(i int) string { return r.o.Servers[i%len(r.o.Servers)] }

// subServer is where subscriber j goes: as server, or with Cross one
// server further, away from the publisher of the same index.
func (r *runner) subServer(j int) string {
	if r.o.Cross {
		j++
	}
	return r.server(j)
}

// dialMany opens n connections, Concurrency at a time, connection i to
// addr(i), calling setup on each (to subscribe, say) before counting it.
// The histogram holds the time from dial to the end of setup. On error
// every connection is closed.
func (r *runner) dialMany(ctx context.Context, n int, addr func(i int) string, opts func(i int) ClientOptions,
	setup func(ctx context.Context, i int, c *Client) error) ([]*Client, *Histogram, error) {
	clients := make([]*Client, n)
	var (
		next    atomic.Int64
		mu      sync.Mutex
		firstEr error
		wg      sync.WaitGroup
	)
	hist := NewHistogram()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(r.o.Concurrency, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := NewHistogram()
			defer func() {
				mu.Lock()
				hist.Merge(h)
				mu.Unlock()
			}()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				err := r.dialOne(ctx, i, addr(i), opts(i), setup, &clients[i])
				if err != nil {
					mu.Lock()
					if firstEr == nil {
						firstEr = err
					}
					mu.Unlock()
					cancel()
					return
				}
				h.Record(int64(time.Since(t0)))
			}
		}()
	}
	wg.Wait()
	if firstEr != nil {
		closeAll(clients)
		return nil, nil, firstEr
	}
	return clients, hist, nil
}

func (r *runner) dialOne(ctx context.Context, i int, addr string, o ClientOptions,
	setup func(ctx context.Context, i int, c *Client) error, slot **Client) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	o.Version = r.o.Version
	c, err := Dial(ctx, addr, o)
	if err != nil {
		return err
	}
	*slot = c
	if setup != nil {
		return setup(ctx, i, c)
	}
	return nil
}

// closeAll closes the clients in parallel: each Close waits for the
// server to take the DISCONNECT, and thousands in a row would take long.
func closeAll(clients []*Client) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range clients {
		if c == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			c.Close()
			<-sem
		}()
	}
	wg.Wait()
}

func (r *runner) connStorm(ctx context.Context) (*Result, error) {
	n := r.o.Clients
	r.progress("connstorm: opening %d connections, %d at a time", n, r.o.Concurrency)
	start := time.Now()
	clients, hist, err := r.dialMany(ctx, n, r.server, func(i int) ClientOptions {
		return ClientOptions{ClientID: fmt.Sprintf("%s-c%d", r.id, i), ReadBuffer: 512}
	}, nil)
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	closeAll(clients)
	res := r.result()
	res.Connections = n
	res.Seconds = elapsed.Seconds()
	res.ConnRate = float64(n) / elapsed.Seconds()
	res.Latency = summarize(hist)
	return res, nil
}

func (r *runner) idle(ctx context.Context) (*Result, error) {
	n := r.o.Clients
	r.progress("idle: opening %d connections with one subscription each", n)
	start := time.Now()
	clients, hist, err := r.dialMany(ctx, n, r.server, func(i int) ClientOptions {
		return ClientOptions{ClientID: fmt.Sprintf("%s-i%d", r.id, i), ReadBuffer: 512}
	}, func(ctx context.Context, i int, c *Client) error {
		return c.Subscribe(ctx, packet.Subscription{Filter: fmt.Sprintf("%s/idle/%d", r.prefix, i), QoS: r.o.QoS})
	})
	if err != nil {
		return nil, err
	}
	setup := time.Since(start)
	defer closeAll(clients)
	// compare.sh waits for this line before it reads the broker's memory.
	r.progress("idle: %d connections subscribed; holding for %s", n, r.o.Duration)
	hold := time.NewTimer(r.o.Duration)
	defer hold.Stop()
	select {
	case <-hold.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res := r.result()
	res.Connections = n
	res.Subscribers = n
	res.Seconds = setup.Seconds()
	res.ConnRate = float64(n) / setup.Seconds()
	res.Latency = summarize(hist)
	for _, c := range clients {
		if c.Err() != nil {
			res.Dropped++
		}
	}
	return res, nil
}

// pool is the end-to-end flow control of one group of publishers towards
// their subscribers: publishers wait while more than limit deliveries are
// outstanding, and subscribers wake them when the backlog has halved. The
// counters are in deliveries: a message to k subscribers counts k.
type pool struct {
	sent atomic.Int64 // deliveries expected from what was published
	recv atomic.Int64 // deliveries received
	// forgiven is backlog written off as dropped (QoS 0), so that messages
	// a broker dropped do not shrink the window for good.
	forgiven atomic.Int64
	k        int64
	// limit is the delivery backlog at which publishers wait; 0 means no
	// end-to-end bound.
	limit int64

	waiters atomic.Int32
	mu      sync.Mutex
	cond    sync.Cond
	stopped bool
	_       [64]byte // keeps the next pool's counters off this cache line
}

func newPool(k, limit int64) *pool {
	p := &pool{k: k, limit: limit}
	p.cond.L = &p.mu
	return p
}

func (p *pool) backlog() int64 { return p.sent.Load() - p.recv.Load() - p.forgiven.Load() }

// acquire waits until the backlog is under the limit; false when stopped.
func (p *pool) acquire() bool {
	if p.limit == 0 || p.backlog() < p.limit {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Announce the wait before checking again, so that a delivery either is
	// seen by the check or sees the waiter and wakes it.
	p.waiters.Add(1)
	defer p.waiters.Add(-1)
	for !p.stopped && p.backlog() >= p.limit {
		p.cond.Wait()
	}
	return !p.stopped
}

func (p *pool) delivered() {
	p.recv.Add(1)
	if p.waiters.Load() > 0 && p.backlog() <= p.limit/2 {
		p.wake()
	}
}

func (p *pool) wake() {
	p.mu.Lock()
	p.cond.Broadcast()
	p.mu.Unlock()
}

// forgive writes the current backlog off.
func (p *pool) forgive() {
	p.forgiven.Store(p.sent.Load() - p.recv.Load())
	p.wake()
}

func (p *pool) stop() {
	p.mu.Lock()
	p.stopped = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

// watchPools forgives the backlog of a pool whose publishers wait while no
// delivery arrived for a whole tick: at QoS 0 the broker has dropped those
// messages and they will never arrive.
func watchPools(ctx context.Context, pools []*pool) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	last := make([]int64, len(pools))
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		for i, p := range pools {
			r := p.recv.Load()
			if r == last[i] && p.waiters.Load() > 0 {
				p.forgive()
			}
			last[i] = r
		}
	}
}

// subscriber is the state of one receiving connection, touched only by its
// read goroutine until the connection is closed (but for probed).
type subscriber struct {
	pools    []*pool
	tag      uint32
	hist     *Histogram
	received int64
	foreign  int64 // messages not from this run's publishers

	mu     sync.Mutex
	probed map[uint32]bool // publishers whose probe arrived; guarded by mu
}

// probeFlow in a payload's flow index marks a probe: a message sent before
// the run, not counted, whose arrival shows that the route from its
// publisher (index in bytes 16-19) to this subscriber is open.
const probeFlow = 0xFFFFFFFF

func (s *subscriber) onPublish(p *packet.Publish) {
	now := time.Now().UnixNano()
	b := p.Payload
	if len(b) < MinPayload || binary.LittleEndian.Uint32(b[12:]) != s.tag {
		s.foreign++
		return
	}
	idx := binary.LittleEndian.Uint32(b[8:])
	if idx == probeFlow {
		if len(b) >= MinPayload+4 {
			s.mu.Lock()
			if s.probed == nil {
				s.probed = make(map[uint32]bool)
			}
			s.probed[binary.LittleEndian.Uint32(b[16:])] = true
			s.mu.Unlock()
		}
		return
	}
	if int(idx) >= len(s.pools) {
		s.foreign++
		return
	}
	s.hist.Record(now - int64(binary.LittleEndian.Uint64(b)))
	s.received++
	s.pools[idx].delivered()
}

func (s *subscriber) hasProbe(pub int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.probed[uint32(pub)]
}

// layout is who publishes where and who subscribes to what.
type layout struct {
	topics  []string // per publisher
	poolOf  []int    // per publisher
	filters []string // per subscriber
	// receivers are the subscribers each publisher's messages reach; with
	// anyOne (a shared subscription) one of them gets each message.
	receivers [][]int
	anyOne    bool
	pools     int
	k         int64 // deliveries per message
	limitPer  int64 // backlog limit per pool, in deliveries
}

func (r *runner) layout() layout {
	n, w := r.o.Clients, int64(r.o.Window)
	var l layout
	switch r.o.Scenario {
	case P2P:
		for i := range n {
			t := fmt.Sprintf("%s/p2p/%d", r.prefix, i)
			l.topics = append(l.topics, t)
			l.filters = append(l.filters, t)
			l.poolOf = append(l.poolOf, i)
		}
		l.pools, l.k, l.limitPer = n, 1, w
		for i := range n {
			l.receivers = append(l.receivers, []int{i})
		}
	case Fanout:
		t := r.prefix + "/fanout"
		l.topics, l.poolOf = []string{t}, []int{0}
		for range n {
			l.filters = append(l.filters, t)
		}
		l.pools, l.k, l.limitPer = 1, int64(n), w*int64(n)
		l.receivers = [][]int{all(n)}
	case FanIn:
		for i := range n {
			l.topics = append(l.topics, fmt.Sprintf("%s/fanin/%d", r.prefix, i))
			l.poolOf = append(l.poolOf, 0)
		}
		l.filters = []string{r.prefix + "/fanin/+"}
		l.pools, l.k, l.limitPer = 1, 1, w
		for range n {
			l.receivers = append(l.receivers, []int{0})
		}
	case Shared:
		for i := range n {
			l.topics = append(l.topics, fmt.Sprintf("%s/shared/%d", r.prefix, i))
			l.poolOf = append(l.poolOf, 0)
		}
		for range r.o.Subscribers {
			l.filters = append(l.filters, "$share/bench/"+r.prefix+"/shared/+")
		}
		l.pools, l.k, l.limitPer = 1, 1, w*int64(r.o.Subscribers)
		for range n {
			l.receivers = append(l.receivers, all(r.o.Subscribers))
		}
		l.anyOne = true
	}
	if r.o.QoS == 0 && r.o.OpenLoop {
		l.limitPer = 0
	}
	return l
}

func all(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// awaitRoutes probes, before a run over several servers, until a message
// from every publisher has reached its subscribers: a cluster learns of a
// subscription on one node at the others a moment after the SUBACK, and
// what is published before that is not routed there. Probes are QoS 0,
// every 50 ms, and not counted.
func (r *runner) awaitRoutes(ctx context.Context, l layout, subs []*subscriber, pubs []*Client) error {
	r.progress("%s: waiting until every publisher's messages reach its subscribers on every server", r.o.Scenario)
	probe := make([]byte, MinPayload+4)
	binary.LittleEndian.PutUint32(probe[8:], probeFlow)
	binary.LittleEndian.PutUint32(probe[12:], r.tag)
	// reached: every receiver has the publisher's probe, or for a shared
	// subscription one of them has.
	reached := func(i int) bool {
		got := 0
		for _, j := range l.receivers[i] {
			if subs[j].hasProbe(i) {
				got++
			}
		}
		return got == len(l.receivers[i]) || (l.anyOne && got > 0)
	}
	pending := all(len(pubs))
	deadline := time.NewTimer(r.o.RoutesTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		left := pending[:0]
		for _, i := range pending {
			if reached(i) {
				continue
			}
			left = append(left, i)
			binary.LittleEndian.PutUint32(probe[16:], uint32(i))
			if err := pubs[i].Publish(ctx, &packet.Publish{Topic: l.topics[i], Payload: probe}); err != nil {
				return fmt.Errorf("probe on %s: %w", l.topics[i], err)
			}
		}
		pending = left
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return fmt.Errorf("the messages of %d of %d publishers had not reached their subscribers after %s", len(pending), len(pubs), r.o.RoutesTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (r *runner) messaging(ctx context.Context) (*Result, error) {
	o := r.o
	l := r.layout()
	pools := make([]*pool, l.pools)
	for i := range pools {
		pools[i] = newPool(l.k, l.limitPer)
	}
	subs := make([]*subscriber, len(l.filters))
	for i := range subs {
		subs[i] = &subscriber{pools: pools, tag: r.tag, hist: NewHistogram()}
	}
	r.progress("%s: connecting %d subscribers", o.Scenario, len(subs))
	subClients, _, err := r.dialMany(ctx, len(subs), r.subServer, func(i int) ClientOptions {
		return ClientOptions{ClientID: fmt.Sprintf("%s-s%d", r.id, i), OnPublish: subs[i].onPublish, ReadBuffer: 64 << 10, Persistent: r.o.Persistent}
	}, func(ctx context.Context, i int, c *Client) error {
		return c.Subscribe(ctx, packet.Subscription{Filter: l.filters[i], QoS: o.QoS})
	})
	if err != nil {
		return nil, err
	}
	defer closeAll(subClients)
	r.progress("%s: connecting %d publishers", o.Scenario, len(l.topics))
	window := 0
	if o.QoS > 0 {
		window = o.Window
	}
	pubClients, _, err := r.dialMany(ctx, len(l.topics), r.server, func(i int) ClientOptions {
		return ClientOptions{ClientID: fmt.Sprintf("%s-p%d", r.id, i), Window: window, ReadBuffer: 16 << 10}
	}, nil)
	if err != nil {
		return nil, err
	}
	defer closeAll(pubClients)
	if len(o.Servers) > 1 {
		if err := r.awaitRoutes(ctx, l, subs, pubClients); err != nil {
			return nil, err
		}
	}

	r.progress("%s: publishing for %s", o.Scenario, o.Duration)
	start := time.Now()
	pubCtx, cancel := context.WithDeadline(ctx, start.Add(o.Duration))
	defer cancel()
	stopPools := context.AfterFunc(pubCtx, func() {
		for _, p := range pools {
			p.stop()
		}
	})
	defer stopPools()
	if o.QoS == 0 {
		go watchPools(pubCtx, pools)
	}
	perPub := o.Rate / float64(len(l.topics))
	errs := make([]error, len(pubClients))
	var wg sync.WaitGroup
	for i, c := range pubClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.publish(pubCtx, c, l.topics[i], l.poolOf[i], pools[l.poolOf[i]], perPub)
		}()
	}
	wg.Wait()
	pubElapsed := time.Since(start)
	// The delivery rate is taken over the publishing time only: the drain
	// afterwards empties the backlog the window allowed, and counting it
	// (or the initial burst into an empty window) would skew short runs.
	var recvAtEnd int64
	for _, p := range pools {
		recvAtEnd += p.recv.Load()
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	r.progress("%s: waiting up to %s for outstanding deliveries", o.Scenario, o.DrainTimeout)
	if err := r.drain(ctx, pools, pubClients); err != nil {
		return nil, err
	}
	closeAll(pubClients)
	closeAll(subClients)
	for _, c := range append(subClients, pubClients...) {
		if c.Err() != nil {
			return nil, fmt.Errorf("connection lost during the run: %w", c.Err())
		}
	}

	res := r.result()
	res.Publishers = len(pubClients)
	res.Subscribers = len(subClients)
	res.Connections = len(pubClients) + len(subClients)
	res.Seconds = pubElapsed.Seconds()
	var rejected int64
	for _, c := range pubClients {
		rejected += c.Rejected()
	}
	res.Rejected = rejected
	for _, p := range pools {
		sent, recv := p.sent.Load(), p.recv.Load()
		res.Sent += sent / p.k
		res.Expected += sent
		res.Lost += max(0, sent-recv)
		res.Duplicates += max(0, recv-sent)
	}
	// A refused publish is not delivered, and is not lost either.
	res.Expected -= rejected * l.k
	res.Lost = max(0, res.Lost-rejected*l.k)
	hist := NewHistogram()
	for _, s := range subs {
		hist.Merge(s.hist)
		res.Received += s.received
		res.Foreign += s.foreign
	}
	res.SentRate = float64(res.Sent) / pubElapsed.Seconds()
	res.ReceivedRate = float64(recvAtEnd) / pubElapsed.Seconds()
	res.Latency = summarize(hist)
	return res, nil
}

// publish runs one publisher until ctx ends. Its payload is built once and
// only the timestamp changes, so publishing allocates nothing.
func (r *runner) publish(ctx context.Context, c *Client, topic string, poolIdx int, pl *pool, rate float64) error {
	payload := make([]byte, r.o.Payload)
	for i := MinPayload; i < len(payload); i++ {
		payload[i] = byte('a' + i%26)
	}
	binary.LittleEndian.PutUint32(payload[8:], uint32(poolIdx))
	binary.LittleEndian.PutUint32(payload[12:], r.tag)
	p := packet.Publish{Topic: topic, QoS: r.o.QoS, Payload: payload}
	var timer *time.Timer
	if rate > 0 {
		timer = time.NewTimer(time.Hour)
		defer timer.Stop()
	}
	start := time.Now()
	done := ctx.Done()
	for n := int64(0); ; n++ {
		select {
		case <-done:
			return nil
		default:
		}
		if rate > 0 {
			// Pace against the schedule from the start, not from the last
			// send, so oversleeping is caught up and the mean rate holds.
			due := start.Add(time.Duration(float64(n) / rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
					return nil
				}
			}
		}
		if !pl.acquire() {
			return nil
		}
		binary.LittleEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		if err := c.Publish(ctx, &p); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("publish on %s: %w", topic, err)
		}
		pl.sent.Add(pl.k)
	}
}

// drain waits until every expected delivery arrived and every QoS 1/2
// publish was acknowledged, or nothing happened for drainIdle, or
// DrainTimeout passed.
func (r *runner) drain(ctx context.Context, pools []*pool, pubs []*Client) error {
	deadline := time.Now().Add(r.o.DrainTimeout)
	lastChange := time.Now()
	last := int64(-1)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		var recv, sent int64
		for _, p := range pools {
			recv += p.recv.Load()
			sent += p.sent.Load()
		}
		inflight := 0
		for _, c := range pubs {
			inflight += c.Inflight()
		}
		now := time.Now()
		if recv != last {
			last, lastChange = recv, now
		}
		if (recv >= sent && inflight == 0) || now.Sub(lastChange) > drainIdle || now.After(deadline) {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
