package statestore

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/broker"
	wallclock "github.com/edgeport/edgeport/internal/clock"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
	"github.com/edgeport/edgeport/internal/testwait"
)

func TestSetGetDelVDel(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dial("c1")

	// SET answers +OK with the new version in __ts, later than the request's.
	reqTS := HLC{Wall: time.Now().UnixMilli(), Node: "c1"}
	r := c.call(req{payload: resp("SET", "k", "v1"), props: props("__ts", reqTS.String(), "__invId", "c1")})
	expect(t, r, "+OK\r\n")
	v1 := version(t, r)
	if v1.Compare(reqTS) <= 0 || v1.Node != DefaultNodeID {
		t.Fatalf("SET version %v is not after the request's %v", v1, reqTS)
	}

	// GET returns the value and the same version.
	r = c.do(nil, "GET", "k")
	expect(t, r, bulk("v1"))
	if got := version(t, r); got != v1 {
		t.Fatalf("GET version %v, want the SET's %v", got, v1)
	}

	// Overwrite: a newer version.
	r = c.do(nil, "SET", "k", "v2")
	expect(t, r, "+OK\r\n")
	v2 := version(t, r)
	if v2.Compare(v1) <= 0 {
		t.Fatalf("second SET version %v not after %v", v2, v1)
	}

	// A missing key: $-1 and no version (the SDKs take a version as "present").
	r = c.do(nil, "GET", "nope")
	expect(t, r, "$-1\r\n")
	if _, ok := prop(r, "__ts"); ok {
		t.Fatal("GET of a missing key carries __ts")
	}

	// VDEL with another value: :-1, key kept.
	expect(t, c.do(nil, "VDEL", "k", "v1"), ":-1\r\n")
	expect(t, c.do(nil, "GET", "k"), bulk("v2"))
	// VDEL with the value deletes and returns the deleted version.
	r = c.do(nil, "VDEL", "k", "v2")
	expect(t, r, ":1\r\n")
	if got := version(t, r); got != v2 {
		t.Fatalf("VDEL version %v, want %v", got, v2)
	}
	expect(t, c.do(nil, "VDEL", "k", "v2"), ":0\r\n")

	// DEL.
	expect(t, c.do(nil, "SET", "d", "x"), "+OK\r\n")
	r = c.do(nil, "DEL", "d")
	expect(t, r, ":1\r\n")
	version(t, r)
	expect(t, c.do(nil, "DEL", "d"), ":0\r\n")
	expect(t, c.do(nil, "GET", "d"), "$-1\r\n")

	// The documented example: lower-case verbs, no __ts on GET.
	expect(t, c.call(req{payload: []byte("*3\r\n$3\r\nset\r\n$7\r\nSETKEY2\r\n$6\r\nVALUE5\r\n"), props: c.standard()}), "+OK\r\n")
	expect(t, c.call(req{payload: []byte("*2\r\n$3\r\nget\r\n$7\r\nSETKEY2\r\n"), props: props("__invId", "c1")}), bulk("VALUE5"))
}

func TestBinaryKeysAndValues(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dial("bin")
	for i, kv := range [][2]string{
		{"\x00\x01\xff", "\r\n$3\r\n*"},
		{"key with spaces\r\n", ""},
		{"ü/é/#/+", strings.Repeat("\x00", 300)},
		{"\xfe", string(bytes.Repeat([]byte{0xff, 0x00, '\r'}, 20000))},
	} {
		expect(t, c.do(nil, "SET", kv[0], kv[1]), "+OK\r\n")
		expect(t, c.do(nil, "GET", kv[0]), bulk(kv[1]))
		if i%2 == 0 {
			expect(t, c.do(nil, "VDEL", kv[0], kv[1]), ":1\r\n")
			expect(t, c.do(nil, "GET", kv[0]), "$-1\r\n")
		}
	}
	e.restart()
	c = e.dial("bin2")
	expect(t, c.do(nil, "GET", "key with spaces\r\n"), bulk(""))
	expect(t, c.do(nil, "GET", "\xfe"), bulk(string(bytes.Repeat([]byte{0xff, 0x00, '\r'}, 20000))))
}

func TestSetConditions(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dial("cond")

	// NX on a new key sets it; on an existing one answers :-1 with the
	// stored version.
	r := c.do(nil, "SET", "nx", "first", "NX")
	expect(t, r, "+OK\r\n")
	v := version(t, r)
	r = c.do(nil, "SET", "nx", "second", "NX")
	expect(t, r, ":-1\r\n")
	if got := version(t, r); got != v {
		t.Fatalf("NX refusal version %v, want the stored %v", got, v)
	}
	expect(t, c.do(nil, "GET", "nx"), bulk("first"))

	// NEX: set when absent or equal (a lease renewal), refuse otherwise.
	expect(t, c.do(nil, "SET", "lease", "me", "NEX", "PX", "10000"), "+OK\r\n")
	expect(t, c.do(nil, "SET", "lease", "me", "NEX", "PX", "10000"), "+OK\r\n")
	expect(t, c.do(nil, "SET", "lease", "you", "NEX", "PX", "10000"), ":-1\r\n")
	expect(t, c.do(nil, "GET", "lease"), bulk("me"))
	// Options in any order, any case.
	expect(t, c.do(nil, "SET", "lease", "me", "px", "10000", "nex"), "+OK\r\n")

	for _, bad := range [][]string{
		{"SET", "k", "v", "NX", "NX"},
		{"SET", "k", "v", "NX", "NEX"},
		{"SET", "k", "v", "PX"},
		{"SET", "k", "v", "PX", "0"},
		{"SET", "k", "v", "PX", "-5"},
		{"SET", "k", "v", "PX", "ten"},
		{"SET", "k", "v", "PX", "10", "PX", "10"},
		{"SET", "k", "v", "EX", "10"},
		{"SET", "k", "v", "NEX", "value"},
	} {
		expect(t, c.do(nil, bad...), errPayload("syntax error"))
	}
}

