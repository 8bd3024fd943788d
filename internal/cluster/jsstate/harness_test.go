package jsstate

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/goleak"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/broker/listener"
	"github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/cluster/clustertest"
	"github.com/edgeport/edgeport/internal/store"
	"github.com/edgeport/edgeport/internal/testlog"
	"github.com/edgeport/edgeport/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// node is one Edgeport node of a test cluster: a broker with a TCP
// listener on a cluster node (its embedded NATS server) and the cluster
// state.
type node struct {
	name  string
	cn    *cluster.Node
	b     *broker.Broker
	addr  string // the MQTT listener
	owner *Ownership
	st    *Store
	r     *cluster.Router // live routing between the nodes
	// stops stop the node's parts, in the order they started; each runs
	// once (at the test's end, or when the test kills the node).
	stops []func()
}

// onStop registers f to stop a part of the node: at the test's end, or
// when the test kills the node, whichever comes first.
func (nd *node) onStop(t testing.TB, f func()) {
	var once sync.Once
	g := func() { once.Do(f) }
	nd.stops = append(nd.stops, g)
	t.Cleanup(g)
}

// kill ends the node as kill -9 would, as far as the cluster can tell:
// its NATS server shuts down (the others see it gone at once, and nothing
// the node does after reaches them) and its connection to NATS closes;
// then its listener, broker and cluster state stop in the background,
// dropping its clients, while the test goes on (a client may reconnect
// elsewhere before the others notice the node is gone). The test's end
// waits for them.
func (nd *node) kill(t testing.TB) {
	t.Helper()
	nd.cn.Server().Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = nd.cn.Stop(ctx)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for i := len(nd.stops) - 1; i >= 0; i-- {
			nd.stops[i]()
		}
	}()
	t.Cleanup(func() { <-stopped })
}

// startNode starts an Edgeport node on cluster node cn: the broker, its
// cluster state and a listener, stopped in reverse order when the test
// ends.
func startNode(t testing.TB, cn *cluster.Node) *node {
	t.Helper()
	return startNodeWith(t, cn, nil)
}

// startNodeWith is startNode with tweak applied to the cluster state's
// options.
func startNodeWith(t testing.TB, cn *cluster.Node, tweak func(*Options)) *node {
	t.Helper()
	return startNodeOwned(t, cn, tweak, nil)
}

