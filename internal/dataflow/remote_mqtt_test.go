package dataflow

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	mqttc "github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/testpeer/httpsink"
	"github.com/edgeport/edgeport/internal/testseq"
	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/edgeport/edgeport/internal/testwait"
)

const mosquittoPath = "/usr/sbin/mosquitto"

// mosquitto is Debian's mosquitto (installed by scripts/test.sh) with
// persistence, so that a restart keeps its sessions and queued messages.
type mosquitto struct {
	t      *testing.T
	addr   string
	conf   string
	cmd    *exec.Cmd
	exited chan struct{}
	out    bytes.Buffer
}

func startMosquittoBroker(t *testing.T) *mosquitto {
	t.Helper()
	if _, err := os.Stat(mosquittoPath); err != nil {
		t.Fatalf("mosquitto is not installed at %s: run ./scripts/test.sh, which installs it (apt-get install -y mosquitto)", mosquittoPath)
	}
	port := testserve.FreePort(t, "127.0.0.1")
	dir := t.TempDir()
	m := &mosquitto{t: t, addr: fmt.Sprintf("127.0.0.1:%d", port), conf: filepath.Join(dir, "mosquitto.conf")}
	conf := fmt.Sprintf(`user root
allow_anonymous true
persistence true
persistence_location %s/
max_queued_messages 0
max_inflight_messages 0
listener %d 127.0.0.1
`, dir, port)
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	m.start()
	t.Cleanup(func() {
		if m.cmd != nil {
			_ = m.cmd.Process.Kill()
			<-m.exited
		}
	})
	return m
}

func (m *mosquitto) start() {
	m.t.Helper()
	m.cmd = exec.Command(mosquittoPath, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = &m.out, &m.out
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("starting mosquitto: %v", err)
	}
	m.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(m.cmd, m.exited)
	testwait.For(m.t, "mosquitto listening", func() bool {
		c, err := net.DialTimeout("tcp", m.addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// restart stops mosquitto gracefully (it writes its persistence file) and
// starts it again on the same port.
func (m *mosquitto) restart() {
	m.t.Helper()
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		m.t.Fatalf("mosquitto did not stop: %s", m.out.String())
	}
	m.start()
}

func publishSeq(t *testing.T, addr string, from, to int) {
	t.Helper()
	cl, err := mqttc.New(mqttc.Options{Dialer: mqttc.TCP(addr, nil), ClientID: "remote-pub", CleanStart: true, NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cl.Stop(context.Background()) }()
	for i := from; i < to; i++ {
		// Publish returns once mosquitto acknowledged (PUBACK): from then
		// on the message must reach the destination.
		if err := cl.Publish(ctx, &mqttc.Message{Topic: "site/line/telemetry", QoS: 1, Payload: []byte(`{"seq":` + strconv.Itoa(i) + `}`)}); err != nil {
			t.Fatalf("publishing %d: %v", i, err)
		}
	}
}

// A flow whose source is a remote broker (a real mosquitto) loses nothing
// that mosquitto acknowledged to the publisher although mosquitto is
// restarted mid-flow while the destination is away: the flow's persistent
// session at mosquitto holds what it has not acknowledged, and the flow
// resumes it. First arrivals are in publication order.
func TestEngineRemoteMosquittoSourceRestart(t *testing.T) {
	mq := startMosquittoBroker(t)
	s := httpsink.Start(t)

	e := startEngine(t, Options{
		Builder:    &StageBuilder{MQTT: &MQTTStages{Env: stage.Env{}, Log: testLogger(t)}},
		Registerer: prometheus.NewRegistry(), StatusInterval: 20 * time.Millisecond, Logger: testLogger(t),
	})
	keepAlive := 2
	remote := mustCheck(t, "DataflowEndpoint", "site-broker", &config.DataflowEndpointSpec{
		EndpointType: config.EndpointMqtt, MqttSettings: &config.MqttEndpointSettings{Host: mq.addr, KeepAliveSeconds: &keepAlive}})
	maxMsgs, latency := 50, 5
	web := mustCheck(t, "DataflowEndpoint", "web", &config.DataflowEndpointSpec{
		EndpointType: config.EndpointHttp, HttpSettings: &config.HttpEndpointSettings{URL: s.URL,
			Batching: config.Batching{MaxMessages: &maxMsgs, LatencyMs: &latency}}})
	initial, maxB := 5, 100
	flow := mustCheck(t, "Dataflow", "remote", &config.DataflowSpec{
		Operations: []config.DataflowOperation{
			{OperationType: "Source", SourceSettings: &config.DataflowSource{EndpointRef: "site-broker", DataSources: []string{"site/+/telemetry"}}},
			{OperationType: "Destination", DestinationSettings: &config.DataflowDestination{EndpointRef: "web", DataDestination: "/"}},
		},
		Retry: config.DataflowRetry{InitialBackoffMs: &initial, MaxBackoffMs: &maxB},
	})
	e.Sync(Resolve([]*config.Object{flow}, []*config.Object{remote, web}, nil))
	// The flow's subscription is in place once a probe message arrives.
	testwait.For(t, "the flow subscribed at mosquitto", func() bool {
		publishSeq(t, mq.addr, -1, 0)
		return len(s.Payloads()) > 0
	})

	const n = 900
	publishSeq(t, mq.addr, 0, n/3)
	testwait.For(t, "first messages delivered", func() bool { return len(s.Payloads()) > 10 })
	s.SetDown(true)
	publishSeq(t, mq.addr, n/3, 2*n/3)
	hits := s.Hits()
	testwait.For(t, "retries while the destination is away", func() bool { return s.Hits() > hits+3 })
	mq.restart()
	publishSeq(t, mq.addr, 2*n/3, n)
	s.SetDown(false)
	testwait.For(t, "every acknowledged message delivered", func() bool {
		seen := map[int]bool{}
		for _, seq := range s.Seqs() {
			if seq >= 0 {
				seen[seq] = true
			}
		}
		return len(seen) == n
	})
	testseq.CheckInOrder(t, s.Seqs(), n)
}
