package app

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/cluster/clustertest"
	"github.com/edgeport/edgeport/internal/testwait"
)

// startCluster runs n apps as the nodes of one cluster (embedded NATS
// servers on loopback), started together as a cluster's nodes are, and
// waits until it has formed and every node's cluster state is ready. They
// stop one after the other at the test's end, the last ones without a
// quorum.
func startCluster(t *testing.T, n int) []*App {
	t.Helper()
	var apps []*App
	for _, cfg := range clustertest.Configs(t, n) {
		apps = append(apps, newTestApp(t, Config{ClusterEnabled: true, Cluster: cfg}))
	}
	startApps(t, apps)
	return apps
}

// startApps starts the nodes apps together and waits until the cluster
// has formed and every node's cluster state is ready.
func startApps(t *testing.T, apps []*App) {
	t.Helper()
	startTogether(t, apps)
	var nodes []*cluster.Node
	for _, a := range apps {
		nodes = append(nodes, a.Cluster())
	}
	clustertest.WaitFormed(t, nodes...)
	for _, a := range apps {
		clusterStateReady(t, a)
	}
}

// startTogether starts apps at the same time (a node's start waits for
// the others) and stops them at the test's end; it waits for nothing else.
func startTogether(t *testing.T, apps []*App) {
	t.Helper()
	errs := make([]error, len(apps))
	var wg sync.WaitGroup
	for i, a := range apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = a.Start(context.Background())
		}()
	}
	wg.Wait()
	for i, a := range apps {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i+1, errs[i])
		}
		t.Cleanup(func() { stopApp(t, a) })
	}
}

// clusterStateReady waits until a's cluster state serves clients.
func clusterStateReady(t *testing.T, a *App) {
	t.Helper()
	for _, ready := range []<-chan struct{}{a.clusterState.Ready(), a.ownership.Ready()} {
		select {
		case <-ready:
		case <-time.After(30 * time.Second): // JetStream elects slowly on a loaded machine
			t.Fatalf("%s: cluster state not ready", a.Cluster().Name())
		}
	}
}

// syncCluster is the readiness signal: every node's subscriptions are
// known to every other node, and everything published before is routed.
func syncCluster(t *testing.T, apps []*App) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, a := range apps {
		if err := a.router.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// nodeClient is a paho.golang MQTT 5 client of one node, keeping what it
// receives and the server's DISCONNECT.
type nodeClient struct {
	*paho.Client
	id    string
	mu    sync.Mutex
	msgs  []*paho.Publish
	marks int
	discs chan *paho.Disconnect
}

// dialNode connects a clean-start client to node a and subscribes it to
// its marker topic (settle).
func dialNode(t *testing.T, a *App, id string) *nodeClient {
	t.Helper()
	c, _ := dialNodeWith(t, a, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	c.subscribe(t, paho.SubscribeOptions{Topic: "mark/" + c.id, QoS: 1})
	return c
}

// dialNodeWith connects a client to node a with cp and returns it with
// the CONNACK (a success: anything else fails the test).
func dialNodeWith(t *testing.T, a *App, cp *paho.Connect) (*nodeClient, *paho.Connack) {
	t.Helper()
	conn, err := net.Dial("tcp", a.Addrs()["mqtt"].String())
	if err != nil {
		t.Fatal(err)
	}
	c := &nodeClient{id: cp.ClientID, discs: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: wait,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			if pr.Packet.Topic == "mark/"+c.id {
				c.marks++
			} else {
				c.msgs = append(c.msgs, pr.Packet)
			}
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.discs <- d:
			default:
			}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	if err != nil {
		t.Fatalf("connect %s: %v", cp.ClientID, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, ack
}

func (c *nodeClient) subscribe(t *testing.T, opts paho.SubscribeOptions, subID ...int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{opts}}
	if len(subID) > 0 {
		s.Properties = &paho.SubscribeProperties{SubscriptionIdentifier: &subID[0]}
	}
	sa, err := c.Subscribe(ctx, s)
	if err != nil || sa.Reasons[0] != opts.QoS {
		t.Fatalf("%s subscribe %q: %v %v", c.id, opts.Topic, sa, err)
	}
}

func (c *nodeClient) unsubscribe(t *testing.T, filter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{filter}}); err != nil {
		t.Fatal(err)
	}
}

func (c *nodeClient) publish(t *testing.T, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	r, err := c.Publish(ctx, p)
	if err != nil {
		t.Fatalf("%s publish %q: %v", c.id, p.Topic, err)
	}
	return r
}

// settle waits until everything sent to c before the call has arrived:
// after a cluster sync, a marker c publishes to itself through its own
// node is delivered after anything queued for it before.
func (c *nodeClient) settle(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	want := c.marks + 1
	c.mu.Unlock()
	c.publish(t, &paho.Publish{Topic: "mark/" + c.id, QoS: 1})
	testwait.For(t, c.id+"'s marker", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.marks >= want
	})
}

