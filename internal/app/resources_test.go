package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testlog"
	"github.com/edgeport/edgeport/internal/testwait"
)

const wait = 5 * time.Second

// startApp runs an App with a built-in MQTT listener on a free port and no
// HTTP server, in memory, and stops it at cleanup.
func startApp(t *testing.T, cfg Config) *App {
	t.Helper()
	a := newTestApp(t, cfg)
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopApp(t, a) })
	return a
}

// stopApp stops a within the tests' bound.
func stopApp(t *testing.T, a *App) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
}

// newTestApp builds (does not start) the App startApp runs.
func newTestApp(t *testing.T, cfg Config) *App {
	t.Helper()
	if cfg.MQTTAddr == "" {
		cfg.MQTTAddr = "127.0.0.1:0"
	}
	// A data directory given by the test is used for real: resources and
	// the store persist in it. Otherwise everything stays in memory.
	if cfg.DataDir == "" {
		cfg.DataDir, cfg.InMemory = t.TempDir(), true
	}
	cfg.WSAddr = Off
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = Off
	}
	if cfg.Broker.SysInterval == 0 {
		cfg.Broker.SysInterval = -1
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	a, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	a.res.retry = 50 * time.Millisecond
	return a
}

func apply(t *testing.T, a *App, doc string) *config.Object {
	t.Helper()
	obj, err := config.Builtin().Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	_, out, err := a.Resources().Apply(obj, config.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitStatus waits until the resource's Ready condition has the wanted
// status for its current generation.
func waitStatus(t *testing.T, a *App, k config.Key, want string) *config.Object {
	t.Helper()
	var o *config.Object
	var ok bool
	if !testwait.Within(wait, func() bool {
		o, ok = a.Resources().Get(k)
		return ok && o.Status != nil && o.Status.ObservedGeneration == o.Metadata.Generation && o.Ready().Status == want
	}) {
		t.Fatalf("%s not Ready=%s within %v: %+v", k, want, wait, o)
	}
	return o
}

// client is a minimal MQTT 5 client over a real socket.
type client struct {
	t    *testing.T
	conn net.Conn
	in   chan any // decoded packets; closed when the connection ends
}

func dial(t *testing.T, addr, id string) (*client, *packet.ConnAck) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c, ack := dialAs(t, conn, &packet.Connect{ClientID: id})
	if ack.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK %+v", id, ack)
	}
	return c, ack
}

// dialAs connects with cp over conn (plain or TLS) and returns the client
// and its CONNACK, whatever the reason code.
func dialAs(t *testing.T, conn net.Conn, cp *packet.Connect) (*client, *packet.ConnAck) {
	t.Helper()
	c := newClient(t, conn)
	cp.ProtocolName, cp.Version, cp.CleanStart = "MQTT", packet.V5, true
	c.write(cp.Append(nil, packet.V5))
	ack, ok := c.next().(*packet.ConnAck)
	if !ok {
		t.Fatalf("%s: no CONNACK", cp.ClientID)
	}
	return c, ack
}

// newClient reads conn's packets into the client's channel until the
// connection ends, which the test's cleanup ensures.
func newClient(t *testing.T, conn net.Conn) *client {
	c := &client{t: t, conn: conn, in: make(chan any, 16)}
	t.Cleanup(func() { conn.Close() })
	go func() {
		defer close(c.in)
		r := packet.NewReader(conn, 0)
		for {
			h, body, err := r.Next(0)
			if err != nil {
				return
			}
			switch h.Type {
			case packet.CONNACK:
				p := new(packet.ConnAck)
				if p.Decode(h.Flags, body, packet.V5) == nil {
					c.in <- p
				}
			case packet.DISCONNECT:
				p := new(packet.Disconnect)
				if p.Decode(h.Flags, body, packet.V5) == nil {
					c.in <- p
				}
			default:
				c.in <- h.Type
			}
		}
	}()
	return c
}

func (c *client) write(b []byte) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(wait))
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) next() any {
	c.t.Helper()
	select {
	case p, ok := <-c.in:
		if !ok {
			c.t.Fatal("connection ended")
		}
		return p
	case <-time.After(wait):
		c.t.Fatal("no packet in time")
	}
	return nil
}

// alive checks the connection still works: PINGREQ answered by PINGRESP.
func (c *client) alive() {
	c.t.Helper()
	c.write(packet.AppendPingReq(nil))
	if p := c.next(); p != packet.PINGRESP {
		c.t.Fatalf("got %v, want PINGRESP", p)
	}
}

