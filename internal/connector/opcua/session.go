package opcua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
)

// ItemSpec is one monitored data item.
type ItemSpec struct {
	Name string // data point name, the key in the published message
	// Dataset is an opaque key the handler gets back with each sample, for
	// groups that carry the items of several datasets.
	Dataset string
	// Point is another opaque key the handler gets back with each sample
	// (the connector's index of the data point in its dataset).
	Point  int
	NodeID string // ns=2;s=..., ns=2;i=..., nsu=<uri>;s=...
	// SamplingInterval is how often the server samples; 0 uses the
	// group's publishing interval, SamplingFastest asks for the server's
	// fastest practical rate (OPC UA's 0: for many servers, on change).
	SamplingInterval time.Duration
	QueueSize        uint32 // 0 means 1
	// DeadbandType is "", "Absolute" or "Percent" (of the item's EURange);
	// a change smaller than DeadbandValue is not reported.
	DeadbandType  string
	DeadbandValue float64
	// Heartbeat re-delivers the last value when it has not changed for this
	// long, so consumers can tell "unchanged" from "stale"; 0 is off.
	Heartbeat time.Duration
}

// EventSpec is one event subscription on a notifier node.
type EventSpec struct {
	Name       string
	NotifierID string // default i=2253, the Server object
	// Fields are BaseEventType field browse names to select; default
	// EventId, EventType, SourceName, Time, Message, Severity.
	Fields []string
	// TypeDefinition keeps only events of this type or a subtype (OfType).
	TypeDefinition string
	// MinSeverity keeps only events with Severity >= MinSeverity (1-1000).
	MinSeverity uint16
	QueueSize   uint32 // 0 means 100
}

// GroupSpec is one OPC UA subscription: a dataset's points or an event group.
type GroupSpec struct {
	Name               string
	PublishingInterval time.Duration // 0 means 1s
	Items              []ItemSpec
	Events             []EventSpec
}

// Sample is one value of one item.
type Sample struct {
	Name            string
	Dataset         string // the item's ItemSpec.Dataset
	Point           int    // the item's ItemSpec.Point
	NodeID          string
	Value           any // JSON-ready (see jsonValue)
	SourceTimestamp time.Time
	ServerTimestamp time.Time
	Status          uint32 // 0 is Good
	// Heartbeat marks a re-delivery of an unchanged value.
	Heartbeat bool
}

// Event is one OPC UA event notification.
type Event struct {
	Name   string         // the EventSpec's name
	Fields map[string]any // selected field name -> JSON-ready value
}

// State is a session's connection state.
type State string

// Session states.
const (
	StateConnecting State = "Connecting"
	StateConnected  State = "Connected"
	StateError      State = "Error"
	StateStopped    State = "Stopped"
)

// Status is reported on every state change.
type Status struct {
	State State
	Err   error // why the session is down (StateError)
	// RetryIn is how long until the next attempt (StateError).
	RetryIn time.Duration
}

// Handler receives what a session delivers. Its methods are called from the
// session's goroutine, one at a time, and must not block: a connector hands
// the data to a bounded buffer and returns.
type Handler interface {
	// Samples delivers the changes one publish response carried for one
	// group, in server order; an item with a queue may appear more than
	// once. The callee must not modify the slice: the session keeps
	// pointers into it for heartbeats.
	Samples(group string, samples []Sample)
	// Event delivers one event of one group.
	Event(group string, ev Event)
	// SessionStatus reports connection state changes.
	SessionStatus(st Status)
	// ItemStatus reports, after each (re)subscription, whether the server
	// accepted an item (err nil) or refused it (the reason); dataset is
	// the item's ItemSpec.Dataset (empty for events).
	ItemStatus(group, dataset, item string, err error)
}

// Options configure a Session.
type Options struct {
	Endpoint Endpoint
	Groups   []GroupSpec
	// KeepAlive is the subscriptions' keep-alive period (default 10s).
	KeepAlive time.Duration
	// WatchdogKeepAlives is N: the session is rebuilt when a subscription
	// got no publish response for N keep-alive periods (default 3).
	WatchdogKeepAlives int
	// BackoffInitial and BackoffMax bound the exponential reconnect delay
	// (defaults 1s and 60s); each delay is jittered to between half and all
	// of its value so many sessions do not reconnect in step.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	Logger         *slog.Logger
	// OnConnect, when set, is called on the session's goroutine after each
	// connection, before the subscriptions are created: the connector
	// reads its data points' types there and registers their schemas, so
	// that the first message already names its schema.
	OnConnect func(ctx context.Context, c *opcua.Client)
}

