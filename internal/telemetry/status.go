package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/broker/listener"
	"github.com/edgeport/edgeport/internal/cluster"
)

// ListenerInfo describes one MQTT listener in /statusz.
type ListenerInfo struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"` // tcp or websocket
	Address  string `json:"address"`  // bound host:port; empty while not bound
	// Configured is the address the listener is configured to bind, so
	// that an unbound listener still says where it should be.
	Configured string `json:"configured,omitempty"`
	// Error says why the listener is not bound (for example the port is in
	// use); empty when it is bound or not started yet.
	Error string `json:"error,omitempty"`
	// Admits is whom the broker admits on the listener now: "everyone"
	// (anonymous), "authenticated" or "nobody" (authentication required
	// and none configured, so every client is refused).
	Admits string `json:"admits,omitempty"`
	Path   string `json:"path,omitempty"` // websocket path
	TLS    bool   `json:"tls"`
	// Authentication and Authorization name the policies that guard the
	// listener; empty means anonymous access and no authorization policy
	// (everything allowed).
	Authentication string `json:"authentication,omitempty"`
	Authorization  string `json:"authorization,omitempty"`
}

// StorageStatus describes the data directory.
type StorageStatus struct {
	Path       string `json:"path"`
	TotalBytes uint64 `json:"totalBytes"`
	FreeBytes  uint64 `json:"freeBytes"` // available to this process's user
	Writable   bool   `json:"writable"`
	Error      string `json:"error,omitempty"`
}

// BrokerStatus is a summary of the broker's counters.
type BrokerStatus struct {
	Accepting         bool              `json:"accepting"`
	ConnectedSessions int64             `json:"connectedSessions"`
	TotalSessions     int64             `json:"totalSessions"`
	Subscriptions     int64             `json:"subscriptions"`
	RetainedMessages  int64             `json:"retainedMessages"`
	PublishesReceived uint64            `json:"publishesReceived"`
	PublishesSent     uint64            `json:"publishesSent"`
	Dropped           map[string]uint64 `json:"dropped"`
}

// Status is the document GET /statusz returns: what `edgeport check` and
// the portal need to judge an instance, in one request.
type Status struct {
	Version       string         `json:"version"`
	UptimeSeconds float64        `json:"uptimeSeconds"`
	Listeners     []ListenerInfo `json:"listeners"`
	Storage       *StorageStatus `json:"storage,omitempty"`  // nil without a data directory
	SelfTest      *ProbeStatus   `json:"selftest,omitempty"` // nil when the probe is disabled
	Broker        BrokerStatus   `json:"broker"`
	Readiness     *Readiness     `json:"readiness,omitempty"` // what /readyz says
	// Cluster is the node's view of its cluster; nil in single-node mode.
	Cluster *cluster.Status `json:"cluster,omitempty"`
	Time    time.Time       `json:"time"`
}

// StatusSource gathers a Status from the running components.
type StatusSource struct {
	Broker    *broker.Broker
	Probe     *Probe // nil when the self-test is disabled
	DataDir   string // "" when there is none
	Listeners func() []ListenerInfo
	Readiness func() Readiness // nil: not reported
	Cluster   *cluster.Node    // nil in single-node mode
}

// Status collects the current status.
func (src StatusSource) Status() Status {
	c := src.Broker.Counters()
	st := Status{
		Version:       src.Broker.Options().Version,
		UptimeSeconds: c.Uptime,
		Listeners:     []ListenerInfo{},
		Time:          time.Now().UTC(),
		Broker: BrokerStatus{
			Accepting:         src.Broker.Accepting(),
			ConnectedSessions: c.Connected,
			TotalSessions:     c.Sessions,
			Subscriptions:     c.Subscriptions,
			RetainedMessages:  c.Retained,
			PublishesReceived: c.MessagesIn,
			PublishesSent:     c.MessagesOut,
			Dropped:           c.Dropped,
		},
	}
	if src.Listeners != nil {
		st.Listeners = append(st.Listeners, src.Listeners()...)
	}
	if src.DataDir != "" {
		s := CheckStorage(src.DataDir)
		st.Storage = &s
	}
	if src.Probe != nil {
		ps := src.Probe.Status()
		st.SelfTest = &ps
	}
	if src.Readiness != nil {
		r := src.Readiness()
		st.Readiness = &r
	}
	if src.Cluster != nil {
		cs := src.Cluster.Status(context.Background())
		st.Cluster = &cs
	}
	return st
}