func TestExpiry(t *testing.T) {
	clk := wallclock.NewFake(time.Now())
	e := startEnv(t, Options{Clock: clk})
	c := e.dial("exp")
	w := e.dial("watcher")
	expect(t, w.do(nil, "KEYNOTIFY", "short"), "+OK\r\n")

	expect(t, c.do(nil, "SET", "short", "v", "PX", "150"), "+OK\r\n")
	expect(t, c.do(nil, "SET", "long", "v", "PX", "60000"), "+OK\r\n")
	expect(t, c.do(nil, "SET", "cleared", "v", "PX", "150"), "+OK\r\n")
	// A SET without PX makes the key permanent again.
	expect(t, c.do(nil, "SET", "cleared", "v"), "+OK\r\n")
	expect(t, c.do(nil, "GET", "short"), bulk("v"))

	// Nothing asks: the executor's timer deletes the key and notifies. The
	// executor may re-arm its timer just after an Advance, so each poll
	// fires whatever is due by then.
	clk.Advance(150 * time.Millisecond)
	testwait.For(t, "expiry notifications", func() bool { clk.Advance(0); return w.noteCount() >= 2 })
	notes := w.notifications(2)
	if string(notes[0].Payload) != string(appendNotifySet(nil, []byte("v"))) || string(notes[1].Payload) != notifyDelete {
		t.Fatalf("notifications %q, %q; want SET then DELETE", notes[0].Payload, notes[1].Payload)
	}
	expect(t, c.do(nil, "GET", "short"), "$-1\r\n")
	expect(t, c.do(nil, "GET", "long"), bulk("v"))
	clk.Advance(200 * time.Millisecond) // past the PX that SET without PX cancelled
	expect(t, c.do(nil, "GET", "cleared"), bulk("v"))
	if got := e.counter("edgeport_statestore_deletions_total", "reason", "expiry"); got != 1 {
		t.Fatalf("expiry deletions %v, want 1", got)
	}
}

// TestNXRace: ten clients race SET NX on one key; exactly one wins.
func TestNXRace(t *testing.T) {
	e := startEnv(t, Options{})
	const n = 10
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = e.dial(clientName(t, i))
	}
	for round := 0; round < 5; round++ {
		key := "lock-" + strconv.Itoa(round)
		var wg sync.WaitGroup
		results := make([]*paho.Publish, n)
		start := make(chan struct{})
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				results[i] = c.call(req{payload: resp("SET", key, c.id, "NX", "PX", "60000"), props: c.standard()})
			}()
		}
		close(start)
		wg.Wait()
		winner := ""
		for i, r := range results {
			switch string(r.Payload) {
			case "+OK\r\n":
				if winner != "" {
					t.Fatalf("round %d: both %s and %s won", round, winner, clients[i].id)
				}
				winner = clients[i].id
			case ":-1\r\n":
			default:
				t.Fatalf("round %d: %s got %q", round, clients[i].id, r.Payload)
			}
		}
		if winner == "" {
			t.Fatalf("round %d: nobody won", round)
		}
		expect(t, clients[0].do(nil, "GET", key), bulk(winner))
	}
}

func TestFencing(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dial("fence")

	// The protocol's example: a lock's version is the fencing token.
	r := c.do(nil, "SET", "LockName", "Client1", "NEX", "PX", "10000")
	expect(t, r, "+OK\r\n")
	token := version(t, r)

	// The first SET with __ft protects the key.
	expect(t, c.do(paho.UserProperties{ft(token)}, "SET", "ProtectedKey", "a"), "+OK\r\n")
	// Without a token, or with an older one: refused.
	expect(t, c.do(nil, "SET", "ProtectedKey", "b"), errPayload(errFencingRequired))
	older := HLC{Wall: token.Wall, Counter: token.Counter, Node: token.Node}
	older.Wall--
	expect(t, c.do(paho.UserProperties{ft(older)}, "SET", "ProtectedKey", "b"), errPayload(errFencingLower))
	// Equal token: accepted.
	expect(t, c.do(paho.UserProperties{ft(token)}, "SET", "ProtectedKey", "b"), "+OK\r\n")
	// A newer token (the lock was taken over) replaces it...
	r = c.do(nil, "SET", "LockName", "Client2")
	expect(t, r, "+OK\r\n")
	newer := version(t, r)
	expect(t, c.do(paho.UserProperties{ft(newer)}, "SET", "ProtectedKey", "c"), "+OK\r\n")
	// ... so the old holder is now fenced off.
	expect(t, c.do(paho.UserProperties{ft(token)}, "SET", "ProtectedKey", "d"), errPayload(errFencingLower))
	expect(t, c.do(nil, "GET", "ProtectedKey"), bulk("c"))

	// DEL and VDEL need the token too.
	expect(t, c.do(nil, "DEL", "ProtectedKey"), errPayload(errFencingRequired))
	expect(t, c.do(paho.UserProperties{ft(token)}, "VDEL", "ProtectedKey", "c"), errPayload(errFencingLower))
	expect(t, c.do(paho.UserProperties{ft(newer)}, "VDEL", "ProtectedKey", "c"), ":1\r\n")

	// Tokens from the future and malformed ones.
	future := HLC{Wall: time.Now().Add(2 * time.Minute).UnixMilli(), Node: "x"}
	expect(t, c.do(paho.UserProperties{ft(future)}, "SET", "other", "v"), errPayload(errFencingSkew))
	expect(t, c.do(props("__ft", "garbage"), "SET", "other", "v"), errPayload(errMalformedTimestamp))
	expect(t, c.do(props("__ft", "1:2"), "DEL", "other"), errPayload(errMalformedTimestamp))

	// The protection survives a restart.
	expect(t, c.do(paho.UserProperties{ft(newer)}, "SET", "ProtectedKey", "e"), "+OK\r\n")
	e.restart()
	c = e.dial("fence2")
	expect(t, c.do(nil, "SET", "ProtectedKey", "f"), errPayload(errFencingRequired))
	expect(t, c.do(paho.UserProperties{ft(token)}, "SET", "ProtectedKey", "f"), errPayload(errFencingLower))
	expect(t, c.do(paho.UserProperties{ft(newer)}, "SET", "ProtectedKey", "f"), "+OK\r\n")
}