// SamplingFastest is the SamplingInterval that requests OPC UA sampling
// interval 0.
const SamplingFastest time.Duration = -1

// ErrWatchdog says a subscription stopped delivering while the connection
// looked up.
var ErrWatchdog = errors.New("watchdog: no publish response")

// ErrNotConnected says an operation needs a session that is not up.
var ErrNotConnected = errors.New("OPC UA session not connected")

// livenessHandle is the client handle of the item every subscription keeps
// on Server_ServerStatus_CurrentTime. gopcua v0.8.0 swallows keep-alive
// publish responses, so a subscription without data changes would look dead;
// CurrentTime changes every second on every compliant server, so a publish
// response per second (or per publishing interval, if longer) proves the
// subscription alive. It is never delivered to the handler.
const livenessHandle = 0

// Session keeps one OPC UA session with its subscriptions up: it connects,
// subscribes, watches, and on any failure throws everything away and starts
// again after a backoff. gopcua v0.8.0's own reconnect is off: it can report
// Connected with a dead subscription (fixed upstream after v0.8.0), and a
// clean rebuild is the one recovery that always works.
type Session struct {
	opts   Options
	dialer *Dialer
	h      Handler
	log    *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}

	// mu guards client.
	mu     sync.Mutex
	client *opcua.Client

	reconnects     atomic.Uint64
	watchdogFires  atomic.Uint64
	samples        atomic.Uint64
	events         atomic.Uint64
	connectedSince atomic.Int64 // unix nanos, 0 when down
	items          atomic.Int64 // monitored items the server accepted
	itemsRefused   atomic.Int64 // monitored items the server or the parser refused
}

// NewSession checks the options and returns a session that Start runs.
func NewSession(d *Dialer, opts Options, h Handler) (*Session, error) {
	if err := opts.Endpoint.Validate(); err != nil {
		return nil, err
	}
	for gi, g := range opts.Groups {
		if g.PublishingInterval < 0 {
			return nil, fmt.Errorf("groups[%d].publishingInterval: must not be negative", gi)
		}
		for ii, it := range g.Items {
			if err := validateItem(it); err != nil {
				return nil, fmt.Errorf("groups[%d].items[%d]: %w", gi, ii, err)
			}
		}
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 10 * time.Second
	}
	if opts.KeepAlive < time.Second {
		// The liveness item changes once a second; a shorter keep-alive
		// would let the watchdog fire on a healthy subscription.
		opts.KeepAlive = time.Second
	}
	if opts.WatchdogKeepAlives <= 0 {
		opts.WatchdogKeepAlives = 3
	}
	opts.BackoffInitial = durOr(opts.BackoffInitial, time.Second)
	opts.BackoffMax = durOr(opts.BackoffMax, time.Minute)
	if opts.BackoffMax < opts.BackoffInitial {
		opts.BackoffMax = opts.BackoffInitial
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Session{opts: opts, dialer: d, h: h, log: log.With("endpoint", opts.Endpoint.URL)}, nil
}

func validateItem(it ItemSpec) error {
	if strings.TrimSpace(it.NodeID) == "" {
		return errors.New("dataSource: node id is empty")
	}
	switch it.DeadbandType {
	case "", "None", "Absolute":
	case "Percent":
		if it.DeadbandValue > 100 {
			return fmt.Errorf("deadbandValue: %g is more than 100 percent", it.DeadbandValue)
		}
	default:
		return fmt.Errorf("deadbandType: %q is not None, Absolute or Percent", it.DeadbandType)
	}
	if it.DeadbandValue < 0 {
		return fmt.Errorf("deadbandValue: %g is negative", it.DeadbandValue)
	}
	if (it.SamplingInterval < 0 && it.SamplingInterval != SamplingFastest) || it.Heartbeat < 0 {
		return errors.New("samplingInterval and heartbeat must not be negative")
	}
	return nil
}

// Start runs the session until Stop. It returns at once; connection
// problems are reported through the handler, not as errors.
func (s *Session) Start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		s.run(runCtx)
	}()
	return nil
}

