package broker

import (
	"context"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/edgeport/edgeport/internal/testpeer/paho5"
	"github.com/edgeport/edgeport/internal/testwait"
)

// pahoWait bounds every wait for something that must happen.
const pahoWait = 5 * time.Second

// p5 is a paho.golang (MQTT 5) client with what the tests observe of it.
type p5 struct{ *paho5.Client }

// p5Config adjusts a client before it connects.
type p5Config func(*paho.ClientConfig)

func manualAck(cc *paho.ClientConfig) {
	cc.EnableManualAcknowledgment = true
	cc.SendAcksInterval = 5 * time.Millisecond
}

// dialP5 connects a paho.golang client with cp (CleanStart and KeepAlive as
// given) and fails the test unless the broker accepts it.
func dialP5(t testing.TB, addr string, cp *paho.Connect, cfgs ...p5Config) *p5 {
	t.Helper()
	c, err := tryDialP5(t, addr, cp, cfgs...)
	if err != nil {
		t.Fatalf("connect %q: %v", cp.ClientID, err)
	}
	return c
}

func tryDialP5(t testing.TB, addr string, cp *paho.Connect, cfgs ...p5Config) (*p5, error) {
	t.Helper()
	adjust := make([]func(*paho.ClientConfig), len(cfgs))
	for i, f := range cfgs {
		adjust[i] = f
	}
	c, err := paho5.Dial(t, addr, cp, adjust...)
	return &p5{c}, err
}

// v5conn is the CONNECT of a clean client with the given ID.
func v5conn(id string) *paho.Connect {
	return &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
}

// v5persistent is the CONNECT of a client whose session outlives the
// connection by expiry seconds.
func v5persistent(id string, cleanStart bool, expiry uint32) *paho.Connect {
	return &paho.Connect{ClientID: id, CleanStart: cleanStart, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry, RequestProblemInfo: true}}
}

func (c *p5) sub(t testing.TB, opts ...paho.SubscribeOptions) *paho.Suback {
	t.Helper()
	return c.subWith(t, nil, opts...)
}

func (c *p5) subWith(t testing.TB, props *paho.SubscribeProperties, opts ...paho.SubscribeOptions) *paho.Suback {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pahoWait)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Properties: props, Subscriptions: opts})
	if err != nil {
		t.Fatalf("subscribe %+v: %v", opts, err)
	}
	for i, o := range opts {
		if sa.Reasons[i] != o.QoS {
			t.Fatalf("subscribe %q: reason 0x%02X, want granted QoS %d", o.Topic, sa.Reasons[i], o.QoS)
		}
	}
	return sa
}

func (c *p5) pub(t testing.TB, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pahoWait)
	defer cancel()
	r, err := c.Publish(ctx, p)
	if err != nil {
		t.Fatalf("publish %q: %v", p.Topic, err)
	}
	return r
}

// waitTopic waits for n messages on topic and returns them.
func (c *p5) waitTopic(t testing.TB, topic string, n int) []*paho.Publish {
	t.Helper()
	return c.In.WaitFor(t, "message on "+topic, n, func(p *paho.Publish) bool { return p.Topic == topic })
}

// onTopic returns what arrived on topic so far.
func (c *p5) onTopic(topic string) []*paho.Publish {
	var out []*paho.Publish
	for _, p := range c.In.All() {
		if p.Topic == topic {
			out = append(out, p)
		}
	}
	return out
}

// markerTopic is the topic of positive control messages; tests subscribe
// their observers to it alongside what they watch.
const markerTopic = "marker"

var markerSub = paho.SubscribeOptions{Topic: markerTopic, QoS: 0}

// settle makes every observer's inbox final for what happened before the
// call, by ordering rather than by waiting a while (a positive barrier):
//
//  1. each observer makes a round trip on its own connection (it
//     subscribes to the marker topic again): the broker handles one
//     connection's packets in order, so it has finished everything the
//     observer sent before (a SUBSCRIBE's retained messages, a resumed
//     session's resends, the deliveries its acknowledgements release);
//  2. pub publishes a marker, and settle waits until every observer has it.
//
// The broker routes pub's packets in order and writes each session's
// deliveries in the order it routes them, and Paho hands messages over in
// the order they arrive. So anything pub published before the marker, and
// anything another client had published and seen acknowledged before
// settle, has reached an observer before its marker or never will.
// (Broker-initiated publications, wills, need their own barrier first: see
// waitWillsDone.)
func settle(t testing.TB, pub *p5, observers ...*p5) {
	t.Helper()
	want := make([]int, len(observers))
	for i, o := range observers {
		o.sub(t, markerSub)
		want[i] = len(o.onTopic(markerTopic)) + 1
	}
	pub.pub(t, &paho.Publish{Topic: markerTopic, Payload: []byte("m")})
	for i, o := range observers {
		o.waitTopic(t, markerTopic, want[i])
	}
}

