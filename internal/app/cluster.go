package app

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/edgeport/edgeport/internal/cluster"
)

// newCluster builds the cluster node (serve --cluster or --nats-url) and
// adds it to the group before the broker, which routes through it.
func (a *App) newCluster(log *slog.Logger) error {
	cfg := a.cfg.Cluster
	if cfg.NATSURL == "" {
		if a.cfg.DataDir == "" {
			return errors.New("cluster mode needs --data-dir: JetStream stores under <data-dir>/cluster")
		}
		cfg.StoreDir = filepath.Join(a.cfg.DataDir, "cluster")
	}
	node, err := cluster.New(cfg, log.With("component", "cluster"))
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	a.node = node
	a.group.Add("cluster", node)
	// Before the broker: restored sessions' subscriptions are reported to
	// it as the broker starts.
	a.router = cluster.NewRouter(node, a.broker, log.With("component", "cluster-routing"))
	a.group.Add("cluster routing", a.router)
	return nil
}

// Cluster is the cluster node, nil in single-node mode.
func (a *App) Cluster() *cluster.Node { return a.node }
