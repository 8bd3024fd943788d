package broker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/clock"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/edgeport/edgeport/internal/testwait"
)

// durableBroker is a broker with a store in dir that a test stops and starts
// again on the same directory. Stopping is graceful (Shutdown, then the
// store is closed): a crash is the e2e crash test's business, since two
// Pebble instances cannot share a directory inside one process.
type durableBroker struct {
	t     testing.TB
	dir   string
	opts  Options
	sopts store.Options
	addr  string
	b     *Broker
	st    *store.Store

	// security, when set, puts listener security in force after the
	// store is restored, as the app does, before wills are released.
	security func(*Broker)

	ln     *testserve.Listener
	cancel context.CancelFunc
	once   sync.Once
}

// startDurableBroker runs a broker restored from (and writing to) the
// store in dir on 127.0.0.1:0; it stops when the test ends.
func startDurableBroker(t testing.TB, opts Options, dir string) *durableBroker {
	t.Helper()
	return startDurableBrokerWith(t, opts, dir, store.Options{})
}

func startDurableBrokerWith(t testing.TB, opts Options, dir string, sopts store.Options, security ...func(*Broker)) *durableBroker {
	t.Helper()
	d := &durableBroker{t: t, dir: dir, opts: opts, sopts: sopts}
	if len(security) > 0 {
		d.security = security[0]
	}
	if opts.SysInterval == 0 {
		opts.SysInterval = -1
	}
	b, err := New(opts, testLogger())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if sopts.Logger == nil {
		sopts.Logger = testLogger()
	}
	st, err := store.Open(dir, sopts)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	b.AttachStore(st)
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.Start(ctx); err != nil {
		cancel()
		_ = st.Close()
		t.Fatalf("Start: %v", err)
	}
	if d.security != nil {
		d.security(b)
	}
	b.ReleaseWills()
	d.b, d.st = b, st
	d.cancel = cancel
	d.ln = testserve.Loopback(t, func(conn net.Conn) { b.ServeConn(conn, "test") })
	d.addr = d.ln.Addr()
	t.Cleanup(d.stop)
	return d
}

// stop shuts the broker down and closes the store, which makes every
// queued write durable.
func (d *durableBroker) stop() {
	d.once.Do(func() {
		d.ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := d.b.Stop(ctx); err != nil {
			d.t.Errorf("Shutdown: %v", err)
		}
		d.cancel()
		d.ln.Wait()
		if err := d.st.Close(); err != nil {
			d.t.Errorf("store Close: %v", err)
		}
	})
}

// restart stops the broker and starts a new one on the same directory.
func (d *durableBroker) restart() *durableBroker {
	d.t.Helper()
	d.stop()
	return startDurableBrokerWith(d.t, d.opts, d.dir, d.sopts, d.security)
}

// storedClient is what the store holds for one client.
type storedClient struct {
	rec     *store.Session
	entries []store.Entry
	inbound []uint16
}