// take returns and forgets what c received on topics starting with prefix.
func (c *nodeClient) take(prefix string) []*paho.Publish {
	c.mu.Lock()
	defer c.mu.Unlock()
	var got, rest []*paho.Publish
	for _, m := range c.msgs {
		if len(m.Topic) >= len(prefix) && m.Topic[:len(prefix)] == prefix {
			got = append(got, m)
		} else {
			rest = append(rest, m)
		}
	}
	c.msgs = rest
	return got
}

// settleAll syncs the cluster and then every client.
func settleAll(t *testing.T, apps []*App, cs ...*nodeClient) {
	t.Helper()
	syncCluster(t, apps)
	for _, c := range cs {
		c.settle(t)
	}
}

func TestClusterRouting(t *testing.T) {
	apps := startCluster(t, 3)
	n1, n2, n3 := apps[0], apps[1], apps[2]

	t.Run("properties, QoS downgrade, subscription ids", func(t *testing.T) {
		pub := dialNode(t, n1, "p-pub")
		s2 := dialNode(t, n2, "p-s2")
		s3 := dialNode(t, n3, "p-s3")
		s2.subscribe(t, paho.SubscribeOptions{Topic: "p/+", QoS: 1}, 7)
		s3.subscribe(t, paho.SubscribeOptions{Topic: "p/#", QoS: 0})
		syncCluster(t, apps)
		expiry := uint32(100)
		pf := byte(1)
		pub.publish(t, &paho.Publish{Topic: "p/x", QoS: 1, Payload: []byte("hello"), Properties: &paho.PublishProperties{
			ContentType: "text/plain", ResponseTopic: "p/reply", CorrelationData: []byte{0, 1, 2}, PayloadFormat: &pf,
			MessageExpiry: &expiry, User: paho.UserProperties{{Key: "k", Value: "v"}, {Key: "k", Value: "v2"}},
		}})
		settleAll(t, apps, s2, s3)
		got2, got3 := s2.take("p/"), s3.take("p/")
		if len(got2) != 1 || len(got3) != 1 {
			t.Fatalf("deliveries: node2 %d, node3 %d, want 1 each", len(got2), len(got3))
		}
		m := got2[0]
		if m.QoS != 1 || string(m.Payload) != "hello" || m.Retain {
			t.Errorf("node2 got %+v", m)
		}
		pp := m.Properties
		if pp.ContentType != "text/plain" || pp.ResponseTopic != "p/reply" || !bytes.Equal(pp.CorrelationData, []byte{0, 1, 2}) ||
			pp.PayloadFormat == nil || *pp.PayloadFormat != 1 || len(pp.User) != 2 || pp.User[1].Value != "v2" {
			t.Errorf("properties not preserved: %+v", pp)
		}
		if pp.MessageExpiry == nil || *pp.MessageExpiry == 0 || *pp.MessageExpiry > 100 {
			t.Errorf("message expiry %v, want 1..100", pp.MessageExpiry)
		}
		if !slices.Equal(subIDs(pp), []int{7}) {
			t.Errorf("subscription ids %v, want [7]", subIDs(pp))
		}
		if got3[0].QoS != 0 {
			t.Errorf("node3 (QoS 0 subscription) got QoS %d", got3[0].QoS)
		}
		if len(subIDs(got3[0].Properties)) != 0 {
			t.Errorf("node3 got subscription ids %v", subIDs(got3[0].Properties))
		}
	})

	t.Run("overlapping filters deliver once", func(t *testing.T) {
		pub := dialNode(t, n1, "o-pub")
		s := dialNode(t, n2, "o-s")
		s.subscribe(t, paho.SubscribeOptions{Topic: "o/+", QoS: 1}, 1)
		s.subscribe(t, paho.SubscribeOptions{Topic: "o/#", QoS: 1}, 2)
		s.subscribe(t, paho.SubscribeOptions{Topic: "+/x", QoS: 0}, 3)
		syncCluster(t, apps)
		for i := range 5 {
			pub.publish(t, &paho.Publish{Topic: "o/x", QoS: 1, Payload: []byte{byte(i)}})
		}
		pub.publish(t, &paho.Publish{Topic: "o", QoS: 1, Payload: []byte("parent")}) // "o/#" only
		settleAll(t, apps, s)
		got := s.take("o")
		if len(got) != 6 {
			t.Fatalf("got %d deliveries, want 6 (5 on o/x, 1 on o)", len(got))
		}
		for i, m := range got[:5] {
			if ids := subIDs(m.Properties); m.Payload[0] != byte(i) || len(ids) != 1 || ids[0] < 1 || ids[0] > 3 {
				t.Errorf("delivery %d: payload %v ids %v, want %d with an id of 1-3", i, m.Payload, ids, i)
			}
		}
		if got[5].Topic != "o" || !slices.Equal(subIDs(got[5].Properties), []int{2}) {
			t.Errorf("parent delivery: %s ids %v", got[5].Topic, subIDs(got[5].Properties))
		}
		if st := n2.router.Stats(); st.Duplicates == 0 {
			t.Errorf("no copies dropped: %+v (three filters matched o/x)", st)
		}
	})

	t.Run("no local, and no echo of a node's own publications", func(t *testing.T) {
		c := dialNode(t, n1, "nl-c")   // no local
		l := dialNode(t, n1, "nl-l")   // same node, plain subscriber
		d := dialNode(t, n2, "nl-d")   // another node
		e := dialNode(t, n3, "nl-pub") // publisher elsewhere
		c.subscribe(t, paho.SubscribeOptions{Topic: "nl/#", QoS: 1, NoLocal: true})
		l.subscribe(t, paho.SubscribeOptions{Topic: "nl/#", QoS: 1})
		d.subscribe(t, paho.SubscribeOptions{Topic: "nl/#", QoS: 1})
		syncCluster(t, apps)
		c.publish(t, &paho.Publish{Topic: "nl/own", QoS: 1})
		e.publish(t, &paho.Publish{Topic: "nl/other", QoS: 1})
		settleAll(t, apps, c, l, d)
		if got := topics(c.take("nl/")); !slices.Equal(got, []string{"nl/other"}) {
			t.Errorf("no-local subscriber got %v, want only nl/other", got)
		}
		for _, x := range []*nodeClient{l, d} {
			if got := topics(x.take("nl/")); !sameStrings(got, []string{"nl/own", "nl/other"}) {
				t.Errorf("%s got %v, want nl/own and nl/other once each", x.id, got)
			}
		}
	})

	t.Run("retain as published", func(t *testing.T) {
		pub := dialNode(t, n1, "r-pub")
		keep := dialNode(t, n2, "r-keep")
		clear := dialNode(t, n3, "r-clear")
		keep.subscribe(t, paho.SubscribeOptions{Topic: "r/#", QoS: 1, RetainAsPublished: true})
		clear.subscribe(t, paho.SubscribeOptions{Topic: "r/#", QoS: 1})
		syncCluster(t, apps)
		pub.publish(t, &paho.Publish{Topic: "r/x", QoS: 1, Retain: true, Payload: []byte("v")})
		pub.publish(t, &paho.Publish{Topic: "r/x", QoS: 1, Retain: true}) // clears it
		settleAll(t, apps, keep, clear)
		k, c := keep.take("r/"), clear.take("r/")
		if len(k) != 2 || len(c) != 2 || !k[0].Retain || c[0].Retain {
			t.Fatalf("retain-as-published got %v, plain got %v", retains(k), retains(c))
		}
	})

	t.Run("shared subscriptions: one delivery per group across the nodes", func(t *testing.T) {
		var g []*nodeClient
		for i, a := range []*App{n1, n1, n2, n3} {
			c := dialNode(t, a, fmt.Sprintf("sg-%d", i))
			c.subscribe(t, paho.SubscribeOptions{Topic: "$share/g/s/#", QoS: 1})
			g = append(g, c)
		}
		h := dialNode(t, n3, "sh-0")
		h.subscribe(t, paho.SubscribeOptions{Topic: "$share/h/s/#", QoS: 1})
		plain := dialNode(t, n2, "sp")
		plain.subscribe(t, paho.SubscribeOptions{Topic: "s/#", QoS: 0})
		p1, p2 := dialNode(t, n1, "s-pub1"), dialNode(t, n2, "s-pub2")
		syncCluster(t, apps)
		const each = 40
		for i := range each {
			p1.publish(t, &paho.Publish{Topic: "s/1", QoS: 1, Payload: []byte(fmt.Sprint(i))})
			p2.publish(t, &paho.Publish{Topic: "s/2", QoS: 1, Payload: []byte(fmt.Sprint(i))})
		}
		settleAll(t, apps, append(g, h, plain)...)
		seen := map[string]int{}
		nodes := map[int]bool{}
		for i, c := range g {
			for _, m := range c.take("s/") {
				seen[m.Topic+"#"+string(m.Payload)]++
				nodes[[]int{1, 1, 2, 3}[i]] = true
			}
		}
		if len(seen) != 2*each {
			t.Errorf("group g got %d distinct messages, want %d", len(seen), 2*each)
		}
		for k, n := range seen {
			if n != 1 {
				t.Errorf("group g got %s %d times", k, n)
			}
		}
		if got := len(h.take("s/")); got != 2*each {
			t.Errorf("group h (one member) got %d, want %d", got, 2*each)
		}
		if got := len(plain.take("s/")); got != 2*each {
			t.Errorf("plain subscriber got %d, want %d", got, 2*each)
		}
		t.Logf("group g delivered on nodes %v; stats %+v %+v %+v; interest %v", nodes, n1.router.Stats(), n2.router.Stats(), n3.router.Stats(), n1.router.Interest())
	})

	t.Run("interest is reference-counted", func(t *testing.T) {
		a := dialNode(t, n2, "rc-a")
		b := dialNode(t, n2, "rc-b")
		a.subscribe(t, paho.SubscribeOptions{Topic: "rc/x", QoS: 0})
		b.subscribe(t, paho.SubscribeOptions{Topic: "rc/x", QoS: 0})
		if n := n2.router.Interest()["rc/x"]; n != 2 {
			t.Fatalf("interest in rc/x = %d, want 2", n)
		}
		a.unsubscribe(t, "rc/x")
		if n := n2.router.Interest()["rc/x"]; n != 1 {
			t.Fatalf("interest after one unsubscribe = %d, want 1", n)
		}
		pub := dialNode(t, n1, "rc-pub")
		syncCluster(t, apps)
		pub.publish(t, &paho.Publish{Topic: "rc/x", QoS: 0, Payload: []byte("1")})
		// A QoS 0 PUBLISH is not acknowledged: Publish returns once it is
		// written to the socket, maybe before n1 read it. The publisher's
		// own marker, acknowledged after n1 handled everything the
		// connection sent before it, makes sure n1 forwarded it before the
		// cluster sync.
		pub.settle(t)
		settleAll(t, apps, b)
		if got := len(b.take("rc/")); got != 1 {
			t.Fatalf("remaining subscriber got %d, want 1", got)
		}
		b.unsubscribe(t, "rc/x")
		if _, ok := n2.router.Interest()["rc/x"]; ok {
			t.Fatal("interest in rc/x kept after the last unsubscribe")
		}
	})
}