func TestKeyNotify(t *testing.T) {
	e := startEnv(t, Options{})
	w := e.dial("watcher")
	c := e.dial("writer")

	expect(t, w.do(nil, "KEYNOTIFY", "SOMEKEY"), "+OK\r\n")
	expect(t, w.do(nil, "KEYNOTIFY", "SOMEKEY"), "+OK\r\n") // again: still one registration

	r := c.do(nil, "SET", "SOMEKEY", "abc")
	expect(t, r, "+OK\r\n")
	setVersion := version(t, r)
	r = c.do(nil, "VDEL", "SOMEKEY", "abc")
	expect(t, r, ":1\r\n")
	expect(t, c.do(nil, "SET", "SOMEKEY", "\x00bin"), "+OK\r\n")
	expect(t, c.do(nil, "DEL", "SOMEKEY"), ":1\r\n")
	expect(t, c.do(nil, "SET", "OTHER", "x"), "+OK\r\n") // not watched

	notes := w.notifications(4)
	// The documented topic: upper-case hex of the client ID and of the key.
	wantTopic := "clients/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/77617463686572/command/notify/534F4D454B4559"
	wantPayloads := []string{
		"*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$3\r\nabc\r\n",
		"*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n",
		"*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$4\r\n\x00bin\r\n",
		"*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n",
	}
	var last HLC
	for i, n := range notes {
		if n.Topic != wantTopic || string(n.Payload) != wantPayloads[i] || n.QoS != 1 {
			t.Fatalf("notification %d: %s %q QoS %d; want %s %q QoS 1", i, n.Topic, n.Payload, n.QoS, wantTopic, wantPayloads[i])
		}
		v := version(t, n)
		if i == 0 && v != setVersion {
			t.Fatalf("SET notification __ts %v, want the new version %v", v, setVersion)
		}
		if v.Compare(last) <= 0 {
			t.Fatalf("notification %d version %v not after %v", i, v, last)
		}
		last = v
	}

	// STOP ends it; STOP again answers :0.
	expect(t, w.do(nil, "KEYNOTIFY", "SOMEKEY", "STOP"), "+OK\r\n")
	expect(t, w.do(nil, "KEYNOTIFY", "SOMEKEY", "STOP"), ":0\r\n")
	expect(t, w.do(nil, "KEYNOTIFY", "OTHER"), "+OK\r\n")
	expect(t, c.do(nil, "SET", "SOMEKEY", "quiet"), "+OK\r\n")
	expect(t, c.do(nil, "SET", "OTHER", "loud"), "+OK\r\n")
	notes = w.notifications(5)
	if !strings.HasSuffix(notes[4].Topic, "/4F54484552") {
		t.Fatalf("after STOP got a notification on %s", notes[4].Topic)
	}

	// Notifications follow the invoker ID, not whoever publishes.
	e.ss.ClientDisconnected("watcher")
	expect(t, c.do(nil, "SET", "OTHER", "after"), "+OK\r\n")
	expect(t, w.do(nil, "KEYNOTIFY", "marker"), "+OK\r\n")
	expect(t, c.do(nil, "SET", "marker", "m"), "+OK\r\n")
	notes = w.notifications(6)
	if len(notes) != 6 || !strings.HasSuffix(notes[5].Topic, "/"+hexUpper("marker")) {
		t.Fatalf("a forgotten registration still notifies: %d notifications, last on %s", len(notes), notes[len(notes)-1].Topic)
	}

	if got := e.counter("edgeport_statestore_keynotify_requests_total"); got != 6 {
		t.Errorf("keynotify requests %v, want 6", got)
	}
	if got := e.counter("edgeport_statestore_notifications_total"); got != 6 {
		t.Errorf("notifications %v, want 6", got)
	}
}