// loadStore reads a store's sessions and retained topics.
func loadStore(t testing.TB, st *store.Store) (map[string]storedClient, map[string]*store.Message) {
	t.Helper()
	clients := make(map[string]storedClient)
	retained := make(map[string]*store.Message)
	err := st.Load(store.LoadFuncs{
		Session: func(s *store.Session, e []store.Entry, in []uint16) error {
			clients[s.ClientID] = storedClient{s, e, in}
			return nil
		},
		Retained: func(m *store.Message) error {
			retained[m.Topic] = m
			return nil
		},
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return clients, retained
}

// loadDir opens the store in dir (no broker may be using it) and reads it.
func loadDir(t testing.TB, dir string) (map[string]storedClient, map[string]*store.Message) {
	t.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	defer st.Close()
	return loadStore(t, st)
}

// connPersist is an MQTT 5 CONNECT whose session outlives the connection
// by expiry seconds.
func connPersist(id string, clean bool, expiry uint32) *packet.Connect {
	cp := &packet.Connect{ClientID: id, CleanStart: clean}
	cp.Properties.SessionExpiry = expiry
	cp.Properties.Set(packet.PropSessionExpiry)
	return cp
}

// publishAcked sends one PUBLISH and completes its QoS flow, requiring
// success codes (0x10, no matching subscribers, included).
func publishAcked(c *rawClient, p *packet.Publish) {
	c.t.Helper()
	c.send(p)
	switch p.QoS {
	case 1:
		a := rawRecv[packet.Ack](c)
		if a.Type != packet.PUBACK || a.PacketID != p.PacketID || a.ReasonCode.IsError() {
			c.t.Fatalf("got %s id %d code 0x%02X, want PUBACK id %d", a.Type, a.PacketID, byte(a.ReasonCode), p.PacketID)
		}
	case 2:
		a := rawRecv[packet.Ack](c)
		if a.Type != packet.PUBREC || a.PacketID != p.PacketID || a.ReasonCode.IsError() {
			c.t.Fatalf("got %s id %d code 0x%02X, want PUBREC id %d", a.Type, a.PacketID, byte(a.ReasonCode), p.PacketID)
		}
		c.send(&packet.Ack{Type: packet.PUBREL, PacketID: p.PacketID})
		c.expectAck(packet.PUBCOMP, p.PacketID, packet.Success)
	}
}

// collect receives n PUBLISH packets, acknowledging each one fully (QoS 2
// through PUBCOMP), and returns them in arrival order.
func (c *rawClient) collect(n int) []*packet.Publish {
	c.t.Helper()
	var got []*packet.Publish
	rel := make(map[uint16]bool)
	for len(got) < n || len(rel) > 0 {
		switch p := c.next().Pkt.(type) {
		case *packet.Publish:
			got = append(got, p)
			switch p.QoS {
			case 1:
				c.send(&packet.Ack{Type: packet.PUBACK, PacketID: p.PacketID})
			case 2:
				rel[p.PacketID] = true
				c.send(&packet.Ack{Type: packet.PUBREC, PacketID: p.PacketID})
			}
		case *packet.Ack:
			if p.Type != packet.PUBREL || !rel[p.PacketID] {
				c.t.Fatalf("unexpected %s id %d while collecting", p.Type, p.PacketID)
			}
			delete(rel, p.PacketID)
			c.send(&packet.Ack{Type: packet.PUBCOMP, PacketID: p.PacketID})
		default:
			c.t.Fatalf("unexpected %T while collecting", p)
		}
	}
	return got
}

// leave disconnects normally and waits for the broker to close.
func (c *rawClient) leave() {
	c.t.Helper()
	c.send(&packet.Disconnect{})
	c.expectClosed()
}

func TestPersistRestoresSessionsAndQueues(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDurableBroker(t, Options{}, dir)

	sub, ack := connectRaw(t, d.addr, packet.V5, connPersist("rq-sub", true, 3600))
	if ack.SessionPresent {
		t.Fatal("session present on first connect")
	}
	sp := &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{
		{Filter: "rq/1", QoS: 1}, {Filter: "rq/2", QoS: 2}, {Filter: "rq/nl", QoS: 1, NoLocal: true},
	}}
	sp.Properties.SubscriptionIDs = []uint32{9}
	sub.send(sp)
	if sa := rawRecv[packet.SubAck](sub); !slices.Equal(sa.ReasonCodes, []packet.ReasonCode{1, 2, 1}) {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	sub.leave()

	pub, _ := connectRaw(t, d.addr, packet.V5, connV5("rq-pub"))
	const n = 20
	for i := range n {
		publishAcked(pub, &packet.Publish{QoS: 1, PacketID: 1, Topic: "rq/1", Payload: []byte(strconv.Itoa(i))})
		publishAcked(pub, &packet.Publish{QoS: 2, PacketID: 2, Topic: "rq/2", Payload: []byte(strconv.Itoa(i))})
	}
	pub.leave()

	d = d.restart()
	stored, _ := loadStore(t, d.st)
	if got := len(stored["rq-sub"].entries); got != 2*n {
		t.Fatalf("store holds %d entries for rq-sub, want %d", got, 2*n)
	}

	// A small receive maximum makes the restored queue drain through the
	// inflight window.
	cp := connPersist("rq-sub", false, 3600)
	cp.Properties.ReceiveMaximum = 5
	cp.Properties.Set(packet.PropReceiveMaximum)
	sub, ack = connectRaw(t, d.addr, packet.V5, cp)
	if !ack.SessionPresent {
		t.Fatal("session not present after restart")
	}
	// Order holds per topic (MQTT 5 §4.6); across topics a QoS 2 message
	// waits for its packet identifier to be stored and may fall behind.
	next := map[string]int{}
	for _, p := range sub.collect(2 * n) {
		qos := map[string]byte{"rq/1": 1, "rq/2": 2}[p.Topic]
		if string(p.Payload) != strconv.Itoa(next[p.Topic]) || p.QoS != qos || p.Dup {
			t.Fatalf("%s %q qos %d dup %v, want %q qos %d", p.Topic, p.Payload, p.QoS, p.Dup, strconv.Itoa(next[p.Topic]), qos)
		}
		next[p.Topic]++
		if !slices.Equal(p.Properties.SubscriptionIDs, []uint32{9}) {
			t.Fatalf("%s %q: subscription identifiers %v, want [9]", p.Topic, p.Payload, p.Properties.SubscriptionIDs)
		}
	}

	// The restored subscriptions route new messages, No Local included.
	pub, _ = connectRaw(t, d.addr, packet.V5, connV5("rq-pub"))
	publishAcked(pub, &packet.Publish{QoS: 1, PacketID: 1, Topic: "rq/2", Payload: []byte("after")})
	if p := sub.collect(1)[0]; string(p.Payload) != "after" || p.QoS != 1 {
		t.Fatalf("after restart: %q qos %d", p.Payload, p.QoS)
	}
	sub.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "rq/nl", Payload: []byte("own")})
	sub.expectAck(packet.PUBACK, 1, packet.NoMatchingSubscribers)
	sub.ping()
	sub.leave()

	// Every acknowledgement was made durable: nothing comes back.
	d = d.restart()
	if left := len(loadStoreEntries(t, d.st, "rq-sub")); left != 0 {
		t.Fatalf("%d entries left after everything was acknowledged", left)
	}
	sub, ack = connectRaw(t, d.addr, packet.V5, connPersist("rq-sub", false, 3600))
	if !ack.SessionPresent {
		t.Fatal("session not present after second restart")
	}
	sub.ping()
}

func loadStoreEntries(t testing.TB, st *store.Store, id string) []store.Entry {
	t.Helper()
	clients, _ := loadStore(t, st)
	return clients[id].entries
}

