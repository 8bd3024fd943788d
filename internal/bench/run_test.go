package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/edgeport/edgeport/internal/testwait"
)

const mosquittoPath = "/usr/sbin/mosquitto"

// startMosquitto runs Debian's mosquitto on a free loopback port for the
// test and returns its address.
func startMosquitto(t *testing.T) string {
	t.Helper()
	return startMosquittoListeners(t, 1)[0]
}

// startMosquittoListeners runs one mosquitto with n listeners on free
// loopback ports: one broker at n addresses, the way a cluster's nodes are
// one broker to their clients.
func startMosquittoListeners(t *testing.T, n int) []string {
	t.Helper()
	if _, err := os.Stat(mosquittoPath); err != nil {
		t.Fatalf("mosquitto is not installed at %s: run ./scripts/test.sh, which installs it (apt-get install -y mosquitto)", mosquittoPath)
	}
	var addrs []string
	// max_queued_messages 0: mosquitto's default (1,000 per client) drops
	// QoS 1 messages for a subscriber that falls behind on a loaded
	// machine; these tests check the load generator's counting, not
	// mosquitto's queue policy.
	body := "allow_anonymous true\nset_tcp_nodelay true\nmax_queued_messages 0\n"
	for range n {
		addr := testserve.FreeAddr(t)
		_, port, _ := net.SplitHostPort(addr)
		addrs = append(addrs, addr)
		body += fmt.Sprintf("listener %s 127.0.0.1\n", port)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(mosquittoPath, "-c", conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	for _, addr := range addrs {
		var dialErr error
		up := testwait.Within(testwait.Timeout, func() bool {
			select {
			case <-exited:
				return true // reported below
			default:
			}
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			dialErr = err
			return err == nil
		})
		select {
		case <-exited:
			t.Fatalf("mosquitto exited: %s", out.String())
		default:
		}
		if !up {
			t.Fatalf("mosquitto did not accept on %s: %v", addr, dialErr)
		}
	}
	return addrs
}

func TestScenariosAgainstMosquitto(t *testing.T) {
	addr := startMosquitto(t)
	tests := []struct {
		name string
		o    Options
	}{
		{"p2p qos0", Options{Scenario: P2P, Clients: 2}},
		{"p2p qos1", Options{Scenario: P2P, Clients: 2, QoS: 1}},
		{"p2p qos2", Options{Scenario: P2P, Clients: 1, QoS: 2}},
		{"p2p qos1 mqtt 3.1.1", Options{Scenario: P2P, Clients: 2, QoS: 1, Version: packet.V311}},
		// 3.1.1 has no Receive Maximum: stay within mosquitto's default
		// max_inflight_messages, beyond which it drops QoS 2 publishes.
		{"p2p qos2 mqtt 3.1.1", Options{Scenario: P2P, Clients: 1, QoS: 2, Version: packet.V311, Window: 20}},
		{"p2p qos1 at a fixed rate", Options{Scenario: P2P, Clients: 1, QoS: 1, Rate: 2000}},
		{"p2p qos0 open loop at a fixed rate", Options{Scenario: P2P, Clients: 1, Rate: 2000, OpenLoop: true}},
		{"fanout qos1", Options{Scenario: Fanout, Clients: 5, QoS: 1}},
		{"fanin qos1", Options{Scenario: FanIn, Clients: 5, QoS: 1}},
		{"shared qos1", Options{Scenario: Shared, Clients: 3, Subscribers: 3, QoS: 1}},
		{"shared qos0", Options{Scenario: Shared, Clients: 3, Subscribers: 2}},
		{"connstorm", Options{Scenario: ConnStorm, Clients: 100}},
		{"idle", Options{Scenario: Idle, Clients: 100, QoS: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			o.Addr = addr
			o.Duration = 700 * time.Millisecond
			o.Payload = 100
			var progress bytes.Buffer
			o.Progress = &progress
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now()
			res, err := Run(ctx, o)
			if err != nil {
				t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
			}
			if took := time.Since(start); took > 20*time.Second {
				t.Errorf("run took %s", took)
			}
			var table, js bytes.Buffer
			if err := res.WriteTable(&table); err != nil {
				t.Fatal(err)
			}
			if err := res.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			t.Logf("\n%s", table.String())
			var back Result
			if err := json.Unmarshal(js.Bytes(), &back); err != nil || !reflect.DeepEqual(back, *res) {
				t.Fatalf("JSON does not round-trip: %v\n%s", err, js.String())
			}
			switch o.Scenario {
			case ConnStorm, Idle:
				if res.Connections != o.Clients || res.ConnRate <= 0 || res.Latency.Samples != uint64(o.Clients) {
					t.Fatalf("connections %d, %v conn/s, %d samples; want %d, > 0, %d",
						res.Connections, res.ConnRate, res.Latency.Samples, o.Clients, o.Clients)
				}
				if res.Dropped != 0 {
					t.Fatalf("%d connections dropped", res.Dropped)
				}
				if o.Scenario == Idle && !strings.Contains(progress.String(), "holding for") {
					t.Fatalf("idle did not announce the hold:\n%s", progress.String())
				}
				return
			}
			if res.Sent == 0 || res.Received == 0 || res.SentRate <= 0 || res.ReceivedRate <= 0 {
				t.Fatalf("nothing went through: %+v", res)
			}
			if res.Foreign != 0 || res.Duplicates != 0 || res.Rejected != 0 {
				t.Fatalf("anomalies: %+v", res)
			}
			if o.QoS > 0 && (res.Lost != 0 || res.Received != res.Expected) {
				t.Fatalf("QoS %d lost %d: received %d of %d", o.QoS, res.Lost, res.Received, res.Expected)
			}
			if res.Latency.Samples != uint64(res.Received) || res.Latency.P50 <= 0 || res.Latency.Max < res.Latency.P99 {
				t.Fatalf("latency %+v for %d received", res.Latency, res.Received)
			}
			if o.Rate > 0 {
				want := o.Rate * o.Duration.Seconds()
				if f := float64(res.Sent); f < want*0.8 || f > want*1.05 {
					t.Fatalf("sent %d at rate %v over %s, want about %.0f", res.Sent, o.Rate, o.Duration, want)
				}
			}
		})
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		o    Options
	}{
		{"unknown scenario", Options{Scenario: "storm"}},
		{"qos 3", Options{QoS: 3}},
		{"payload too small", Options{Payload: 8}},
		{"wildcard prefix", Options{TopicPrefix: "a/#"}},
		{"protocol level 3", Options{Version: packet.V31}},
		{"negative rate", Options{Rate: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Run(context.Background(), tt.o); err == nil {
				t.Fatal("Run accepted bad options")
			}
		})
	}
}

func TestRunFailsWithoutBroker(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = Run(context.Background(), Options{Addr: addr, Duration: 100 * time.Millisecond})
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Fatalf("Run against a closed port: %v, want a dial error", err)
	}
}

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in   string
		want packet.Version
		ok   bool
	}{
		{"5", packet.V5, true}, {"5.0", packet.V5, true}, {"3", packet.V311, true},
		{"3.1.1", packet.V311, true}, {"4", packet.V311, true}, {"6", 0, false}, {"", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseVersion(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseVersion(%q) = %v, %v", tt.in, got, err)
		}
	}
}

// TestAppendHLC: the load generator's __ts has the wire form the state
// store parses (15-digit wall, 5-digit counter, node).
func TestAppendHLC(t *testing.T) {
	for _, c := range []struct {
		ms      int64
		counter uint64
		want    string
	}{
		{1733476800123, 0, "001733476800123:00000:n1"},
		{7, 42, "000000000000007:00042:n1"},
		{123456789012345678, 123456, "123456789012345678:123456:n1"},
	} {
		if got := string(appendHLC(nil, c.ms, c.counter, "n1")); got != c.want || got != fmt.Sprintf("%015d:%05d:%s", c.ms, c.counter, "n1") {
			t.Errorf("appendHLC(%d, %d) = %q, want %q", c.ms, c.counter, got, c.want)
		}
	}
}
