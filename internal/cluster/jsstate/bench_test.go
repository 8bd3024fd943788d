package jsstate

import (
	"fmt"
	"slices"
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
