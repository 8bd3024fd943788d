package jsstate

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/testwait"
)

// BenchmarkTakeover measures a session takeover across nodes: from the
// moment a client starts connecting to another node until the connection
// it replaces has received its DISCONNECT 0x8E. It reports the p50 and p99
// (ms) of b.N takeovers, each to the next node of three.
func BenchmarkTakeover(b *testing.B) {
	nodes := testCluster(b)
	prev := dial(b, nodes[0].addr, &paho.Connect{ClientID: "bench", CleanStart: true, KeepAlive: 30})
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		next := dial(b, nodes[(i+1)%len(nodes)].addr, &paho.Connect{ClientID: "bench", CleanStart: true, KeepAlive: 30})
		if d := prev.disconnected(b); d.ReasonCode != 0x8E {
			b.Fatalf("told 0x%02X", d.ReasonCode)
		}
		took = append(took, time.Since(start))
		prev = next
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[(len(took)*99)/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkMovedConnack measures a persistent session moving across
// nodes as its client sees it: from the moment the client starts
// connecting to another node (Clean Start 0) until its CONNACK, with the
// session present (claim, handoff, the records read, the shards' last
// routed deliveries noted for its messages' order). It reports the p50
// and p99 (ms) of b.N moves, each to the next node of three.
func BenchmarkMovedConnack(b *testing.B) {
	nodes := testCluster(b)
	prev := dial(b, nodes[0].addr, persistent("bench", true))
	prev.subscribe(b, "bench/#")
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		next, ack := dialWith(b, nodes[(i+1)%len(nodes)].addr, persistent("bench", false), false)
		took = append(took, time.Since(start))
		if !ack.SessionPresent {
			b.Fatal("session not present")
		}
		prev.disconnected(b)
		prev = next
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[(len(took)*99)/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkAdoptLostNode measures how long the survivors take to adopt the
// offline sessions of a node that dies: from the kill until every session
// is held by a survivor. Each iteration is a fresh cluster with
// lostSessions sessions, each with one subscription, left on node1.
func BenchmarkAdoptLostNode(b *testing.B) {
	const lostSessions = 1000
	for range b.N {
		b.StopTimer()
		nodes := testCluster(b)
		for i := range lostSessions {
			nodes[0].leaveOffline(b, fmt.Sprintf("dev%d", i), "cmd/#")
		}
		b.StartTimer()
		start := time.Now()
		nodes[0].kill(b)
		testwait.For(b, "every session adopted", func() bool {
			return nodes[1].b.Counters().Sessions+nodes[2].b.Counters().Sessions >= lostSessions
		})
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "adopt-ms")
	}
}

// placements are where the persistent subscriber of a benchmark runs:
// on the publishers' node (node1) or on another.
var placements = []struct {
	name string
	node int
}{{"same-node", 0}, {"other-node", 1}}

// benchSubscriber starts a cluster and a persistent subscriber of bench/#
// at qos on its node n, once node1's session index has its subscription.
func benchSubscriber(b *testing.B, n int, qos byte) ([]*node, *mqttClient) {
	b.Helper()
	nodes := testCluster(b)
	sub := dial(b, nodes[n].addr, persistent("sub", true))
	sub.subscribeQoS(b, "bench/#", qos)
	nodes[n].sync(b)
	syncIndex(b, nodes[0])
	return nodes, sub
}

// BenchmarkPersistentQoS1 measures QoS 1 to a persistent subscriber
// (QoS 1, online) on the publisher's node and on another node: a
// publisher on node1 publishes one message at a time, waiting for its
// PUBACK and then for the delivery. It reports the PUBACK and the
// delivery latency (from the PUBLISH), p50 and p99 in ms.
func BenchmarkPersistentQoS1(b *testing.B) {
	for _, where := range placements {
		b.Run(where.name, func(b *testing.B) { benchOneAtATime(b, where.node, 1, false) })
	}
}

// BenchmarkPersistentQoS2 is BenchmarkPersistentQoS1 at QoS 2 (the
// subscription too), the latency to the PUBCOMP, from a publisher whose
// session ends with its connection (one phase: its identifier is not
// stored) and from a persistent one (two phases, broker/phased.go: the
// identifier stored with the message, then the fence checked, then the
// message routed): what the phases cost.
func BenchmarkPersistentQoS2(b *testing.B) {
	for _, where := range placements {
		for _, persistentPub := range []bool{false, true} {
			name := where.name + "/clean-publisher"
			if persistentPub {
				name = where.name + "/persistent-publisher"
			}
			b.Run(name, func(b *testing.B) { benchOneAtATime(b, where.node, 2, persistentPub) })
		}
	}
}

// benchOneAtATime publishes b.N messages at qos from one publisher on
// node1, one at a time, to benchSubscriber's subscriber on node n, and
// reports the acknowledgement (PUBACK or PUBCOMP) and delivery latency.
func benchOneAtATime(b *testing.B, n int, qos byte, persistentPub bool) {
	nodes, sub := benchSubscriber(b, n, qos)
	cp := &paho.Connect{ClientID: "pub", CleanStart: true, KeepAlive: 30}
	if persistentPub {
		cp = persistent("pub", true)
	}
	pub := dial(b, nodes[0].addr, cp)
	acks := make([]time.Duration, 0, b.N)
	delivered := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		pub.publishQoS(b, "bench/x", strconv.Itoa(i), qos, false)
		acks = append(acks, time.Since(start))
		if m := sub.next(b); string(m.Payload) != strconv.Itoa(i) {
			b.Fatalf("got %q, want %d", m.Payload, i)
		}
		delivered = append(delivered, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, "ack", acks)
	reportPercentiles(b, "delivery", delivered)
}

// BenchmarkPersistentQoS1Throughput is the same under load: 8 publishers
// on node1 publish QoS 1 concurrently (each waiting for its PUBACKs) to
// one persistent subscriber on node1 or on node2; it reports the messages
// per second until the subscriber has them all.
func BenchmarkPersistentQoS1Throughput(b *testing.B) {
	for _, where := range placements {
		b.Run(where.name, func(b *testing.B) { benchThroughput(b, where.node, 1, false) })
	}
}

// BenchmarkPersistentQoS2Throughput is BenchmarkPersistentQoS1Throughput
// at QoS 2, from publishers whose sessions end with their connections and
// from persistent ones (see BenchmarkPersistentQoS2).
func BenchmarkPersistentQoS2Throughput(b *testing.B) {
	for _, where := range placements {
		for _, persistentPub := range []bool{false, true} {
			name := where.name + "/clean-publishers"
			if persistentPub {
				name = where.name + "/persistent-publishers"
			}
			b.Run(name, func(b *testing.B) { benchThroughput(b, where.node, 2, persistentPub) })
		}
	}
}

// benchThroughput publishes b.N messages at qos from 8 concurrent
// publishers on node1 (each waiting for its acknowledgements) to
// benchSubscriber's subscriber on node n, and reports the messages per
// second until it has them all.
func benchThroughput(b *testing.B, n int, qos byte, persistentPub bool) {
	nodes, sub := benchSubscriber(b, n, qos)
	benchPublishers(b, nodes[0], 8, qos, persistentPub, sub.msgs)
}

// reportPercentiles reports the p50 and p99 of ds in ms as name-p50-ms and
// name-p99-ms.
func reportPercentiles(b *testing.B, name string, ds []time.Duration) {
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(ds[(len(ds)*99)/100].Microseconds())/1000, name+"-p99-ms")
}

// BenchmarkSharedQoS1 measures QoS 1 to a shared subscription group of
// two members (QoS 1, online), one on node2 and one on node3, from
// publishers on node1: with persistent members the publishing node picks
// the member and writes a routed delivery into its session stream before
// the PUBACK (sharedcluster.go); with members whose sessions end with
// their connections the message goes through live routing's queue group
// only (as every shared subscription did before). one-at-a-time: one
// publisher, one message at a time, PUBACK and delivery latency (ms);
// throughput: 8 publishers concurrently, messages per second until the
// group has them all.
func BenchmarkSharedQoS1(b *testing.B) {
	for _, persistentMembers := range []bool{true, false} {
		name := "clean-members"
		if persistentMembers {
			name = "persistent-members"
		}
		b.Run(name+"/one-at-a-time", func(b *testing.B) {
			nodes, got := benchSharedGroup(b, persistentMembers)
			pub := dial(b, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true, KeepAlive: 30})
			acks := make([]time.Duration, 0, b.N)
			delivered := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				pub.publishQoS(b, "bench/x", strconv.Itoa(i), 1, false)
				acks = append(acks, time.Since(start))
				select {
				case m := <-got:
					if string(m.Payload) != strconv.Itoa(i) {
						b.Fatalf("got %q, want %d", m.Payload, i)
					}
				case <-time.After(testwait.Timeout):
					b.Fatalf("message %d not delivered", i)
				}
				delivered = append(delivered, time.Since(start))
			}
			b.StopTimer()
			reportPercentiles(b, "ack", acks)
			reportPercentiles(b, "delivery", delivered)
		})
		b.Run(name+"/throughput", func(b *testing.B) {
			nodes, got := benchSharedGroup(b, persistentMembers)
			benchPublishers(b, nodes[0], 8, 1, false, got)
		})
	}
}

