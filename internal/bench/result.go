package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is the outcome of one run. Counts of messages are messages as
// published; Expected, Received, Lost and Duplicates count deliveries (a
// message to k subscribers is k deliveries).
type Result struct {
	Scenario string `json:"scenario"`
	Addr     string `json:"addr"`
	// Servers are the brokers the connections were spread over (Addr
	// alone when one), Cross whether subscribers were on the server after
	// their publisher's.
	Servers      []string `json:"servers"`
	Cross        bool     `json:"cross,omitempty"`
	MQTTVersion  string   `json:"mqtt_version"`
	QoS          int      `json:"qos"`
	Publishers   int      `json:"publishers"`
	Subscribers  int      `json:"subscribers"`
	Connections  int      `json:"connections"`
	PayloadBytes int      `json:"payload_bytes"`
	TargetRate   float64  `json:"target_rate"` // msg/s over all publishers; 0 = as fast as possible
	Window       int      `json:"window"`
	TopicPrefix  string   `json:"topic_prefix"`
	// Seconds is the publishing time, or for connstorm and idle the time to
	// set up every connection.
	Seconds      float64 `json:"seconds"`
	Sent         int64   `json:"sent"`
	Expected     int64   `json:"expected"`
	Received     int64   `json:"received"`
	Lost         int64   `json:"lost"`
	Duplicates   int64   `json:"duplicates"`
	Rejected     int64   `json:"rejected"` // QoS 1/2 publishes the broker refused
	Foreign      int64   `json:"foreign"`  // messages received that this run did not send
	SentRate     float64 `json:"sent_per_sec"`
	ReceivedRate float64 `json:"received_per_sec"` // deliveries per second while publishing
	ConnRate     float64 `json:"conn_per_sec"`
	Dropped      int     `json:"dropped"` // idle connections the broker closed
	// The statestore scenario's figures: GET share, responses per second
	// by operation, error responses (and the first one), latency per
	// operation.
	GetPercent int      `json:"get_percent,omitempty"`
	SetRate    float64  `json:"sets_per_sec,omitempty"`
	GetRate    float64  `json:"gets_per_sec,omitempty"`
	Errors     int64    `json:"errors,omitempty"`
	FirstError string   `json:"first_error,omitempty"`
	SetLatency *Latency `json:"set_latency,omitempty"`
	GetLatency *Latency `json:"get_latency,omitempty"`
	// The takeover scenario's figures: sessions moved (Errors counts the
	// moves that failed) and the time from the new connection's dial to
	// its CONNACK with Session Present; Latency is the time to the old
	// connection's DISCONNECT 0x8E (or its end, when Untold).
	Takeovers      int64    `json:"takeovers,omitempty"`
	Untold         int64    `json:"takeovers_untold,omitempty"` // old connection closed without DISCONNECT 0x8E
	TakeoverRate   float64  `json:"takeovers_per_sec,omitempty"`
	ConnAckLatency *Latency `json:"connack_latency,omitempty"`
	// Latency is publish to delivery for the messaging scenarios, dial to
	// CONNACK for connstorm, dial to SUBACK for idle, and the new
	// connection's dial to the old one's DISCONNECT 0x8E for takeover.
	Latency Latency `json:"latency"`
}

// Latency summarises a histogram in milliseconds.
type Latency struct {
	Samples uint64  `json:"samples"`
	Mean    float64 `json:"mean_ms"`
	P50     float64 `json:"p50_ms"`
	P90     float64 `json:"p90_ms"`
	P99     float64 `json:"p99_ms"`
	P999    float64 `json:"p99_9_ms"`
	Max     float64 `json:"max_ms"`
}

func summarize(h *Histogram) Latency {
	ms := func(ns int64) float64 { return float64(ns) / float64(time.Millisecond) }
	return Latency{
		Samples: h.Count(),
		Mean:    h.Mean() / float64(time.Millisecond),
		P50:     ms(h.Quantile(0.50)),
		P90:     ms(h.Quantile(0.90)),
		P99:     ms(h.Quantile(0.99)),
		P999:    ms(h.Quantile(0.999)),
		Max:     ms(h.Max()),
	}
}

