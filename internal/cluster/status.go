package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Status is what `edgeport check` and /statusz show of the cluster.
type Status struct {
	Node        string `json:"node"`
	ClusterName string `json:"clusterName"`
	External    bool   `json:"external"`  // an external NATS, not embedded
	Connected   bool   `json:"connected"` // the node's NATS connection is up
	NATSURL     string `json:"natsUrl,omitempty"`
	RouteAddr   string `json:"routeAddr,omitempty"`
	// RouteAuth, RouteTLS: the embedded server's routes authenticate with
	// the cluster secret, and are mutual TLS.
	RouteAuth bool `json:"routeAuth,omitempty"`
	RouteTLS  bool `json:"routeTLS,omitempty"`
	// RouteCertNotAfter is when the route certificate in use expires.
	RouteCertNotAfter *time.Time `json:"routeCertNotAfter,omitempty"`
	// NATSTLS: the connection to an external NATS is TLS.
	NATSTLS bool     `json:"natsTLS,omitempty"`
	Members []Member `json:"members"`
	// Routes are the embedded server's route peers (server names).
	Routes    []string       `json:"routes,omitempty"`
	JetStream JetStreamState `json:"jetStream"`
	// Routing is live routing's counters; nil without a router.
	Routing  *RouterStats `json:"routing,omitempty"`
	Replicas int          `json:"replicas"`
	Shards   int          `json:"shards"`
}

// JetStreamState is the JetStream meta group as this node sees it.
type JetStreamState struct {
	Enabled bool `json:"enabled"`
	// MetaLeader is the meta group's leader ("" while there is none:
	// nothing replicated can be created or changed).
	MetaLeader  string     `json:"metaLeader"`
	ClusterSize int        `json:"clusterSize,omitempty"`
	Peers       []PeerInfo `json:"peers,omitempty"`
	Streams     int        `json:"streams"`
	Consumers   int        `json:"consumers"`
	Messages    uint64     `json:"messages"`
	Bytes       uint64     `json:"bytes"`
	// PeersFrom is the node whose view Peers is: the meta leader's (only
	// the leader tracks how far each peer is).
	PeersFrom string `json:"peersFrom,omitempty"`
	// Current: this node's copy of the meta group is caught up.
	Current bool `json:"current"`
	// Error says why the state could not be read (an external NATS
	// gives no meta group to a non-system account).
	Error string `json:"error,omitempty"`
}

// PeerInfo is one meta group peer other than the reporting node.
type PeerInfo struct {
	Name    string        `json:"name"`
	Current bool          `json:"current"` // caught up
	Offline bool          `json:"offline,omitempty"`
	Lag     uint64        `json:"lag,omitempty"` // operations behind
	Active  time.Duration `json:"activeAgoNs"`   // since last heard
}

// Healthy reports whether every member is heard from, a meta leader
// exists and every meta peer is current; the reasons when not.
func (s *Status) Healthy() (bool, []string) {
	var why []string
	if !s.Connected {
		why = append(why, "not connected to NATS")
	}
	for _, m := range s.Members {
		if !m.Healthy {
			why = append(why, "member "+m.Name+" not heard from since "+m.LastSeen.Format(time.RFC3339))
		}
	}
	switch {
	case s.JetStream.Error != "":
		why = append(why, "jetstream: "+s.JetStream.Error)
	case s.JetStream.MetaLeader == "":
		why = append(why, "jetstream has no meta leader (no quorum yet)")
	case !s.JetStream.Current:
		why = append(why, "jetstream: this node is behind the meta leader")
	}
	for _, p := range s.JetStream.Peers {
		switch {
		case p.Offline:
			why = append(why, "jetstream peer "+p.Name+" offline")
		case !p.Current:
			why = append(why, "jetstream peer "+p.Name+" lagging")
		}
	}
	return len(why) == 0, why
}

// Status reads the node's state. It may be called from any goroutine
// between Start and Stop.
func (n *Node) Status(ctx context.Context) Status {
	st := n.localStatus(ctx)
	js := &st.JetStream
	if n.srv == nil || js.MetaLeader == "" || js.MetaLeader == n.cfg.Name || n.nc == nil {
		return st
	}
	// Only the leader knows how far behind each peer is: ask it.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	msg, err := n.nc.RequestWithContext(ctx, n.statusSubject(js.MetaLeader), nil)
	var lead JetStreamState
	if err == nil {
		err = json.Unmarshal(msg.Data, &lead)
	}
	if err != nil {
		js.Peers = nil
		js.Error = fmt.Sprintf("asking the meta leader %s for its peers: %v", js.MetaLeader, err)
		return st
	}
	js.Peers, js.PeersFrom = lead.Peers, js.MetaLeader
	return st
}

