package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// transports are the ways to reach a broker that a round-trip test runs over.
func transports(t *testing.T) map[string]func(id string) Dialer {
	tb := startBroker(t, broker.Options{})
	mq := startMosquitto(t, "")
	tlsConf := &tls.Config{RootCAs: mq.ca, MinVersion: tls.VersionTLS12}
	return map[string]func(string) Dialer{
		"edgeport in-process": func(string) Dialer { return tb.inProcess() },
		"edgeport tcp":        func(string) Dialer { return TCP(tb.addr, nil) },
		"mosquitto tcp":       func(string) Dialer { return mustURL(t, "mqtt://"+mq.tcp, nil) },
		"mosquitto ws":        func(string) Dialer { return mustURL(t, "ws://"+mq.ws+"/mqtt", nil) },
		"mosquitto tls":       func(string) Dialer { return mustURL(t, "mqtts://"+mq.tls, tlsConf) },
	}
}

func mustURL(t testing.TB, u string, c *tls.Config) Dialer {
	d, err := URL(u, c)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Every QoS, with properties, over every transport: what is published
// arrives with its topic, payload and MQTT 5 properties intact.
func TestPublishSubscribeRoundTrip(t *testing.T) {
	noLeaks(t)
	for name, dial := range transports(t) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t)
			// Only the internal listener admits the reserved prefix.
			prefix := ""
			if name == "edgeport in-process" {
				prefix = "$edgeport/"
			}
			sub := connect(t, Options{Dialer: dial("sub"), ClientID: prefix + "test-sub"})
			pub := connect(t, Options{Dialer: dial("pub"), ClientID: prefix + "test-pub"})
			in := newInbox()
			if err := sub.Subscribe(ctx, Subscription{Filters: filters("rt/+/x", 2), Handler: in.handler}); err != nil {
				t.Fatal(err)
			}
			for qos := byte(0); qos <= 2; qos++ {
				want := &Message{
					Topic: fmt.Sprintf("rt/%d/x", qos), QoS: qos, Payload: []byte(fmt.Sprintf("payload %d", qos)),
					ContentType: "text/plain", ResponseTopic: "rt/reply", CorrelationData: []byte{1, 2, qos},
					MessageExpiry: 60, PayloadFormat: 1, User: []packet.UserProperty{{Key: "k", Value: "v"}, {Key: "k", Value: "w"}},
				}
				if err := pub.Publish(ctx, want); err != nil {
					t.Fatalf("QoS %d: %v", qos, err)
				}
				got := in.next(t)
				if name == "edgeport in-process" {
					// The broker vouches for the publisher to internal clients.
					if o, _ := got.UserValue(broker.OriginProperty); o != "$edgeport/test-pub" {
						t.Fatalf("origin %q", o)
					}
					got.User = got.User[:len(got.User)-1]
				}
				if got.Topic != want.Topic || !bytes.Equal(got.Payload, want.Payload) || got.QoS != qos ||
					got.ContentType != want.ContentType || got.ResponseTopic != want.ResponseTopic ||
					!bytes.Equal(got.CorrelationData, want.CorrelationData) || got.PayloadFormat != 1 ||
					got.MessageExpiry == 0 || got.MessageExpiry > 60 || fmt.Sprint(got.User) != fmt.Sprint(want.User) {
					t.Fatalf("QoS %d: got %+v, want %+v", qos, got, want)
				}
			}
		})
	}
}

