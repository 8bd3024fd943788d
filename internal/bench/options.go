// Package bench runs load scenarios against any MQTT broker, with throughput
// and latency results, using its own minimal client over the packet codec.
package bench

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Scenario names.
const (
	P2P       = "p2p"       // Clients publisher/subscriber pairs, each pair on its own topic
	Fanout    = "fanout"    // one publisher, Clients subscribers on its topic
	FanIn     = "fanin"     // Clients publishers, one subscriber on a wildcard
	Shared    = "shared"    // Clients publishers, Subscribers members of one shared subscription
	ConnStorm = "connstorm" // Clients connections opened as fast as possible
	Idle      = "idle"      // Clients connections with one subscription each, held for Duration
	// StateStore runs Clients state store clients (Azure IoT Operations
	// protocol over MQTT 5), each with Window requests in flight.
	StateStore = "statestore"
	// Takeover runs Clients persistent sessions, each connected again and
	// again for Duration with the same client identifier, every time on
	// the next of Servers, timing how long the session takes to move.
	Takeover = "takeover"
)

// Scenarios lists the scenario names in a stable order.
func Scenarios() []string {
	return []string{P2P, Fanout, FanIn, Shared, ConnStorm, Idle, StateStore, Takeover}
}

// MinPayload is the smallest payload: the send time (UnixNano, little
// endian), the flow index and the run tag occupy the first 16 bytes.
const MinPayload = 16

// Options describe one run. Zero fields take the defaults noted.
type Options struct {
	Addr string // broker address; default 127.0.0.1:1883
	// Servers, when set, replaces Addr with the addresses of several
	// brokers, the nodes of one cluster: publisher i connects to
	// Servers[i%n] and subscriber j to Servers[j%n], or with Cross to
	// Servers[(j+1)%n], so that in p2p every message crosses from one
	// node to another. connstorm, idle and statestore spread their
	// connections round-robin; takeover moves each session to the next.
	Servers []string
	// Cross places each subscriber on the server after its publisher's
	// (see Servers).
	Cross    bool
	Scenario string // default p2p
	// Clients is the scenario's main count: pairs (p2p), subscribers
	// (fanout), publishers (fanin, shared) or connections (connstorm, idle).
	// Default 1 for p2p, 1000 for connstorm and idle, 10 otherwise.
	Clients int
	// Subscribers is the size of the shared subscription group (shared only);
	// default 2.
	Subscribers int
	QoS         byte
	Payload     int           // bytes per message, at least MinPayload; default 64
	Duration    time.Duration // publishing time, or holding time for idle; default 10s
	// Rate is the total publishes per second over all publishers; 0 publishes
	// as fast as the flow control allows.
	Rate    float64
	Version packet.Version // default 5.0
	// TopicPrefix is the first topic level(s); a random level is appended for
	// every run so that nothing retained or queued by an earlier run can
	// arrive. Default "edgeport-bench".
	TopicPrefix string
	// Window bounds the messages published but not yet delivered, per
	// subscriber, so that a broker is driven at the rate it sustains instead
	// of filling its queues (which would measure the queues, and make QoS 1/2
	// runs lose messages to queue limits). It also bounds the QoS 1/2
	// publishes awaiting acknowledgement per publisher. At QoS 0, backlog that
	// stops moving for 100 ms is taken as dropped. Default 1000. A 5.0
	// broker's Receive Maximum lowers it; MQTT 3.1.1 has no such signal, so
	// keep it within the broker's inflight limit there (mosquitto silently
	// drops QoS 2 publishes beyond max_inflight_messages, 20 by default).
	Window int
	// OpenLoop makes QoS 0 publishers ignore Window and write as fast as
	// TCP takes the data: the broker under overload, queueing or dropping.
	OpenLoop bool
	// Concurrency is the number of connections being set up at once; default 32.
	Concurrency int
	// DrainTimeout bounds the wait for deliveries after publishing stops; default 10s.
	DrainTimeout time.Duration
	// RoutesTimeout bounds the probing before a run over several Servers,
	// until every publisher's messages reach its subscribers; default 30s.
	RoutesTimeout time.Duration
	// Persistent makes subscribers keep their sessions (clean start false,
	// session expiry 1 h in 5.0), so a durable broker stores their QoS 1/2
	// deliveries.
	Persistent bool
	// Gets is the percentage of GET requests in the statestore scenario;
	// the rest are SETs. Default 0.
	Gets int
	// Keys is the number of keys each statestore client uses; default 100.
	Keys int
	// Progress, when set, receives one line per phase of the run.
	Progress io.Writer
}