// TestPersistInflightResent: deliveries a subscriber had not acknowledged
// when the broker stopped are resent on the restored session with their
// original packet identifiers, in order: PUBLISH with DUP, or PUBREL for a
// QoS 2 message whose PUBREC had arrived.
func TestPersistInflightResent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDurableBroker(t, Options{}, dir)
	sub, _ := connectRaw(t, d.addr, packet.V5, connPersist("if-sub", true, 3600))
	sub.subscribe(1, 2, "if/#")
	pub, _ := connectRaw(t, d.addr, packet.V5, connV5("if-pub"))

	publishAcked(pub, &packet.Publish{QoS: 1, PacketID: 1, Topic: "if/1", Payload: []byte("one")})
	m1 := sub.expectPublish("if/1", "one")
	publishAcked(pub, &packet.Publish{QoS: 2, PacketID: 2, Topic: "if/2", Payload: []byte("two")})
	m2 := sub.expectPublish("if/2", "two")
	publishAcked(pub, &packet.Publish{QoS: 2, PacketID: 3, Topic: "if/3", Payload: []byte("three")})
	m3 := sub.expectPublish("if/3", "three")
	sub.send(&packet.Ack{Type: packet.PUBREC, PacketID: m3.PacketID})
	sub.expectAck(packet.PUBREL, m3.PacketID, packet.Success)
	publishAcked(pub, &packet.Publish{QoS: 1, PacketID: 4, Topic: "if/4", Payload: []byte("four")})
	m4 := sub.expectPublish("if/4", "four")

	d = d.restart()
	sub, ack := connectRaw(t, d.addr, packet.V5, connPersist("if-sub", false, 3600))
	if !ack.SessionPresent {
		t.Fatal("session not present after restart")
	}
	for _, want := range []*packet.Publish{m1, m2, m3, m4} {
		p := sub.next()
		if want == m3 {
			if a, ok := p.Pkt.(*packet.Ack); !ok || a.Type != packet.PUBREL || a.PacketID != m3.PacketID {
				t.Fatalf("got %s, want PUBREL %d", p, m3.PacketID)
			}
			continue
		}
		got, ok := p.Pkt.(*packet.Publish)
		if !ok || got.Topic != want.Topic || string(got.Payload) != string(want.Payload) || got.PacketID != want.PacketID || !got.Dup || got.QoS != want.QoS {
			t.Fatalf("got %s, want %s %q resent with DUP and packet ID %d", p, want.Topic, want.Payload, want.PacketID)
		}
	}
	sub.ping()

	sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: m1.PacketID})
	sub.send(&packet.Ack{Type: packet.PUBREC, PacketID: m2.PacketID})
	sub.expectAck(packet.PUBREL, m2.PacketID, packet.Success)
	sub.send(&packet.Ack{Type: packet.PUBCOMP, PacketID: m2.PacketID})
	sub.send(&packet.Ack{Type: packet.PUBCOMP, PacketID: m3.PacketID})
	sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: m4.PacketID})
	sub.ping()
	sub.leave()

	d = d.restart()
	sub, _ = connectRaw(t, d.addr, packet.V5, connPersist("if-sub", false, 3600))
	sub.ping() // nothing left to resend
}

func TestPersistRetained(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDurableBroker(t, Options{}, dir)
	pub, _ := connectRaw(t, d.addr, packet.V5, connV5("rt-pub"))
	withProps := &packet.Publish{QoS: 1, PacketID: 1, Retain: true, Topic: "rt/props", Payload: []byte("p")}
	withProps.Properties.ContentType = "text/plain"
	withProps.Properties.Set(packet.PropContentType)
	withProps.Properties.User = []packet.UserProperty{{Key: "k", Value: "v"}}
	publishAcked(pub, withProps)
	publishAcked(pub, &packet.Publish{QoS: 2, PacketID: 2, Retain: true, Topic: "rt/q2", Payload: []byte("old")})
	publishAcked(pub, &packet.Publish{QoS: 2, PacketID: 2, Retain: true, Topic: "rt/q2", Payload: []byte("new")})
	pub.send(&packet.Publish{Retain: true, Topic: "rt/q0", Payload: []byte("zero")})
	publishAcked(pub, &packet.Publish{QoS: 1, PacketID: 3, Retain: true, Topic: "rt/cleared", Payload: []byte("x")})
	publishAcked(pub, &packet.Publish{QoS: 1, PacketID: 3, Retain: true, Topic: "rt/cleared"})
	pub.ping()

	d = d.restart()
	if got := d.b.Counters().Retained; got != 3 {
		t.Fatalf("retained gauge %d after restart, want 3", got)
	}
	sub, _ := connectRaw(t, d.addr, packet.V5, connV5("rt-sub"))
	sub.subscribe(1, 2, "rt/#")
	got := make(map[string]*packet.Publish)
	for _, p := range sub.collect(3) {
		if !p.Retain {
			t.Fatalf("%s arrived without the retain flag", p.Topic)
		}
		got[p.Topic] = p
	}
	sub.ping()
	want := map[string]struct {
		payload string
		qos     byte
	}{"rt/props": {"p", 1}, "rt/q2": {"new", 2}, "rt/q0": {"zero", 0}}
	for topic, w := range want {
		p := got[topic]
		if p == nil || string(p.Payload) != w.payload || p.QoS != w.qos {
			t.Fatalf("retained %s = %+v, want %q qos %d", topic, p, w.payload, w.qos)
		}
	}
	pp := got["rt/props"].Properties
	if pp.ContentType != "text/plain" || !slices.Equal(pp.User, []packet.UserProperty{{Key: "k", Value: "v"}}) {
		t.Fatalf("retained properties lost: content type %q user %v", pp.ContentType, pp.User)
	}
}

