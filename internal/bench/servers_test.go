package bench

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestScenariosOverSeveralServers runs the messaging scenarios spread over
// the three listeners of one mosquitto, the way a cluster's nodes are one
// broker: every message is counted, and the run probed the routes first.
func TestScenariosOverSeveralServers(t *testing.T) {
	addrs := startMosquittoListeners(t, 3)
	tests := []struct {
		name string
		o    Options
	}{
		{"p2p qos1 cross", Options{Scenario: P2P, Clients: 4, QoS: 1, Cross: true}},
		{"p2p qos0 same", Options{Scenario: P2P, Clients: 4}},
		{"fanout qos1 cross", Options{Scenario: Fanout, Clients: 5, QoS: 1, Cross: true}},
		{"fanin qos1 cross", Options{Scenario: FanIn, Clients: 5, QoS: 1, Cross: true}},
		{"shared qos1 cross", Options{Scenario: Shared, Clients: 3, Subscribers: 3, QoS: 1, Cross: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			o.Servers = addrs
			o.Duration = 500 * time.Millisecond
			var progress bytes.Buffer
			o.Progress = &progress
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := Run(ctx, o)
			if err != nil {
				t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
			}
			if !strings.Contains(progress.String(), "waiting until every publisher's messages reach") {
				t.Fatalf("no probing before a run over %d servers:\n%s", len(addrs), progress.String())
			}
			if !slices.Equal(res.Servers, addrs) || res.Addr != addrs[0] || res.Cross != o.Cross {
				t.Fatalf("result says servers %v (addr %s, cross %v), want %v", res.Servers, res.Addr, res.Cross, addrs)
			}
			if res.Sent == 0 || res.Received == 0 {
				t.Fatalf("nothing went through: %+v", res)
			}
			// Probes are not messages of the run.
			if res.Foreign != 0 || res.Duplicates != 0 || res.Rejected != 0 {
				t.Fatalf("anomalies: %+v", res)
			}
			if o.QoS > 0 && (res.Lost != 0 || res.Received != res.Expected) {
				t.Fatalf("QoS %d lost %d: received %d of %d", o.QoS, res.Lost, res.Received, res.Expected)
			}
		})
	}
}

// TestPlacement: publisher i on server i mod n, subscriber j on the same
// server or, crossing, on the next one.
func TestPlacement(t *testing.T) {
	servers := []string{"a", "b", "c"}
	same := &runner{o: Options{Servers: servers}}
	cross := &runner{o: Options{Servers: servers, Cross: true}}
	for i, want := range []string{"a", "b", "c", "a", "b"} {
		if got := same.server(i); got != want {
			t.Errorf("publisher %d on %s, want %s", i, got, want)
		}
		if got := same.subServer(i); got != want {
			t.Errorf("subscriber %d on %s, want %s (its publisher's)", i, got, want)
		}
		if got, next := cross.subServer(i), servers[(i+1)%3]; got != next || got == cross.server(i) {
			t.Errorf("crossing subscriber %d on %s, want %s (publisher on %s)", i, got, next, cross.server(i))
		}
	}
}

// TestRoutesNeverOpen: subscribers on a broker that never gets the
// publishers' messages (two separate mosquittos) make the run fail with
// what was missing, rather than measure nothing.
func TestRoutesNeverOpen(t *testing.T) {
	a, b := startMosquitto(t), startMosquitto(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := Run(ctx, Options{Servers: []string{a, b}, Cross: true, Scenario: P2P, Clients: 2,
		Duration: 100 * time.Millisecond, RoutesTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "the messages of 2 of 2 publishers had not reached their subscribers") {
		t.Fatalf("Run over two unconnected brokers: %v", err)
	}
}

// TestTakeover moves persistent sessions between the listeners of one
// mosquitto (and on one listener): every move gets Session Present and
// ends the old connection, each timed. (mosquitto 2.0 closes the old
// connection without the DISCONNECT 0x8E MQTT 5 asks for; the cluster
// script's test checks Edgeport's 0x8E.)
func TestTakeover(t *testing.T) {
	addrs := startMosquittoListeners(t, 3)
	for _, servers := range [][]string{addrs[:1], addrs} {
		var progress bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res, err := Run(ctx, Options{Servers: servers, Scenario: Takeover, Clients: 3, Rate: 60,
			Duration: 700 * time.Millisecond, Progress: &progress})
		cancel()
		if err != nil {
			t.Fatalf("Run over %d server(s): %v\n%s", len(servers), err, progress.String())
		}
		var table bytes.Buffer
		if err := res.WriteTable(&table); err != nil {
			t.Fatal(err)
		}
		t.Logf("\n%s", table.String())
		if res.Errors != 0 || res.FirstError != "" {
			t.Fatalf("%d takeovers failed, first: %s", res.Errors, res.FirstError)
		}
		if res.Takeovers == 0 || res.Connections != 3 || res.TakeoverRate <= 0 {
			t.Fatalf("takeovers %d over %d sessions at %v/s", res.Takeovers, res.Connections, res.TakeoverRate)
		}
		if res.Untold > res.Takeovers {
			t.Fatalf("%d untold of %d takeovers", res.Untold, res.Takeovers)
		}
		if res.Latency.Samples != uint64(res.Takeovers) || res.ConnAckLatency == nil || res.ConnAckLatency.Samples != uint64(res.Takeovers) {
			t.Fatalf("samples: to 0x8E %d, to CONNACK %v, for %d takeovers", res.Latency.Samples, res.ConnAckLatency, res.Takeovers)
		}
		if res.Latency.P50 <= 0 || res.Latency.Max < res.Latency.P99 {
			t.Fatalf("latency %+v", res.Latency)
		}
	}
}
