package statestore

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
	"github.com/edgeport/edgeport/internal/testserve"
)

// wait bounds every wait for something that must happen.
const wait = 5 * time.Second

func testLogger() *slog.Logger {
	if os.Getenv("EDGEPORT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// env is a real broker on 127.0.0.1:0 with a durable store in dir and the
// state store attached, as `edgeport serve` runs them.
type env struct {
	t         *testing.T
	dir       string
	opts      Options
	storeOpts store.Options

	addr string
	reg  *prometheus.Registry
	ss   *Server
	b    *broker.Broker
	stop func()
}

func startEnv(t *testing.T, opts Options) *env {
	t.Helper()
	return startEnvStore(t, opts, store.Options{Sync: store.SyncNone}, t.TempDir())
}

func startEnvStore(t *testing.T, opts Options, storeOpts store.Options, dir string) *env {
	t.Helper()
	e := &env{t: t, dir: dir, opts: opts, storeOpts: storeOpts}
	e.start()
	t.Cleanup(func() { e.shutdown() })
	return e
}

func (e *env) start() {
	t := e.t
	t.Helper()
	st, err := store.Open(e.dir, e.storeOpts)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	// The broker shares the state store's clock: message expiry of
	// requests and key expiry move together in tests that advance it.
	b, err := broker.New(broker.Options{SysInterval: -1, Clock: e.opts.Clock}, testLogger())
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	b.AttachStore(st)
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.Start(ctx); err != nil {
		cancel()
		t.Fatalf("broker.Start: %v", err)
	}
	b.ReleaseWills()
	ln := testserve.Loopback(t, func(conn net.Conn) { b.ServeConn(conn, "test") })
	opts := e.opts
	e.reg = prometheus.NewRegistry()
	opts.Registerer = e.reg
	opts.Logger = testLogger()
	if opts.Disconnect == nil {
		// As the app does.
		opts.Disconnect = func(id, reason string) { b.DisconnectClient(id, packet.ProtocolError, reason) }
	}
	ss, err := New(st, b, opts)
	if err != nil {
		t.Fatalf("statestore.New: %v", err)
	}
	// As the app does: registrations live as long as the client's session.
	b.OnSessionEnd(ss.ClientDisconnected)
	if err := ss.Start(ctx); err != nil {
		t.Fatalf("statestore Start: %v", err)
	}
	e.addr, e.ss, e.b = ln.Addr(), ss, b
	e.stop = func() {
		sctx, scancel := context.WithTimeout(context.Background(), wait)
		defer scancel()
		if err := ss.Stop(sctx); err != nil {
			t.Errorf("statestore Stop: %v", err)
		}
		ln.Close()
		if err := b.Stop(sctx); err != nil {
			t.Errorf("broker Shutdown: %v", err)
		}
		cancel()
		ln.Wait()
		if err := st.Close(); err != nil {
			t.Errorf("store Close: %v", err)
		}
	}
}

func (e *env) shutdown() {
	if e.stop != nil {
		e.stop()
		e.stop = nil
	}
}

// restart stops everything and starts it again on the same directory.
func (e *env) restart() {
	e.shutdown()
	e.start()
}

// counter returns the value of a metric series (labels as name=value pairs).
func (e *env) counter(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	e.t.Fatalf("no series %s%v", name, labels)
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// client is a state store client written against the protocol reference
// with Eclipse Paho (MQTT 5): it builds RESP payloads and RPC properties by
// hand so that tests see exactly what travels.
type client struct {
	t         *testing.T
	id        string
	pc        *paho.Client
	respTopic string

	mu      sync.Mutex
	pending map[string]chan *paho.Publish
	notes   []*paho.Publish
	extra   []*paho.Publish // responses nobody waited for
	changed chan struct{}
	disc    *paho.Disconnect // the server's DISCONNECT, when one came
}

// dial connects a client with ID id and subscribes to its response and
// notification topics.
func (e *env) dial(id string) *client {
	return e.dialWith(id, dialOpts{cleanStart: true, notifySub: true})
}

// dialOpts shape a test client's connection.
type dialOpts struct {
	cleanStart bool
	expiry     uint32 // session expiry interval, seconds
	// notifySub subscribes to the client's notification topic; Azure IoT
	// Operations' Go SDK does not, it only registers a handler.
	notifySub bool
}

func (e *env) dialWith(id string, o dialOpts) *client {
	t := e.t
	t.Helper()
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := &client{
		t:         t,
		id:        id,
		respTopic: "clients/" + id + "/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response",
		pending:   make(map[string]chan *paho.Publish),
		changed:   make(chan struct{}),
	}
	c.pc = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { c.received(pr.Packet); return true, nil },
		},
		PacketTimeout: wait,
		OnServerDisconnect: func(d *paho.Disconnect) {
			c.mu.Lock()
			c.disc = d
			c.mu.Unlock()
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cp := &paho.Connect{ClientID: id, CleanStart: o.cleanStart, KeepAlive: 0}
	if o.expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &o.expiry}
	}
	if _, err := c.pc.Connect(ctx, cp); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() {
		_ = c.pc.Disconnect(&paho.Disconnect{})
		select {
		case <-c.pc.Done():
		case <-time.After(wait):
		}
	})
	subs := []paho.SubscribeOptions{{Topic: c.respTopic, QoS: 1}}
	if o.notifySub {
		subs = append(subs, paho.SubscribeOptions{Topic: notifyTopicPrefix + hexUpper(id) + "/command/notify/+", QoS: 1})
	}
	if _, err := c.pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
		t.Fatalf("subscribe %s: %v", id, err)
	}
	return c
}