// TestPersistInboundQoS2: a publisher's QoS 2 exchange survives a restart
// between PUBREC and PUBREL: the resent PUBLISH (DUP) is not routed again
// and PUBREL completes normally.
func TestPersistInboundQoS2(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDurableBroker(t, Options{}, dir)
	sub, _ := connectRaw(t, d.addr, packet.V5, connPersist("in-sub", true, 3600))
	sub.subscribe(1, 2, "in/#")
	pub, _ := connectRaw(t, d.addr, packet.V5, connPersist("in-pub", true, 3600))
	pub.send(&packet.Publish{QoS: 2, PacketID: 7, Topic: "in/t", Payload: []byte("one")})
	pub.expectAck(packet.PUBREC, 7, packet.Success)
	// Identifier 8 completes before the restart.
	publishAcked(pub, &packet.Publish{QoS: 2, PacketID: 8, Topic: "in/t", Payload: []byte("two")})
	if got := sub.collect(2); string(got[0].Payload) != "one" || string(got[1].Payload) != "two" {
		t.Fatalf("got %q %q", got[0].Payload, got[1].Payload)
	}
	sub.ping() // the last PUBCOMP is handled before the restart

	d = d.restart()
	stored, _ := loadStore(t, d.st)
	if in := stored["in-pub"].inbound; !slices.Equal(in, []uint16{7}) {
		t.Fatalf("stored inbound identifiers %v, want [7]", in)
	}
	sub, _ = connectRaw(t, d.addr, packet.V5, connPersist("in-sub", false, 3600))
	pub, ack := connectRaw(t, d.addr, packet.V5, connPersist("in-pub", false, 3600))
	if !ack.SessionPresent {
		t.Fatal("publisher session not present after restart")
	}
	pub.send(&packet.Publish{Dup: true, QoS: 2, PacketID: 7, Topic: "in/t", Payload: []byte("one")})
	pub.expectAck(packet.PUBREC, 7, packet.Success)
	pub.send(&packet.Ack{Type: packet.PUBREL, PacketID: 7})
	pub.expectAck(packet.PUBCOMP, 7, packet.Success)
	pub.send(&packet.Ack{Type: packet.PUBREL, PacketID: 8})
	pub.expectAck(packet.PUBCOMP, 8, packet.PacketIdentifierNotFound)
	// Released, identifier 7 carries a new message.
	publishAcked(pub, &packet.Publish{QoS: 2, PacketID: 7, Topic: "in/t", Payload: []byte("three")})
	if got := sub.collect(1); string(got[0].Payload) != "three" {
		t.Fatalf("got %q after restart, want only \"three\"", got[0].Payload)
	}
	sub.ping()
	pub.leave()

	d.stop()
	if stored, _ := loadDir(t, dir); len(stored["in-pub"].inbound) != 0 {
		t.Fatalf("inbound identifiers %v left after PUBREL", stored["in-pub"].inbound)
	}
}

// downFor stops d, advances its fake clock by dt while it is down, and
// starts it again on the same clock.
func (d *durableBroker) downFor(dt time.Duration) *durableBroker {
	d.t.Helper()
	clk, ok := d.opts.Clock.(*clock.Fake)
	if !ok {
		d.t.Fatal("downFor needs a broker on a fake clock")
	}
	d.stop()
	clk.Advance(dt)
	return startDurableBrokerWith(d.t, d.opts, d.dir, d.sopts, d.security)
}

func (d *durableBroker) hasSession(id string) bool {
	d.b.sessMu.Lock()
	defer d.b.sessMu.Unlock()
	return d.b.sessions[id] != nil
}

// TestPersistSessionExpiryCountsDowntime: the time the broker was down
// counts towards session expiry, both for sessions it ends at start and
// for the remaining interval of those it restores.
func TestPersistSessionExpiryCountsDowntime(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clk := clock.NewFake(time.Now())
	d := startDurableBroker(t, Options{Clock: clk}, dir)
	for _, c := range []struct {
		id     string
		expiry uint32
	}{{"se-short", 2}, {"se-long", 4}, {"se-forever", 0xFFFFFFFF}} {
		sub, _ := connectRaw(t, d.addr, packet.V5, connPersist(c.id, true, c.expiry))
		sub.subscribe(1, 1, "se/t")
		sub.leave()
	}
	d = d.downFor(2500 * time.Millisecond)
	if d.hasSession("se-short") || !d.hasSession("se-long") || !d.hasSession("se-forever") {
		t.Fatalf("sessions after restart: short %v long %v forever %v, want false true true",
			d.hasSession("se-short"), d.hasSession("se-long"), d.hasSession("se-forever"))
	}
	if _, ok := loadStoreClients(t, d.st)["se-short"]; ok {
		t.Fatal("expired session se-short still in the store")
	}
	// se-long had 4 s, 2.5 s of which passed while the broker was down:
	// it ends 1.5 s after the restart, not a millisecond earlier.
	clk.Advance(1500*time.Millisecond - time.Millisecond)
	if !d.hasSession("se-long") {
		t.Fatal("se-long expired before the 1.5 s it had left")
	}
	clk.Advance(time.Millisecond)
	if d.hasSession("se-long") {
		t.Fatal("se-long alive 1.5 s after restart: downtime not counted")
	}
	testwait.For(t, "se-long deleted from the store", func() bool {
		_, ok := loadStoreClients(t, d.st)["se-long"]
		return !ok
	})
	if _, ack := connectRaw(t, d.addr, packet.V5, connPersist("se-short", false, 2)); ack.SessionPresent {
		t.Fatal("expired session present")
	}
	if _, ack := connectRaw(t, d.addr, packet.V5, connPersist("se-forever", false, 0xFFFFFFFF)); !ack.SessionPresent {
		t.Fatal("session that never expires not present")
	}
}

func loadStoreClients(t testing.TB, st *store.Store) map[string]storedClient {
	t.Helper()
	c, _ := loadStore(t, st)
	return c
}