// Stop closes the session and waits for its goroutine, or for ctx.
func (s *Session) Stop(ctx context.Context) error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Counters are a session's lifetime counts.
type Counters struct {
	Reconnects    uint64
	WatchdogFires uint64
	Samples       uint64
	Events        uint64
	Connected     bool
	Items         int64 // monitored items accepted at the last (re)subscription
	ItemsRefused  int64
}

// Counters returns the session's counts.
func (s *Session) Counters() Counters {
	return Counters{
		Reconnects:    s.reconnects.Load(),
		WatchdogFires: s.watchdogFires.Load(),
		Samples:       s.samples.Load(),
		Events:        s.events.Load(),
		Connected:     s.connectedSince.Load() != 0,
		Items:         s.items.Load(),
		ItemsRefused:  s.itemsRefused.Load(),
	}
}

// current returns the connected client for one-off operations.
func (s *Session) current() (*opcua.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		return nil, ErrNotConnected
	}
	return s.client, nil
}

func (s *Session) setClient(c *opcua.Client) {
	s.mu.Lock()
	s.client = c
	s.mu.Unlock()
}

func (s *Session) run(ctx context.Context) {
	attempt := 0
	for {
		s.h.SessionStatus(Status{State: StateConnecting})
		healthy, err := s.runOnce(ctx)
		s.connectedSince.Store(0)
		if ctx.Err() != nil {
			s.h.SessionStatus(Status{State: StateStopped})
			return
		}
		if healthy {
			attempt = 0
		}
		delay := backoff(s.opts.BackoffInitial, s.opts.BackoffMax, attempt)
		attempt++
		s.reconnects.Add(1)
		s.log.Warn("opc ua session down", "err", err, "retry_in", delay)
		s.h.SessionStatus(Status{State: StateError, Err: err, RetryIn: delay})
		var trustChanged <-chan struct{}
		var untrusted *UntrustedError
		if errors.As(err, &untrusted) {
			// Trusting the certificate should count at once, not after
			// a backoff that may have grown to a minute.
			trustChanged = s.dialer.Trust.Changed()
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			s.h.SessionStatus(Status{State: StateStopped})
			return
		case <-t.C:
		case <-trustChanged:
			t.Stop()
			attempt = 0
		}
	}
}

