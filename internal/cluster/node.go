// Package cluster runs Edgeport as one node of a cluster on NATS: an
// embedded nats-server (routes, JetStream) or an external NATS, membership, and live routing.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/lifecycle"
)

// Defaults of Config.
const (
	DefaultClusterName = "edgeport"
	DefaultListen      = "127.0.0.1:6222"
	DefaultReplicas    = 3
	DefaultShards      = 8
	// MaxShards bounds Config.Shards: each shard is a replicated stream.
	MaxShards = 1024
)

// Config is what a node needs to join a cluster. The zero value is not
// valid: Name is set by Defaults.
type Config struct {
	// Name is this node's name, unique in the cluster (the embedded
	// server's name); default the host name.
	Name string
	// ClusterName names the cluster; every node of one cluster gives the
	// same (default "edgeport").
	ClusterName string
	// Listen is the embedded server's route address, where the other nodes
	// connect (default 127.0.0.1:6222; port 0 picks a free port).
	Listen string
	// Routes are the other nodes' route addresses (host:port or
	// nats-route://host:port). Listing every node on every node, this one
	// included, is the robust setup: JetStream sizes its first meta group
	// from them. None: this node's own address, a cluster of one that
	// others join.
	Routes []string
	// NATSURL connects to an external NATS (comma-separated URLs) instead
	// of embedding a server; Listen and Routes are then unused.
	NATSURL string
	// ClientListen, when set, opens the embedded server's NATS client port
	// (for the nats CLI); by default the node talks to it in-process only.
	ClientListen string
	// StoreDir is JetStream's directory (the data dir's "cluster").
	StoreDir string
	// Replicas is the replication factor of the streams and buckets the
	// node creates (default 3, at most 5, as JetStream allows).
	Replicas int
	// Shards is the number of session streams (default 8).
	Shards int
	// HeartbeatInterval is how often the node announces itself to the
	// others (default 1s); a member unseen for 3 intervals is unhealthy.
	HeartbeatInterval time.Duration
}

// Defaults fills the unset fields.
func (c *Config) Defaults() {
	if c.Name == "" {
		h, _ := os.Hostname()
		c.Name = h
	}
	if c.ClusterName == "" {
		c.ClusterName = DefaultClusterName
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.Shards == 0 {
		c.Shards = DefaultShards
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = time.Second
	}
}

// Validate checks c (after Defaults); errors name the serve flag.
func (c *Config) Validate() error {
	var errs []error
	if !validName(c.Name) {
		errs = append(errs, fmt.Errorf("--node-name %q: must be 1-64 letters, digits, '-', '_'", c.Name))
	}
	if !validName(c.ClusterName) {
		errs = append(errs, fmt.Errorf("cluster name %q: must be 1-64 letters, digits, '-', '_'", c.ClusterName))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas %d: must be between 1 and 5", c.Replicas))
	}
	if c.Shards < 1 || c.Shards > MaxShards {
		errs = append(errs, fmt.Errorf("shards %d: must be between 1 and %d", c.Shards, MaxShards))
	}
	if c.NATSURL == "" {
		if _, _, err := splitHostPort(c.Listen); err != nil {
			errs = append(errs, fmt.Errorf("--cluster-listen %q: %w", c.Listen, err))
		}
		for i, r := range c.Routes {
			if _, err := routeURL(r); err != nil {
				errs = append(errs, fmt.Errorf("--routes[%d] %q: %w", i, r, err))
			}
		}
		if c.ClientListen != "" {
			if _, _, err := splitHostPort(c.ClientListen); err != nil {
				errs = append(errs, fmt.Errorf("--nats-listen %q: %w", c.ClientListen, err))
			}
		}
		if c.StoreDir == "" {
			errs = append(errs, errors.New("cluster mode needs a data directory (JetStream stores under <data-dir>/cluster)"))
		}
	} else {
		for _, u := range strings.Split(c.NATSURL, ",") {
			if _, err := url.Parse(strings.TrimSpace(u)); err != nil {
				errs = append(errs, fmt.Errorf("--nats-url %q: %w", u, err))
			}
		}
	}
	return errors.Join(errs...)
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q: must be 0-65535", p)
	}
	return host, port, nil
}