// Ready says why the node cannot serve as a member of its cluster yet, nil
// when it can: its NATS connection is up and JetStream has a meta leader,
// which a node sees only once it has joined a quorum of the cluster's
// servers (nothing replicated can be written before). Unlike Status it
// asks no other node, so /readyz may call it on every probe. With an
// external NATS the meta group is not visible: JetStream answering for
// the account stands for it.
func (n *Node) Ready(ctx context.Context) error {
	nc := n.nc
	if nc == nil || !nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	if srv := n.srv; srv != nil {
		jsz, err := srv.Jsz(&server.JSzOptions{})
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		if jsz.Disabled {
			return errors.New("jetstream is not enabled")
		}
		if jsz.Meta == nil || jsz.Meta.Leader == "" {
			return errors.New("jetstream has no meta leader: the cluster has no quorum yet")
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := n.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

func (n *Node) statusSubject(name string) string {
	return "edgeport.cluster." + n.cfg.ClusterName + ".jsz." + name
}

// serveStatus answers the other nodes' requests for this node's view of
// the meta group.
func (n *Node) serveStatus(msg *nats.Msg) {
	st := n.localStatus(context.Background())
	b, _ := json.Marshal(st.JetStream)
	_ = msg.Respond(b)
}

func (n *Node) localStatus(ctx context.Context) Status {
	st := Status{Node: n.cfg.Name, ClusterName: n.cfg.ClusterName, External: n.cfg.NATSURL != "",
		Members: n.Members(), Replicas: n.cfg.Replicas, Shards: n.cfg.Shards}
	if r := n.router.Load(); r != nil {
		rs := r.Stats()
		st.Routing = &rs
	}
	if nc := n.nc; nc != nil {
		st.Connected = nc.IsConnected()
		if st.External {
			st.NATSURL = nc.ConnectedUrlRedacted()
			_, err := nc.TLSConnectionState()
			st.NATSTLS = err == nil
		}
	}
	if srv := n.srv; srv != nil {
		st.RouteAddr = n.routeAddrString()
		st.RouteAuth, st.RouteTLS = n.routeAuth, n.routeTLS
		if n.routeCert != nil {
			if c, _ := n.routeCert.GetCertificate(nil); c != nil && c.Leaf != nil {
				na := c.Leaf.NotAfter
				st.RouteCertNotAfter = &na
			}
		}
		if rz, err := srv.Routez(nil); err == nil {
			for _, r := range rz.Routes {
				if !slices.Contains(st.Routes, r.RemoteName) {
					st.Routes = append(st.Routes, r.RemoteName)
				}
			}
			slices.Sort(st.Routes)
		}
		js, err := srv.Jsz(&server.JSzOptions{})
		if err != nil {
			st.JetStream.Error = err.Error()
			return st
		}
		st.JetStream.Enabled = !js.Disabled
		st.JetStream.Current = srv.JetStreamIsCurrent()
		st.JetStream.Streams, st.JetStream.Consumers = js.Streams, js.Consumers
		st.JetStream.Messages, st.JetStream.Bytes = js.Messages, js.Bytes
		if m := js.Meta; m != nil {
			st.JetStream.MetaLeader, st.JetStream.ClusterSize = m.Leader, m.Size
			st.JetStream.PeersFrom = n.cfg.Name
			for _, p := range m.Replicas {
				st.JetStream.Peers = append(st.JetStream.Peers, PeerInfo{Name: p.Name, Current: p.Current, Offline: p.Offline, Lag: p.Lag, Active: p.Active})
			}
			slices.SortFunc(st.JetStream.Peers, func(a, b PeerInfo) int { return strings.Compare(a.Name, b.Name) })
		}
		return st
	}
	if n.js != nil {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		ai, err := n.js.AccountInfo(ctx)
		if err != nil {
			st.JetStream.Error = err.Error()
			return st
		}
		st.JetStream.Enabled, st.JetStream.Current = true, true
		st.JetStream.Streams, st.JetStream.Consumers = ai.Streams, ai.Consumers
		st.JetStream.Bytes = ai.Store
		// A non-system account sees no meta group: the leader is the
		// server that answered as JetStream's API, when it says.
		st.JetStream.MetaLeader = "(external)"
	}
	return st
}
