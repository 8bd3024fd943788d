package telemetry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/broker/listener"
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
	Time          time.Time      `json:"time"`
}

// StatusSource gathers a Status from the running components.
type StatusSource struct {
	Broker    *broker.Broker
	Probe     *Probe // nil when the self-test is disabled
	DataDir   string // "" when there is none
	Listeners func() []ListenerInfo
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

// BrokerReadyCheck returns a readiness check that fails while the broker is
// not accepting connections or a listener is not bound.
func BrokerReadyCheck(b *broker.Broker, listeners func() []ListenerInfo) func() error {
	return func() error {
		if !b.Accepting() {
			return errors.New("broker is shutting down")
		}
		var unbound []string
		if listeners != nil {
			for _, l := range listeners() {
				if l.Address == "" {
					unbound = append(unbound, l.Name)
				}
			}
		}
		if len(unbound) > 0 {
			return fmt.Errorf("listeners not bound: %s", strings.Join(unbound, ", "))
		}
		return nil
	}
}

// DescribeListeners lists ls for Status and BrokerReadyCheck. Listeners not
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