// routeURL accepts host:port or a nats-route:// (or nats://) URL.
func routeURL(r string) (*url.URL, error) {
	if !strings.Contains(r, "://") {
		r = "nats-route://" + r
	}
	u, err := url.Parse(r)
	if err != nil {
		return nil, err
	}
	if u.Port() == "" {
		return nil, errors.New("needs a port")
	}
	return u, nil
}

// Node is this process's membership of the cluster: the embedded NATS
// server (or the connection to an external one), the node's NATS
// connection and JetStream context for other components, and the member
// table kept from the nodes' heartbeats.
type Node struct {
	cfg Config
	log *slog.Logger

	srv   *server.Server // embedded server; nil with an external NATS
	token string         // the embedded server's client token, new at each start
	nc    *nats.Conn     // the node's connection, shared with other components
	js    jetstream.JetStream

	members *members
	router  atomic.Pointer[Router] // set by NewRouter (possibly after Start: status requests read it concurrently)
	stop    chan struct{}          // closed by Stop: ends the heartbeat loop
	wg      sync.WaitGroup         // the heartbeat loop
	hbSub   *nats.Subscription
	syncSub *nats.Subscription
	// statusSub answers for this node's view of the meta group.
	statusSub *nats.Subscription
}

var _ lifecycle.Component = (*Node)(nil)

// New checks cfg and builds a node; nothing runs before Start.
func New(cfg Config, log *slog.Logger) (*Node, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Node{cfg: cfg, log: log}, nil
}