// WriteJSON writes the result as one indented JSON object.
func (r *Result) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteTable writes the result as a readable two-column table.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	row("scenario", "%s", r.describe())
	if len(r.Servers) > 1 {
		placement := "subscriber on its publisher's server"
		if r.Cross {
			placement = "subscriber on the server after its publisher's"
		}
		row("brokers", "%s (MQTT %s; %s)", strings.Join(r.Servers, ", "), r.MQTTVersion, placement)
	} else {
		row("broker", "%s (MQTT %s)", r.Addr, r.MQTTVersion)
	}
	switch r.Scenario {
	case Takeover:
		row("takeovers", "%d in %.2f s (%.0f/s), %d failed", r.Takeovers, r.Seconds, r.TakeoverRate, r.Errors)
		if r.Untold > 0 {
			row("untold", "%d old connections closed without DISCONNECT 0x8E", r.Untold)
		}
		row("to old 0x8E (ms)", "%s", r.Latency.row())
		if r.ConnAckLatency != nil {
			row("to CONNACK (ms)", "%s", r.ConnAckLatency.row())
		}
		if r.FirstError != "" {
			row("first error", "%s", r.FirstError)
		}
	case ConnStorm:
		row("connections", "%d in %.2f s", r.Connections, r.Seconds)
		row("rate", "%.0f conn/s", r.ConnRate)
		row("connect (ms)", "%s", r.Latency.row())
	case Idle:
		row("connections", "%d subscribed in %.2f s (%.0f conn/s)", r.Connections, r.Seconds, r.ConnRate)
		row("dropped", "%d", r.Dropped)
		row("set-up (ms)", "%s", r.Latency.row())
	case StateStore:
		row("requests", "%.2f s, %d sent, %d answered (%d unanswered, %d errors)", r.Seconds, r.Sent, r.Received, r.Lost, r.Errors)
		row("rate", "%.0f req/s: %.0f SET/s, %.0f GET/s", r.ReceivedRate, r.SetRate, r.GetRate)
		if r.SetLatency != nil {
			row("SET (ms)", "%s", r.SetLatency.row())
		}
		if r.GetLatency != nil {
			row("GET (ms)", "%s", r.GetLatency.row())
		}
		if r.FirstError != "" {
			row("first error", "%s", r.FirstError)
		}
	default:
		rate := "as fast as possible"
		if r.TargetRate > 0 {
			rate = fmt.Sprintf("%.0f msg/s target", r.TargetRate)
		}
		row("publishing", "%.2f s, %s", r.Seconds, rate)
		row("sent", "%d msg, %.0f msg/s", r.Sent, r.SentRate)
		row("received", "%d msg, %.0f msg/s while publishing", r.Received, r.ReceivedRate)
		lost := fmt.Sprintf("%d of %d expected", r.Lost, r.Expected)
		if r.Expected > 0 {
			lost += fmt.Sprintf(" (%.3f%%)", 100*float64(r.Lost)/float64(r.Expected))
		}
		if r.QoS == 0 && r.Lost > 0 {
			lost += ", QoS 0 may drop"
		}
		row("lost", "%s", lost)
		if r.Duplicates > 0 || r.Rejected > 0 || r.Foreign > 0 {
			row("anomalies", "%d duplicates, %d rejected, %d foreign", r.Duplicates, r.Rejected, r.Foreign)
		}
		row("latency (ms)", "%s", r.Latency.row())
	}
	return tw.Flush()
}

func (r *Result) describe() string {
	var b strings.Builder
	b.WriteString(r.Scenario)
	switch r.Scenario {
	case ConnStorm:
		fmt.Fprintf(&b, ", %d connections", r.Connections)
	case Idle:
		fmt.Fprintf(&b, ", %d connections, QoS %d subscriptions", r.Connections, r.QoS)
	case Takeover:
		fmt.Fprintf(&b, ", %d persistent sessions moved to the next server in turn", r.Connections)
	case StateStore:
		fmt.Fprintf(&b, ", %d clients, %d%% GET, %d B values, %d in flight per client", r.Connections, r.GetPercent, r.PayloadBytes, r.Window)
	default:
		fmt.Fprintf(&b, ", %d publishers -> %d subscribers, QoS %d, %d B payload", r.Publishers, r.Subscribers, r.QoS, r.PayloadBytes)
		if r.QoS > 0 {
			fmt.Fprintf(&b, ", window %d", r.Window)
		}
	}
	return b.String()
}

func (l Latency) row() string {
	if l.Samples == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  (mean %.3f, %d samples)",
		l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean, l.Samples)
}