// TestPersistMessageExpiryCountsDowntime: queued and retained messages
// whose expiry passed while the broker was down are not delivered; the
// others carry the interval left.
func TestPersistMessageExpiryCountsDowntime(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clk := clock.NewFake(time.Now())
	d := startDurableBroker(t, Options{Clock: clk}, dir)
	sub, _ := connectRaw(t, d.addr, packet.V5, connPersist("me-sub", true, 3600))
	sub.subscribe(1, 1, "me/q/#")
	sub.leave()
	pub, _ := connectRaw(t, d.addr, packet.V5, connV5("me-pub"))
	expiring := func(topic string, secs uint32, retain bool) *packet.Publish {
		p := &packet.Publish{QoS: 1, PacketID: 1, Topic: topic, Payload: []byte(topic), Retain: retain}
		p.Properties.MessageExpiry = secs
		p.Properties.Set(packet.PropMessageExpiry)
		return p
	}
	publishAcked(pub, expiring("me/q/short", 2, false))
	publishAcked(pub, expiring("me/q/long", 60, false))
	publishAcked(pub, expiring("me/r/short", 2, true))
	publishAcked(pub, expiring("me/r/long", 60, true))
	pub.leave()

	d = d.downFor(2500 * time.Millisecond)
	sub, _ = connectRaw(t, d.addr, packet.V5, connPersist("me-sub", false, 3600))
	p := sub.collect(1)[0]
	if p.Topic != "me/q/long" {
		t.Fatalf("got %s, want only me/q/long", p.Topic)
	}
	if e := p.Properties.MessageExpiry; e > 58 || e < 50 {
		t.Fatalf("me/q/long expiry interval %d after 2.5 s down, want 50-58", e)
	}
	sub.ping()
	sub.subscribe(2, 1, "me/r/#")
	p = sub.collect(1)[0]
	if p.Topic != "me/r/long" || !p.Retain {
		t.Fatalf("got %s retain %v, want only retained me/r/long", p.Topic, p.Retain)
	}
	if e := p.Properties.MessageExpiry; e > 58 || e < 50 {
		t.Fatalf("me/r/long expiry interval %d after 2.5 s down, want 50-58", e)
	}
	sub.ping()
}

// TestPersistDelayedWill: a will whose delay had not passed when the broker
// stopped is published after the rest of the delay; a will whose session
// expired while the broker was down is published at start, to sessions
// restored after it as well.
func TestPersistDelayedWill(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clk := clock.NewFake(time.Now())
	d := startDurableBroker(t, Options{Clock: clk}, dir)
	// The watcher's client ID sorts after the will owners', so it is
	// restored after them.
	w, _ := connectRaw(t, d.addr, packet.V5, connPersist("zz-watcher", true, 3600))
	w.subscribe(1, 1, "dw/#")
	w.leave()

	willer := func(id string, delay, expiry uint32) {
		cp := connPersist(id, true, expiry)
		cp.Will = &packet.Will{Topic: "dw/" + id, Payload: []byte("gone"), QoS: 1}
		cp.Will.Properties.WillDelay = delay
		cp.Will.Properties.Set(packet.PropWillDelay)
		c, _ := connectRaw(t, d.addr, packet.V5, cp)
		c.conn.Close() // no DISCONNECT: the will applies
	}
	willer("aa-delayed", 3, 3600)
	willer("aa-expired", 3600, 1)
	testwait.For(t, "the will owners offline", func() bool {
		d.b.sessMu.Lock()
		defer d.b.sessMu.Unlock()
		for _, id := range []string{"aa-delayed", "aa-expired"} {
			if s := d.b.sessions[id]; s == nil || s.online.Load() {
				return false
			}
		}
		return true
	})
	d = d.downFor(1500 * time.Millisecond)

	w, _ = connectRaw(t, d.addr, packet.V5, connPersist("zz-watcher", false, 3600))
	p := w.collect(1)[0]
	if p.Topic != "dw/aa-expired" {
		t.Fatalf("first will %s, want dw/aa-expired (its session expired while the broker was down)", p.Topic)
	}
	// aa-delayed's 3 s delay had 1.5 s left at the restart.
	clk.Advance(1500*time.Millisecond - time.Millisecond)
	w.ping() // nothing before the PINGRESP: the delayed will is not out yet
	clk.Advance(time.Millisecond)
	p = w.collect(1)[0]
	if p.Topic != "dw/aa-delayed" {
		t.Fatalf("second will %s, want dw/aa-delayed", p.Topic)
	}
	w.ping()
}

// TestPersistAfterCrash: what a crash leaves in the store is settled at
// the first start. A session connected when the broker died is taken as
// disconnected at that start, and stays so for later restarts; a will due
// at that start is published once, not at every start.
func TestPersistAfterCrash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The records a kill -9 leaves of a connected client: DisconnectedAt 0.
	txn := st.NewTxn()
	txn.PutSession(&store.Session{ClientID: "ac-dev", Version: 5, Expiry: 2 * time.Second,
		Subs:  []store.Subscription{{Filter: "ac/t", QoS: 1}},
		Will:  &store.Message{Topic: "ac/will", Payload: []byte("gone"), QoS: 1, Retain: true},
		Owner: &store.Principal{Listener: "test", Method: "anonymous"}})
	if err := st.CommitSync(txn); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	d := startDurableBroker(t, Options{Clock: clock.NewFake(time.Now())}, dir)
	if !d.hasSession("ac-dev") {
		t.Fatal("session connected at the crash not restored")
	}
	if m, ok := d.b.retained.Get("ac/will"); !ok || string(m.Payload) != "gone" {
		t.Fatalf("will of the crashed connection not published at start (retained %v)", ok)
	}
	d.b.Publish(&Message{Topic: "ac/will", Retain: true}) // clears it
	d = d.downFor(2500 * time.Millisecond)
	if d.hasSession("ac-dev") {
		t.Fatal("session alive 2.5 s after the first start with a 2 s expiry: the downtime since was not counted")
	}
	if _, ok := d.b.retained.Get("ac/will"); ok {
		t.Fatal("the will was published again at the second start")
	}
}

