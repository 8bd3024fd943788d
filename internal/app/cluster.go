package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/cluster/jsstate"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/lifecycle"
)

// newCluster is the whole of the app's cluster wiring (serve --cluster or
// --nats-url). Before the broker it adds, in start order:
//
//   - "cluster config": the Broker resource's spec.cluster merged into the
//     serve flags' settings (after the resources are loaded);
//   - "cluster": the node (embedded NATS server or external connection,
//     membership); stopped last of the cluster parts, its NATS connection
//     closed after everything that uses it;
//   - "cluster routing": live routing between the nodes;
//   - "state store bucket": the state store's keys on JetStream
//     (jsstate.StateBackend, newStateBucket);
//   - "cluster state": the broker's Durable and SharedRetained on
//     JetStream (jsstate.Store), started before the broker, which
//     restores from it, and stopped after it.
//
// It returns what must come after the broker, to be added by the caller
// right after it: "session ownership" (jsstate.Ownership), which ends
// sessions claimed elsewhere and is stopped before the broker. New also
// adds "cluster stopping" last (clusterStopping).
func (a *App) newCluster(log *slog.Logger) (after []namedComponent, err error) {
	cfg := a.cfg.Cluster
	if cfg.NATSURL == "" {
		if a.cfg.DataDir == "" {
			return nil, errors.New("cluster mode needs --data-dir: JetStream stores under <data-dir>/cluster")
		}
		cfg.StoreDir = filepath.Join(a.cfg.DataDir, "cluster")
	}
	node, err := cluster.New(cfg, log.With("component", "cluster"))
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	a.node = node
	// After the resources are loaded: the Broker resource's spec.cluster
	// fills what the serve flags leave unset.
	a.group.Add("cluster config", lifecycle.Hook{OnStart: func(context.Context) error {
		obj, ok := a.res.store.Get(config.Key{Kind: "Broker", Name: "default"})
		if !ok {
			return nil
		}
		spec := obj.Spec.(*config.BrokerSpec).Cluster
		if spec == nil {
			return nil
		}
		merged := mergeCluster(node.Config(), a.cfg.Cluster, spec)
		if err := node.Configure(merged); err != nil {
			return fmt.Errorf("Broker spec.cluster: %w", err)
		}
		return nil
	}})
	a.group.Add("cluster", node)
	// Before the broker: restored sessions' subscriptions are reported to
	// it as the broker starts.
	a.router = cluster.NewRouter(node, a.broker, log.With("component", "cluster-routing"))
	a.group.Add("cluster routing", a.router)
	if err := a.newStateBucket(node, log); err != nil {
		return nil, err
	}

	// The cluster state. Replicas and shards are read at its start, once
	// the Broker resource's are merged in. Internal clients' sessions
	// ($edgeport/...) stay in the local store (nil in memory): every node
	// runs its own internal clients.
	opts := jsstate.Options{
		Node:   node.Name(),
		Sizing: func() (int, int) { c := node.Config(); return c.Replicas, c.Shards },
		Logger: log.With("component", "cluster-state"),
	}
	st, err := jsstate.NewStore(node, a.broker, a.store, opts)
	if err != nil {
		return nil, fmt.Errorf("cluster state: %w", err)
	}
	own, err := jsstate.NewOwnership(node, a.broker, st, opts)
	if err != nil {
		return nil, fmt.Errorf("cluster state: %w", err)
	}
	a.broker.AttachDurable(st)
	a.broker.AttachSharedRetained(st)
	// QoS 1/2 publications durable for every node's persistent sessions
	// before their PUBACK (routed deliveries, docs/cluster.md).
	a.broker.AttachRemoteSessions(st)
	a.broker.AttachOwnership(own)
	a.clusterState, a.ownership = st, own
	a.group.Add("cluster state", st)
	return []namedComponent{{"session ownership", own}}, nil
}