// Config returns the node's configuration, defaults applied.
func (n *Node) Config() Config { return n.cfg }

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Configure replaces the configuration before Start (the app merges the
// Broker resource's cluster section into the flags' here).
func (n *Node) Configure(cfg Config) error {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	n.cfg = cfg
	return nil
}

// Conn is the node's NATS connection (valid between Start and Stop).
// Components share it; one that needs different options (no echo) dials
// its own with Dial.
func (n *Node) Conn() *nats.Conn { return n.nc }

// JetStream is the node's JetStream context on Conn.
func (n *Node) JetStream() jetstream.JetStream { return n.js }

// Server is the embedded NATS server, nil with an external NATS.
func (n *Node) Server() *server.Server { return n.srv }

// RouteAddr is the embedded server's bound route address, nil with an
// external NATS or before Start.
func (n *Node) RouteAddr() net.Addr {
	if n.srv == nil {
		return nil
	}
	return n.srv.ClusterAddr()
}

// Dial opens another connection to the node's NATS (the embedded server
// in-process, or the external URL), named "<node>/<name>".
func (n *Node) Dial(name string, opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{
		nats.Name("edgeport/" + n.cfg.Name + "/" + name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
	}
	url := n.cfg.NATSURL
	if n.srv != nil {
		base = append(base, nats.InProcessServer(n.srv), nats.Token(n.token))
		url = ""
	}
	return nats.Connect(url, append(base, opts...)...)
}

// Start runs the embedded server (when not external), waits until it
// takes clients, connects, and announces the node. Start returns before
// the cluster has formed: Status says how far it has.
func (n *Node) Start(ctx context.Context) error {
	if n.cfg.NATSURL == "" {
		if err := n.startServer(ctx); err != nil {
			return err
		}
	}
	nc, err := n.Dial("node",
		nats.ConnectHandler(func(*nats.Conn) {}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				n.log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { n.log.Info("reconnected to NATS", "url", c.ConnectedUrlRedacted()) }))
	if err != nil {
		n.shutdownServer()
		return fmt.Errorf("connecting to NATS: %w", err)
	}
	n.nc = nc
	if n.js, err = jetstream.New(nc); err != nil {
		n.close()
		return fmt.Errorf("jetstream: %w", err)
	}
	n.members = newMembers(n.cfg.Name, n.cfg.HeartbeatInterval)
	if err := n.startMembership(); err != nil {
		n.close()
		return err
	}
	n.log.Info("cluster node started", "node", n.cfg.Name, "cluster", n.cfg.ClusterName, "routes", n.routeAddrString(), "external", n.cfg.NATSURL != "")
	return nil
}

func (n *Node) routeAddrString() string {
	if a := n.RouteAddr(); a != nil {
		return a.String()
	}
	return ""
}

func (n *Node) startServer(ctx context.Context) error {
	host, port, _ := splitHostPort(n.cfg.Listen)
	if port == 0 {
		port = server.RANDOM_PORT
	}
	// nats-server starts its routes only once its client port listens
	// (DontListen would leave the cluster unformed), so there always is
	// one: on loopback at a random port unless --nats-listen says, and
	// closed to anyone without the token made at each start.
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	n.token = hex.EncodeToString(tok)
	opts := &server.Options{
		ServerName:    n.cfg.Name,
		Host:          "127.0.0.1",
		Port:          server.RANDOM_PORT,
		Authorization: n.token,
		JetStream:     true,
		StoreDir:      n.cfg.StoreDir,
		NoSigs:        true,
		Cluster: server.ClusterOpts{
			Name: n.cfg.ClusterName,
			Host: host,
			Port: port,
		},
	}
	if n.cfg.ClientListen != "" {
		h, p, _ := splitHostPort(n.cfg.ClientListen)
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = h, p
	}
	routes := n.cfg.Routes
	if len(routes) == 0 {
		if port == server.RANDOM_PORT {
			return errors.New("--cluster-listen with port 0 needs --routes (JetStream needs at least one route, and a random port cannot be the node's own)")
		}
		routes = []string{n.cfg.Listen} // a cluster of one, which others join
	}
	for _, r := range routes {
		u, _ := routeURL(r) // validated
		opts.Routes = append(opts.Routes, u)
	}
	if port != server.RANDOM_PORT {
		// nats-server only logs a route port it cannot bind and waits:
		// say at once which flag to change.
		l, err := net.Listen("tcp", n.cfg.Listen)
		if err != nil {
			return fmt.Errorf("--cluster-listen %s: %w", n.cfg.Listen, err)
		}
		l.Close()
	}
	if err := os.MkdirAll(n.cfg.StoreDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", n.cfg.StoreDir, err)
	}
	if n.cfg.ClientListen != "" {
		// For the nats CLI: nats --server nats://$(cat <data-dir>/cluster/client-token)@host:port
		if err := os.WriteFile(filepath.Join(n.cfg.StoreDir, "client-token"), []byte(n.token+"\n"), 0o600); err != nil {
			return fmt.Errorf("writing the client token: %w", err)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("nats server: %w", err)
	}
	srv.SetLoggerV2(&natsLog{log: n.log.With("from", "nats-server")}, false, false, false)
	srv.Start()
	wait := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	if !srv.ReadyForConnections(wait) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("nats server not ready within %s (route address %s taken?)", wait, n.cfg.Listen)
	}
	n.srv = srv
	return nil
}

// Stop says goodbye to the other members, closes the connection and
// shuts the embedded server down (JetStream flushes its store).
func (n *Node) Stop(ctx context.Context) error {
	if n.stop != nil {
		close(n.stop)
		n.wg.Wait()
		n.stop = nil
	}
	if n.nc != nil {
		n.announce(true)
		_ = n.nc.FlushTimeout(time.Second)
	}
	n.close()
	return nil
}

func (n *Node) close() {
	if n.nc != nil {
		n.nc.Close()
		n.nc = nil
	}
	n.shutdownServer()
}

func (n *Node) shutdownServer() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// natsLog carries the embedded server's log into slog.
type natsLog struct{ log *slog.Logger }

func (l *natsLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *natsLog) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLog) Debugf(format string, v ...any)  {}
func (l *natsLog) Tracef(format string, v ...any)  {}