// startNodeOwned is startNodeWith with the broker given owner(ownership)
// as its Ownership (nil: the Ownership itself).
func startNodeOwned(t testing.TB, cn *cluster.Node, tweak func(*Options), owner func(*Ownership) broker.Ownership) *node {
	t.Helper()
	name := cn.Name()
	nd := &node{name: name, cn: cn}
	var err error
	// What the node logs at Warn and above is shown when the test fails.
	logs := new(testlog.Buffer)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", name)
	t.Cleanup(func() {
		if t.Failed() && logs.String() != "" {
			t.Logf("%s logged:\n%s", name, logs)
		}
	})
	nd.b, err = broker.New(broker.Options{SysInterval: -1}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stop := func(c interface{ Stop(context.Context) error }) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("%s: stop: %v", name, err)
		}
	}
	local, err := store.New(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := local.Start(ctx); err != nil {
		t.Fatal(err)
	}
	nd.onStop(t, func() { stop(local) })
	opts := Options{Node: name, Shards: 3, Logger: log}
	if tweak != nil {
		tweak(&opts)
	}
	nd.st, err = NewStore(cn, nd.b, local, opts)
	if err != nil {
		t.Fatal(err)
	}
	nd.b.AttachDurable(nd.st)
	nd.b.AttachSharedRetained(nd.st)
	nd.b.AttachRemoteSessions(nd.st)
	nd.owner, err = NewOwnership(cn, nd.b, nd.st, opts)
	if err != nil {
		t.Fatal(err)
	}
	if owner != nil {
		nd.b.AttachOwnership(owner(nd.owner))
	} else {
		nd.b.AttachOwnership(nd.owner)
	}
	if err := nd.st.Start(ctx); err != nil {
		t.Fatalf("%s: starting the cluster store: %v", name, err)
	}
	nd.onStop(t, func() { stop(nd.st) })
	nd.r = cluster.NewRouter(cn, nd.b, log)
	if err := nd.r.Start(ctx); err != nil {
		t.Fatalf("%s: starting the router: %v", name, err)
	}
	nd.onStop(t, func() { stop(nd.r) })
	if err := nd.b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	nd.onStop(t, func() { stop(nd.b) })
	if err := nd.owner.Start(ctx); err != nil {
		t.Fatalf("%s: starting ownership: %v", name, err)
	}
	nd.onStop(t, func() { stop(nd.owner) })
	for _, ready := range []<-chan struct{}{nd.st.Ready(), nd.owner.Ready()} {
		select {
		case <-ready:
		case <-ctx.Done():
			t.Fatalf("%s: cluster state not ready: %v", name, ctx.Err())
		}
	}
	ln, err := listener.New(listener.Config{Name: "mqtt", Addr: "127.0.0.1:0", Protocol: listener.ProtocolTCP}, nd.b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ln.Start(ctx); err != nil {
		t.Fatal(err)
	}
	nd.onStop(t, func() { stop(ln) })
	// First of the stops, as in the app: from then on the store's commits
	// wait StopGrace at most for JetStream.
	nd.onStop(t, nd.st.BeginStop)
	nd.addr = ln.Addr().String()
	return nd
}

// testCluster starts three cluster nodes (embedded NATS servers with
// JetStream, routed to each other on loopback) and an Edgeport node on
// each.
func testCluster(t testing.TB) []*node {
	t.Helper()
	return testClusterWith(t, nil)
}

// testClusterWith is testCluster with tweak applied to every node's
// cluster state options.
func testClusterWith(t testing.TB, tweak func(*Options)) []*node {
	t.Helper()
	cns := clustertest.StartNodes(t, 3)
	nodes := make([]*node, len(cns))
	for i, cn := range cns {
		nodes[i] = startNodeWith(t, cn, tweak)
	}
	return nodes
}

// mqttClient is a Paho MQTT 5 client of one node, recording what the
// server sends it.
type mqttClient struct {
	*paho.Client
	conn  net.Conn // closing it drops the connection without DISCONNECT
	msgs  chan *paho.Publish
	discs chan *paho.Disconnect
}

// dial connects a Paho MQTT 5 client to addr with cp; it disconnects when
// the test ends.
func dial(t testing.TB, addr string, cp *paho.Connect) *mqttClient {
	t.Helper()
	c, _ := dialWith(t, addr, cp, false)
	return c
}

// dialWith is dial, optionally with manual acknowledgement (the client
// acknowledges nothing it receives until Ack), returning the CONNACK.
func dialWith(t testing.TB, addr string, cp *paho.Connect, manualAck bool) (*mqttClient, *paho.Connack) {
	t.Helper()
	c, ack, err := tryDial(t, addr, cp, manualAck)
	if err != nil {
		t.Fatal(err)
	}
	return c, ack
}

// tryDial is dialWith returning why the connection failed.
func tryDial(t testing.TB, addr string, cp *paho.Connect, manualAck bool) (*mqttClient, *paho.Connack, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	c := &mqttClient{conn: conn, msgs: make(chan *paho.Publish, 1000), discs: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { c.msgs <- pr.Packet; return true, nil },
		},
		OnServerDisconnect:         func(d *paho.Disconnect) { c.discs <- d },
		PacketTimeout:              10 * time.Second,
		EnableManualAcknowledgment: manualAck,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		return nil, ack, fmt.Errorf("connecting %s to %s: %w", cp.ClientID, addr, err)
	}
	if ack.ReasonCode != 0 {
		conn.Close()
		return nil, ack, fmt.Errorf("connecting %s to %s: CONNACK 0x%02X", cp.ClientID, addr, ack.ReasonCode)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, ack, nil
}

// disconnected waits for the server's DISCONNECT and returns it.
func (c *mqttClient) disconnected(t testing.TB) *paho.Disconnect {
	t.Helper()
	select {
	case d := <-c.discs:
		return d
	case <-time.After(testwait.Timeout):
		t.Fatal("no DISCONNECT from the server")
		return nil
	}
}

// next waits for the next message the client receives.
func (c *mqttClient) next(t testing.TB) *paho.Publish {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(testwait.Timeout):
		t.Fatal("no message")
		return nil
	}
}

// subscribe subscribes to filter at QoS 1 and waits for the SUBACK.
func (c *mqttClient) subscribe(t testing.TB, filter string) { c.subscribeQoS(t, filter, 1) }

// subscribeQoS subscribes to filter at qos and waits for the SUBACK.
func (c *mqttClient) subscribeQoS(t testing.TB, filter string, qos byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if err != nil {
		t.Fatalf("subscribing to %s: %v", filter, err)
	}
	if sa.Reasons[0] > 2 {
		t.Fatalf("subscribing to %s: SUBACK 0x%02X", filter, sa.Reasons[0])
	}
}

// publish publishes at QoS 1 and waits for a successful PUBACK.
func (c *mqttClient) publish(t testing.TB, topic, payload string, retain bool) {
	c.publishQoS(t, topic, payload, 1, retain)
}

// publishQoS publishes at qos and waits for a successful PUBACK or
// PUBCOMP.
func (c *mqttClient) publishQoS(t testing.TB, topic, payload string, qos byte, retain bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	r, err := c.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: qos, Retain: retain})
	if err != nil {
		t.Fatalf("publishing to %s: %v", topic, err)
	}
	if r.ReasonCode >= 0x80 {
		t.Fatalf("publishing to %s: PUBACK 0x%02X", topic, r.ReasonCode)
	}
}

// sync waits until the other nodes know every subscription of nd's
// sessions and have routed what was published before.
func (nd *node) sync(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	if err := nd.r.Sync(ctx); err != nil {
		t.Fatalf("%s: router sync: %v", nd.name, err)
	}
}