// TestPersistCleanSessionsNotStored: sessions without expiry never reach
// the store, and a persistent session that ends is deleted from it.
func TestPersistCleanSessionsNotStored(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDurableBroker(t, Options{}, dir)

	clean, _ := connectRaw(t, d.addr, packet.V5, connV5("cs-clean"))
	clean.subscribe(1, 2, "cs/#")
	pub, _ := connectRaw(t, d.addr, packet.V5, connV5("cs-pub"))
	before := d.st.Metrics().Bytes
	for i := range 20 {
		publishAcked(pub, &packet.Publish{QoS: byte(1 + i%2), PacketID: 1, Topic: "cs/t", Payload: []byte("x")})
	}
	clean.collect(20)
	if after := d.st.Metrics().Bytes; after != before {
		t.Fatalf("QoS 1/2 traffic between clean sessions wrote %d bytes to the store", after-before)
	}

	keep, _ := connectRaw(t, d.addr, packet.V5, connPersist("cs-keep", true, 3600))
	keep.subscribe(1, 1, "cs/#")
	keep.leave()
	// Expiry set to 0 by DISCONNECT ends the session.
	byDisconnect, _ := connectRaw(t, d.addr, packet.V5, connPersist("cs-zeroed", true, 3600))
	byDisconnect.subscribe(1, 1, "cs/#")
	dp := &packet.Disconnect{}
	dp.Properties.SessionExpiry = 0
	dp.Properties.Set(packet.PropSessionExpiry)
	byDisconnect.send(dp)
	byDisconnect.expectClosed()
	// A clean start without expiry replaces a persistent session.
	replaced, _ := connectRaw(t, d.addr, packet.V5, connPersist("cs-replaced", true, 3600))
	replaced.subscribe(1, 1, "cs/#")
	replaced.leave()
	publishAcked(pub, &packet.Publish{QoS: 1, PacketID: 1, Topic: "cs/t", Payload: []byte("queued")})
	replaced, _ = connectRaw(t, d.addr, packet.V5, connV5("cs-replaced"))
	replaced.ping()
	// A 3.1.1 clean session is not stored either.
	v3, _ := connectRaw(t, d.addr, packet.V311, &packet.Connect{ClientID: "cs-v311", CleanStart: true})
	v3.subscribe(1, 1, "cs/#")
	v3.ping()

	d.stop()
	stored, _ := loadDir(t, dir)
	ids := make([]string, 0, len(stored))
	for id := range stored {
		ids = append(ids, id)
	}
	if !slices.Equal(ids, []string{"cs-keep"}) {
		t.Fatalf("stored sessions %v, want [cs-keep]", ids)
	}
	if n := len(stored["cs-keep"].entries); n != 1 {
		t.Fatalf("cs-keep has %d stored entries, want 1", n)
	}
}

// TestPersistRestoredSessionEnds: a session restored from the store is
// deleted from it when it ends (clean start, expiry), like one created
// since the start.
func TestPersistRestoredSessionEnds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clk := clock.NewFake(time.Now())
	d := startDurableBroker(t, Options{Clock: clk}, dir)
	for _, id := range []string{"re-clean", "re-expire"} {
		c, _ := connectRaw(t, d.addr, packet.V5, connPersist(id, true, 1))
		if id == "re-clean" {
			c, _ = connectRaw(t, d.addr, packet.V5, connPersist(id, true, 3600))
		}
		c.subscribe(1, 1, "re/t")
		c.leave()
	}
	pub, _ := connectRaw(t, d.addr, packet.V5, connV5("re-pub"))
	publishAcked(pub, &packet.Publish{QoS: 1, PacketID: 1, Topic: "re/t", Payload: []byte("stale")})
	pub.leave()

	d = d.restart()
	c, ack := connectRaw(t, d.addr, packet.V5, connV5("re-clean"))
	if ack.SessionPresent {
		t.Fatal("clean start resumed the session")
	}
	c.leave()
	clk.Advance(time.Second) // re-expire's expiry, armed at restore
	if d.hasSession("re-expire") {
		t.Fatal("re-expire outlived its 1 s expiry after the restart")
	}

	d = d.restart()
	stored, _ := loadStore(t, d.st)
	for _, id := range []string{"re-clean", "re-expire"} {
		if s, ok := stored[id]; ok {
			t.Fatalf("%s ended but the store still holds it (%d entries)", id, len(s.entries))
		}
	}
	c, ack = connectRaw(t, d.addr, packet.V5, connPersist("re-clean", false, 3600))
	if ack.SessionPresent {
		t.Fatal("ended session came back after a restart")
	}
	c.ping() // and the stale message with it
}