// backoff is the delay before attempt n (0-based): initial doubling up to
// max, then jittered uniformly into [d/2, d].
func backoff(initial, max time.Duration, n int) time.Duration {
	d := initial
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// group is one live subscription.
type group struct {
	spec        GroupSpec
	sub         *opcua.Subscription
	lastPublish time.Time
	watchdog    time.Duration // 0: no liveness item, no watchdog
}

// item is one live monitored item.
type item struct {
	g         *group
	spec      ItemSpec
	event     *EventSpec
	nodeID    string
	last      *Sample
	lastSent  time.Time
	heartbeat time.Duration
}

// runOnce connects, subscribes and delivers until something fails. healthy
// says whether data flowed, which resets the backoff.
func (s *Session) runOnce(ctx context.Context) (healthy bool, err error) {
	c, err := s.dialer.Dial(ctx, &s.opts.Endpoint)
	if err != nil {
		return false, err
	}
	defer func() {
		s.setClient(nil)
		// A frozen server answers nothing: do not wait for CloseSession
		// longer than a moment.
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c.Close(cctx)
		cancel()
	}()

	if s.opts.OnConnect != nil {
		s.opts.OnConnect(ctx, c)
	}

	// Buffered so gopcua's publish loop rarely waits on us; our handler
	// calls do not block either.
	notifs := make(chan *opcua.PublishNotificationData, 256)
	bySub := map[uint32]*group{}
	items := map[uint32]*item{}
	nextHandle := uint32(livenessHandle + 1)
	var accepted, refused int64
	ns := c.Namespaces()
	now := time.Now()

	for _, gs := range s.opts.Groups {
		pi := durOr(gs.PublishingInterval, time.Second)
		kaCount := uint32((s.opts.KeepAlive + pi - 1) / pi)
		if kaCount < 1 {
			kaCount = 1
		}
		sub, err := c.Subscribe(ctx, &opcua.SubscriptionParameters{
			Interval:          pi,
			MaxKeepAliveCount: kaCount,
			// The server drops a subscription after LifetimeCount
			// publishing intervals without a publish request; three
			// keep-alive periods as the spec requires at least.
			LifetimeCount: 3 * kaCount,
		}, notifs)
		if err != nil {
			return false, fmt.Errorf("creating subscription %q: %w", gs.Name, err)
		}
		g := &group{spec: gs, sub: sub, lastPublish: now}
		bySub[sub.SubscriptionID] = g

		reqs := []*ua.MonitoredItemCreateRequest{livenessRequest()}
		var reqItems []*item
		for _, is := range gs.Items {
			nid, err := parseNodeID(is.NodeID, ns)
			if err != nil {
				refused++
				s.h.ItemStatus(gs.Name, is.Dataset, is.Name, fmt.Errorf("dataSource %q: %w", is.NodeID, err))
				continue
			}
			h := nextHandle
			nextHandle++
			reqs = append(reqs, dataRequest(nid, h, is, pi))
			it := &item{g: g, spec: is, nodeID: is.NodeID, heartbeat: is.Heartbeat}
			items[h] = it
			reqItems = append(reqItems, it)
		}
		for ei := range gs.Events {
			es := &gs.Events[ei]
			req, err := eventRequest(es, nextHandle, ns)
			if err != nil {
				refused++
				s.h.ItemStatus(gs.Name, "", es.Name, err)
				continue
			}
			h := nextHandle
			nextHandle++
			reqs = append(reqs, req)
			it := &item{g: g, event: es, nodeID: es.NotifierID}
			items[h] = it
			reqItems = append(reqItems, it)
		}
		res, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth, reqs...)
		if err != nil {
			return false, fmt.Errorf("creating monitored items of %q: %w", gs.Name, err)
		}
		if len(res.Results) != len(reqs) {
			return false, fmt.Errorf("creating monitored items of %q: %d results for %d items", gs.Name, len(res.Results), len(reqs))
		}
		if r := res.Results[0]; r.StatusCode == ua.StatusOK {
			ka := sub.RevisedPublishingInterval * time.Duration(sub.RevisedMaxKeepAliveCount)
			if ka < time.Second {
				ka = time.Second
			}
			g.watchdog = time.Duration(s.opts.WatchdogKeepAlives) * ka
		} else {
			s.log.Warn("server refused the liveness item; the watchdog is off for this subscription", "group", gs.Name, "status", StatusName(uint32(r.StatusCode)))
		}
		for i, it := range reqItems {
			r := res.Results[i+1]
			name := it.spec.Name
			if it.event != nil {
				name = it.event.Name
			}
			if r.StatusCode != ua.StatusOK {
				refused++
				s.h.ItemStatus(gs.Name, it.spec.Dataset, name, fmt.Errorf("dataSource %q: server refused the item: %s", it.nodeID, StatusName(uint32(r.StatusCode))))
				continue
			}
			accepted++
			s.h.ItemStatus(gs.Name, it.spec.Dataset, name, nil)
		}
	}

	s.items.Store(accepted)
	s.itemsRefused.Store(refused)
	s.setClient(c)
	s.connectedSince.Store(time.Now().UnixNano())
	s.h.SessionStatus(Status{State: StateConnected})
	s.log.Info("opc ua session up", "groups", len(s.opts.Groups))

	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return healthy, nil
		case n := <-notifs:
			if n.Error != nil {
				return healthy, fmt.Errorf("subscription: %w", n.Error)
			}
			g := bySub[n.SubscriptionID]
			if g == nil {
				continue
			}
			now := time.Now()
			g.lastPublish = now
			switch v := n.Value.(type) {
			case *ua.DataChangeNotification:
				if out := dataChange(v, items, now); len(out) > 0 {
					healthy = true
					s.samples.Add(uint64(len(out)))
					s.h.Samples(g.spec.Name, out)
				}
			case *ua.EventNotificationList:
				for _, ef := range v.Events {
					it := items[ef.ClientHandle]
					if it == nil || it.event == nil {
						continue
					}
					fields := eventFields(it.event)
					ev := Event{Name: it.event.Name, Fields: make(map[string]any, len(fields))}
					for i, f := range fields {
						if i < len(ef.EventFields) {
							ev.Fields[f] = jsonValue(ef.EventFields[i])
						}
					}
					healthy = true
					s.events.Add(1)
					s.h.Event(g.spec.Name, ev)
				}
			case *ua.StatusChangeNotification:
				return healthy, fmt.Errorf("subscription %q ended by the server: %s", g.spec.Name, StatusName(uint32(v.Status)))
			}
		case now := <-tick.C:
			if st := c.State(); st != opcua.Connected {
				return healthy, fmt.Errorf("connection lost (%s)", st)
			}
			for _, g := range bySub {
				if g.watchdog > 0 && now.Sub(g.lastPublish) > g.watchdog {
					s.watchdogFires.Add(1)
					return healthy, fmt.Errorf("%w for %s (%d keep-alive intervals) on subscription %q: rebuilding the session",
						ErrWatchdog, now.Sub(g.lastPublish).Round(time.Millisecond), s.opts.WatchdogKeepAlives, g.spec.Name)
				}
			}
			s.heartbeats(now, items)
		}
	}
}