// benchSharedGroup starts a cluster with two members of $share/bench/bench/#
// (QoS 1), on node2 and node3, persistent or not, once node1 knows them;
// what either receives comes out of the channel.
func benchSharedGroup(b *testing.B, persistentMembers bool) ([]*node, <-chan *paho.Publish) {
	b.Helper()
	nodes := testCluster(b)
	got := make(chan *paho.Publish, 1024)
	done := make(chan struct{})
	var wg sync.WaitGroup
	b.Cleanup(func() { close(done); wg.Wait() })
	for i, nd := range nodes[1:] {
		cp := &paho.Connect{ClientID: fmt.Sprintf("member%d", i), CleanStart: true, KeepAlive: 30}
		if persistentMembers {
			cp = persistent(cp.ClientID, true)
		}
		m := dial(b, nd.addr, cp)
		m.subscribe(b, "$share/bench/bench/#")
		nd.sync(b)
		wg.Go(func() {
			for {
				select {
				case p := <-m.msgs:
					select {
					case got <- p:
					case <-done:
						return
					}
				case <-done:
					return
				}
			}
		})
	}
	syncIndex(b, nodes[0])
	return nodes, got
}

// benchPublishers publishes b.N messages at qos from n concurrent
// publishers on nd (each waiting for its acknowledgements; persistent
// sessions or not) and reports the messages per second until got has
// brought them all.
func benchPublishers(b *testing.B, nd *node, n int, qos byte, persistentPub bool, got <-chan *paho.Publish) {
	pubs := make([]*mqttClient, n)
	for i := range pubs {
		cp := &paho.Connect{ClientID: fmt.Sprintf("pub%d", i), CleanStart: true, KeepAlive: 30}
		if persistentPub {
			cp = persistent(cp.ClientID, true)
		}
		pubs[i] = dial(b, nd.addr, cp)
	}
	received := make(chan int)
	go func() {
		n := 0
		for n < b.N {
			select {
			case <-got:
				n++
			case <-time.After(testwait.Timeout):
				received <- n
				return
			}
		}
		received <- n
	}()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range n {
		wg.Go(func() {
			for i := w; i < b.N; i += n {
				ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
				r, err := pubs[w].Publish(ctx, &paho.Publish{Topic: "bench/x", QoS: qos, Payload: []byte(strconv.Itoa(i))})
				cancel()
				if err == nil && r.ReasonCode >= 0x80 {
					err = fmt.Errorf("acknowledgement 0x%02X", r.ReasonCode)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	if got := <-received; got != b.N {
		b.Fatalf("the group got %d of %d", got, b.N)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