// TestPersistQuota: once the store reaches its quota, QoS 1 publishes that
// would add to it are refused with 0x97 (MQTT 5) or by closing the
// connection (3.1.1), the broker keeps serving, and what was accepted
// survives a restart.
func TestPersistQuota(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := st.Usage()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	d := startDurableBrokerWith(t, Options{MaxQueuedMessages: -1}, dir, store.Options{QuotaBytes: base + 256<<10})

	sub, _ := connectRaw(t, d.addr, packet.V5, connPersist("qt-sub", true, 3600))
	sub.subscribe(1, 1, "qt/t")
	sub.leave()
	pub, _ := connectRaw(t, d.addr, packet.V5, connV5("qt-pub"))
	payload := make([]byte, 1024)
	var accepted []string
	refused := 0
	for i := 0; refused < 3; i++ {
		if i == 4000 {
			t.Fatalf("no refusal after %d KiB into a %d KiB quota", i, (base+256<<10)>>10)
		}
		copy(payload, strconv.Itoa(i)+" ")
		pub.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "qt/t", Payload: payload})
		a := rawRecv[packet.Ack](pub)
		switch a.ReasonCode {
		case packet.Success:
			if refused > 0 {
				// Accepted again: only if compaction freed space. Fine, but
				// the test wants refusals in a row to end.
				refused = 0
			}
			accepted = append(accepted, strconv.Itoa(i))
		case packet.QuotaExceeded:
			refused++
		default:
			t.Fatalf("PUBACK 0x%02X", byte(a.ReasonCode))
		}
	}
	if len(accepted) == 0 {
		t.Fatal("nothing accepted before the quota")
	}
	if c := d.b.Counters(); c.Dropped["quota_exceeded"] == 0 {
		t.Fatalf("refusals not counted: dropped %v, store errors %d", c.Dropped, c.StoreErrors)
	}
	// 3.1.1 cannot refuse a PUBLISH: the connection closes without PUBACK.
	// A full store compacts itself, so the quota may have room again for a
	// while: publish until it is reached.
	v3, _ := connectRaw(t, d.addr, packet.V311, &packet.Connect{ClientID: "qt-v311", CleanStart: true})
	for i := 0; ; i++ {
		if i == 4000 {
			t.Fatal("the 3.1.1 publisher was never refused")
		}
		n := "v3-" + strconv.Itoa(i)
		copy(payload, n+" ")
		v3.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "qt/t", Payload: payload})
		p, ok := <-v3.in
		if !ok {
			break // closed without PUBACK: refused
		}
		if p.Header.Type != packet.PUBACK {
			t.Fatalf("3.1.1 publisher got %s, want PUBACK or a close", p.Header.Type)
		}
		accepted = append(accepted, n)
	}
	// QoS 0 needs no storage and still flows.
	clean, _ := connectRaw(t, d.addr, packet.V5, connV5("qt-clean"))
	clean.subscribe(1, 0, "qt/t")
	pub.send(&packet.Publish{Topic: "qt/t", Payload: []byte("zero")})
	clean.expectPublish("qt/t", "zero")
	clean.leave()
	pub.leave()

	// The accepted messages, and only they, survive a restart; once the
	// subscriber has consumed them the space comes back. (A message whose
	// own commit hits the quota is dropped from memory too: see
	// persist_quota_test.go.)
	d = d.restart()
	sub, _ = connectRaw(t, d.addr, packet.V5, connPersist("qt-sub", false, 3600))
	for i, p := range sub.collect(len(accepted)) {
		if n, _, _ := strings.Cut(string(p.Payload), " "); n != accepted[i] {
			t.Fatalf("message %d is %q, want %q: accepted messages lost or refused ones kept", i, n, accepted[i])
		}
	}
	sub.ping()
	pub, _ = connectRaw(t, d.addr, packet.V5, connV5("qt-pub"))
	if !testwait.Within(testwait.Timeout, func() bool {
		pub.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "qt/t", Payload: payload})
		a := rawRecv[packet.Ack](pub)
		if a.ReasonCode != packet.Success && a.ReasonCode != packet.QuotaExceeded {
			t.Fatalf("PUBACK 0x%02X", byte(a.ReasonCode))
		}
		return a.ReasonCode == packet.Success
	}) {
		t.Fatalf("still refusing %v after the queue was consumed (store usage %d KiB, quota %d KiB)", testwait.Timeout, d.st.Usage()>>10, (base+256<<10)>>10)
	}
	sub.collect(1)
}

// TestPersistCorruptStore: damage to the store's files stops the broker
// from starting with an error wrapping store.ErrCorrupt that names the
// directory, rather than starting with some of its state missing.
func TestPersistCorruptStore(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"garbled sstable", func(t *testing.T, dir string) { garble(t, onlyMatch(t, dir, "*.sst"), 4096) }},
		{"truncated sstable", func(t *testing.T, dir string) {
			f := onlyMatch(t, dir, "*.sst")
			fi, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(f, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbled MANIFEST", func(t *testing.T, dir string) { garble(t, lastMatch(t, dir, "MANIFEST-*"), 16) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			d := startDurableBroker(t, Options{}, dir)
			sub, _ := connectRaw(t, d.addr, packet.V5, connPersist("cr-sub", true, 3600))
			sub.subscribe(1, 1, "cr/t")
			sub.leave()
			for i := range 200 {
				d.b.Publish(&Message{Topic: "cr/t", QoS: 1, Payload: []byte(fmt.Sprintf("%d %0100d", i, 0))})
			}
			d.stop()
			st, err := store.Open(dir, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Compact(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, dir)

			err = func() error {
				b, err := New(Options{SysInterval: -1}, nil)
				if err != nil {
					return err
				}
				st, err := store.Open(dir, store.Options{})
				if err != nil {
					return err
				}
				defer st.Close()
				b.AttachStore(st)
				return b.Start(context.Background())
			}()
			if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("start on a damaged store: %v, want an error wrapping ErrCorrupt naming %s", err, dir)
			}
		})
	}
}

func onlyMatch(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(m) != 1 {
		t.Fatalf("glob %s in %s: %v %v", pattern, dir, m, err)
	}
	return m[0]
}

// lastMatch returns the last file matching pattern in name order: for
// Pebble's numbered files, the newest.
func lastMatch(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(m) == 0 {
		t.Fatalf("glob %s in %s: %v %v", pattern, dir, m, err)
	}
	return m[len(m)-1]
}

// garble overwrites bytes of path at off, in place.
func garble(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("\xde\xad\xbe\xef GARBAGE \xde\xad\xbe\xef"), off); err != nil {
		t.Fatal(err)
	}
}