func subIDs(p *paho.PublishProperties) []int {
	if p == nil || p.SubscriptionIdentifier == nil {
		return nil
	}
	// paho.golang keeps one identifier of a PUBLISH (the last): the
	// broker's collation of several is tested in internal/broker.
	return []int{*p.SubscriptionIdentifier}
}

func topics(ms []*paho.Publish) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Topic)
	}
	return out
}

func retains(ms []*paho.Publish) []bool {
	var out []bool
	for _, m := range ms {
		out = append(out, m.Retain)
	}
	return out
}

func sameStrings(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestClusterExternalNATS: two nodes on an external NATS (--nats-url), a
// standalone nats-server with JetStream, form a cluster and route.
func TestClusterExternalNATS(t *testing.T) {
	srv := clustertest.StartNATS(t, nil)
	var apps []*App
	for _, name := range []string{"e1", "e2"} {
		apps = append(apps, startApp(t, Config{ClusterEnabled: true,
			// One server: its streams and buckets have one replica.
			Cluster: cluster.Config{Name: name, NATSURL: srv.ClientURL(), Replicas: 1, HeartbeatInterval: 200 * time.Millisecond}}))
	}
	for _, a := range apps {
		clusterStateReady(t, a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, a := range apps {
		if err := a.Cluster().WaitMembers(ctx, 2); err != nil {
			t.Fatal(err)
		}
	}
	st := apps[0].Cluster().Status(ctx)
	if ok, why := st.Healthy(); !ok || !st.External || !st.JetStream.Enabled {
		t.Fatalf("status %+v: %v", st, why)
	}
	sub := dialNode(t, apps[1], "x-sub")
	sub.subscribe(t, paho.SubscribeOptions{Topic: "x/#", QoS: 1})
	pub := dialNode(t, apps[0], "x-pub")
	syncCluster(t, apps)
	pub.publish(t, &paho.Publish{Topic: "x/1", QoS: 1, Payload: []byte("via external")})
	settleAll(t, apps, sub)
	if got := sub.take("x/"); len(got) != 1 || string(got[0].Payload) != "via external" {
		t.Fatalf("got %v", topics(got))
	}
}
