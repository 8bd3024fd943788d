package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/file"
	mqttc "github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/client/clienttest"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/statestore"
	"github.com/edgeport/edgeport/internal/testpeer/httpsink"
	"github.com/edgeport/edgeport/internal/testseq"
	"github.com/edgeport/edgeport/internal/testwait"
)

// tcpClient connects the internal MQTT client to the app's TCP listener,
// as a network client would.
func tcpClient(t *testing.T, a *App, id string) *mqttc.Client {
	t.Helper()
	return clienttest.Connect(t, mqttc.Options{Dialer: mqttc.TCP(a.Addrs()["mqtt"].String(), nil), ClientID: id, NoReconnect: true})
}

func publishSeq(t *testing.T, cl *mqttc.Client, topic string, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var failed atomic.Value
	sem := make(chan struct{}, 200)
	for i := from; i < to; i++ {
		sem <- struct{}{}
		wg.Add(1)
		cl.PublishAsync(&mqttc.Message{Topic: topic, QoS: 1, Payload: []byte(`{"seq":` + strconv.Itoa(i) + `,"t":21.5}`),
			User: []packet.UserProperty{{Key: "site", Value: "s1"}}}, func(_ packet.ReasonCode, err error) {
			if err != nil {
				failed.Store(err)
			}
			<-sem
			wg.Done()
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("publishing timed out")
	}
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
}

func flowStatus(t *testing.T, a *App, name string) (*config.Object, config.DataflowStatus) {
	t.Helper()
	o, ok := a.Resources().Get(config.Key{Kind: "Dataflow", Name: name})
	if !ok {
		t.Fatalf("no Dataflow %s", name)
	}
	if o.Status == nil || o.Status.Dataflow == nil {
		return o, config.DataflowStatus{}
	}
	return o, *o.Status.Dataflow
}

// Two flows from the local broker: one republishes under a topic built
// from the input topic (properties carried), one writes JSON Lines files.
// Both deliver every message in order; the status counts them.
func TestDataflowLocalToMQTTAndFiles(t *testing.T) {
	a := startApp(t, Config{})
	out := t.TempDir()
	apply(t, a, fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: DataflowEndpoint
metadata: {name: files}
spec:
  endpointType: LocalStorage
  localStorageSettings:
    path: %s
    rotation: {maxBytes: 2048}
`, out))
	apply(t, a, `apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: republish}
spec:
  operations:
  - operationType: Source
    sourceSettings: {dataSources: ["plant/+/telemetry"]}
  - operationType: Destination
    destinationSettings: {endpointRef: default, dataDestination: "processed/${inputTopic.2}"}
`)
	apply(t, a, `apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: archive}
spec:
  operations:
  - operationType: Source
    sourceSettings: {dataSources: ["plant/#"]}
  - operationType: Destination
    destinationSettings: {endpointRef: files, dataDestination: telemetry}
`)
	waitStatus(t, a, config.Key{Kind: "Dataflow", Name: "republish"}, config.ConditionTrue)
	waitStatus(t, a, config.Key{Kind: "Dataflow", Name: "archive"}, config.ConditionTrue)
	sub := tcpClient(t, a, "watcher")
	var mu sync.Mutex
	var got []*mqttc.Message
	ctx := context.Background()
	if err := sub.Subscribe(ctx, mqttc.Subscription{Filters: []packet.Subscription{{Filter: "processed/#", QoS: 1}},
		Handler: func(_ context.Context, m *mqttc.Message) { mu.Lock(); got = append(got, m); mu.Unlock() }}); err != nil {
		t.Fatal(err)
	}
	// Both flows receive from the first publish on: a flow is Ready only
	// once its subscription is granted (TestFlowReadyOnlyOnceSubscribed).
	pub := tcpClient(t, a, "line1")
	const n = 300
	publishSeq(t, pub, "plant/line1/telemetry", 0, n)
	testwait.For(t, "republished messages", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= n })
	mu.Lock()
	for i, m := range got[:n] {
		if m.Topic != "processed/line1" || !strings.HasPrefix(string(m.Payload), `{"seq":`+strconv.Itoa(i)+`,`) {
			t.Fatalf("message %d: %s %s", i, m.Topic, m.Payload)
		}
		if v, _ := m.UserValue("site"); v != "s1" {
			t.Fatalf("message %d lost its user property: %v", i, m.User)
		}
	}
	mu.Unlock()
	testwait.For(t, "archive status", func() bool { _, st := flowStatus(t, a, "archive"); return st.Sent >= n })
	// Deleting the flow finishes its open file.
	if _, err := a.Resources().Delete(config.Key{Kind: "Dataflow", Name: "archive"}, "test"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(out, "telemetry")
	seq := 0
	testwait.For(t, "files with every message", func() bool {
		files, _ := file.Files(dir)
		total := 0
		for _, f := range files {
			total += countLines(f)
		}
		return total >= n
	})
	files, _ := file.Files(dir)
	if len(files) < 2 {
		t.Fatalf("files %v: want rotation at 2 KiB", files)
	}
	for _, f := range files {
		fh, _ := os.Open(f)
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			var v struct{ Seq int }
			if err := json.Unmarshal(sc.Bytes(), &v); err != nil || v.Seq != seq {
				t.Fatalf("%s: %q, want seq %d", f, sc.Text(), seq)
			}
			seq++
		}
		fh.Close()
	}
	_, st := flowStatus(t, a, "republish")
	if st.Received < n || st.Sent < n {
		t.Fatalf("republish status %+v", st)
	}
}

func countLines(p string) int {
	b, _ := os.ReadFile(p)
	return strings.Count(string(b), "\n")
}

// While the destination is away the flow's persistent session buffers
// more than the broker's per-session queue length (the outage buffer is
// bounded by the storage quota), its fill level shows in the status, the
// buffer survives a restart of Edgeport, and afterwards every message
// arrives in order.
func TestDataflowOutageBufferSurvivesRestart(t *testing.T) {
	dataDir := t.TempDir()
	sink := httpsink.Start(t)
	sink.SetDown(true)
	cfg := Config{DataDir: dataDir}
	cfg.Broker.MaxQueuedMessages = 1000 // the outage below is longer
	a := startApp(t, cfg)
	apply(t, a, fmt.Sprintf(`apiVersion: edgeport.io/v1
kind: DataflowEndpoint
metadata: {name: web}
spec:
  endpointType: Http
  httpSettings:
    url: %s
    batching: {maxMessages: 200, latencyMs: 5}
`, sink.URL))
	apply(t, a, `apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: to-web}
spec:
  operations:
  - operationType: Source
    sourceSettings: {dataSources: ["site/#"]}
  - operationType: Destination
    destinationSettings: {endpointRef: web, dataDestination: "/"}
  retry: {initialBackoffMs: 10, maxBackoffMs: 100}
`)
	waitStatus(t, a, config.Key{Kind: "Dataflow", Name: "to-web"}, config.ConditionTrue)
	const n = 3000
	pub := tcpClient(t, a, "site-pub")
	publishSeq(t, pub, "site/a", 0, n)
	a.flows.States() // the status loop samples the buffer; wait for it
	testwait.For(t, "buffer fill level in the status", func() bool {
		o, st := flowStatus(t, a, "to-web")
		return st.BufferedMessages > 1000 && o.Ready().Reason == "Retrying" && st.LastError != ""
	})
	_ = pub.Close()
	// Restart Edgeport on the same data directory mid-outage.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	a2 := startApp(t, cfg)
	waitStatus(t, a2, config.Key{Kind: "Dataflow", Name: "to-web"}, config.ConditionFalse)
	sink.SetDown(false)
	testwait.For(t, "every message after the outage", func() bool {
		seqs := sink.Seqs()
		return len(seqs) >= n && seqs[len(seqs)-1] == n-1
	})
	testseq.CheckInOrder(t, sink.Seqs(), n)
	testwait.For(t, "buffer drained", func() bool { _, st := flowStatus(t, a2, "to-web"); return st.BufferedMessages == 0 })
}

// stateSet stores a key through the state store protocol, as a network
// client would.
func stateSet(t *testing.T, cl *mqttc.Client, key, value string) {
	t.Helper()
	if resp := stateCall(t, cl, "SET", key, value); string(resp.Payload) != "+OK\r\n" {
		t.Fatalf("SET answered %q", resp.Payload)
	}
}

// stateCall sends one state store request (a RESP3 array of args) and
// returns its answer.
func stateCall(t *testing.T, cl *mqttc.Client, args ...string) *mqttc.Message {
	t.Helper()
	payload := fmt.Sprintf("*%d\r\n", len(args))
	for _, a := range args {
		payload += fmt.Sprintf("$%d\r\n%s\r\n", len(a), a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp, err := cl.Request(ctx, &mqttc.Message{Topic: statestore.InvokeTopic, QoS: 1, Payload: []byte(payload),
		User: []packet.UserProperty{{Key: "__ts", Value: statestore.HLC{Wall: time.Now().UnixMilli(), Node: "test"}.String()}}})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// The plant example: enrich telemetry with a state store dataset, drop
// implausible readings, convert units, and dead-letter what cannot be
// mapped; a dataset change (KEYNOTIFY) applies to the next messages.
func TestDataflowEnrichFilterMap(t *testing.T) {
	a := startApp(t, Config{})
	admin := tcpClient(t, a, "admin")
	stateSet(t, admin, "lines", `{"line":"line1","site":"Munich"}`+"\n"+`{"line":"line2","site":"Graz"}`)
	apply(t, a, `apiVersion: edgeport.io/v1
kind: Dataflow
metadata: {name: plant}
spec:
  operations:
  - operationType: Source
    sourceSettings: {dataSources: ["plant/+/telemetry"]}
  - operationType: BuiltInTransformation
    builtInTransformationSettings:
      datasets:
      - key: lines as line
        inputs: ["$source.line", "$context.line"]
        expression: "$1 == $2"
      filter:
      - inputs: [temperature]
        expression: "$1 > 9000"
      map:
      - inputs: ["*"]
        output: "*"
      - inputs: [temperature]
        output: temperatureF
        expression: "cToF($1)"
      - inputs: ["$context(line).site"]
        output: site
  - operationType: Destination
    destinationSettings: {endpointRef: default, dataDestination: "enriched/${inputTopic.2}"}
  deadLetter: {endpointRef: default, dataDestination: deadletter/plant}
`)
	waitStatus(t, a, config.Key{Kind: "Dataflow", Name: "plant"}, config.ConditionTrue)
	sub := tcpClient(t, a, "consumer")
	got := make(chan *mqttc.Message, 100)
	if err := sub.Subscribe(context.Background(), mqttc.Subscription{
		Filters: []packet.Subscription{{Filter: "enriched/#", QoS: 1}, {Filter: "deadletter/#", QoS: 1}},
		Handler: func(_ context.Context, m *mqttc.Message) { got <- m }}); err != nil {
		t.Fatal(err)
	}
	pub := tcpClient(t, a, "plc")
	send := func(p string) {
		if err := pub.Publish(context.Background(), &mqttc.Message{Topic: "plant/line1/telemetry", QoS: 1, Payload: []byte(p)}); err != nil {
			t.Fatal(err)
		}
	}
	next := func() *mqttc.Message {
		select {
		case m := <-got:
			return m
		case <-time.After(wait):
			t.Fatal("no message")
			return nil
		}
	}
	send(`{"line":"line1","temperature":20}`)
	send(`{"line":"line2","temperature":9999}`) // filtered
	send(`not json`)                            // dead-lettered
	send(`{"line":"line2","temperature":100}`)
	// The enriched messages keep their order; the dead letter goes to
	// another destination, in no set order relative to them.
	var enriched []*mqttc.Message
	var dead *mqttc.Message
	for range 3 {
		if m := next(); m.Topic == "deadletter/plant" {
			dead = m
		} else {
			enriched = append(enriched, m)
		}
	}
	var v map[string]any
	if len(enriched) != 2 || dead == nil {
		t.Fatalf("enriched %d, dead letter %v", len(enriched), dead)
	}
	if err := json.Unmarshal(enriched[0].Payload, &v); err != nil || enriched[0].Topic != "enriched/line1" || v["temperatureF"] != 68.0 || v["site"] != "Munich" {
		t.Fatalf("first: %s %s", enriched[0].Topic, enriched[0].Payload)
	}
	if err := json.Unmarshal(enriched[1].Payload, &v); err != nil || v["site"] != "Graz" || v["temperatureF"] != 212.0 {
		t.Fatalf("second: %s", enriched[1].Payload)
	}
	if string(dead.Payload) != "not json" {
		t.Fatalf("dead letter: %s", dead.Payload)
	}
	if e, _ := dead.UserValue("edgeport-error"); !strings.Contains(e, "not JSON") {
		t.Fatalf("dead letter without the error: %v", dead.User)
	}
	if k, _ := dead.UserValue("edgeport-error-kind"); k != "transform" {
		t.Fatalf("dead letter kind %q", k)
	}
	stateSet(t, admin, "lines", `{"line":"line1","site":"Berlin"}`)
	testwait.For(t, "the changed dataset applied", func() bool {
		send(`{"line":"line1","temperature":0}`)
		m := next()
		_ = json.Unmarshal(m.Payload, &v)
		return v["site"] == "Berlin"
	})
	_, st := flowStatus(t, a, "plant")
	testwait.For(t, "counters", func() bool {
		_, st = flowStatus(t, a, "plant")
		return st.Filtered == 1 && st.DeadLettered == 1 && st.Errors >= 1
	})
}