// storeSize sums the sizes of a store directory's files: the write-ahead
// logs apart from the rest (tables, MANIFEST, OPTIONS).
func storeSize(t testing.TB, dir string) (wal, rest int64) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.Type().IsRegular() {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if strings.HasSuffix(path, ".log") {
			wal += fi.Size()
		} else {
			rest += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return wal, rest
}

// plainClient is a bare MQTT 5 connection for traffic volumes at which the
// raw client's per-packet channel would dominate.
type plainClient struct {
	conn net.Conn
	r    *packet.Reader
	buf  []byte
}

func dialPlain(t testing.TB, addr string, cp *packet.Connect) *plainClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &plainClient{conn: conn, r: packet.NewReader(conn, 0)}
	c.write(t, cp)
	if h, body, err := c.r.Next(0); err != nil || h.Type != packet.CONNACK {
		t.Fatalf("CONNACK: %v %v", h.Type, err)
	} else if ack := new(packet.ConnAck); ack.Decode(h.Flags, body, packet.V5) != nil || ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK % X", body)
	}
	return c
}

func (c *plainClient) write(t testing.TB, p packet.Packet) {
	c.buf = p.Append(c.buf[:0], packet.V5)
	if _, err := c.conn.Write(c.buf); err != nil {
		t.Fatal(err)
	}
}

// TestPersistDiskStaysFlat: consumed messages do not pile up on disk.
// 50,000 QoS 1 messages flow through a persistent online subscriber. Every
// acknowledged entry is deleted, and what is deleted leaves the tables:
// kept, the entries would fill them with ~8 MB. The write-ahead log grows
// until Pebble recycles it (a few memtables, 4 MiB each: about 11 MiB in
// all after 100,000 messages, and no more after 300,000).
func TestPersistDiskStaysFlat(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDurableBroker(t, Options{}, dir)
	sub := dialPlain(t, d.addr, connPersist("df-sub", true, 3600))
	sub.write(t, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "df/t", QoS: 1}}})
	if h, _, err := sub.r.Next(0); err != nil || h.Type != packet.SUBACK {
		t.Fatalf("SUBACK: %v %v", h.Type, err)
	}
	pub := dialPlain(t, d.addr, connV5("df-pub"))

	const total, checkpoint, window = 50000, 10000, 256
	errc := make(chan error, 2)
	subAcked := make(chan int, 2)
	go func() {
		ack := packet.Ack{Type: packet.PUBACK}
		var out []byte
		for n := 0; n < total; {
			h, body, err := sub.r.Next(0)
			if err != nil {
				errc <- fmt.Errorf("subscriber: %w", err)
				return
			}
			var p packet.Publish
			if h.Type != packet.PUBLISH {
				errc <- fmt.Errorf("subscriber got %s", h.Type)
				return
			}
			if err := p.Decode(h.Flags, body, packet.V5); err != nil {
				errc <- err
				return
			}
			ack.PacketID = p.PacketID
			out = ack.Append(out[:0], packet.V5)
			if _, err := sub.conn.Write(out); err != nil {
				errc <- err
				return
			}
			n++
			if n == checkpoint || n == total {
				subAcked <- n
			}
		}
	}()
	credit := make(chan struct{}, window)
	for range window {
		credit <- struct{}{}
	}
	go func() {
		for n := 0; n < total; n++ {
			h, body, err := pub.r.Next(0)
			if err != nil {
				errc <- fmt.Errorf("publisher: %w", err)
				return
			}
			var a packet.Ack
			if err := a.Decode(h.Type, h.Flags, body, packet.V5); err != nil || a.Type != packet.PUBACK || a.ReasonCode.IsError() {
				errc <- fmt.Errorf("publisher got %s %v", h.Type, err)
				return
			}
			credit <- struct{}{}
		}
	}()
	payload := make([]byte, 100)
	send := func(from, to int) {
		for i := from; i < to; i++ {
			select {
			case <-credit:
			case err := <-errc:
				t.Fatal(err)
			case <-time.After(10 * time.Second):
				t.Fatalf("no PUBACK credit after message %d", i)
			}
			pub.write(t, &packet.Publish{QoS: 1, PacketID: uint16(i%60000) + 1, Topic: "df/t", Payload: payload})
		}
	}
	waitAcked := func(n int) {
		select {
		case got := <-subAcked:
			if got != n {
				t.Fatalf("subscriber checkpoint %d, want %d", got, n)
			}
		case err := <-errc:
			t.Fatal(err)
		case <-time.After(60 * time.Second):
			t.Fatalf("subscriber did not get %d messages", n)
		}
	}
	drained := func() bool { return len(loadStoreEntries(t, d.st, "df-sub")) == 0 }
	start := time.Now()
	send(0, checkpoint)
	waitAcked(checkpoint)
	// PUBACKs delete asynchronously: measure once the entries are gone.
	testwait.For(t, "the first entries deleted", drained)
	wal10k, rest10k := storeSize(t, dir)
	send(checkpoint, total)
	waitAcked(total)
	testwait.For(t, "all entries deleted", drained)
	wal50k, rest50k := storeSize(t, dir)
	t.Logf("%d messages in %v; store after %d: WAL %d KiB, tables and the rest %d KiB; after %d: %d KiB, %d KiB",
		total, time.Since(start).Round(time.Millisecond), checkpoint, wal10k>>10, rest10k>>10, total, wal50k>>10, rest50k>>10)
	if rest50k > rest10k+1<<20 {
		t.Fatalf("tables grew from %d to %d bytes between %d and %d consumed messages", rest10k, rest50k, checkpoint, total)
	}
	if limit := wal10k + 4*store.DefaultMemTableBytes; wal50k > limit {
		t.Fatalf("write-ahead log grew from %d to %d bytes (limit %d)", wal10k, wal50k, limit)
	}
}