func (o Options) withDefaults() (Options, error) {
	for i, a := range o.Servers {
		if strings.TrimSpace(a) == "" {
			return o, fmt.Errorf("servers[%d]: empty address", i)
		}
	}
	if len(o.Servers) > 0 {
		o.Addr = o.Servers[0]
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:1883"
	}
	if len(o.Servers) == 0 {
		o.Servers = []string{o.Addr}
	}
	if o.Cross && len(o.Servers) < 2 {
		return o, fmt.Errorf("cross-server placement needs at least two servers (got %d)", len(o.Servers))
	}
	if o.Scenario == "" {
		o.Scenario = P2P
	}
	known := false
	for _, s := range Scenarios() {
		known = known || s == o.Scenario
	}
	if !known {
		return o, fmt.Errorf("unknown scenario %q (want one of %s)", o.Scenario, strings.Join(Scenarios(), ", "))
	}
	if o.Clients < 0 || o.Subscribers < 0 || o.Window < 0 || o.Concurrency < 0 || o.Rate < 0 {
		return o, fmt.Errorf("counts and rates must not be negative")
	}
	if o.Clients == 0 {
		switch o.Scenario {
		case P2P:
			o.Clients = 1
		case ConnStorm, Idle:
			o.Clients = 1000
		default:
			o.Clients = 10
		}
	}
	if o.Gets < 0 || o.Gets > 100 {
		return o, fmt.Errorf("GET percentage %d is not between 0 and 100", o.Gets)
	}
	if o.Keys < 0 {
		return o, fmt.Errorf("counts and rates must not be negative")
	}
	if o.Keys == 0 {
		o.Keys = 100
	}
	if o.Subscribers == 0 {
		o.Subscribers = 2
	}
	if o.QoS > 2 {
		return o, fmt.Errorf("QoS %d is not 0, 1 or 2", o.QoS)
	}
	if o.Payload == 0 {
		o.Payload = 64
	}
	if o.Payload < MinPayload {
		return o, fmt.Errorf("payload of %d bytes is below the minimum of %d (timestamp and tags)", o.Payload, MinPayload)
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	switch o.Version {
	case 0:
		o.Version = packet.V5
	case packet.V311, packet.V5:
	default:
		return o, fmt.Errorf("protocol level %d is not 4 (3.1.1) or 5", o.Version)
	}
	if o.TopicPrefix == "" {
		o.TopicPrefix = "edgeport-bench"
	}
	if strings.ContainsAny(o.TopicPrefix, "+#") {
		return o, fmt.Errorf("topic prefix %q contains a wildcard", o.TopicPrefix)
	}
	if o.Window == 0 {
		o.Window = 1000
		if o.Scenario == StateStore {
			o.Window = 1
		}
	}
	o.Window = min(o.Window, 65535)
	if o.Concurrency == 0 {
		o.Concurrency = 32
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 10 * time.Second
	}
	if o.RoutesTimeout <= 0 {
		o.RoutesTimeout = 30 * time.Second
	}
	return o, nil
}

// ParseVersion reads a protocol version as given on a command line: "5"
// or "5.0" for MQTT 5.0, "3", "4", "3.1.1" or "311" for MQTT 3.1.1.
func ParseVersion(s string) (packet.Version, error) {
	switch strings.TrimSpace(s) {
	case "5", "5.0":
		return packet.V5, nil
	case "3", "4", "3.1.1", "311":
		return packet.V311, nil
	}
	return 0, fmt.Errorf("MQTT version %q is not 5 or 3 (3.1.1)", s)
}

func versionName(v packet.Version) string {
	if v == packet.V5 {
		return "5.0"
	}
	return "3.1.1"
}
