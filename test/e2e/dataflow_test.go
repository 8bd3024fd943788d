package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqttc "github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/client/clienttest"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testpeer/httpsink"
	"github.com/edgeport/edgeport/internal/testwait"
)

// flowPublisher publishes numbered QoS 1 messages and remembers which the
// broker acknowledged: those must all arrive.
type flowPublisher struct {
	mu    sync.Mutex
	acked map[int]bool
	next  int
}

// run publishes with up to 100 messages outstanding until stop is closed
// or the connection fails (the broker was killed).
func (p *flowPublisher) run(t *testing.T, addr string, stop <-chan struct{}) {
	cl, err := mqttc.New(mqttc.Options{Dialer: mqttc.TCP(addr, nil), ClientID: "flow-pub", NoReconnect: true})
	if err != nil {
		t.Error(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Connect(ctx); err != nil {
		t.Errorf("publisher connect: %v", err)
		return
	}
	defer cl.Close()
	sem := make(chan struct{}, 100)
	var failed atomic.Bool
	var wg sync.WaitGroup
	for !failed.Load() {
		select {
		case <-stop:
			wg.Wait()
			return
		case sem <- struct{}{}:
		}
		p.mu.Lock()
		seq := p.next
		p.next++
		p.mu.Unlock()
		wg.Add(1)
		cl.PublishAsync(&mqttc.Message{Topic: "plant/line1/telemetry", QoS: 1, Payload: []byte(`{"seq":` + strconv.Itoa(seq) + `}`)},
			func(code packet.ReasonCode, err error) {
				if err == nil && code == packet.Success {
					p.mu.Lock()
					p.acked[seq] = true
					p.mu.Unlock()
				} else {
					failed.Store(true)
				}
				<-sem
				wg.Done()
			})
	}
	wg.Wait()
}

// TestDataflowDeliveryAcrossOutagesAndKill9 is the dataflow's delivery
// proof: a flow from the local broker to an HTTP destination runs under
// load while the destination goes away for stretches and Edgeport is
// killed with SIGKILL mid-flow and restarted, several times. Afterwards
// every message the broker acknowledged to the publisher arrived at the
// destination at least once, first arrivals in publication order.
func TestDataflowDeliveryAcrossOutagesAndKill9(t *testing.T) {
	t.Parallel()
	sink := httpsink.Start(t)
	cfgDir, dataDir := t.TempDir(), t.TempDir()
	resources := fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: DataflowEndpoint
metadata: {name: web}
spec:
  endpointType: Http
  httpSettings:
    url: %s
    batching: {maxMessages: 100, latencyMs: 5}
---
apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: plant-to-web}
spec:
  operations:
  - operationType: Source
    sourceSettings: {dataSources: ["plant/+/telemetry"]}
  - operationType: Destination
    destinationSettings: {endpointRef: web, dataDestination: "/"}
  retry: {initialBackoffMs: 20, maxBackoffMs: 200}
`, sink.URL)
	if err := os.WriteFile(filepath.Join(cfgDir, "flow.yaml"), []byte(resources), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := &flowPublisher{acked: map[int]bool{}}
	const cycles = 3
	for c := range cycles {
		e := startEdgeportAt(t, dataDir, "--config", cfgDir, "--max-queued-messages", "500")
		if _, err := e.logs.waitFor(30*time.Second, func(l string) bool {
			return strings.Contains(l, "dataflow running") && strings.Contains(l, "plant-to-web")
		}); err != nil {
			t.Fatalf("cycle %d: flow not running: %v", c, err)
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			pub.run(t, e.addrs["mqtt"], stop)
		}()
		if sink.Down() {
			// Started with the destination away: it retries, then the
			// destination comes back.
			h := sink.Hits()
			testwait.For(t, "retries after the restart", func() bool { return sink.Hits() > h+3 })
			sink.SetDown(false)
		}
		// Load flows; then the destination goes away (more than the
		// 500-message queue limit of ordinary sessions piles up), and
		// Edgeport is killed while the flow has a backlog.
		before := len(sink.Seqs())
		testwait.For(t, "messages delivered", func() bool { return len(sink.Seqs()) > before+500 })
		sink.SetDown(true)
		hits := sink.Hits()
		testwait.For(t, "retries while the destination is away", func() bool { return sink.Hits() > hits+3 })
		testwait.For(t, "a backlog of acknowledged messages", func() bool {
			pub.mu.Lock()
			defer pub.mu.Unlock()
			return len(pub.acked) > len(sink.Seqs())+1500
		})
		if c == cycles-1 {
			sink.SetDown(false) // the last kill happens mid-delivery
			testwait.For(t, "delivery resumed", func() bool { return sink.Hits() > hits+20 })
		}
		e.kill()
		close(stop)
		<-done
		sink.SetDown(c%2 == 0) // the next start finds the destination away or back
	}
	sink.SetDown(false)
	e := startEdgeportAt(t, dataDir, "--config", cfgDir, "--max-queued-messages", "500")
	pub.mu.Lock()
	acked := make(map[int]bool, len(pub.acked))
	for k := range pub.acked {
		acked[k] = true
	}
	pub.mu.Unlock()
	testwait.For(t, "every acknowledged message delivered", func() bool {
		seen := map[int]bool{}
		for _, s := range sink.Seqs() {
			seen[s] = true
		}
		for k := range acked {
			if !seen[k] {
				return false
			}
		}
		return true
	})
	// Order: the first arrivals of acknowledged messages follow publication
	// order (one source topic), across every kill -9: the broker resends a
	// restored session's deliveries in the order they reached it
	// (internal/broker TestRestoreKeepsPublishOrderQoS1).
	seen := map[int]bool{}
	last, inversions := -1, 0
	for _, s := range sink.Seqs() {
		if !acked[s] || seen[s] {
			continue
		}
		seen[s] = true
		if s < last {
			inversions++
			if inversions == 1 {
				all := sink.Seqs()
				i := slices.Index(all, s)
				t.Errorf("first arrival out of publication order: %d arrived after %d; arrivals around it: %v", s, last, all[max(i-120, 0):min(i+20, len(all))])
			}
		}
		last = max(last, s)
	}
	all := sink.Seqs()
	t.Logf("%d acknowledged messages over %d kill -9 cycles; %d deliveries (%d duplicates); %d first arrivals out of order",
		len(acked), cycles, len(all), len(all)-len(seen), inversions)
	_ = e
}

// edgeport check reports each dataflow: a warning while its destination
// is away (with the buffer's fill level), ok once it delivers.
func TestCheckDataflows(t *testing.T) {
	t.Parallel()
	sink := httpsink.Start(t)
	sink.SetDown(true)
	cfgDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(cfgDir, "flow.yaml"), []byte(fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: DataflowEndpoint
metadata: {name: web}
spec:
  endpointType: Http
  httpSettings: {url: %s, batching: {maxMessages: 10}}
---
apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: to-web}
spec:
  operations:
  - operationType: Source
    sourceSettings: {dataSources: ["checked/#"]}
  - operationType: Destination
    destinationSettings: {endpointRef: web, dataDestination: "/"}
  retry: {initialBackoffMs: 10, maxBackoffMs: 50}
`, sink.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startEdgeport(t, "--config", cfgDir)
	cl := clienttest.Connect(t, mqttc.Options{Dialer: mqttc.TCP(e.addr(t, "mqtt"), nil), ClientID: "check-pub", NoReconnect: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = e.logs.waitFor(30*time.Second, func(l string) bool { return strings.Contains(l, "dataflow running") })
	for i := range 50 {
		if err := cl.Publish(ctx, &mqttc.Message{Topic: "checked/a", QoS: 1, Payload: []byte(`{"seq":` + strconv.Itoa(i) + `}`)}); err != nil {
			t.Fatal(err)
		}
	}
	var st, msg, out string
	if !testwait.Within(testwait.Timeout, func() bool {
		var rep checkReport
		rep, _, out = runCheck(t, e)
		st, msg = rep.check(t, "dataflows")
		return st == "warn" && strings.Contains(msg, "50 messages buffered")
	}) {
		t.Fatalf("dataflows while the destination is away: %s %q\n%s", st, msg, out)
	}
	sink.SetDown(false)
	code := 0
	if !testwait.Within(testwait.Timeout, func() bool {
		var rep checkReport
		rep, code, out = runCheck(t, e)
		st, msg = rep.check(t, "dataflows")
		return st == "ok" && msg == "1 of 1 dataflows running" && code == 0
	}) {
		t.Fatalf("dataflows after recovery: %s %q (exit %d)\n%s", st, msg, code, out)
	}
	if got := len(sink.Seqs()); got < 50 {
		t.Fatalf("%d of 50 messages delivered", got)
	}
}