// disconnected waits for the broker to end the connection and returns the
// DISCONNECT it sent first, if any.
func (c *client) disconnected() *packet.Disconnect {
	c.t.Helper()
	var d *packet.Disconnect
	for {
		select {
		case p, ok := <-c.in:
			if !ok {
				return d
			}
			if dp, isD := p.(*packet.Disconnect); isD {
				d = dp
			}
		case <-time.After(wait):
			c.t.Fatal("connection not ended in time")
		}
	}
}

func listenerYAML(name string, ports ...string) string {
	return fmt.Sprintf("apiVersion: edgeport.io/v1\nkind: BrokerListener\nmetadata: {name: %s}\nspec:\n  ports:\n%s", name,
		"  - "+strings.Join(ports, "\n  - ")+"\n")
}

func portAddr(t *testing.T, o *config.Object, port int) string {
	t.Helper()
	for _, p := range o.Status.Ports {
		if p.Port == port && p.Ready {
			return p.Address
		}
	}
	t.Fatalf("port %d not listening: %+v", port, o.Status)
	return ""
}

func TestListenerLiveApply(t *testing.T) {
	a := startApp(t, Config{})
	builtin, _ := dial(t, a.Addrs()["mqtt"].String(), "on-builtin")
	k := config.Key{Kind: "BrokerListener", Name: "extra"}

	apply(t, a, listenerYAML("extra", "{port: 0}"))
	o := waitStatus(t, a, k, config.ConditionTrue)
	if c := o.Ready(); c.Reason != "Listening" || !strings.Contains(c.Message, "listening on 127.0.0.1:") {
		t.Fatalf("ready %+v", c)
	}
	addr := portAddr(t, o, 0)
	if got := a.Addrs()["extra:0"]; got == nil || got.String() != addr {
		t.Fatalf("Addrs %v, status %s", a.Addrs(), addr)
	}
	first, _ := dial(t, addr, "on-extra")

	// Adding a port that cannot bind (192.0.2.1 is a documentation
	// address, on no interface) leaves the first port and its client alone.
	apply(t, a, listenerYAML("extra", "{port: 0}", "{port: 1883, protocol: WebSockets, address: 192.0.2.1}"))
	o = waitStatus(t, a, k, config.ConditionFalse)
	if c := o.Ready(); c.Reason != "BindFailed" || !strings.Contains(c.Message, "port 1883: listen tcp 192.0.2.1:1883: bind:") {
		t.Fatalf("ready %+v", c)
	}
	if portAddr(t, o, 0) != addr {
		t.Fatalf("first port moved")
	}
	first.alive()
	builtin.alive()

	// Only labels change: nothing restarts.
	apply(t, a, strings.Replace(listenerYAML("extra", "{port: 0}"), "{name: extra}", "{name: extra, labels: {a: b}}", 1))
	o = waitStatus(t, a, k, config.ConditionTrue)
	if portAddr(t, o, 0) != addr {
		t.Fatalf("port rebound: %s, was %s", portAddr(t, o, 0), addr)
	}
	first.alive()

	// Deleting the listener disconnects its clients, and only them.
	if _, err := a.Resources().Delete(k, ""); err != nil {
		t.Fatal(err)
	}
	d := first.disconnected()
	if d == nil || d.ReasonCode != packet.ServerShuttingDown || !strings.Contains(d.Properties.ReasonString, "extra:0 removed") {
		t.Fatalf("disconnect %+v", d)
	}
	builtin.alive()
	testwait.For(t, "address gone", func() bool { _, ok := a.Addrs()["extra:0"]; return !ok })
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts after delete", addr)
	}
}

func TestChangedListenerReconnectsOnlyItsClients(t *testing.T) {
	a := startApp(t, Config{})
	ka, kb := config.Key{Kind: "BrokerListener", Name: "a"}, config.Key{Kind: "BrokerListener", Name: "b"}
	apply(t, a, listenerYAML("a", "{port: 0}"))
	apply(t, a, listenerYAML("b", "{port: 0}"))
	ca, _ := dial(t, portAddr(t, waitStatus(t, a, ka, config.ConditionTrue), 0), "ca")
	cb, _ := dial(t, portAddr(t, waitStatus(t, a, kb, config.ConditionTrue), 0), "cb")

	apply(t, a, listenerYAML("a", "{port: 0, maxConnections: 5}"))
	d := ca.disconnected()
	if d == nil || !strings.Contains(d.Properties.ReasonString, "a:0 changed") {
		t.Fatalf("disconnect %+v", d)
	}
	o := waitStatus(t, a, ka, config.ConditionTrue)
	if o.Metadata.Generation != 2 {
		t.Fatalf("generation %d", o.Metadata.Generation)
	}
	dial(t, portAddr(t, o, 0), "ca-again")
	cb.alive()
	evs, _ := a.Resources().Events(ka)
	found := false
	for _, e := range evs {
		found = found || e.Reason == "PortClosed" && strings.Contains(e.Message, "1 clients disconnected")
	}
	if !found {
		t.Fatalf("no PortClosed event: %+v", evs)
	}
}

