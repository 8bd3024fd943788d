package broker

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/clock"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
	"github.com/edgeport/edgeport/internal/testwait"
)

// authnFunc is an authentication method written inline: it takes the user
// name as given and the password as the "area" attribute.
type authnFunc func(ctx context.Context, ci *ConnectInfo) (*Principal, error)

func (f authnFunc) Authenticate(ctx context.Context, ci *ConnectInfo) (*Principal, error) {
	return f(ctx, ci)
}

var areaAuthn = authnFunc(func(_ context.Context, ci *ConnectInfo) (*Principal, error) {
	return &Principal{ClientID: ci.ClientID, Username: ci.Username, Attributes: map[string]string{"area": string(ci.Password)}, Method: "test"}, nil
})

// TestWillAfterRestart: wills survive restarts correctly and are always
// authorised (issue 10, item 1). Before the fix, a restored will had no
// owner and was published unchecked, and a delayed will that had fired,
// or had been dropped as unauthorised, was published again at the next
// start because firing did not save the session.
func TestWillAfterRestart(t *testing.T) {
	t.Parallel()
	// The policy in force: a client may publish to wills/<area>/<user>
	// only, and only while allowWills holds.
	var allowWills atomic.Bool
	allowWills.Store(true)
	authz := authzFunc(func(p *Principal, op Op, topic string) bool {
		if op != OpPublish || !strings.HasPrefix(topic, "wills/") {
			return true
		}
		return allowWills.Load() && topic == "wills/"+p.Attributes["area"]+"/"+p.Username
	})
	clk := clock.NewFake(time.Now())
	d := startDurableBrokerWith(t, Options{Clock: clk}, t.TempDir(), store.Options{},
		func(b *Broker) { b.SetListenerSecurity("test", areaAuthn, authz, false) })

	login := func(cp *packet.Connect, user, area string) *packet.Connect {
		cp.Username, cp.HasUsername, cp.Password, cp.HasPassword = user, true, []byte(area), true
		return cp
	}
	watch := func(clean bool) *rawClient {
		w, _ := connectRaw(t, d.addr, packet.V5, login(connPersist("zz-watch", clean, 3600), "watcher", "any"))
		return w
	}
	w := watch(true)
	w.subscribe(1, 1, "wills/#")
	w.leave()
	willer := func(id, user, area, topic, payload string) {
		cp := login(connPersist(id, true, 3600), user, area)
		cp.Will = &packet.Will{Topic: topic, Payload: []byte(payload), QoS: 1, Retain: true}
		cp.Will.Properties.WillDelay = 1
		cp.Will.Properties.Set(packet.PropWillDelay)
		c, _ := connectRaw(t, d.addr, packet.V5, cp)
		c.conn.Close() // no DISCONNECT: the will applies
		testwait.For(t, id+" offline", func() bool {
			d.b.sessMu.Lock()
			defer d.b.sessMu.Unlock()
			s := d.b.sessions[id]
			return s != nil && !s.online.Load()
		})
	}
	retained := func() string {
		m, ok := d.b.retained.Get("wills/north/alice")
		if !ok {
			return ""
		}
		return string(m.Payload)
	}

	// Alice's will is hers to publish; Mallory's claims Alice's topic.
	// Both delays end while the broker is down.
	willer("alice-dev", "alice", "north", "wills/north/alice", "alice gone")
	willer("mallory-dev", "mallory", "north", "wills/north/alice", "forged")
	d = d.downFor(1200 * time.Millisecond)
	if got := retained(); got != "alice gone" {
		t.Fatalf("retained wills/north/alice = %q after the restart, want Alice's will only", got)
	}
	w = watch(false)
	if p := w.collect(1)[0]; string(p.Payload) != "alice gone" {
		t.Fatalf("watcher got %q, want Alice's will", p.Payload)
	}
	w.ping() // nothing else came: Mallory's will was refused
	if n := d.b.listenerStats("test").authzDenied.Load(); n != 1 {
		t.Fatalf("%d authorization denials after the restart, want 1 (Mallory's will)", n)
	}
	w.leave()

	// A will that went out is not published again at a later start.
	d.b.Publish(&Message{Topic: "wills/north/alice", Retain: true}) // clears it
	d = d.restart()
	w = watch(false)
	w.ping()
	if got := retained(); got != "" {
		t.Fatalf("a published will came back at a later start: retained %q", got)
	}

	// A will dropped as unauthorised when it fired is not published at a
	// later start, even under a policy that would allow it.
	allowWills.Store(false)
	willer("carol-dev", "carol", "south", "wills/south/carol", "carol gone")
	denied := d.b.listenerStats("test").authzDenied.Load()
	clk.Advance(time.Second) // the will delay
	testwait.For(t, "Carol's will refused when it fired", func() bool {
		return d.b.listenerStats("test").authzDenied.Load() > denied
	})
	allowWills.Store(true)
	w.leave()
	d = d.restart()
	w = watch(false)
	w.ping()
	if _, ok := d.b.retained.Get("wills/south/carol"); ok {
		t.Fatal("a will refused when it fired was published at a later start")
	}

	// The policy in force when a restored delayed will fires decides, for
	// the principal that set it.
	willer("dave-dev", "dave", "east", "wills/east/dave", "dave gone")
	d = d.restart() // the delay outlives the restart
	w = watch(false)
	clk.Advance(time.Second)
	if p := w.collect(1)[0]; string(p.Payload) != "dave gone" {
		t.Fatalf("watcher got %q, want Dave's will", p.Payload)
	}
}