// MQTT 3.1.1 against mosquitto: no properties, same QoS flows.
func TestMQTT311(t *testing.T) {
	noLeaks(t)
	mq := startMosquitto(t, "")
	ctx := ctxT(t)
	sub := connect(t, Options{Dialer: TCP(mq.tcp, nil), ClientID: "s311", Version: packet.V311})
	pub := connect(t, Options{Dialer: TCP(mq.tcp, nil), ClientID: "p311", Version: packet.V311})
	in := newInbox()
	if err := sub.Subscribe(ctx, Subscription{Filters: filters("v311/#", 2), Handler: in.handler}); err != nil {
		t.Fatal(err)
	}
	for qos := byte(0); qos <= 2; qos++ {
		if err := pub.Publish(ctx, &Message{Topic: "v311/a", QoS: qos, Payload: []byte{qos}}); err != nil {
			t.Fatal(err)
		}
		if m := in.next(t); m.QoS != qos || !bytes.Equal(m.Payload, []byte{qos}) {
			t.Fatalf("got %+v", m)
		}
	}
	if _, err := pub.Request(ctx, &Message{Topic: "x"}); err == nil {
		t.Fatal("Request over 3.1.1 succeeded")
	}
}

// A refused publish is a *ReasonError carrying the code and reason string.
func TestPublishRefused(t *testing.T) {
	noLeaks(t)
	tb := startBroker(t, broker.Options{})
	c := connect(t, Options{Dialer: TCP(tb.addr, nil), ClientID: "refused"})
	for _, qos := range []byte{1, 2} {
		err := c.Publish(ctxT(t), &Message{Topic: "$SYS/forbidden", QoS: qos})
		var re *ReasonError
		if !errors.As(err, &re) || re.Code != packet.TopicNameInvalid || re.Reason == "" {
			t.Fatalf("QoS %d: got %v, want a ReasonError 0x90 with a reason", qos, err)
		}
		if !errors.Is(err, packet.TopicNameInvalid) {
			t.Fatalf("errors.Is(%v, TopicNameInvalid) = false", err)
		}
	}
	// The session still works afterwards.
	if err := c.Publish(ctxT(t), &Message{Topic: "ok", QoS: 1}); err != nil {
		t.Fatal(err)
	}
}

// A refused connection is a *ReasonError from CONNACK, in 5.0 and in
// 3.1.1 (whose return code is mapped to the 5.0 code).
func TestConnectRefused(t *testing.T) {
	noLeaks(t)
	mq := startMosquitto(t, "allow_anonymous false")
	for _, v := range []packet.Version{packet.V5, packet.V311} {
		c := newClient(t, Options{Dialer: TCP(mq.tcp, nil), ClientID: "anon", Version: v})
		err := c.Connect(ctxT(t))
		var re *ReasonError
		if !errors.As(err, &re) || re.Packet != packet.CONNACK || !errors.Is(err, packet.NotAuthorized) {
			t.Fatalf("version %d: got %v, want CONNACK not authorized", v, err)
		}
		if err := c.Publish(ctxT(t), &Message{Topic: "x"}); !errors.Is(err, ErrClosed) {
			t.Fatalf("publish after a failed Connect: %v, want ErrClosed", err)
		}
	}
}