func TestBrokerLimitsLive(t *testing.T) {
	a := startApp(t, Config{Broker: broker.Options{MaxPacketSize: 4096}})
	apply(t, a, listenerYAML("side", "{port: 0}"))
	side := waitStatus(t, a, config.Key{Kind: "BrokerListener", Name: "side"}, config.ConditionTrue)
	other, ack := dial(t, portAddr(t, side, 0), "other")
	if ack.Properties.MaximumPacketSize != 4096 {
		t.Fatalf("flag limit not in force: %d", ack.Properties.MaximumPacketSize)
	}

	k := config.Key{Kind: "Broker", Name: "default"}
	apply(t, a, "apiVersion: edgeport.io/v1\nkind: Broker\nmetadata: {name: default}\nspec:\n  advanced:\n    clients:\n      maxPacketSizeBytes: 2048\n      subscriberQueueLimit: {length: 7, strategy: DropOldest}\n      topicAliasMaximum: 0\n")
	o := waitStatus(t, a, k, config.ConditionTrue)
	if c := o.Ready(); c.Reason != "Applied" {
		t.Fatalf("broker status %+v", c)
	}
	opts := a.Broker().Options()
	if opts.MaxPacketSize != 2048 || opts.MaxQueuedMessages != 7 || opts.QueuePolicy != broker.DropOldest || opts.TopicAliasMaximum != -1 {
		t.Fatalf("options %+v", opts)
	}
	_, ack = dial(t, a.Addrs()["mqtt"].String(), "new")
	if ack.Properties.MaximumPacketSize != 2048 {
		t.Fatalf("new client told %d", ack.Properties.MaximumPacketSize)
	}
	other.alive()

	// Deleting the Broker resource brings back the serve flags' limits.
	if _, err := a.Resources().Delete(k, ""); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "flag limits back", func() bool { return a.Broker().Options().MaxPacketSize == 4096 })
	other.alive()
}

func TestBindFailedThenRetried(t *testing.T) {
	a := startApp(t, Config{})
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := busy.Addr().(*net.TCPAddr).Port
	k := config.Key{Kind: "BrokerListener", Name: "clash"}
	apply(t, a, listenerYAML("clash", fmt.Sprintf("{port: %d}", port)))
	o := waitStatus(t, a, k, config.ConditionFalse)
	// The message names the field to change.
	want := fmt.Sprintf("port %d: listen tcp 127.0.0.1:%d: bind: address already in use; "+
		"choose another port in BrokerListener clash spec.ports[0].port", port, port)
	if c := o.Ready(); c.Reason != "BindFailed" || c.Message != want {
		t.Fatalf("ready %+v, want BindFailed %q", c, want)
	}
	if o.Status.Ports[0].Ready || o.Status.Ports[0].Address != "" {
		t.Fatalf("port status %+v", o.Status.Ports)
	}
	evs, _ := a.Resources().Events(k)
	if last := evs[len(evs)-1]; last.Type != config.EventWarning || last.Reason != "BindFailed" {
		t.Fatalf("events %+v", evs)
	}
	// Once the port is free the listener takes it without a new apply.
	busy.Close()
	waitStatus(t, a, k, config.ConditionTrue)
	dial(t, fmt.Sprintf("127.0.0.1:%d", port), "late")
}