func hexUpper(s string) string { return string(appendUpperHex(nil, []byte(s))) }

func (c *client) received(p *paho.Publish) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if strings.HasPrefix(p.Topic, notifyTopicPrefix) {
		c.notes = append(c.notes, p)
	} else if ch, ok := c.pending[string(p.Properties.CorrelationData)]; ok {
		select {
		case ch <- p:
		default:
			c.extra = append(c.extra, p)
		}
	} else {
		c.extra = append(c.extra, p)
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// req is one request's payload and properties.
type req struct {
	payload  []byte
	props    paho.UserProperties
	corr     []byte // default: 16 random bytes
	topic    string // response topic; default the client's
	noCorr   bool
	qos0     bool
	noExpiry bool
}

// resp builds a RESP3 array of bulk strings.
func resp(args ...string) []byte {
	b := appendArrayHeader(nil, len(args))
	for _, a := range args {
		b = appendBulk(b, []byte(a))
	}
	return b
}

// now returns an HLC for the client's current time.
func (c *client) now() string {
	return HLC{Wall: time.Now().UnixMilli(), Node: c.id}.String()
}

// standard returns the properties an SDK invoker sends: __ts, __invId, __protVer.
func (c *client) standard() paho.UserProperties {
	return paho.UserProperties{
		{Key: "__ts", Value: c.now()},
		{Key: "__invId", Value: c.id},
		{Key: "__protVer", Value: "1.0"},
	}
}

// call publishes a request and waits for its response.
func (c *client) call(r req) *paho.Publish {
	c.t.Helper()
	ch := c.send(r)
	select {
	case p := <-ch:
		return p
	case <-time.After(wait):
		c.t.Fatalf("%s: no response to %q", c.id, r.payload)
		return nil
	}
}

// send publishes a request and returns where its response will arrive.
func (c *client) send(r req) chan *paho.Publish {
	c.t.Helper()
	corr := r.corr
	if corr == nil && !r.noCorr {
		corr = make([]byte, 16)
		_, _ = rand.Read(corr)
	}
	topic := r.topic
	if topic == "" {
		topic = c.respTopic
	}
	props := r.props
	if props == nil {
		props = c.standard()
	}
	// Requests repeating correlation data share one channel.
	c.mu.Lock()
	ch := c.pending[string(corr)]
	if ch == nil {
		ch = make(chan *paho.Publish, 4)
		if len(corr) > 0 {
			c.pending[string(corr)] = ch
		}
	}
	c.mu.Unlock()
	qos := byte(1)
	if r.qos0 {
		qos = 0
	}
	pp := &paho.PublishProperties{ResponseTopic: topic, CorrelationData: corr, User: props}
	if !r.noExpiry {
		expiry := uint32(10)
		pp.MessageExpiry = &expiry
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := c.pc.Publish(ctx, &paho.Publish{QoS: qos, Topic: InvokeTopic, Payload: r.payload, Properties: pp}); err != nil {
		c.t.Fatalf("%s: publish: %v", c.id, err)
	}
	return ch
}

// do sends a command with the standard properties plus extra ones and
// returns the response.
func (c *client) do(extra paho.UserProperties, args ...string) *paho.Publish {
	c.t.Helper()
	return c.call(req{payload: resp(args...), props: append(c.standard(), extra...)})
}

// notifications waits until n notifications have arrived and returns them.
// noteCount returns how many notifications c has received.
func (c *client) noteCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.notes)
}

func (c *client) notifications(n int) []*paho.Publish {
	c.t.Helper()
	deadline := time.After(wait)
	for {
		c.mu.Lock()
		got, ch := slices.Clone(c.notes), c.changed
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-ch:
		case <-deadline:
			c.t.Fatalf("%s: %d notifications, want %d", c.id, len(got), n)
		}
	}
}

func prop(p *paho.Publish, key string) (string, bool) {
	if p.Properties == nil {
		return "", false
	}
	for _, u := range p.Properties.User {
		if u.Key == key {
			return u.Value, true
		}
	}
	return "", false
}

// expect checks a response's payload and status.
func expect(t *testing.T, p *paho.Publish, payload string) {
	t.Helper()
	if string(p.Payload) != payload {
		t.Fatalf("payload %q, want %q", p.Payload, payload)
	}
	if st, _ := prop(p, "__stat"); st != "200" {
		t.Fatalf("__stat %q, want 200", st)
	}
	if v, _ := prop(p, "__protVer"); v != "1.0" {
		t.Fatalf("__protVer %q, want 1.0", v)
	}
}

func errPayload(msg string) string { return "-ERR " + msg + "\r\n" }

// version returns a response's __ts, failing the test when it is absent.
func version(t *testing.T, p *paho.Publish) HLC {
	t.Helper()
	s, ok := prop(p, "__ts")
	if !ok {
		t.Fatalf("response %q has no __ts", p.Payload)
	}
	h, ok := ParseHLC(s)
	if !ok {
		t.Fatalf("response __ts %q is not an HLC", s)
	}
	return h
}

func bulk(v string) string { return "$" + strconv.Itoa(len(v)) + "\r\n" + v + "\r\n" }

// ft is a fencing token property.
func ft(h HLC) paho.UserProperty { return paho.UserProperty{Key: "__ft", Value: h.String()} }

func props(kv ...string) paho.UserProperties {
	var p paho.UserProperties
	for i := 0; i+1 < len(kv); i += 2 {
		p = append(p, paho.UserProperty{Key: kv[i], Value: kv[i+1]})
	}
	return p
}

func clientName(t *testing.T, i int) string { return fmt.Sprintf("%s-%d", t.Name(), i) }
