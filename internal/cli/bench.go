package cli

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/bench"
)

func newBench(stdout io.Writer) *cobra.Command {
	var (
		o        bench.Options
		qos      int
		version  string
		output   string
		progress bool
		servers  string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run a load scenario against an MQTT broker and report throughput and latency",
		Long: `Run one load scenario against any MQTT broker (Edgeport, mosquitto, ...):

  p2p        --clients publisher/subscriber pairs, each pair on its own topic
  fanout     one publisher, --clients subscribers on its topic
  fanin      --clients publishers, one subscriber on a wildcard
  shared     --clients publishers, --subscribers members of one $share group
  connstorm  open --clients connections (CONNECT/CONNACK) as fast as possible
  idle       open --clients connections with one subscription each and hold
             them for --duration
  statestore --clients state store clients (Azure IoT Operations protocol)
  takeover   --clients persistent sessions, each connected again and again
             for --duration on the next of --servers (Clean Start 0), --rate
             moves per second in all: the time to the new CONNACK (Session
             Present) and to the old connection's DISCONNECT 0x8E

--servers a,b,c spreads the connections over several brokers, the nodes of
one cluster: publisher i on server i mod n, subscriber j on server j mod n,
or with --cross on the next one, so that in p2p every message crosses from
one node to another. Over several servers the run first probes until every
publisher's messages reach their subscribers (subscriptions reach the
other nodes a moment after their SUBACK).

Payloads carry their send time, so latency is publish to delivery.
Publishers keep at most --window messages undelivered per subscriber (and at
QoS 1/2 unacknowledged), so the broker is measured at the rate it sustains
rather than by how much it can queue; --open-loop lifts that bound at QoS 0.
Topics live under --topic-prefix plus a random level per run. The exit status
is 2 when a QoS 1/2 run lost messages.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if qos < 0 || qos > 2 {
				return fmt.Errorf("--qos: %d is not 0, 1 or 2", qos)
			}
			o.QoS = byte(qos)
			v, err := bench.ParseVersion(version)
			if err != nil {
				return fmt.Errorf("--mqtt-version: %w", err)
			}
			o.Version = v
			output = strings.ToLower(output)
			if output != "table" && output != "json" {
				return fmt.Errorf("-o: %q is not table or json", output)
			}
			if progress {
				o.Progress = cmd.ErrOrStderr()
			}
			if servers != "" {
				o.Servers = strings.Split(servers, ",")
				if cmd.Flags().Changed("addr") {
					return fmt.Errorf("--addr and --servers: give one of them")
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := bench.Run(ctx, o)
			if err != nil {
				return err
			}
			if output == "json" {
				err = res.WriteJSON(stdout)
			} else {
				err = res.WriteTable(stdout)
			}
			if err != nil {
				return err
			}
			if res.QoS > 0 && res.Lost > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "edgeport bench: %d of %d QoS %d deliveries lost\n", res.Lost, res.Expected, res.QoS)
				return exitError(2)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Addr, "addr", "127.0.0.1:1883", "broker address (host:port)")
	f.StringVar(&servers, "servers", "", "comma-separated broker addresses (cluster nodes) to spread the connections over, instead of --addr")
	f.BoolVar(&o.Cross, "cross", false, "with --servers: each subscriber on the server after its publisher's")
	f.StringVar(&o.Scenario, "scenario", bench.P2P, "scenario: "+strings.Join(bench.Scenarios(), ", "))
	f.IntVar(&o.Clients, "clients", 0, "pairs (p2p), subscribers (fanout), publishers (fanin, shared), connections (connstorm, idle) or sessions (takeover); 0: 1 for p2p, 1000 for connstorm and idle, else 10")
	f.IntVar(&o.Subscribers, "subscribers", 2, "members of the shared subscription group (shared)")
	f.IntVar(&qos, "qos", 0, "QoS of publishes and subscriptions: 0, 1 or 2")
	f.IntVar(&o.Payload, "payload", 64, fmt.Sprintf("payload bytes per message (at least %d)", bench.MinPayload))
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "publishing time (idle: holding time)")
	f.Float64Var(&o.Rate, "rate", 0, "total publishes (takeover: session moves) per second over all clients (0: as fast as possible)")
	f.StringVar(&version, "mqtt-version", "5", "MQTT version: 5 or 3 (3.1.1)")
	f.StringVar(&o.TopicPrefix, "topic-prefix", "edgeport-bench", "first topic level(s); a random level is added per run")
	f.IntVar(&o.Window, "window", 0, "messages undelivered per subscriber, and QoS 1/2 publishes unacknowledged per publisher (statestore: requests in flight per client; 0: 1000, statestore 1)")
	f.BoolVar(&o.OpenLoop, "open-loop", false, "QoS 0: publish as fast as TCP allows, ignoring --window")
	f.BoolVar(&o.Persistent, "persistent", false, "subscribers keep their sessions (clean start false), so a durable broker stores their QoS 1/2 deliveries")
	f.IntVar(&o.Concurrency, "concurrency", 32, "connections being set up at once")
	f.DurationVar(&o.DrainTimeout, "drain-timeout", 10*time.Second, "longest wait for outstanding deliveries after publishing stops")
	f.IntVar(&o.Gets, "gets", 0, "statestore: percentage of GET requests (the rest are SETs)")
	f.IntVar(&o.Keys, "keys", 100, "statestore: keys per client")
	f.StringVarP(&output, "output", "o", "table", "output format: table or json")
	f.BoolVar(&progress, "progress", true, "report each phase on stderr")
	return cmd
}