func TestErrors(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dial("errs")
	future := HLC{Wall: time.Now().Add(2 * time.Minute).UnixMilli(), Node: "c"}.String()
	for _, tc := range []struct {
		name    string
		payload []byte
		props   paho.UserProperties
		want    string
	}{
		{"bad RESP", []byte("SET k v"), nil, errSyntaxError},
		{"truncated RESP", []byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n"), nil, errSyntaxError},
		{"inline command", []byte("GET k\r\n"), nil, errSyntaxError},
		{"empty payload", nil, nil, errSyntaxError},
		{"unknown command", resp("INCR", "k"), nil, errUnknownCommand},
		{"SET without value", resp("SET", "k"), nil, errWrongArgs},
		{"GET extra", resp("GET", "k", "x"), nil, errWrongArgs},
		{"GET none", resp("GET"), nil, errWrongArgs},
		{"DEL extra", resp("DEL", "k", "x"), nil, errWrongArgs},
		{"VDEL short", resp("VDEL", "k"), nil, errWrongArgs},
		{"KEYNOTIFY extra", resp("KEYNOTIFY", "k", "STOP", "x"), nil, errWrongArgs},
		{"KEYNOTIFY bad option", resp("KEYNOTIFY", "k", "GO"), nil, errSyntaxError},
		{"empty key SET", resp("SET", "", "v"), nil, errKeyLengthZero},
		{"empty key GET", resp("GET", ""), nil, errKeyLengthZero},
		{"empty key DEL", resp("DEL", ""), nil, errKeyLengthZero},
		{"SET without __ts", resp("SET", "k", "v"), props("__invId", "errs"), errMissingTimestamp},
		{"SET malformed __ts", resp("SET", "k", "v"), props("__invId", "errs", "__ts", "yesterday"), errMalformedTimestamp},
		{"SET future __ts", resp("SET", "k", "v"), props("__invId", "errs", "__ts", future), errTimestampSkew},
		{"GET malformed __ts", resp("GET", "k"), props("__invId", "errs", "__ts", "1"), errMalformedTimestamp},
		{"DEL future __ts", resp("DEL", "k"), props("__invId", "errs", "__ts", future), errTimestampSkew},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.props
			if p == nil {
				p = c.standard()
			}
			expect(t, c.call(req{payload: tc.payload, props: p}), errPayload(tc.want))
		})
	}
	// Nothing was stored by any of them.
	expect(t, c.do(nil, "GET", "k"), "$-1\r\n")
	if got := e.counter("edgeport_statestore_errors_total", "error", "syntax"); got != 15 {
		t.Errorf("syntax errors %v, want 15", got)
	}
	if got := e.counter("edgeport_statestore_errors_total", "error", "timestamp"); got != 5 {
		t.Errorf("timestamp errors %v, want 5", got)
	}
}

func TestRPCConventions(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dial("rpc")

	t.Run("unsupported version", func(t *testing.T) {
		r := c.call(req{payload: resp("GET", "k"), props: props("__invId", "rpc", "__protVer", "2.0")})
		if st, _ := prop(r, "__stat"); st != "505" {
			t.Fatalf("__stat %q, want 505", st)
		}
		if v, _ := prop(r, "__supProtMajVer"); v != "1" {
			t.Fatalf("__supProtMajVer %q, want 1", v)
		}
		if v, _ := prop(r, "__requestProtVer"); v != "2.0" {
			t.Fatalf("__requestProtVer %q, want 2.0", v)
		}
		if v, _ := prop(r, "__protVer"); v != "1.0" {
			t.Fatalf("__protVer %q", v)
		}
		if len(r.Payload) != 0 {
			t.Fatalf("payload %q", r.Payload)
		}
	})
	t.Run("minor versions are compatible", func(t *testing.T) {
		expect(t, c.call(req{payload: resp("GET", "k"), props: props("__invId", "rpc", "__protVer", "1.7")}), "$-1\r\n")
	})
	t.Run("response echoes correlation data and expiry", func(t *testing.T) {
		corr := []byte("not-a-uuid")
		r := c.call(req{payload: resp("GET", "k"), corr: corr})
		if !bytes.Equal(r.Properties.CorrelationData, corr) {
			t.Fatalf("correlation %q", r.Properties.CorrelationData)
		}
		if r.Properties.MessageExpiry == nil || *r.Properties.MessageExpiry == 0 || *r.Properties.MessageExpiry > 10 {
			t.Fatalf("message expiry %v, want the request's (10)", r.Properties.MessageExpiry)
		}
		if r.QoS != 1 {
			t.Fatalf("response QoS %d, want 1", r.QoS)
		}
	})
	t.Run("QoS 0 refused", func(t *testing.T) {
		r := c.call(req{payload: resp("SET", "q0", "v"), qos0: true})
		if st, _ := prop(r, "__stat"); st != "400" {
			t.Fatalf("__stat %q, want 400", st)
		}
		expect(t, c.do(nil, "GET", "q0"), "$-1\r\n")
	})
	t.Run("missing correlation data", func(t *testing.T) {
		before := e.counter("edgeport_statestore_errors_total", "error", "protocol")
		c.send(req{payload: resp("SET", "nocorr", "v"), noCorr: true})
		testwait.For(t, "the uncorrelated response", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, p := range c.extra {
				if st, _ := prop(p, "__stat"); st == "400" && len(p.Properties.CorrelationData) == 0 {
					if n, _ := prop(p, "__propName"); n == "Correlation Data" {
						return true
					}
				}
			}
			return false
		})
		expect(t, c.do(nil, "GET", "nocorr"), "$-1\r\n")
		if e.counter("edgeport_statestore_errors_total", "error", "protocol") != before+1 {
			t.Fatal("protocol error not counted")
		}
	})
	t.Run("forbidden response topics", func(t *testing.T) {
		// A spy on the invoke topic and on every notification topic would
		// see any answer the state store wrongly published there.
		spy := e.dial("spy")
		ctx := t.Context()
		if _, err := spy.pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
			{Topic: InvokeTopic, QoS: 1}, {Topic: notifyTopicPrefix + "#", QoS: 1}, {Topic: "$edgeport/#", QoS: 1},
		}}); err != nil {
			t.Fatal(err)
		}
		before := e.counter("edgeport_statestore_errors_total", "error", "protocol")
		for _, topic := range []string{notifyTopicPrefix + hexUpper("victim") + "/command/notify/6B", "$edgeport/selftest/x"} {
			c.send(req{payload: resp("SET", "hijack", "v"), topic: topic})
		}
		// A response topic equal to the invoke topic: the client is
		// disconnected (protocol error), as Azure IoT Operations does.
		// At QoS 0: the disconnect may come before the PUBACK of a QoS 1
		// request (the ack waits for the store, the state store does not),
		// and the publish would then wait for an ack that never comes.
		bad := e.dial("bad")
		bad.send(req{payload: resp("SET", "hijack", "v"), topic: InvokeTopic, qos0: true})
		select {
		case <-bad.pc.Done():
		case <-time.After(wait):
			t.Fatal("a client answering to the invoke topic was not disconnected")
		}
		var disc *paho.Disconnect
		testwait.For(t, "the server's DISCONNECT", func() bool {
			bad.mu.Lock()
			defer bad.mu.Unlock()
			disc = bad.disc
			return disc != nil
		})
		if disc.ReasonCode != 0x82 {
			t.Fatalf("server DISCONNECT %+v, want reason 0x82 (protocol error)", disc)
		}
		testwait.For(t, "three dropped requests", func() bool {
			return e.counter("edgeport_statestore_errors_total", "error", "protocol") == before+3
		})
		// Anything published to those topics was published before this
		// answer: one connection, in order.
		expect(t, c.do(nil, "GET", "hijack"), "$-1\r\n")
		testwait.For(t, "the spy to see the four requests", func() bool {
			spy.mu.Lock()
			defer spy.mu.Unlock()
			return len(spy.extra)+len(spy.notes) >= 4
		})
		spy.mu.Lock()
		defer spy.mu.Unlock()
		for _, p := range append(spy.extra, spy.notes...) {
			if p.Topic != InvokeTopic || p.Payload[0] != '*' {
				t.Fatalf("the state store published %q to %s", p.Payload, p.Topic)
			}
		}
		if n := len(spy.extra) + len(spy.notes); n != 4 {
			t.Fatalf("spy saw %d messages, want the 4 requests", n)
		}
	})
	t.Run("KEYNOTIFY without a client ID", func(t *testing.T) {
		// Through the broker's internal listener the requester is known
		// without __invId/__srcId: the broker vouches for the publisher.
		r := c.call(req{payload: resp("KEYNOTIFY", "k"), props: props("__protVer", "1.0")})
		if st, _ := prop(r, "__stat"); st != "200" {
			t.Fatalf("__stat %q, want 200 with the broker-verified origin", st)
		}
		// __srcId (newer SDKs) is as good as __invId.
		expect(t, c.call(req{payload: resp("KEYNOTIFY", "k"), props: props("__srcId", "rpc")}), "+OK\r\n")
	})
}