// clusterStopping runs first when the app stops: from then on a write to
// JetStream waits at most jsstate.StopGrace for its acknowledgement, and
// the state store's waits end at once. The components stopping before the
// broker wait for their internal clients' writes, which complete in
// commit order behind the JetStream writes; on a node whose peers are
// gone (no quorum) those would each wait jsstate.AckTimeout.
func (a *App) clusterStopping(context.Context) error {
	a.clusterState.BeginStop()
	a.ssBucket.BeginStop()
	return nil
}

// namedComponent is a component and its name in the group.
type namedComponent struct {
	name string
	c    lifecycle.Component
}

// claimableTimeout bounds the JetStream request readiness makes in
// cluster mode: under the Helm chart's probe timeout (3 s), and a cluster
// with a quorum answers in milliseconds.
const claimableTimeout = 2 * time.Second

// clusterReady says why the node does not serve as a member of its
// cluster yet: it has not joined a quorum, or the state store's bucket
// is not made or joined yet (its requests would be answered 503).
func (a *App) clusterReady(ctx context.Context) error {
	if err := a.node.Ready(ctx); err != nil {
		return err
	}
	for _, c := range []struct {
		what  string
		ready <-chan struct{}
	}{{"the cluster state (session streams, retained bucket)", a.clusterState.Ready()}, {"session ownership", a.ownership.Ready()}} {
		select {
		case <-c.ready:
		default:
			return fmt.Errorf("%s not ready yet", c.what)
		}
	}
	// A network client's CONNECT is claimed before its CONNACK: ready
	// means a claim can be made now (a Service sends clients here), not
	// only that it could once.
	ctx, cancel := context.WithTimeout(ctx, claimableTimeout)
	defer cancel()
	if err := a.ownership.Claimable(ctx); err != nil {
		return err
	}
	if a.ssBucket != nil {
		select {
		case <-a.ssBucket.Ready():
		default:
			return errors.New("the state store's bucket is not ready yet")
		}
	}
	return nil
}

// newStateBucket builds the state store's backend in cluster mode: the
// bucket every node shares (jsstate.StateBackend), started before the
// state store, which reads it, and stopped after it. Its replication is
// read at its start, once the Broker resource's is merged in.
func (a *App) newStateBucket(node *cluster.Node, log *slog.Logger) error {
	be, err := jsstate.NewStateBackend(node, jsstate.Options{
		Node:   node.Name(),
		Sizing: func() (int, int) { c := node.Config(); return c.Replicas, c.Shards },
		Logger: log.With("component", "statestore-bucket"),
	})
	if err != nil {
		return fmt.Errorf("state store bucket: %w", err)
	}
	a.ssBucket = be
	a.group.Add("state store bucket", be)
	return nil
}

// mergeCluster fills the fields the serve flags (flags) left unset from
// the Broker resource's spec.cluster.
func mergeCluster(cur, flags cluster.Config, spec *config.BrokerCluster) cluster.Config {
	if flags.ClusterName == "" && spec.Name != "" {
		cur.ClusterName = spec.Name
	}
	if len(flags.Routes) == 0 && len(spec.Routes) > 0 {
		cur.Routes = spec.Routes
	}
	if flags.Replicas == 0 && spec.Replicas != nil {
		cur.Replicas = *spec.Replicas
	}
	if flags.Shards == 0 && spec.Shards != nil {
		cur.Shards = *spec.Shards
	}
	// Route credentials: any credential flag given wins over all of the
	// resource's (a node takes its credentials from one place); an
	// external NATS has no routes.
	given := flags.CredentialsDir != "" || flags.RouteSecretFile != "" || flags.RouteTLS != (cluster.TLSFiles{})
	if !given && flags.NATSURL == "" {
		cur.CredentialsDir, cur.RouteSecretFile = spec.CredentialsDir, spec.SecretFile
		if t := spec.TLS; t != nil {
			cur.RouteTLS = cluster.TLSFiles{CA: t.CAFile, Cert: t.CertFile, Key: t.KeyFile}
		}
	}
	return cur
}

// Cluster is the cluster node, nil in single-node mode.
func (a *App) Cluster() *cluster.Node { return a.node }
