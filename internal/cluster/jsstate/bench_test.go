package jsstate

import (
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
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