// Subscribing to a filter the server refuses names the filter; the other
// filters of the call stay subscribed.
func TestSubscribeRefused(t *testing.T) {
	noLeaks(t)
	tb := startBroker(t, broker.Options{MaxSubscriptionsPerClient: 1})
	c := connect(t, Options{Dialer: TCP(tb.addr, nil), ClientID: "subref"})
	in := newInbox()
	err := c.Subscribe(ctxT(t), Subscription{
		Filters: []packet.Subscription{{Filter: "good/#", QoS: 1}, {Filter: "bad/#", QoS: 1}},
		Handler: in.handler,
	})
	var re *ReasonError
	if !errors.As(err, &re) || re.Packet != packet.SUBACK || re.Filter != "bad/#" || !errors.Is(err, packet.QuotaExceeded) {
		t.Fatalf("got %v, want a SUBACK quota refusal of the second filter", err)
	}
	if err := c.Subscribe(ctxT(t), Subscription{Filters: []packet.Subscription{{Filter: "$share/g/x", NoLocal: true}}, Handler: in.handler}); err == nil {
		t.Fatal("No Local on a shared subscription was sent")
	}
	if err := c.Publish(ctxT(t), &Message{Topic: "good/1", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if m := in.next(t); m.Topic != "good/1" {
		t.Fatalf("got %s", m.Topic)
	}
}

// Overlapping subscriptions: each handler gets the message once, whether
// the server routes by subscription identifier (both brokers do) or not.
func TestOverlappingSubscriptions(t *testing.T) {
	noLeaks(t)
	mq := startMosquitto(t, "")
	tb := startBroker(t, broker.Options{})
	for name, d := range map[string]func() Dialer{
		"mosquitto": func() Dialer { return TCP(mq.tcp, nil) },
		"edgeport":  func() Dialer { return tb.inProcess() },
	} {
		t.Run(name, func(t *testing.T) {
			id := "overlap"
			if name == "edgeport" {
				id = "$edgeport/overlap"
			}
			c := connect(t, Options{Dialer: d(), ClientID: id})
			a, b := newInbox(), newInbox()
			if err := c.Subscribe(ctxT(t), Subscription{Filters: filters("ov/#", 1), Handler: a.handler}); err != nil {
				t.Fatal(err)
			}
			if err := c.Subscribe(ctxT(t), Subscription{Filters: filters("ov/+", 1), Handler: b.handler}); err != nil {
				t.Fatal(err)
			}
			if err := c.Publish(ctxT(t), &Message{Topic: "ov/1", QoS: 1, Payload: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			a.next(t)
			b.next(t)
			a.none(t, c, "ov-marker")
			b.none(t, c, "ov-marker2")
			if err := c.Unsubscribe(ctxT(t), "ov/+"); err != nil {
				t.Fatal(err)
			}
			if err := c.Publish(ctxT(t), &Message{Topic: "ov/2", QoS: 1}); err != nil {
				t.Fatal(err)
			}
			a.next(t)
			b.none(t, c, "ov-marker3")
		})
	}
}

// Manual acknowledgement: PUBACKs leave in order of receipt. Acking the
// last of three messages first sends nothing, so after a reconnection the
// broker redelivers all three (DUP); acking them all in any order clears
// them, and nothing comes back after the next reconnection.
func TestManualAckInOrder(t *testing.T) {
	noLeaks(t)
	tb := startBroker(t, broker.Options{})
	ctx := ctxT(t)
	pub := connect(t, Options{Dialer: TCP(tb.addr, nil), ClientID: "ackpub"})

	session := func(id string) (*Client, *inbox) {
		in := newInbox()
		c := connect(t, Options{Dialer: TCP(tb.addr, nil), ClientID: id, SessionExpiry: time.Minute, DefaultHandler: func(_ context.Context, m *Message) {
			m.Ack() // before the test sees it, so that Close comes after
			in.ch <- m
		}})
		return c, in
	}
	c, _ := session("acker")
	in := newInbox()
	if err := c.Subscribe(ctx, Subscription{Filters: filters("ack/#", 1), Handler: in.handler, ManualAck: true}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := pub.Publish(ctx, &Message{Topic: "ack/x", QoS: 1, Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	var ms []*Message
	for range 3 {
		ms = append(ms, in.next(t))
	}
	ms[2].Ack()
	ms[2].Ack() // twice is harmless
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// The new process has no handler for ack/#: DefaultHandler gets the
	// redeliveries of the resumed session.
	c2, in2 := session("acker")
	var again []*Message
	for range 3 {
		m := in2.next(t)
		if !m.Dup {
			t.Errorf("redelivery of %v without DUP", m.Payload)
		}
		again = append(again, m)
	}
	for i, m := range again {
		if m.Payload[0] != byte(i) {
			t.Fatalf("redelivered out of order: %v", again)
		}
	}
	// DefaultHandler messages are acknowledged when it returns.
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	c3, in3 := session("acker")
	in3.none(t, c3, "ack-marker")
}

// An acknowledgement for a message whose connection ended does nothing;
// the server redelivers it on the resumed session.
func TestAckAfterReconnectIsDropped(t *testing.T) {
	noLeaks(t)
	tb := startBroker(t, broker.Options{})
	ctx := ctxT(t)
	in := newInbox()
	c := connect(t, Options{Dialer: TCP(tb.addr, nil), ClientID: "stale", SessionExpiry: time.Minute})
	if err := c.Subscribe(ctx, Subscription{Filters: filters("stale/#", 1), Handler: in.handler, ManualAck: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, &Message{Topic: "stale/1", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	first := in.next(t)
	connects := c.Stats().Connects
	tb.b.DisconnectListener("test", "test")
	testwait.For(t, "reconnection", func() bool { return c.Stats().Connects > connects && c.Connected() })
	again := in.next(t)
	if !again.Dup || again.Topic != "stale/1" {
		t.Fatalf("redelivery %+v", again)
	}
	first.Ack() // stale: nothing is sent
	again.Ack()
	in.none(t, c, "stale-marker")
}

// Session resumption: while the client is away, QoS 1 messages for its
// subscription queue in the broker and arrive after the reconnection, and
// QoS 1/2 publishes made while disconnected are sent once it is back.
func TestReconnectResumesSession(t *testing.T) {
	noLeaks(t)
	for _, target := range []string{"edgeport", "mosquitto"} {
		t.Run(target, func(t *testing.T) {
			var addr string
			var kick func()
			if target == "edgeport" {
				tb := startBroker(t, broker.Options{})
				addr, kick = tb.addr, func() { tb.b.DisconnectListener("test", "test") }
			} else {
				mq := startMosquitto(t, "")
				addr = mq.tcp
			}
			ctx := ctxT(t)
			var lost sync.WaitGroup
			lost.Add(1)
			var once sync.Once
			// A dialer the test can cut: the client's connections go through it.
			var mu sync.Mutex
			var conns []net.Conn
			dial := DialFunc(func(ctx context.Context) (net.Conn, error) {
				nc, err := TCP(addr, nil).Dial(ctx)
				if err == nil {
					mu.Lock()
					conns = append(conns, nc)
					mu.Unlock()
				}
				return nc, err
			})
			if kick == nil {
				kick = func() {
					mu.Lock()
					defer mu.Unlock()
					for _, c := range conns {
						c.Close()
					}
				}
			}
			in := newInbox()
			var acks []ConnAck
			c := connect(t, Options{Dialer: dial, ClientID: "resume-" + target, SessionExpiry: time.Minute,
				OnConnect:        func(a ConnAck) { mu.Lock(); acks = append(acks, a); mu.Unlock() },
				OnConnectionLost: func(error) { once.Do(lost.Done) }})
			if err := c.Subscribe(ctx, Subscription{Filters: filters("resume/#", 1), Handler: in.handler}); err != nil {
				t.Fatal(err)
			}
			other := connect(t, Options{Dialer: TCP(addr, nil), ClientID: "other-" + target})
			kick()
			lost.Wait()
			for i := range 3 {
				if err := other.Publish(ctx, &Message{Topic: "resume/q", QoS: 1, Payload: []byte{byte(i)}}); err != nil {
					t.Fatal(err)
				}
			}
			// Published while (possibly) still disconnected: queued, then sent.
			if err := c.Publish(ctx, &Message{Topic: "resume/self", QoS: 2, Payload: []byte("own")}); err != nil {
				t.Fatal(err)
			}
			// At least once: a message in flight when the connection was cut
			// may come twice; read until each has come.
			got := map[string]bool{}
			for len(got) < 4 {
				m := in.next(t)
				got[m.Topic+string(m.Payload)] = true
			}
			for _, k := range []string{"resume/q\x00", "resume/q\x01", "resume/q\x02", "resume/selfown"} {
				if !got[k] {
					t.Fatalf("missing %q in %v", k, got)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(acks) < 2 || !acks[len(acks)-1].SessionPresent {
				t.Fatalf("CONNACKs %+v: want a resumed session", acks)
			}
		})
	}
}

// A session the server no longer has: the client subscribes again.
func TestResubscribeWhenSessionLost(t *testing.T) {
	noLeaks(t)
	tb := startBroker(t, broker.Options{})
	ctx := ctxT(t)
	in := newInbox()
	c := connect(t, Options{Dialer: tb.inProcess(), ClientID: "$edgeport/clean"}) // session expiry 0
	if err := c.Subscribe(ctx, Subscription{Filters: filters("clean/#", 1), Handler: in.handler}); err != nil {
		t.Fatal(err)
	}
	connects := c.Stats().Connects
	tb.b.DisconnectListener(broker.InternalListener, "test")
	testwait.For(t, "reconnection", func() bool { return c.Stats().Connects > connects && c.Connected() })
	other := connect(t, Options{Dialer: TCP(tb.addr, nil), ClientID: "clean-pub"})
	// The resubscription may still be in flight: publish until it arrives.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := other.Publish(ctx, &Message{Topic: "clean/x", QoS: 1}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-in.ch:
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no message after the resubscription")
		}
	}
}

// Stop ends operations waiting for a connection with ErrClosed and leaves
// no goroutine behind, even with the broker gone.
func TestStopUnblocks(t *testing.T) {
	noLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every dial fails
	c := newClient(t, Options{Dialer: TCP(addr, nil), ClientID: "nobody"})
	if err := c.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { errs <- c.Publish(context.Background(), &Message{Topic: "x", QoS: 1}) }()
	go func() {
		errs <- c.Subscribe(context.Background(), Subscription{Filters: filters("x", 0), Handler: func(context.Context, *Message) {}})
	}()
	wctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.WaitConnected(wctx); !isTimeout(err) || !strings.Contains(err.Error(), "dialing") {
		t.Fatalf("WaitConnected: %v, want a timeout naming the dial error", err)
	}
	if err := c.Publish(ctxT(t), &Message{Topic: "x"}); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("QoS 0 while disconnected: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Fatalf("got %v, want ErrClosed", err)
		}
	}
}

// With NoReconnect, a lost connection fails waiting operations.
func TestNoReconnect(t *testing.T) {
	noLeaks(t)
	tb := startBroker(t, broker.Options{})
	lost := make(chan error, 1)
	c := connect(t, Options{Dialer: tb.inProcess(), ClientID: "$edgeport/once", NoReconnect: true,
		OnConnectionLost: func(err error) { lost <- err }})
	tb.b.DisconnectListener(broker.InternalListener, "bye")
	err := <-lost
	var re *ReasonError
	if !errors.As(err, &re) || re.Packet != packet.DISCONNECT || re.Code != packet.ServerShuttingDown {
		t.Fatalf("lost with %v, want the broker's DISCONNECT 0x8B", err)
	}
	if err := c.Publish(ctxT(t), &Message{Topic: "x", QoS: 1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after the connection was lost: %v", err)
	}
}

// Request/response: the responder answers on the response topic with the
// correlation data; the request expires with the caller's deadline.
func TestRequestResponse(t *testing.T) {
	noLeaks(t)
	tb := startBroker(t, broker.Options{})
	ctx := ctxT(t)
	srv := connect(t, Options{Dialer: tb.inProcess(), ClientID: "$edgeport/responder"})
	var gotExpiry uint32
	var mu sync.Mutex
	err := srv.Subscribe(ctx, Subscription{Filters: filters("svc/echo", 1), Handler: func(ctx context.Context, m *Message) {
		mu.Lock()
		gotExpiry = m.MessageExpiry
		mu.Unlock()
		if err := srv.Respond(ctx, m, &Message{Payload: append([]byte("echo "), m.Payload...)}); err != nil {
			t.Errorf("Respond: %v", err)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	cl := connect(t, Options{Dialer: TCP(tb.addr, nil), ClientID: "requester"})
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			resp, err := cl.Request(rctx, &Message{Topic: "svc/echo", QoS: 1, Payload: []byte(fmt.Sprint(i))})
			if err != nil {
				t.Error(err)
				return
			}
			if string(resp.Payload) != "echo "+fmt.Sprint(i) {
				t.Errorf("request %d answered %q", i, resp.Payload)
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	if gotExpiry == 0 || gotExpiry > 3 {
		t.Errorf("request message expiry %d, want 1-3 s from the deadline", gotExpiry)
	}
	mu.Unlock()

	if _, err := cl.Request(ctx, &Message{Topic: "svc/nobody", QoS: 1}); !errors.Is(err, ErrNoResponder) {
		t.Fatalf("request to nobody: %v, want ErrNoResponder", err)
	}
	// A responder that never answers: the caller's deadline ends the wait.
	if err := srv.Subscribe(ctx, Subscription{Filters: filters("svc/silent", 1), Handler: func(context.Context, *Message) {}}); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := cl.Request(rctx, &Message{Topic: "svc/silent", QoS: 1}); !isTimeout(err) {
		t.Fatalf("silent responder: %v, want a deadline error", err)
	}
}

// A handler may publish with QoS 1 and wait for the PUBACK: handlers do not
// run on the reader.
func TestHandlerPublishes(t *testing.T) {
	noLeaks(t)
	tb := startBroker(t, broker.Options{})
	ctx := ctxT(t)
	c := connect(t, Options{Dialer: tb.inProcess(), ClientID: "$edgeport/relay"})
	out := newInbox()
	if err := c.Subscribe(ctx, Subscription{Filters: filters("relay/out", 1), Handler: out.handler}); err != nil {
		t.Fatal(err)
	}
	err := c.Subscribe(ctx, Subscription{Filters: filters("relay/in", 1), Handler: func(ctx context.Context, m *Message) {
		if err := c.Publish(ctx, &Message{Topic: "relay/out", QoS: 1, Payload: m.Payload}); err != nil {
			t.Errorf("publishing from a handler: %v", err)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		c.PublishAsync(&Message{Topic: "relay/in", QoS: 1, Payload: []byte{byte(i)}}, nil)
	}
	for i := range 50 {
		if m := out.next(t); m.Payload[0] != byte(i) {
			t.Fatalf("message %d: got %v", i, m.Payload)
		}
	}
}

// The server's Receive Maximum bounds what the client has in flight;
// PublishAsync queues the rest and keeps the order.
func TestReceiveMaximumRespected(t *testing.T) {
	noLeaks(t)
	tb := startBroker(t, broker.Options{ReceiveMaximum: 2})
	ctx := ctxT(t)
	c := connect(t, Options{Dialer: TCP(tb.addr, nil), ClientID: "flow"})
	in := newInbox()
	if err := c.Subscribe(ctx, Subscription{Filters: filters("flow", 2), Handler: in.handler}); err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		c.PublishAsync(&Message{Topic: "flow", QoS: byte(1 + i%2), Payload: []byte{byte(i)}}, func(_ packet.ReasonCode, err error) {
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	for i := range n {
		if m := in.next(t); m.Payload[0] != byte(i) {
			t.Fatalf("message %d arrived as %d", i, m.Payload[0])
		}
	}
}

// A QoS 0 publish beyond the server's Maximum Packet Size is refused
// locally instead of getting the connection closed.
func TestMaximumPacketSize(t *testing.T) {
	noLeaks(t)
	tb := startBroker(t, broker.Options{MaxPacketSize: 1024})
	c := connect(t, Options{Dialer: tb.inProcess(), ClientID: "$edgeport/big"})
	for _, qos := range []byte{0, 1} {
		if err := c.Publish(ctxT(t), &Message{Topic: "big", QoS: qos, Payload: make([]byte, 2000)}); !errors.Is(err, ErrPacketTooLarge) {
			t.Fatalf("QoS %d: %v, want ErrPacketTooLarge", qos, err)
		}
	}
	if err := c.Publish(ctxT(t), &Message{Topic: "big", QoS: 1, Payload: make([]byte, 500)}); err != nil {
		t.Fatal(err)
	}
}

// A client certificate authenticates over TLS (mosquitto requires one here).
func TestTLSClientCertificate(t *testing.T) {
	noLeaks(t)
	mq := startMosquitto(t, "")
	conf := &tls.Config{RootCAs: mq.ca, Certificates: []tls.Certificate{mq.clientCert}, MinVersion: tls.VersionTLS12}
	c := connect(t, Options{Dialer: TCP(mq.tls, conf), ClientID: "tls"})
	if err := c.Publish(ctxT(t), &Message{Topic: "tls", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	// Without the CA the handshake fails, and Connect says so.
	bad := newClient(t, Options{Dialer: TCP(mq.tls, &tls.Config{MinVersion: tls.VersionTLS12}), ClientID: "tls-bad"})
	if err := bad.Connect(ctxT(t)); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Connect without the CA: %v", err)
	}
}

func TestURL(t *testing.T) {
	for _, tt := range []struct{ in, err string }{
		{"mqtt://127.0.0.1:1883", ""},
		{"mqtt://localhost", ""},
		{"tcp://h:1", ""},
		{"mqtts://h", ""},
		{"ws://h:8080/mqtt", ""},
		{"wss://h/mqtt", ""},
		{"http://h", "scheme must be"},
		{"mqtt://", "no host"},
		{"mqtt://h/path", "no path"},
		{"::", "parsing"},
	} {
		_, err := URL(tt.in, nil)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("URL(%q) = %v, want error containing %q", tt.in, err, tt.err)
		}
	}
}

// Batches larger than the writer keeps for reuse (1 MiB) go out intact.
func TestLargeBatches(t *testing.T) {
	noLeaks(t)
	tb := startBroker(t, broker.Options{})
	c := connect(t, Options{Dialer: tb.inProcess(), ClientID: "$edgeport/large"})
	in := newInbox()
	if err := c.Subscribe(ctxT(t), Subscription{Filters: filters("large", 1), Handler: in.handler}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for round := range 3 {
		wg.Add(30)
		for i := range 30 {
			p := bytes.Repeat([]byte{byte(round*30 + i)}, 100<<10)
			c.PublishAsync(&Message{Topic: "large", QoS: 1, Payload: p}, func(_ packet.ReasonCode, err error) {
				if err != nil {
					t.Error(err)
				}
				wg.Done()
			})
		}
		wg.Wait()
	}
	for i := range 90 {
		m := in.next(t)
		if len(m.Payload) != 100<<10 || m.Payload[0] != byte(i) || m.Payload[len(m.Payload)-1] != byte(i) {
			t.Fatalf("message %d: %d bytes starting with %d", i, len(m.Payload), m.Payload[0])
		}
	}
}

// A component starting against a broker that refuses its client is not held
// for its whole bound: SubscribeWithin gives up at the first failed attempt
// (the hour-long bound would otherwise outlast the test's timeout) and the
// subscription stays registered for when the client connects.
func TestSubscribeWithinStopsAtRefusal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every dial fails
	c := newClient(t, Options{Dialer: TCP(addr, nil), ClientID: "refused"})
	if err := c.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the first call may come before any attempt, the second after one
		err := c.SubscribeWithin(context.Background(), Subscription{Filters: filters("x", 1), Handler: func(context.Context, *Message) {}}, time.Hour)
		if !errors.Is(err, ErrSubscribePending) {
			t.Fatalf("SubscribeWithin: %v, want ErrSubscribePending", err)
		}
	}
}