// ServeHTTP serves the status as JSON.
func (src StatusSource) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	body, err := json.MarshalIndent(src.Status(), "", "  ")
	if err != nil {
		http.Error(w, `{"error":"encoding status"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(body, '\n'))
}

// CheckStorage reports the size and free space of the file system holding
// dir and whether this process may create files in dir. It writes nothing:
// /statusz is polled, and a poll must not wear flash storage or touch the
// data directory of a full disk.
func CheckStorage(dir string) StorageStatus {
	s := StorageStatus{Path: dir}
	var errs []error
	total, free, err := diskSpace(dir)
	if err != nil {
		errs = append(errs, fmt.Errorf("reading free space: %w", err))
	}
	s.TotalBytes, s.FreeBytes = total, free
	if err := checkWritable(dir); err != nil {
		errs = append(errs, err)
	} else {
		s.Writable = true
	}
	if err := errors.Join(errs...); err != nil {
		s.Error = strings.ReplaceAll(err.Error(), "\n", "; ")
	}
	return s
}

// checkWritable reports why files cannot be created in dir: it is missing,
// not a directory, not writable by this process or on a read-only mount.
func checkWritable(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("not writable: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("not writable: %s is not a directory", dir)
	}
	if err := canWrite(dir); err != nil {
		return fmt.Errorf("not writable: %w", err)
	}
	return nil
}

// Readiness is the verdict of /readyz, also carried by /statusz.
//
// An instance is ready while the broker accepts connections, at least one
// MQTT listener is bound and admits clients (everyone or authenticated
// ones) — or none is configured at all — and the data directory is writable;
// in cluster mode, also while the node is connected to its cluster and
// JetStream has a meta leader (a quorum has formed). A listener that is not bound
// or admits nobody, or a store that is full, does not make it unready: a
// Kubernetes readiness probe that failed would take the pod out of its
// Service and so cut off the clients of every other port too (and the
// subscribers whose draining frees a full store). They are reported as
// degraded instead, in the body of /readyz, here and by `edgeport check`.
type Readiness struct {
	Ready    bool     `json:"ready"`
	Problems []string `json:"problems,omitempty"` // why it is not ready
	Degraded []string `json:"degraded,omitempty"` // what is not served although it is ready
}

// ReadinessSource is what BrokerReadiness judges.
type ReadinessSource struct {
	Broker    *broker.Broker
	Listeners func() []ListenerInfo // with Admits filled in
	DataDir   string                // "" when there is none
	StoreFull func() bool           // nil without a store
	// Cluster says why this node is not (yet) a serving member of its
	// cluster (cluster.Node.Ready); nil in single-node mode.
	Cluster func(context.Context) error
}

// Readiness judges the instance now (see Readiness).
func (src ReadinessSource) Readiness() Readiness {
	var r Readiness
	if !src.Broker.Accepting() {
		r.Problems = append(r.Problems, "broker is shutting down")
	}
	admitting := 0
	var ls []ListenerInfo
	if src.Listeners != nil {
		ls = src.Listeners()
	}
	for _, l := range ls {
		switch {
		case l.Address == "":
			why := "not bound"
			if l.Error != "" {
				why += ": " + l.Error
			} else if l.Configured != "" {
				why += " (" + l.Configured + ")"
			}
			r.Degraded = append(r.Degraded, fmt.Sprintf("listener %s: %s", l.Name, why))
		case l.Admits == string(broker.AdmitsNobody):
			r.Degraded = append(r.Degraded, fmt.Sprintf("listener %s (%s): admits nobody: every client is refused", l.Name, l.Address))
		default:
			admitting++
		}
	}
	switch {
	case len(ls) == 0:
		// Every MQTT port switched off (--mqtt-addr off, no BrokerListener) is
		// a choice, not a failure: internal clients, connectors, dataflows and
		// the API still run, so a probe must not restart the instance.
		r.Degraded = append(r.Degraded, "no MQTT listener is configured")
	case admitting == 0:
		r.Problems = append(r.Problems, "no MQTT listener is bound and admits clients")
	}
	if src.DataDir != "" {
		if err := checkWritable(src.DataDir); err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("data directory %s: %v", src.DataDir, err))
		}
	}
	if src.Cluster != nil {
		// A node that has not joined a quorum cannot acknowledge what
		// must be replicated: a Service must send it no client yet.
		if err := src.Cluster(context.Background()); err != nil {
			r.Problems = append(r.Problems, "cluster: "+err.Error())
		}
	}
	if src.StoreFull != nil && src.StoreFull() {
		r.Degraded = append(r.Degraded, "store is full: publishers get 0x97 quota exceeded until subscribers drain it or space is freed")
	}
	r.Ready = len(r.Problems) == 0
	return r
}

// ReadyCheck adapts the verdict to HTTPServer.AddReadyCheck: an error when
// not ready, a Degraded error when ready with something not served.
func (src ReadinessSource) ReadyCheck() func() error {
	return func() error {
		r := src.Readiness()
		if !r.Ready {
			return errors.New(strings.Join(append(r.Problems, r.Degraded...), "; "))
		}
		if len(r.Degraded) > 0 {
			return Degraded(errors.New(strings.Join(r.Degraded, "; ")))
		}
		return nil
	}
}

// DescribeListeners lists ls for Status and ReadinessSource. Listeners not
// yet started have an empty Address.
func DescribeListeners(ls []*listener.Listener) []ListenerInfo {
	out := make([]ListenerInfo, 0, len(ls))
	for _, l := range ls {
		c := l.Config()
		li := ListenerInfo{Name: c.Name, Protocol: c.Protocol, TLS: c.TLS != nil, Configured: c.Addr}
		if c.Protocol == listener.ProtocolWebSocket {
			li.Path = c.Path
		}
		if addr := l.Addr(); addr != nil {
			li.Address = addr.String()
		}
		out = append(out, li)
	}
	return out
}