// TestCommandCache: a request repeated with the same correlation data gets
// the first answer again instead of running twice.
func TestCommandCache(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dial("cache")
	corr := []byte("0123456789abcdef")
	r1 := c.call(req{payload: resp("SET", "once", "v", "NX"), corr: corr})
	expect(t, r1, "+OK\r\n")
	// A duplicate (as after a lost PUBACK): the cached +OK, not :-1.
	r2 := c.call(req{payload: resp("SET", "once", "v", "NX"), corr: corr})
	expect(t, r2, "+OK\r\n")
	if version(t, r1) != version(t, r2) {
		t.Fatal("the repeated answer differs from the first")
	}
	if got := e.counter("edgeport_statestore_requests_total", "command", "SET"); got != 1 {
		t.Fatalf("SET executed %v times, want 1", got)
	}
	// Other correlation data is another request.
	expect(t, c.do(nil, "SET", "once", "v", "NX"), ":-1\r\n")
	// The same correlation data from another invoker is another request too.
	d := e.dial("cache2")
	r := d.call(req{payload: resp("SET", "once", "v", "NX"), corr: corr})
	expect(t, r, ":-1\r\n")

	// Duplicates that arrive together (in one executor batch).
	corr2 := []byte("fedcba9876543210")
	ch := c.send(req{payload: resp("SET", "twice", "v", "NX"), corr: corr2})
	c.send(req{payload: resp("SET", "twice", "v", "NX"), corr: corr2})
	for range 2 {
		select {
		case r := <-ch:
			expect(t, r, "+OK\r\n")
		case <-time.After(wait):
			t.Fatal("a duplicate was not answered")
		}
	}
	if got := e.counter("edgeport_statestore_requests_total", "command", "SET"); got != 4 {
		t.Fatalf("SET executed %v times, want 4", got)
	}

	// An expired entry is not served: without a Message Expiry Interval
	// the entry lives CacheTTL, after which the repeat runs again.
	clk := wallclock.NewFake(time.Now())
	e2 := startEnv(t, Options{CacheTTL: 50 * time.Millisecond, Clock: clk})
	c = e2.dial("ttl")
	corr3 := []byte("ttl-correlation!")
	expect(t, c.call(req{payload: resp("SET", "k", "v", "NX"), corr: corr3, noExpiry: true}), "+OK\r\n")
	expect(t, c.call(req{payload: resp("SET", "k", "v", "NX"), corr: corr3, noExpiry: true}), "+OK\r\n")
	clk.Advance(100 * time.Millisecond)
	expect(t, c.call(req{payload: resp("SET", "k", "v", "NX"), corr: corr3, noExpiry: true}), ":-1\r\n")
}

