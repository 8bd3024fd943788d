package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/testwait"
)

const (
	ssInvokeTopic = "statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke"
	ssNotifyBase  = "clients/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/"
)

// ssClient speaks the state store protocol with Eclipse Paho (MQTT 5),
// building the RESP payloads and RPC properties as the protocol reference
// describes them.
type ssClient struct {
	t    *testing.T
	id   string
	pc   *paho.Client
	resp string

	mu      sync.Mutex
	waiting map[string]chan *paho.Publish
	notes   chan *paho.Publish
}

func dialStateStore(t *testing.T, addr, id string) *ssClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c := &ssClient{
		t: t, id: id,
		resp:    "clients/" + id + "/services/statestore/_any_/command/invoke/response",
		waiting: make(map[string]chan *paho.Publish),
		notes:   make(chan *paho.Publish, 16),
	}
	c.pc = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p := pr.Packet
			if strings.HasPrefix(p.Topic, ssNotifyBase) {
				c.notes <- p
				return true, nil
			}
			c.mu.Lock()
			ch := c.waiting[string(p.Properties.CorrelationData)]
			delete(c.waiting, string(p.Properties.CorrelationData))
			c.mu.Unlock()
			if ch != nil {
				ch <- p
			}
			return true, nil
		}},
		PacketTimeout: 5 * time.Second,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.pc.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true}); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.pc.Disconnect(&paho.Disconnect{}) })
	notify := ssNotifyBase + strings.ToUpper(hex.EncodeToString([]byte(id))) + "/command/notify/+"
	if _, err := c.pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: c.resp, QoS: 1}, {Topic: notify, QoS: 1},
	}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return c
}