// TestBindFailedLoggedOnce: a port that cannot be bound is retried every
// few seconds, and logged when it starts failing, not at every retry
// (issue 10, item 4: it used to warn every 5 s for ever).
func TestBindFailedLoggedOnce(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var logs testlog.Buffer
	a, err := New(Config{MQTTAddr: "127.0.0.1:0", WSAddr: Off, HTTPAddr: Off, DataDir: t.TempDir(), InMemory: true,
		Broker: broker.Options{SysInterval: -1}}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	a.res.retry = 10 * time.Millisecond
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	port := busy.Addr().(*net.TCPAddr).Port
	apply(t, a, listenerYAML("clash", fmt.Sprintf("{port: %d}", port)))
	name := config.PortName("clash", port)
	testwait.For(t, "ten failed retries", func() bool { return a.res.failLog.Suppressed(name) >= 10 })
	if n := strings.Count(logs.String(), "listener port failed"); n != 1 {
		t.Fatalf("%d log lines for a port failing at every retry, want 1:\n%s", n, logs.String())
	}
}

func TestConfigDirAndStoredResources(t *testing.T) {
	data, cfgDir := t.TempDir(), t.TempDir()
	file := filepath.Join(cfgDir, "listeners.yaml")
	if err := os.WriteFile(file, []byte(listenerYAML("from-file", "{port: 0}")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "broken.yaml"), []byte("kind: Nope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startApp(t, Config{DataDir: data, ConfigDir: cfgDir})
	// The file's listener is bound when Start returns.
	if a.Addrs()["from-file:0"] == nil {
		t.Fatalf("config-dir listener not started: %v", a.Addrs())
	}
	apply(t, a, listenerYAML("from-api", "{port: 0}"))
	waitStatus(t, a, config.Key{Kind: "BrokerListener", Name: "from-api"}, config.ConditionTrue)

	if p := a.res.dir.Problems(); len(p) != 3 || !strings.Contains(p[1].String(), `broken.yaml:1: kind: unknown kind "Nope"`) {
		t.Fatalf("problems %v", p)
	}

	// Editing the file applies the change; removing it deletes the listener.
	k := config.Key{Kind: "BrokerListener", Name: "from-file"}
	if err := os.WriteFile(file, []byte(listenerYAML("from-file", "{port: 0, protocol: WebSockets}")), 0o644); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "file change applied", func() bool {
		o, ok := a.Resources().Get(k)
		return ok && o.Metadata.Generation == 2 && o.Status.ObservedGeneration == 2 && o.Ready().Status == config.ConditionTrue &&
			o.Status.Ports[0].Protocol == config.ProtocolWebSockets
	})
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "file removal applied", func() bool {
		_, ok := a.Addrs()["from-file:0"]
		return !ok
	})

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// A new instance on the same data dir reloads the API resource.
	b := startApp(t, Config{DataDir: data})
	if b.Addrs()["from-api:0"] == nil {
		t.Fatalf("stored listener not restarted: %v", b.Addrs())
	}
	if _, ok := b.Resources().Get(config.Key{Kind: "BrokerListener", Name: "from-file"}); ok {
		t.Fatal("a config-dir resource was persisted")
	}
}

func TestSysIntervalLive(t *testing.T) {
	a := startApp(t, Config{}) // $SYS off
	c, _ := dial(t, a.Addrs()["mqtt"].String(), "sys-watcher")
	sub := packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "$SYS/broker/uptime", RetainHandling: 2}}}
	c.write(sub.Append(nil, packet.V5))
	if p := c.next(); p != packet.SUBACK {
		t.Fatalf("got %v, want SUBACK", p)
	}
	apply(t, a, "apiVersion: edgeport.io/v1\nkind: Broker\nmetadata: {name: default}\nspec:\n  diagnostics: {sysIntervalSeconds: 1}\n")
	waitStatus(t, a, config.Key{Kind: "Broker", Name: "default"}, config.ConditionTrue)
	if p := c.next(); p != packet.PUBLISH {
		t.Fatalf("got %v, want a $SYS PUBLISH", p)
	}
}

// TestReadyzWithAPortThatCannotBind: a BrokerListener port that cannot be
// bound leaves /readyz at 200 while another MQTT listener admits clients
// (a Kubernetes probe must not take the broker out of its Service for it),
// names the port in the body and in /statusz, and makes /readyz 503 once
// no MQTT listener is left.
func TestReadyzWithAPortThatCannotBind(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	get := func(a *App, path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + a.Addrs()["http"].String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	notBound := fmt.Sprintf("listener clash:%d: not bound: listen tcp 127.0.0.1:%d: bind: address already in use", port, port)

	a := startApp(t, Config{HTTPAddr: "127.0.0.1:0"})
	apply(t, a, listenerYAML("clash", fmt.Sprintf("{port: %d}", port)))
	waitStatus(t, a, config.Key{Kind: "BrokerListener", Name: "clash"}, config.ConditionFalse)
	code, body := get(a, "/readyz")
	if code != http.StatusOK || !strings.HasPrefix(body, "ok\nbroker: degraded: "+notBound) {
		t.Fatalf("GET /readyz = %d %q, want 200 naming the port", code, body)
	}
	if _, st := get(a, "/statusz"); !strings.Contains(st, `"ready": true`) || !strings.Contains(st, notBound) {
		t.Fatalf("/statusz readiness: %s", st)
	}

	// Without the serve flags' listener, the failing port was the only one.
	b := startApp(t, Config{MQTTAddr: Off, HTTPAddr: "127.0.0.1:0"})
	apply(t, b, listenerYAML("clash", fmt.Sprintf("{port: %d}", port)))
	waitStatus(t, b, config.Key{Kind: "BrokerListener", Name: "clash"}, config.ConditionFalse)
	code, body = get(b, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no MQTT listener is bound and admits clients; "+notBound) {
		t.Fatalf("GET /readyz = %d %q, want 503", code, body)
	}
}
