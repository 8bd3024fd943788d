package cluster_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgeport/edgeport/internal/cluster/clustertest"
)

// BenchmarkRouteThroughput is what route security costs: messages
// published on one node's embedded server and received on another's,
// crossing one route, plain and with the cluster secret and mutual TLS
// 1.3 (core NATS, no MQTT, no JetStream). It reports delivered msg/s
// and MB/s of payload. The publisher stays at most 20000 messages ahead
// of the subscriber (core NATS would drop the excess).
func BenchmarkRouteThroughput(b *testing.B) {
	for _, secure := range []bool{false, true} {
		for _, size := range []int{64, 1024} {
			name := fmt.Sprintf("plain/%dB", size)
			if secure {
				name = fmt.Sprintf("tls+secret/%dB", size)
			}
			b.Run(name, func(b *testing.B) { benchRoute(b, secure, size) })
		}
	}
}

func benchRoute(b *testing.B, secure bool, size int) {
	cfgs := clustertest.Configs(b, 2)
	if secure {
		clustertest.Secure(b, cfgs)
	}
	nodes := clustertest.Start(b, cfgs)
	sub, err := nodes[1].Dial("bench-sub")
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	// Core NATS drops what a slow consumer cannot take: the publisher
	// keeps at most window batches ahead of what has arrived.
	const batch, window = 1000, 20
	credits := make(chan struct{}, b.N/batch+window+1)
	for range window {
		credits <- struct{}{}
	}
	var got atomic.Int64
	done := make(chan struct{})
	want := int64(b.N)
	s, err := sub.Subscribe("bench.x", func(*nats.Msg) {
		n := got.Add(1)
		if n%batch == 0 {
			credits <- struct{}{}
		}
		if n == want {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	_ = s.SetPendingLimits(-1, -1)
	// The probe is answered on the subscriber's connection after bench.x's
	// interest was sent: once it answers through the route, node 1 knows
	// that interest too.
	if _, err := sub.Subscribe("bench.probe", func(m *nats.Msg) { _ = m.Respond(nil) }); err != nil {
		b.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		b.Fatal(err)
	}
	pub, err := nodes[0].Dial("bench-pub")
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := pub.Request("bench.probe", nil, time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the subscription never reached the publishing node")
		}
	}
	payload := make([]byte, size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if i%batch == 0 {
			<-credits
		}
		if err := pub.Publish("bench.x", payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		b.Fatalf("delivered %d of %d (core NATS dropped some: a slow consumer)", got.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
}