// dataChange turns one DataChangeNotification into samples, in server
// order, and remembers each item's value for heartbeats. The samples are
// one allocation; an item's last value points into it.
func dataChange(v *ua.DataChangeNotification, items map[uint32]*item, now time.Time) []Sample {
	out := make([]Sample, 0, len(v.MonitoredItems))
	for _, mi := range v.MonitoredItems {
		it := items[mi.ClientHandle]
		if it == nil || it.event != nil || mi.Value == nil {
			continue
		}
		out = append(out, Sample{
			Name:            it.spec.Name,
			Dataset:         it.spec.Dataset,
			Point:           it.spec.Point,
			NodeID:          it.nodeID,
			Value:           jsonValue(mi.Value.Value),
			SourceTimestamp: mi.Value.SourceTimestamp,
			ServerTimestamp: mi.Value.ServerTimestamp,
			Status:          uint32(mi.Value.Status),
		})
		it.last = &out[len(out)-1]
		it.lastSent = now
	}
	return out
}

// heartbeats re-delivers unchanged values whose heartbeat is due, batched
// per group like a publish response.
func (s *Session) heartbeats(now time.Time, items map[uint32]*item) {
	var due map[string][]Sample
	for _, it := range items {
		if it.heartbeat <= 0 || it.last == nil || now.Sub(it.lastSent) < it.heartbeat {
			continue
		}
		smp := *it.last
		smp.Heartbeat = true
		it.lastSent = now
		if due == nil {
			due = map[string][]Sample{}
		}
		due[it.g.spec.Name] = append(due[it.g.spec.Name], smp)
	}
	for g, smps := range due {
		s.samples.Add(uint64(len(smps)))
		s.h.Samples(g, smps)
	}
}

func livenessRequest() *ua.MonitoredItemCreateRequest {
	r := opcua.NewMonitoredItemCreateRequestWithDefaults(ua.NewNumericNodeID(0, id.Server_ServerStatus_CurrentTime), ua.AttributeIDValue, livenessHandle)
	r.RequestedParameters.SamplingInterval = 1000
	r.RequestedParameters.QueueSize = 1
	return r
}

func dataRequest(nid *ua.NodeID, handle uint32, is ItemSpec, pi time.Duration) *ua.MonitoredItemCreateRequest {
	r := opcua.NewMonitoredItemCreateRequestWithDefaults(nid, ua.AttributeIDValue, handle)
	si := is.SamplingInterval
	switch si {
	case 0:
		si = pi
	case SamplingFastest:
		si = 0
	}
	r.RequestedParameters.SamplingInterval = float64(si) / float64(time.Millisecond)
	q := is.QueueSize
	if q == 0 {
		q = 1
	}
	r.RequestedParameters.QueueSize = q
	var dt ua.DeadbandType
	switch is.DeadbandType {
	case "Absolute":
		dt = ua.DeadbandTypeAbsolute
	case "Percent":
		dt = ua.DeadbandTypePercent
	}
	if dt != ua.DeadbandTypeNone {
		r.RequestedParameters.Filter = ua.NewExtensionObject(&ua.DataChangeFilter{
			Trigger:       ua.DataChangeTriggerStatusValue,
			DeadbandType:  uint32(dt),
			DeadbandValue: is.DeadbandValue,
		})
	}
	return r
}