// waitWillsDone returns once every will publication the broker has decided
// on has been routed. A connection's end decides on its will under
// Broker.sessMu, and a will timer fired by a fake clock's Advance decides
// on the test's goroutine; so once a test knows the decision was made (the
// connection counted as gone, or Advance returned), taking sessMu once
// and then seeing no publication under way proves every will is out.
func waitWillsDone(t testing.TB, b *Broker) {
	t.Helper()
	b.sessMu.Lock()
	//lint:ignore SA2001 the empty critical section is the point: a barrier behind any detach under way
	b.sessMu.Unlock()
	testwait.For(t, "will publications finished", func() bool { return b.willsOut.Load() == 0 })
}

// payloads lists the payloads of msgs as strings.
func payloads(msgs []*paho.Publish) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Payload)
	}
	return out
}

// waitConnected polls until the broker counts n connected clients, so a test
// knows a disconnect has been processed.
func waitConnected(t testing.TB, b *Broker, n int64) {
	t.Helper()
	testwait.For(t, "connected clients", func() bool { return b.Counters().Connected == n })
}

// p3 is a paho.mqtt.golang (MQTT 3.1.1) client and what it received.
type p3 struct {
	mqtt.Client
	in *paho5.Inbox[mqtt.Message]

	mu   sync.Mutex
	conn net.Conn // the socket under the client, for abnormal closes
}

// options returns the settings of an MQTT 3.1.1 client whose socket the test can
// reach and that neither retries nor reconnects on its own.
func (c *p3) options(addr, id string, clean bool) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(id).
		SetCleanSession(clean).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(true).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(pahoWait).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { c.in.Add(m) }).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			conn, err := net.Dial("tcp", u.Host)
			c.mu.Lock()
			c.conn = conn
			c.mu.Unlock()
			return conn, err
		})
}

// dialP3 connects an MQTT 3.1.1 client; adjust may change the options.
func dialP3(t testing.TB, addr, id string, clean bool, adjust ...func(*mqtt.ClientOptions)) (*p3, *mqtt.ConnectToken) {
	t.Helper()
	c := &p3{in: new(paho5.Inbox[mqtt.Message])}
	o := c.options(addr, id, clean)
	for _, f := range adjust {
		f(o)
	}
	c.Client = mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(pahoWait) {
		t.Fatalf("connect %q: timed out", id)
	}
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(0) })
	}
	return c, tok.(*mqtt.ConnectToken)
}

func mustP3(t testing.TB, addr, id string, clean bool, adjust ...func(*mqtt.ClientOptions)) *p3 {
	t.Helper()
	c, tok := dialP3(t, addr, id, clean, adjust...)
	if err := tok.Error(); err != nil {
		t.Fatalf("connect %q: %v", id, err)
	}
	return c
}

func p3wait(t testing.TB, what string, tok mqtt.Token) {
	t.Helper()
	if !tok.WaitTimeout(pahoWait) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// sub subscribes to filter (messages go to the inbox) and checks the grant.
func (c *p3) sub(t testing.TB, filter string, qos byte) {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	p3wait(t, "subscribe "+filter, tok)
	if got := tok.(*mqtt.SubscribeToken).Result()[filter]; got != qos {
		t.Fatalf("subscribe %q: granted %d, want %d", filter, got, qos)
	}
}

func (c *p3) pub(t testing.TB, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	p3wait(t, "publish "+topic, c.Publish(topic, qos, retain, payload))
}

func (c *p3) waitTopic(t testing.TB, topic string, n int) []mqtt.Message {
	t.Helper()
	return c.in.WaitFor(t, "message on "+topic, n, func(m mqtt.Message) bool { return m.Topic() == topic })
}

func (c *p3) onTopic(topic string) []mqtt.Message {
	var out []mqtt.Message
	for _, m := range c.in.All() {
		if m.Topic() == topic {
			out = append(out, m)
		}
	}
	return out
}

// settle3 is settle for MQTT 3.1.1 observers.
func settle3(t testing.TB, pub *p3, observers ...*p3) {
	t.Helper()
	want := make([]int, len(observers))
	for i, o := range observers {
		o.sub(t, markerTopic, 0)
		want[i] = len(o.onTopic(markerTopic)) + 1
	}
	pub.pub(t, markerTopic, 0, false, "m")
	for i, o := range observers {
		o.waitTopic(t, markerTopic, want[i])
	}
}

// closeSocket drops the client's TCP connection without DISCONNECT.
func (c *p3) closeSocket() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn.Close()
}