func TestRestartPersistence(t *testing.T) {
	clk := wallclock.NewFake(time.Now())
	e := startEnv(t, Options{Clock: clk})
	c := e.dial("p")
	r := c.do(nil, "SET", "kept", "value")
	expect(t, r, "+OK\r\n")
	kept := version(t, r)
	expect(t, c.do(nil, "SET", "lease", "holder", "PX", "60000"), "+OK\r\n")
	expect(t, c.do(nil, "SET", "gone", "x"), "+OK\r\n")
	expect(t, c.do(nil, "DEL", "gone"), ":1\r\n")
	expect(t, c.do(nil, "SET", "brief", "x", "PX", "1000"), "+OK\r\n")
	e.shutdown()
	clk.Advance(1100 * time.Millisecond) // "brief" expires while the broker is down
	e.start()
	// Restoring deleted it (a new registry: counted at restore).
	if got := e.counter("edgeport_statestore_deletions_total", "reason", "expiry"); got != 1 {
		t.Fatalf("expired at restore: %v, want 1", got)
	}
	c = e.dial("p2")
	r = c.do(nil, "GET", "kept")
	expect(t, r, bulk("value"))
	if got := version(t, r); got != kept {
		t.Fatalf("version after restart %v, want %v", got, kept)
	}
	expect(t, c.do(nil, "GET", "lease"), bulk("holder"))
	expect(t, c.do(nil, "GET", "brief"), "$-1\r\n")
	expect(t, c.do(nil, "GET", "gone"), "$-1\r\n")
	// The lease's expiry survived too: NX still refused.
	expect(t, c.do(nil, "SET", "lease", "other", "NX"), ":-1\r\n")
	// New versions are later than the restored ones.
	r = c.do(nil, "SET", "kept", "v2")
	if got := version(t, r); got.Compare(kept) <= 0 {
		t.Fatalf("version after restart %v not after %v", got, kept)
	}
	if got := e.counter("edgeport_statestore_keys"); got != 2 {
		t.Fatalf("keys gauge %v, want 2", got)
	}
	if got := e.counter("edgeport_statestore_bytes"); got != float64(len("kept")+len("v2")+len("lease")+len("holder")) {
		t.Fatalf("bytes gauge %v", got)
	}
}

func TestQuota(t *testing.T) {
	e := startEnv(t, Options{MaxKeys: 2, MaxBytes: 20})
	c := e.dial("q")
	expect(t, c.do(nil, "SET", "a", "1234"), "+OK\r\n")
	expect(t, c.do(nil, "SET", "b", "1234"), "+OK\r\n")
	expect(t, c.do(nil, "SET", "c", "1"), errPayload(errQuotaExceeded))
	// Overwriting stays within the key count; bytes are checked.
	expect(t, c.do(nil, "SET", "a", "123456789012345"), errPayload(errQuotaExceeded))
	expect(t, c.do(nil, "SET", "a", "12345678"), "+OK\r\n")
	expect(t, c.do(nil, "DEL", "b"), ":1\r\n")
	expect(t, c.do(nil, "SET", "c", "1"), "+OK\r\n")
	expect(t, c.do(nil, "GET", "a"), bulk("12345678"))
	if got := e.counter("edgeport_statestore_errors_total", "error", "quota"); got != 2 {
		t.Fatalf("quota errors %v, want 2", got)
	}
}

// TestQuotaChangesLive: the Broker resource's stateStore limits reach a
// running state store through SetLimits.
func TestQuotaChangesLive(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dial("ql")
	expect(t, c.do(nil, "SET", "a", "1"), "+OK\r\n")
	e.ss.SetLimits(1, 0)
	expect(t, c.do(nil, "SET", "b", "1"), errPayload(errQuotaExceeded))
	e.ss.SetLimits(0, 0)
	expect(t, c.do(nil, "SET", "b", "1"), "+OK\r\n")
}

// topicAuthorizer allows every key, and every response topic but elsewhere/#.
type topicAuthorizer struct{}

func (topicAuthorizer) Authorize(string, string, map[string]string, []byte, bool) bool { return true }
func (topicAuthorizer) AuthorizeResponse(_, topic string) bool {
	return !strings.HasPrefix(topic, "elsewhere/")
}

// TestResponseTopicAuthorized: the state store does not answer on a topic
// its requester may not subscribe to, and does not run the request.
func TestResponseTopicAuthorized(t *testing.T) {
	e := startEnv(t, Options{Authorizer: topicAuthorizer{}})
	c := e.dial("rt")
	before := e.counter("edgeport_statestore_errors_total", "error", "protocol")
	c.send(req{payload: resp("SET", "k", "v"), topic: "elsewhere/resp"})
	testwait.For(t, "the request to be dropped", func() bool {
		return e.counter("edgeport_statestore_errors_total", "error", "protocol") == before+1
	})
	expect(t, c.do(nil, "GET", "k"), "$-1\r\n")
}

// denyAuthorizer allows everything except what its maps name.
type denyAuthorizer struct {
	mu      sync.Mutex
	noRead  map[string]bool // client/key
	noWrite map[string]bool
	seen    []string
}

func (a *denyAuthorizer) Authorize(clientID, username string, attrs map[string]string, key []byte, write bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen = append(a.seen, clientID)
	k := clientID + "/" + string(key)
	if write {
		return !a.noWrite[k]
	}
	return !a.noRead[k]
}

func TestAuthorization(t *testing.T) {
	az := &denyAuthorizer{
		noRead:  map[string]bool{"eve/secret": true},
		noWrite: map[string]bool{"eve/secret": true, "eve/config": true},
	}
	e := startEnv(t, Options{Authorizer: az})
	alice, eve := e.dial("alice"), e.dial("eve")
	expect(t, alice.do(nil, "SET", "secret", "s"), "+OK\r\n")
	expect(t, alice.do(nil, "SET", "config", "c"), "+OK\r\n")

	deny := errPayload(errNotAuthorized)
	expect(t, eve.do(nil, "GET", "secret"), deny)
	expect(t, eve.do(nil, "SET", "secret", "x"), deny)
	expect(t, eve.do(nil, "DEL", "secret"), deny)
	expect(t, eve.do(nil, "VDEL", "secret", "s"), deny)
	expect(t, eve.do(nil, "KEYNOTIFY", "secret"), deny)
	expect(t, eve.do(nil, "SET", "config", "x"), deny)
	// Reading config is allowed, writing elsewhere too.
	expect(t, eve.do(nil, "GET", "config"), bulk("c"))
	expect(t, eve.do(nil, "SET", "own", "o"), "+OK\r\n")
	// The listing leaves out what eve may not read.
	expect(t, eve.do(nil, KeysCommand, "", "", "10"), "*3\r\n$-1\r\n"+bulk("config")+bulk("own"))
	expect(t, alice.do(nil, "GET", "secret"), bulk("s"))
	if got := e.counter("edgeport_statestore_errors_total", "error", "not_authorized"); got != 6 {
		t.Fatalf("authorization errors %v, want 6", got)
	}
	az.mu.Lock()
	defer az.mu.Unlock()
	for _, id := range az.seen {
		if id != "alice" && id != "eve" {
			t.Fatalf("authorizer saw client %q", id)
		}
	}
}

