package auth

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/clock"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/testpeer/paho5"
	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/edgeport/edgeport/internal/testwait"
)

const (
	wait     = 5 * time.Second
	listener = "secure" // the listener name of startBroker's port
)

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startBroker runs a broker whose port on 127.0.0.1:0 is the listener
// "secure", stopped at cleanup.
func startBroker(t *testing.T) (string, *broker.Broker) {
	t.Helper()
	return startBrokerOn(t, nil)
}

// startBrokerOn is startBroker with the broker on clk (nil: real time).
func startBrokerOn(t *testing.T, clk clock.Clock) (string, *broker.Broker) {
	t.Helper()
	b, err := broker.New(broker.Options{SysInterval: -1, Clock: clk}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Start(ctx)
	ln := testserve.Loopback(t, func(conn net.Conn) { b.ServeConn(conn, listener) })
	t.Cleanup(func() {
		ln.Close()
		sctx, scancel := context.WithTimeout(context.Background(), wait)
		defer scancel()
		if err := b.Stop(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		cancel()
		ln.Wait()
	})
	return ln.Addr(), b
}

// client is a paho.golang MQTT 5 client.
type client struct {
	*paho5.Client
	t *testing.T
}

// noAuther satisfies paho's enhanced authentication hook for one-step
// methods, where the server never asks for more.
type noAuther struct{}

func (noAuther) Authenticate(a *paho.Auth) *paho.Auth { return a }
func (noAuther) Authenticated()                       {}

// dial connects; the CONNACK (or the error) says how it went.
func dial(t *testing.T, addr string, cp *paho.Connect) (*client, error) {
	t.Helper()
	c, err := paho5.Dial(t, addr, cp, func(cc *paho.ClientConfig) { cc.AuthHandler = noAuther{} })
	return &client{Client: c, t: t}, err
}

func mustDial(t *testing.T, addr string, cp *paho.Connect) *client {
	t.Helper()
	c, err := dial(t, addr, cp)
	if err != nil {
		t.Fatalf("connect %s: %v", cp.ClientID, err)
	}
	return c
}

// refused connects and returns the CONNACK reason, failing unless refused.
func refused(t *testing.T, addr string, cp *paho.Connect) byte {
	t.Helper()
	c, err := dial(t, addr, cp)
	if err == nil || c.Connack == nil {
		t.Fatalf("connect %s: accepted or no CONNACK (%v)", cp.ClientID, err)
	}
	return c.Connack.ReasonCode
}

func userConn(id, user, pass string) *paho.Connect {
	return &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30, Username: user, UsernameFlag: user != "",
		Password: []byte(pass), PasswordFlag: pass != ""}
}

// satConn is the CONNECT of a K8S-SAT client.
func satConn(id, token string) *paho.Connect {
	return &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{AuthMethod: SATMethod, AuthData: []byte(token)}}
}

func (c *client) sub(filter string, qos byte) byte {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if sa == nil || len(sa.Reasons) != 1 {
		c.t.Fatalf("subscribe %q: %v", filter, err)
	}
	return sa.Reasons[0]
}

// pub publishes with QoS 1 and returns the PUBACK reason.
func (c *client) pub(topic, payload string, retain bool) byte {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload), Retain: retain})
	if r == nil {
		c.t.Fatalf("publish %q: %v", topic, err)
	}
	return r.ReasonCode
}

// got returns the payloads received on topic.
func (c *client) got(topic string) []string {
	var out []string
	for _, p := range c.In.All() {
		if p.Topic == topic {
			out = append(out, string(p.Payload))
		}
	}
	return out
}

func (c *client) waitFor(topic string, n int) []string {
	c.t.Helper()
	var got []string
	if !testwait.Within(testwait.Timeout, func() bool { got = c.got(topic); return len(got) >= n }) {
		c.t.Fatalf("timed out waiting for %d messages on %q, have %v", n, topic, got)
	}
	return got
}

// alive checks the connection still works (a PINGREQ is answered).
func (c *client) alive() bool {
	select {
	case <-c.Closed:
		return false
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// Any SUBACK will do, refusals included: the broker answered.
	sa, _ := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "alive/probe"}}})
	return sa != nil
}

// drop ends the connection without DISCONNECT, as a crash would: the
// will goes out.
func (c *client) drop() { c.Conn.Close() }

func (c *client) waitClosed() {
	c.t.Helper()
	select {
	case <-c.Closed:
	case <-time.After(wait):
		c.t.Fatal("the broker did not close the connection")
	}
}

// v3 is a paho.mqtt.golang (MQTT 3.1.1) client.
type v3 struct {
	mqtt.Client
	in paho5.Inbox[mqtt.Message]
}

func dialV3(t *testing.T, addr, id, user, pass string) (*v3, error) {
	t.Helper()
	c := &v3{}
	o := mqtt.NewClientOptions()
	o.Servers = []*url.URL{{Scheme: "tcp", Host: addr}}
	o.SetClientID(id).SetUsername(user).SetPassword(pass).SetCleanSession(true).SetAutoReconnect(false).
		SetConnectRetry(false).SetProtocolVersion(4).SetConnectTimeout(wait)
	o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { c.in.Add(m) })
	c.Client = mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) {
		t.Fatal("MQTT 3.1.1 connect timed out")
	}
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(0) })
	}
	return c, tok.Error()
}

func policyFrom(t *testing.T, yaml string) *Policy {
	t.Helper()
	obj, err := config.Builtin().Decode([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := NewPolicy(obj.Spec.(*config.BrokerAuthorizationSpec))
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// counters returns the listener's counters.
func counters(b *broker.Broker) broker.ListenerCounters {
	return b.Counters().Listeners[listener]
}
