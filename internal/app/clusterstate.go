package app

import (
	"fmt"
	"log/slog"

	"github.com/edgeport/edgeport/internal/cluster/jsstate"
)

// newClusterState makes the broker's durable state cluster-wide on the
// cluster node's JetStream (internal/cluster/jsstate): sessions and QoS
// 1/2 deliveries in the session streams, retained messages in their
// bucket, session ownership by compare-and-set. The store is added to the
// group before the broker (which restores from it); the ownership, which
// ends sessions claimed elsewhere, is returned to be added after it. The
// local store (nil in memory) keeps the internal clients' sessions, the
// resources and the state store.
func (a *App) newClusterState(log *slog.Logger) (*jsstate.Ownership, error) {
	cfg := a.node.Config()
	cfg.Defaults()
	opts := jsstate.Options{Node: cfg.Name, Replicas: cfg.Replicas, Shards: cfg.Shards, Logger: log.With("component", "cluster state")}
	st, err := jsstate.NewStore(a.node, a.broker, a.store, opts)
	if err != nil {
		return nil, fmt.Errorf("cluster state: %w", err)
	}
	own, err := jsstate.NewOwnership(a.node, a.broker, st, opts)
	if err != nil {
		return nil, fmt.Errorf("cluster state: %w", err)
	}
	a.broker.AttachDurable(st)
	a.broker.AttachSharedRetained(st)
	a.broker.AttachOwnership(own)
	a.group.Add("cluster state", st)
	return own, nil
}