func TestListKeys(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dial("lister")
	for _, k := range []string{"app/b", "app/a", "app/c", "other", "app/\xff"} {
		expect(t, c.do(nil, "SET", k, "v"), "+OK\r\n")
	}
	expect(t, c.do(nil, KeysCommand, "app/", "", "2"), "*3\r\n"+bulk("app/b")+bulk("app/a")+bulk("app/b"))
	expect(t, c.do(nil, KeysCommand, "app/", "app/b", "2"), "*3\r\n$-1\r\n"+bulk("app/c")+bulk("app/\xff"))
	expect(t, c.do(nil, KeysCommand, "app/", "app/\xff", "2"), "*1\r\n$-1\r\n")
	expect(t, c.do(nil, KeysCommand, "", "", "100"), "*6\r\n$-1\r\n"+bulk("app/a")+bulk("app/b")+bulk("app/c")+bulk("app/\xff")+bulk("other"))
	expect(t, c.do(nil, KeysCommand, "app/", "", "0"), errPayload(errSyntaxError))
	expect(t, c.do(nil, KeysCommand, "app/", ""), errPayload(errWrongArgs))
}

// TestStoreFailureIsolated: when the store refuses a batch (its disk
// quota), the batch is rolled back and retried request by request, so
// only the request that cannot be stored fails and memory matches disk.
//
// The answers are not checked: once the store has refused a write it
// reports Full and the broker refuses every QoS 1 publish, the state
// store's answers included, until the store measures room again.
func TestStoreFailureIsolated(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	usage := st.Usage()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	e := startEnvStore(t, Options{}, store.Options{QuotaBytes: usage + 256<<10}, dir)
	c := e.dial("disk")
	expect(t, c.do(nil, "SET", "small", "v"), "+OK\r\n")
	expect(t, c.do(nil, "SET", "other", "o"), "+OK\r\n")

	// Hold the executor so that the three requests form one batch.
	release, held := make(chan struct{}), make(chan struct{})
	go e.ss.do(func() { close(held); <-release })
	<-held
	c.send(req{payload: resp("SET", "big", strings.Repeat("x", 600<<10))})
	c.send(req{payload: resp("SET", "small", "w")})
	c.send(req{payload: resp("DEL", "other")})
	testwait.For(t, "three queued requests", func() bool { return len(e.ss.reqs) == 3 })
	close(release)
	testwait.For(t, "the refused SET", func() bool {
		return e.counter("edgeport_statestore_errors_total", "error", "quota") == 1
	})
	var big, small, other *entry
	e.ss.do(func() { big, small, other = e.ss.ex.keys["big"], e.ss.ex.keys["small"], e.ss.ex.keys["other"] })
	if big != nil || small == nil || string(small.value) != "w" || other != nil {
		t.Fatalf("in memory after the failed batch: big %v, small %v, other %v", big, small, other)
	}
	if s := e.ss.Stats(); s.Keys != 1 || s.Bytes != int64(len("small")+1) {
		t.Fatalf("Stats %+v", s)
	}
	e.restart()
	c = e.dial("disk2")
	expect(t, c.do(nil, "GET", "small"), bulk("w"))
	expect(t, c.do(nil, "GET", "big"), "$-1\r\n")
	expect(t, c.do(nil, "GET", "other"), "$-1\r\n")
}

// TestServedInProcess: the state store is a service of the broker, not a
// client: it has no session to lose, it answers while the internal
// listener's connections are dropped, and once stopped a request gets
// "no matching subscribers" (0x10) like one to a topic nobody serves.
func TestServedInProcess(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dial("inproc")
	expect(t, c.do(nil, "SET", "k", "v"), "+OK\r\n")
	if _, ok := e.b.Session(ClientID); ok {
		t.Errorf("the broker has a session %q; the state store should be served in-process", ClientID)
	}
	e.b.DisconnectListener(broker.InternalListener, "test")
	expect(t, c.do(nil, "GET", "k"), bulk("v"))

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.ss.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	expiry := uint32(10)
	pr, err := c.pc.Publish(ctx, &paho.Publish{QoS: 1, Topic: InvokeTopic, Payload: resp("GET", "k"), Properties: &paho.PublishProperties{
		ResponseTopic: c.respTopic, CorrelationData: []byte("after-stop"), User: c.standard(), MessageExpiry: &expiry,
	}})
	if err != nil && (pr == nil || pr.ReasonCode == 0) {
		t.Fatalf("publish after Stop: %v", err)
	}
	if pr == nil || pr.ReasonCode != byte(packet.NoMatchingSubscribers) {
		t.Fatalf("PUBACK after Stop = %+v, want reason 0x10 (no matching subscribers)", pr)
	}
}