var defaultEventFields = []string{"EventId", "EventType", "SourceName", "Time", "Message", "Severity"}

func eventFields(es *EventSpec) []string {
	if len(es.Fields) > 0 {
		return es.Fields
	}
	return defaultEventFields
}

func eventRequest(es *EventSpec, handle uint32, ns []string) (*ua.MonitoredItemCreateRequest, error) {
	notifier := es.NotifierID
	if notifier == "" {
		notifier = "i=2253"
	}
	nid, err := parseNodeID(notifier, ns)
	if err != nil {
		return nil, fmt.Errorf("eventNotifier %q: %w", notifier, err)
	}
	baseEvent := ua.NewNumericNodeID(0, id.BaseEventType)
	filter := &ua.EventFilter{WhereClause: &ua.ContentFilter{}}
	for _, f := range eventFields(es) {
		var path []*ua.QualifiedName
		for _, p := range strings.Split(f, "/") {
			path = append(path, &ua.QualifiedName{NamespaceIndex: 0, Name: p})
		}
		filter.SelectClauses = append(filter.SelectClauses, &ua.SimpleAttributeOperand{
			TypeDefinitionID: baseEvent, BrowsePath: path, AttributeID: ua.AttributeIDValue,
		})
	}
	var conds []*ua.ContentFilterElement
	if es.TypeDefinition != "" {
		tid, err := parseNodeID(es.TypeDefinition, ns)
		if err != nil {
			return nil, fmt.Errorf("typeDefinition %q: %w", es.TypeDefinition, err)
		}
		conds = append(conds, &ua.ContentFilterElement{
			FilterOperator: ua.FilterOperatorOfType,
			FilterOperands: []*ua.ExtensionObject{ua.NewExtensionObject(&ua.LiteralOperand{Value: ua.MustVariant(tid)})},
		})
	}
	if es.MinSeverity > 0 {
		conds = append(conds, &ua.ContentFilterElement{
			FilterOperator: ua.FilterOperatorGreaterThanOrEqual,
			FilterOperands: []*ua.ExtensionObject{
				ua.NewExtensionObject(&ua.SimpleAttributeOperand{
					TypeDefinitionID: baseEvent,
					BrowsePath:       []*ua.QualifiedName{{Name: "Severity"}},
					AttributeID:      ua.AttributeIDValue,
				}),
				ua.NewExtensionObject(&ua.LiteralOperand{Value: ua.MustVariant(es.MinSeverity)}),
			},
		})
	}
	switch len(conds) {
	case 1:
		filter.WhereClause.Elements = conds
	case 2:
		// Element 0 ANDs elements 1 and 2.
		filter.WhereClause.Elements = []*ua.ContentFilterElement{{
			FilterOperator: ua.FilterOperatorAnd,
			FilterOperands: []*ua.ExtensionObject{
				ua.NewExtensionObject(&ua.ElementOperand{Index: 1}),
				ua.NewExtensionObject(&ua.ElementOperand{Index: 2}),
			},
		}, conds[0], conds[1]}
	}
	q := es.QueueSize
	if q == 0 {
		q = 100
	}
	r := opcua.NewMonitoredItemCreateRequestWithDefaults(nid, ua.AttributeIDEventNotifier, handle)
	r.RequestedParameters.SamplingInterval = 0
	r.RequestedParameters.QueueSize = q
	r.RequestedParameters.Filter = ua.NewExtensionObject(filter)
	return r, nil
}

// parseNodeID parses a node id in the string forms OPC UA tools write,
// resolving nsu= namespace URIs against the server's namespace array.
func parseNodeID(s string, ns []string) (*ua.NodeID, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty node id")
	}
	if !strings.Contains(s, "=") {
		return nil, fmt.Errorf("%q is not a node id (want ns=<index>;s=<name>, ns=<index>;i=<number>, or nsu=<uri>;...)", s)
	}
	eid, err := ua.ParseExpandedNodeID(s, ns)
	if err != nil {
		return nil, err
	}
	return eid.NodeID, nil
}
