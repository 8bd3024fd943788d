package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/edgeport/edgeport/internal/config"
	mqttc "github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// The dataflow benchmarks measure messages per second from a publisher on
// the TCP listener, through a flow with a filter and a map, into Kafka
// (kfake, in this process) or into Parquet files, and, for comparison in
// the same run, the broker's own QoS 1 throughput from the same publisher
// to a subscriber. Run with:
//
//	go test -run '^$' -bench 'Dataflow|BrokerQoS1' -benchtime 20000x ./internal/app/
//
// Each reports msg/s, CPU seconds per 1,000 messages (user+system of the
// whole process, kfake included) and the process's peak RSS.

const benchTransform = `
  - operationType: BuiltInTransformation
    builtInTransformationSettings:
      serializationFormat: %s
      filter:
      - inputs: [temperature]
        expression: "$1 > 9000"
      map:
      - {inputs: ["*"], output: "*"}
      - {inputs: [temperature], output: temperatureF, expression: "cToF($1)"}
`

func benchApp(b *testing.B) *App {
	b.Helper()
	cfg := Config{MQTTAddr: "127.0.0.1:0", WSAddr: Off, HTTPAddr: Off, DataDir: b.TempDir()}
	cfg.Broker.SysInterval = -1
	a, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Stop(ctx)
	})
	return a
}

// publishBench publishes n QoS 1 messages with 1,000 outstanding.
func publishBench(b *testing.B, addr, topic string, n int) {
	b.Helper()
	cl, err := mqttc.New(mqttc.Options{Dialer: mqttc.TCP(addr, nil), ClientID: "bench-pub-" + topic, NoReconnect: true})
	if err != nil {
		b.Fatal(err)
	}
	if err := cl.Connect(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	sem := make(chan struct{}, 1000)
	var wg sync.WaitGroup
	payload := []byte(`{"line":"line1","temperature":21.5,"pressure":1.01,"status":"ok"}`)
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		cl.PublishAsync(&mqttc.Message{Topic: topic, QoS: 1, Payload: payload}, func(packet.ReasonCode, error) { <-sem; wg.Done() })
	}
	wg.Wait()
}

type usage struct {
	cpu time.Duration
	rss int64
}

func rusage() usage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return usage{cpu: cpu, rss: ru.Maxrss << 10}
}

func report(b *testing.B, n int, start time.Time, u0 usage) {
	el := time.Since(start)
	u1 := rusage()
	b.ReportMetric(float64(n)/el.Seconds(), "msg/s")
	b.ReportMetric((u1.cpu-u0.cpu).Seconds()*1000/float64(n), "cpu-s/1k-msg")
	b.ReportMetric(float64(u1.rss)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(0, "ns/op")
}

func waitSent(b *testing.B, a *App, name string, n int) {
	b.Helper()
	sent := testwait.Within(5*time.Minute, func() bool {
		for _, st := range a.flows.States() {
			if st.Name == name && st.Status.Sent >= uint64(n) {
				return true
			}
		}
		return false
	})
	if !sent {
		b.Fatalf("%s: not all %d messages sent", name, n)
	}
}

func BenchmarkBrokerQoS1(b *testing.B) {
	a := benchApp(b)
	addr := a.Addrs()["mqtt"].String()
	sub, err := mqttc.New(mqttc.Options{Dialer: mqttc.TCP(addr, nil), ClientID: "bench-sub", NoReconnect: true})
	if err != nil {
		b.Fatal(err)
	}
	if err := sub.Connect(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	done := make(chan struct{})
	var got int
	if err := sub.Subscribe(context.Background(), mqttc.Subscription{Filters: []packet.Subscription{{Filter: "plant/#", QoS: 1}},
		Handler: func(context.Context, *mqttc.Message) {
			if got++; got == b.N {
				close(done)
			}
		}}); err != nil {
		b.Fatal(err)
	}
	u0, start := rusage(), time.Now()
	b.ResetTimer()
	publishBench(b, addr, "plant/line1/telemetry", b.N)
	<-done
	b.StopTimer()
	report(b, b.N, start, u0)
}

func BenchmarkDataflowKafka(b *testing.B) {
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "plant"),
		kfake.ListenFn(func(n, _ string) (net.Listener, error) { return net.Listen(n, "127.0.0.1:0") }))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(kc.Close)
	a := benchApp(b)
	applyBench(b, a, fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: DataflowEndpoint
metadata: {name: kafka}
spec:
  endpointType: Kafka
  kafkaSettings: {host: "%s", partitionStrategy: Topic, compression: Lz4}
`, kc.ListenAddrs()[0]))
	benchFlow(b, a, "kafka", "plant", "Json")
}

func BenchmarkDataflowParquet(b *testing.B) {
	a := benchApp(b)
	applyBench(b, a, fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: DataflowEndpoint
metadata: {name: files}
spec:
  endpointType: LocalStorage
  localStorageSettings: {path: %s, rotation: {maxBytes: 16777216}}
`, b.TempDir()))
	benchFlow(b, a, "files", "telemetry", "Parquet")
}

func benchFlow(b *testing.B, a *App, endpoint, dest, format string) {
	b.Helper()
	applyBench(b, a, `apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: bench}
spec:
  operations:
  - operationType: Source
    sourceSettings: {dataSources: ["plant/+/telemetry"]}`+fmt.Sprintf(benchTransform, format)+fmt.Sprintf(`  - operationType: Destination
    destinationSettings: {endpointRef: %s, dataDestination: %s}
`, endpoint, dest))
	testwait.For(b, "the flow to be ready", func() bool {
		o, _ := a.Resources().Get(config.Key{Kind: "Dataflow", Name: "bench"})
		return o.Ready().Status == config.ConditionTrue
	})
	u0, start := rusage(), time.Now()
	b.ResetTimer()
	publishBench(b, a.Addrs()["mqtt"].String(), "plant/line1/telemetry", b.N)
	waitSent(b, a, "bench", b.N)
	b.StopTimer()
	report(b, b.N, start, u0)
}

func applyBench(b *testing.B, a *App, doc string) {
	b.Helper()
	obj, err := config.Builtin().Decode([]byte(doc))
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := a.Resources().Apply(obj, config.ApplyOptions{}); err != nil {
		b.Fatal(err)
	}
}