func TestMetrics(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dial("m")
	expect(t, c.do(nil, "SET", "a", "12"), "+OK\r\n")
	expect(t, c.do(nil, "SET", "a", "123"), "+OK\r\n")
	expect(t, c.do(nil, "SET", "b", "1"), "+OK\r\n")
	expect(t, c.do(nil, "SET", "b", "2", "NX"), ":-1\r\n")
	expect(t, c.do(nil, "GET", "a"), bulk("123"))
	expect(t, c.do(nil, "GET", "zz"), "$-1\r\n")
	expect(t, c.do(nil, "DEL", "b"), ":1\r\n")
	expect(t, c.do(nil, "DEL", "b"), ":0\r\n")
	expect(t, c.do(nil, "KEYNOTIFY", "a"), "+OK\r\n")
	for _, m := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"edgeport_statestore_insertions_total", nil, 2},
		{"edgeport_statestore_modifications_total", nil, 1},
		{"edgeport_statestore_deletions_total", []string{"reason", "command"}, 1},
		{"edgeport_statestore_retrievals_total", nil, 2},
		{"edgeport_statestore_keynotify_requests_total", nil, 1},
		{"edgeport_statestore_requests_total", []string{"command", "SET"}, 4},
		{"edgeport_statestore_requests_total", []string{"command", "DEL"}, 2},
		{"edgeport_statestore_keys", nil, 1},
		{"edgeport_statestore_bytes", nil, 4},
	} {
		if got := e.counter(m.name, m.labels...); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}
	if s := e.ss.Stats(); s.Keys != 1 || s.Bytes != 4 {
		t.Errorf("Stats = %+v", s)
	}
}

// TestLargeBatchSplit: a batch whose answers pass maxChunk is answered in
// several rounds, in order, with nothing lost.
func TestLargeBatchSplit(t *testing.T) {
	e := startEnv(t, Options{})
	c := e.dial("large")
	values := make([]string, 7)
	for i := range values {
		values[i] = strings.Repeat(string(rune('a'+i)), 900<<10)
		expect(t, c.do(nil, "SET", "big"+strconv.Itoa(i), values[i]), "+OK\r\n")
	}
	release, held := make(chan struct{}), make(chan struct{})
	go e.ss.do(func() { close(held); <-release })
	<-held
	// Before each GET a VDEL of the same key that changes nothing: the
	// GETs then queue behind those writes in the executor instead of being
	// answered from the durable view.
	chans := make([]chan *paho.Publish, len(values))
	vdels := make([]chan *paho.Publish, len(values))
	for i := range values {
		vdels[i] = c.send(req{payload: resp("VDEL", "big"+strconv.Itoa(i), "other")})
		chans[i] = c.send(req{payload: resp("GET", "big"+strconv.Itoa(i))})
	}
	testwait.For(t, "queued GETs", func() bool { return len(e.ss.reqs) == 2*len(values) })
	close(release)
	for i, ch := range vdels {
		select {
		case r := <-ch:
			expect(t, r, ":-1\r\n")
		case <-time.After(wait):
			t.Fatalf("VDEL %d not answered", i)
		}
	}
	for i, ch := range chans {
		select {
		case r := <-ch:
			expect(t, r, bulk(values[i]))
		case <-time.After(wait):
			t.Fatalf("GET %d not answered", i)
		}
	}
}

// TestGetFromDurableView: a GET does not queue behind other clients' writes
// (it is answered while the executor is busy) and does not see a write
// before that write is answered; a client's own GET pipelined behind its
// SET reads that SET.
func TestGetFromDurableView(t *testing.T) {
	e := startEnv(t, Options{})
	writer, reader := e.dial("writer"), e.dial("reader")
	expect(t, writer.do(nil, "SET", "k", "old"), "+OK\r\n")
	before := e.counter("edgeport_statestore_requests_total", "command", "GET")

	release, held := make(chan struct{}), make(chan struct{})
	go e.ss.do(func() { close(held); <-release })
	<-held
	set := writer.send(req{payload: resp("SET", "k", "new")})
	own := writer.send(req{payload: resp("GET", "k")}) // behind the writer's SET
	testwait.For(t, "the queued SET and GET", func() bool { return len(e.ss.reqs) == 2 })
	// The executor is held: the reader is answered from the view, with
	// the value whose answer was sent.
	expect(t, reader.do(nil, "GET", "k"), bulk("old"))
	expect(t, reader.do(nil, "GET", "absent"), "$-1\r\n")
	// The writer's GET of another key does not wait for its SET either.
	expect(t, writer.do(nil, "GET", "absent"), "$-1\r\n")
	close(release)
	for _, ch := range []chan *paho.Publish{set, own} {
		select {
		case r := <-ch:
			if ch == set {
				expect(t, r, "+OK\r\n")
			} else {
				expect(t, r, bulk("new"))
			}
		case <-time.After(wait):
			t.Fatal("queued request not answered")
		}
	}
	expect(t, reader.do(nil, "GET", "k"), bulk("new"))
	if got := e.counter("edgeport_statestore_requests_total", "command", "GET"); got != before+5 {
		t.Fatalf("GET requests counted %v, want %v", got, before+5)
	}
}

// TestGetFromViewExpiry: a key past its expiry is absent to a GET even
// before the executor has swept it.
func TestGetFromViewExpiry(t *testing.T) {
	clk := wallclock.NewFake(time.Now())
	e := startEnv(t, Options{Clock: clk})
	c := e.dial("exp")
	expect(t, c.do(nil, "SET", "k", "v", "PX", "1000"), "+OK\r\n")
	release, held := make(chan struct{}), make(chan struct{})
	go e.ss.do(func() { close(held); <-release })
	<-held // the executor cannot sweep
	expect(t, c.do(nil, "GET", "k"), bulk("v"))
	clk.Advance(1001 * time.Millisecond)
	expect(t, c.do(nil, "GET", "k"), "$-1\r\n")
	close(release)
}