// call sends one request and returns the answer's payload and user properties.
func (c *ssClient) call(extra paho.UserProperties, args ...string) (string, map[string]string) {
	c.t.Helper()
	payload, props, err := c.callErr(extra, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	if props["__stat"] != "200" {
		c.t.Fatalf("%q: __stat %q (%s)", args, props["__stat"], props["__stMsg"])
	}
	return payload, props
}

// callErr is call for a goroutine, or a connection that may be lost: it
// returns an error instead of failing the test.
func (c *ssClient) callErr(extra paho.UserProperties, args ...string) (string, map[string]string, error) {
	payload := fmt.Sprintf("*%d\r\n", len(args))
	for _, a := range args {
		payload += fmt.Sprintf("$%d\r\n%s\r\n", len(a), a)
	}
	corr := make([]byte, 16)
	_, _ = rand.Read(corr)
	ch := make(chan *paho.Publish, 1)
	c.mu.Lock()
	c.waiting[string(corr)] = ch
	c.mu.Unlock()
	user := paho.UserProperties{
		{Key: "__ts", Value: fmt.Sprintf("%015d:%05d:%s", time.Now().UnixMilli(), 0, c.id)},
		{Key: "__srcId", Value: c.id},
		{Key: "__protVer", Value: "1.0"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.pc.Publish(ctx, &paho.Publish{QoS: 1, Topic: ssInvokeTopic, Payload: []byte(payload),
		Properties: &paho.PublishProperties{ResponseTopic: c.resp, CorrelationData: corr, User: append(user, extra...)}}); err != nil {
		return "", nil, fmt.Errorf("publish %q: %w", args, err)
	}
	select {
	case p := <-ch:
		props := make(map[string]string)
		for _, u := range p.Properties.User {
			props[u.Key] = u.Value
		}
		return string(p.Payload), props, nil
	case <-c.pc.Done():
		return "", nil, fmt.Errorf("%q: connection lost", args)
	case <-ctx.Done():
		return "", nil, fmt.Errorf("no answer to %q", args)
	}
}

func TestStateStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := startEdgeport(t, "--data-dir", dir)
	addr := e.addr(t, "mqtt")
	state := func(args ...string) (string, int) {
		t.Helper()
		return runEdgeport(t, append([]string{"state", "--addr", addr}, args...)...)
	}
	mustState := func(want string, args ...string) {
		t.Helper()
		if out, code := state(args...); code != 0 || out != want {
			t.Fatalf("edgeport state %s: exit %d, output %q; want %q", strings.Join(args, " "), code, out, want)
		}
	}

	// An application watches a key; an operator changes it with the CLI.
	app := dialStateStore(t, addr, "e2e-app")
	if got, _ := app.call(nil, "KEYNOTIFY", "config/mode"); got != "+OK\r\n" {
		t.Fatalf("KEYNOTIFY: %q", got)
	}
	mustState("OK\n", "set", "config/mode", "eco")
	select {
	case n := <-app.notes:
		want := "*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$3\r\neco\r\n"
		if string(n.Payload) != want || !strings.HasSuffix(n.Topic, "/command/notify/"+strings.ToUpper(hex.EncodeToString([]byte("config/mode")))) {
			t.Fatalf("notification %s %q", n.Topic, n.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification of the CLI's SET")
	}
	got, props := app.call(nil, "GET", "config/mode")
	if got != "$3\r\neco\r\n" || props["__ts"] == "" {
		t.Fatalf("GET: %q %v", got, props)
	}

	// The CLI's conditions, expiry, binary keys, listing and deletion.
	mustState("eco\n", "get", "config/mode")
	if out, code := state("set", "config/mode", "turbo", "--nx"); code != 1 || !strings.Contains(out, "not set") {
		t.Fatalf("set --nx on an existing key: exit %d, %q", code, out)
	}
	mustState("OK\n", "set", "lease", "holder", "--nex", "--px", "1m")
	mustState("OK\n", "--hex", "set", "00ff", "c0ffee")
	mustState("c0ffee\n", "--hex", "get", "00ff")
	mustState("hex:00ff\nconfig/mode\nlease\n", "list")
	mustState("config/mode\n", "list", "config/")
	mustState("OK\n", "set", "tmp", "1")
	mustState("deleted\n", "del", "tmp")
	mustState("not found\n", "del", "tmp")
	if out, code := state("get", "tmp"); code != 1 || !strings.Contains(out, "not found") {
		t.Fatalf("get of a deleted key: exit %d, %q", code, out)
	}

	// Fencing through the wire: the lease's version protects a key.
	_, props = app.call(nil, "SET", "locks/l", "e2e-app", "NEX", "PX", "60000")
	token := props["__ts"]
	if got, _ := app.call(paho.UserProperties{{Key: "__ft", Value: token}}, "SET", "protected", "1"); got != "+OK\r\n" {
		t.Fatalf("fenced SET: %q", got)
	}
	if out, code := state("set", "protected", "2"); code != 1 || !strings.Contains(out, "a fencing token is required for this request") {
		t.Fatalf("unfenced SET of a fenced key: exit %d, %q", code, out)
	}

	// Restart on the same data directory: values, expiries and fencing survive.
	// "brief" is set just before the stop, so that it expires while
	// Edgeport is down (and is counted as an expiry by the restarted
	// process) even when a loaded machine makes the steps above slow.
	mustState("OK\n", "set", "brief", "x", "--px", "4s")
	briefGone := time.Now().Add(4 * time.Second) // at the latest
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	// "brief" expires while Edgeport is down: the store's PX is wall-clock
	// time in another process, so the test waits for that deadline to pass.
	testwait.For(t, `"brief"'s expiry deadline`, func() bool { return time.Now().After(briefGone) })
	e = startEdgeport(t, "--data-dir", dir)
	addr = e.addr(t, "mqtt")
	mustState("eco\n", "get", "config/mode")
	mustState("holder\n", "get", "lease")
	mustState("c0ffee\n", "--hex", "get", "00ff")
	if out, code := state("get", "brief"); code != 1 || !strings.Contains(out, "not found") {
		t.Fatalf("a key that expired while stopped: exit %d, %q", code, out)
	}
	if out, code := state("set", "protected", "2"); code != 1 || !strings.Contains(out, "fencing token") {
		t.Fatalf("fencing lost in the restart: exit %d, %q", code, out)
	}
	app = dialStateStore(t, addr, "e2e-app2")
	if got, _ := app.call(paho.UserProperties{{Key: "__ft", Value: token}}, "SET", "protected", "3"); got != "+OK\r\n" {
		t.Fatalf("fenced SET after restart: %q", got)
	}

	// The metrics are served.
	_, body := httpGet(t, "http://"+e.addr(t, "http")+"/metrics")
	for _, m := range []string{"edgeport_statestore_keys 5", "edgeport_statestore_modifications_total 1", "edgeport_statestore_errors_total{error=\"fencing\"} 1", "edgeport_statestore_deletions_total{reason=\"expiry\"} 1"} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
}

// TestStateStoreSurvivesKill: a SET the state store answered survives
// kill -9. Writers each SET their key to 1, 2, 3 ... (waiting for each
// answer) while the broker is killed; after a restart on the same data
// directory each key holds the last value answered, or the next one (sent
// and stored, but not answered before the kill), never an older one.
func TestStateStoreSurvivesKill(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := startEdgeportAt(t, dir)
	const writers = 4
	var acked [writers]atomic.Int64
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		c := dialStateStore(t, e.addrs["mqtt"], fmt.Sprintf("e2e-kill-%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := int64(1); ; n++ {
				got, props, err := c.callErr(nil, "SET", fmt.Sprintf("kill/%d", i), strconv.FormatInt(n, 10))
				if err != nil {
					return // the kill
				}
				if got != "+OK\r\n" || props["__stat"] != "200" {
					errs <- fmt.Errorf("SET %d: %q %v", n, got, props)
					return
				}
				acked[i].Store(n)
			}
		}()
	}
	testwait.For(t, "every writer to have 50 SETs answered", func() bool {
		for i := range acked {
			if acked[i].Load() < 50 {
				return false
			}
		}
		return true
	})
	e.kill()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	e = startEdgeportAt(t, dir)
	c := dialStateStore(t, e.addrs["mqtt"], "e2e-kill-check")
	for i := range writers {
		got, _ := c.call(nil, "GET", fmt.Sprintf("kill/%d", i))
		_, value, ok := strings.Cut(strings.TrimSuffix(got, "\r\n"), "\r\n")
		v, err := strconv.ParseInt(value, 10, 64)
		if !ok || err != nil {
			t.Fatalf("kill/%d after the restart: %q", i, got)
		}
		if a := acked[i].Load(); v < a || v > a+1 {
			t.Fatalf("kill/%d holds %d after the restart; %d was the last SET answered before the kill", i, v, a)
		}
	}
}
