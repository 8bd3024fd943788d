// Package cluster runs Edgeport as one node of a cluster on NATS: an
// embedded nats-server (routes, JetStream) or an external NATS, membership, and live routing.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
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
	"github.com/edgeport/edgeport/internal/pki"
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
	// CredentialsDir is a node's route credentials directory, as
	// InitCredentials makes it (secret, ca.crt, tls.crt, tls.key): it fills
	// RouteSecretFile and RouteTLS where they are unset.
	CredentialsDir string
	// RouteSecretFile holds the cluster's shared secret: routes
	// authenticate with it (nats-server's cluster authorization), and a
	// node without it is refused.
	RouteSecretFile string
	// RouteTLS encrypts routes with mutual TLS: each node presents its
	// certificate and verifies the other's against the cluster CA. A
	// route listener that is not on loopback needs both RouteSecretFile
	// and RouteTLS.
	RouteTLS TLSFiles
	// NATSURL connects to an external NATS (comma-separated URLs) instead
	// of embedding a server; Listen and Routes are then unused.
	NATSURL string
	// NATSAuth authenticates to the external NATS and sets its TLS.
	NATSAuth NATSAuth
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
	if d := c.CredentialsDir; d != "" {
		fill := func(p *string, name string) {
			if *p == "" {
				*p = filepath.Join(d, name)
			}
		}
		fill(&c.RouteSecretFile, SecretFileName)
		fill(&c.RouteTLS.CA, CAFileName)
		fill(&c.RouteTLS.Cert, CertFileName)
		fill(&c.RouteTLS.Key, KeyFileName)
	}
}

// NATSAuth is how a node authenticates to an external NATS: at most one of
// a user and password, a token, an NKey seed or a credentials (JWT) file,
// each read from a file so that no secret is on a command line; and TLS:
// the CA to verify the server with (default the system's) and a client
// certificate when the server asks for one. A NATS URL that is not on
// loopback must be reached over TLS.
type NATSAuth struct {
	User         string
	PasswordFile string
	TokenFile    string
	NKeyFile     string // an NKey seed (nsc's .nk file)
	CredsFile    string // a user credentials file (JWT and NKey seed)
	TLS          TLSFiles
}

func (a NATSAuth) set() bool { return a != NATSAuth{} }

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
			if u, err := routeURL(r); err != nil {
				errs = append(errs, fmt.Errorf("--routes[%d] %q: %w", i, redactURLs(r), err))
			} else if u.User != nil {
				errs = append(errs, fmt.Errorf("--routes[%d]: a route address takes no credentials (they would show in logs and process lists): use --cluster-secret-file", i))
			}
		}
		errs = append(errs, c.validateRouteSecurity()...)
		if c.NATSAuth.set() {
			errs = append(errs, errors.New("--nats-user, --nats-password-file, --nats-token-file, --nats-nkey, --nats-creds and --nats-tls-* are for an external NATS (--nats-url)"))
		}
		if c.ClientListen != "" {
			if host, _, err := splitHostPort(c.ClientListen); err != nil {
				errs = append(errs, fmt.Errorf("--nats-listen %q: %w", c.ClientListen, err))
			} else if !isLoopback(host) {
				// Its token would cross the network in the clear.
				errs = append(errs, fmt.Errorf("--nats-listen %s: the embedded server's NATS client port is plain TCP with a token, so it listens on loopback only (reach it from elsewhere through ssh -L or kubectl port-forward)", c.ClientListen))
			}
		}
		if c.StoreDir == "" {
			errs = append(errs, errors.New("cluster mode needs a data directory (JetStream stores under <data-dir>/cluster)"))
		}
	} else {
		for i, u := range strings.Split(c.NATSURL, ",") {
			u = strings.TrimSpace(u)
			if at := strings.LastIndex(u, "@"); at >= 0 && !strings.Contains(u[:at], "://") {
				// The end of a password with a comma, which splits the
				// list as nats.go splits it; not echoed.
				errs = append(errs, fmt.Errorf("--nats-url: URL %d has credentials but no scheme (a comma in a password? use --nats-password-file)", i+1))
			} else if _, err := url.Parse(u); err != nil {
				// url.Parse's error quotes the URL, which may hold a password.
				errs = append(errs, fmt.Errorf("--nats-url: URL %d is not a URL", i+1))
			}
		}
		errs = append(errs, c.NATSAuth.validate()...)
		if c.CredentialsDir != "" || c.RouteSecretFile != "" || c.RouteTLS.set() {
			errs = append(errs, errors.New("--cluster-credentials, --cluster-secret-file and --cluster-tls-* secure the embedded server's routes: with --nats-url, use --nats-tls-* and the NATS credential flags"))
		}
	}
	return errors.Join(errs...)
}

// validateRouteSecurity: route TLS comes whole. Errors name the serve
// flags and the Broker resource's fields.
func (c *Config) validateRouteSecurity() []error {
	if c.RouteTLS.set() && !c.RouteTLS.full() {
		return []error{errors.New("--cluster-tls-ca, --cluster-tls-cert and --cluster-tls-key go together (spec.cluster.tls.caFile, certFile, keyFile)")}
	}
	return nil
}

// checkExposure refuses routes that cross the network — a route listener
// reachable from other machines, or a route to another machine (which
// would carry the secret in the clear, to whoever answers there) —
// without the secret and TLS. It runs at Start, on the configuration the
// Broker resource may have completed after New.
func (c *Config) checkExposure() error {
	var what string
	if host, _, err := splitHostPort(c.Listen); err == nil && !isLoopback(host) {
		what = fmt.Sprintf("--cluster-listen %s is reachable from other machines", c.Listen)
	} else {
		for i, r := range c.Routes {
			if u, err := routeURL(r); err == nil && !isLoopback(u.Hostname()) {
				what = fmt.Sprintf("--routes[%d] %s is on another machine", i, u.Host)
				break
			}
		}
	}
	if what == "" {
		return nil
	}
	var missing []string
	if c.RouteSecretFile == "" {
		missing = append(missing, "--cluster-secret-file (spec.cluster.secretFile)")
	}
	if !c.RouteTLS.full() {
		missing = append(missing, "--cluster-tls-ca, --cluster-tls-cert and --cluster-tls-key (spec.cluster.tls)")
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%s, so routes must be authenticated and encrypted: missing %s; --cluster-credentials <dir> (spec.cluster.credentialsDir) gives all of them from `edgeport cluster init` (docs/cluster.md)",
		what, strings.Join(missing, " and "))
}

func (a NATSAuth) validate() []error {
	var errs []error
	n := 0
	for _, v := range []string{a.PasswordFile, a.TokenFile, a.NKeyFile, a.CredsFile} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		errs = append(errs, errors.New("--nats-password-file, --nats-token-file, --nats-nkey and --nats-creds: give at most one"))
	}
	if (a.User == "") != (a.PasswordFile == "") {
		errs = append(errs, errors.New("--nats-user and --nats-password-file go together"))
	}
	if (a.TLS.Cert == "") != (a.TLS.Key == "") {
		errs = append(errs, errors.New("--nats-tls-cert and --nats-tls-key go together"))
	}
	return errs
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
	// extOpts are the external NATS's credential and TLS options, read
	// from their files at Start (nil with the embedded server).
	extOpts []nats.Option
	// routeAuth, routeTLS: how the embedded server's routes are secured
	// (set at Start, read by Status).
	routeAuth, routeTLS bool
	routeCert           *pki.FileCert // the route certificate (reloaded from its files); nil without route TLS
	nc                  *nats.Conn    // the node's connection, shared with other components
	// probe is nc while it is open, for Lost, which other components'
	// goroutines call while the node may be stopping.
	probe atomic.Pointer[nats.Conn]
	js    jetstream.JetStream

	members *members
	router  atomic.Pointer[Router] // set by NewRouter (possibly after Start: status requests read it concurrently)
	stop    chan struct{}          // closed by Stop: ends the heartbeat loop
	wg      sync.WaitGroup         // the heartbeat loop
	hbSub   *nats.Subscription
	// beatRoute is the route address the heartbeats carry, fixed when
	// membership starts: the heartbeat handler may still run while Stop
	// shuts the server down.
	beatRoute string
	syncSub   *nats.Subscription
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
	} else {
		base = append(base, n.extOpts...)
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil && n.srv == nil {
		// nats.go's errors never carry the URL's credentials; say which
		// servers, redacted, and what to change.
		hint := ""
		switch {
		case errors.Is(err, nats.ErrSecureConnRequired):
			hint = " (a NATS not on loopback is reached over TLS only: enable TLS on the server, and --nats-tls-ca if its CA is not a system one)"
		case errors.Is(err, nats.ErrAuthorization):
			hint = " (check --nats-user/--nats-password-file, --nats-token-file, --nats-nkey or --nats-creds)"
		case strings.Contains(err.Error(), "tls"):
			hint = " (check --nats-tls-ca, and --nats-tls-cert/--nats-tls-key when the server asks for a client certificate)"
		}
		return nil, fmt.Errorf("NATS at %s: %w%s", redactURLs(url), err, hint)
	}
	return nc, err
}

// externalOptions reads the external NATS's credentials and builds the
// connection options: secrets are read here, once, and kept only in the
// options.
func (n *Node) externalOptions() ([]nats.Option, error) {
	a := n.cfg.NATSAuth
	var opts []nats.Option
	switch {
	case a.PasswordFile != "":
		pw, err := readSecret("--nats-password-file", a.PasswordFile, 1)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfo(a.User, pw))
	case a.TokenFile != "":
		tok, err := readSecret("--nats-token-file", a.TokenFile, 1)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Token(tok))
	case a.NKeyFile != "":
		o, err := nats.NkeyOptionFromSeed(a.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey %s: %w", a.NKeyFile, err)
		}
		opts = append(opts, o)
	case a.CredsFile != "":
		if _, err := os.Stat(a.CredsFile); err != nil {
			return nil, fmt.Errorf("--nats-creds: %w", err)
		}
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	}
	if a.TLS.CA != "" {
		if _, err := loadPool(a.TLS.CA); err != nil {
			return nil, fmt.Errorf("--nats-tls-ca: %w", err)
		}
		opts = append(opts, nats.RootCAs(a.TLS.CA))
	}
	if a.TLS.Cert != "" {
		if _, err := tls.LoadX509KeyPair(a.TLS.Cert, a.TLS.Key); err != nil {
			return nil, fmt.Errorf("--nats-tls-cert/--nats-tls-key: %w", err)
		}
		opts = append(opts, nats.ClientCert(a.TLS.Cert, a.TLS.Key))
	}
	if natsNeedsTLS(n.cfg.NATSURL) {
		opts = append(opts, nats.Secure())
	}
	return opts, nil
}

// natsNeedsTLS: an external NATS any of whose URLs is not on loopback is
// reached over TLS only (nats.go then refuses a server that does not
// offer it, on every reconnect too).
func natsNeedsTLS(urls string) bool {
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		p, err := url.Parse(u)
		if err != nil || !isLoopback(p.Hostname()) {
			return true
		}
	}
	return false
}

// Start runs the embedded server (when not external), waits until it
// takes clients, connects, and announces the node. Start returns before
// the cluster has formed: Status says how far it has.
func (n *Node) Start(ctx context.Context) error {
	if n.cfg.NATSURL == "" {
		if err := n.startServer(ctx); err != nil {
			return err
		}
	} else {
		opts, err := n.externalOptions()
		if err != nil {
			return err
		}
		n.extOpts = opts
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
	n.probe.Store(nc)
	if n.js, err = jetstream.New(nc); err != nil {
		n.close()
		return fmt.Errorf("jetstream: %w", err)
	}
	n.members = newMembers(n.cfg.Name, n.cfg.HeartbeatInterval)
	if err := n.startMembership(); err != nil {
		n.close()
		return err
	}
	n.log.Info("cluster node started", "node", n.cfg.Name, "cluster", n.cfg.ClusterName, "routes", n.routeAddrString(), "external", n.cfg.NATSURL != "",
		"route_tls", n.routeTLS, "route_auth", n.routeAuth)
	return nil
}

func (n *Node) routeAddrString() string {
	if a := n.RouteAddr(); a != nil {
		return a.String()
	}
	return ""
}

func (n *Node) startServer(ctx context.Context) error {
	if err := n.cfg.checkExposure(); err != nil {
		return err
	}
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
	// Route security. The secret is the password of nats-server's cluster
	// authorization, also put in the URLs of the routes this node dials
	// (nats-server logs route addresses without their user part, and
	// routes it learns by gossip take the password from its options).
	var secret string
	if f := n.cfg.RouteSecretFile; f != "" {
		var err error
		if secret, err = readSecret("--cluster-secret-file", f, minSecretLen); err != nil {
			return err
		}
		opts.Cluster.Username, opts.Cluster.Password = routeUser, secret
	}
	if n.cfg.RouteTLS.full() {
		tc, cert, err := routeTLSConfig(n.cfg.RouteTLS, pki.WatchOptions{Log: n.log})
		if err != nil {
			return err
		}
		n.routeCert = cert
		opts.Cluster.TLSConfig = tc
		// nats-server's default (2 s) is short for a loaded machine.
		opts.Cluster.TLSTimeout = 5
	}
	for _, r := range routes {
		u, _ := routeURL(r) // validated
		if secret != "" {
			u.User = url.UserPassword(routeUser, secret)
		}
		opts.Routes = append(opts.Routes, u)
	}
	n.routeAuth, n.routeTLS = secret != "", opts.Cluster.TLSConfig != nil
	if !n.routeAuth && !n.routeTLS {
		n.log.Info("cluster routes are neither authenticated nor encrypted: the route listener is on loopback; give --cluster-credentials to secure them", "listen", n.cfg.Listen)
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
	nlog := &natsLog{log: n.log.With("from", "nats-server")}
	srv.SetLoggerV2(nlog, false, false, false)
	srv.Start()
	wait := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	// nats-server goes on waiting for a listener it failed to bind
	// (it reports that as fatal and its own binary exits): poll, so that
	// such a failure ends the start at once with nats-server's reason.
	var fatal string
	for end := time.Now().Add(wait); ; {
		if srv.ReadyForConnections(100 * time.Millisecond) {
			break
		}
		if fatal = nlog.firstFatal(); fatal != "" || time.Now().After(end) {
			srv.Shutdown()
			srv.WaitForShutdown()
			if fatal != "" {
				return fmt.Errorf("nats server: %s", fatal)
			}
			return fmt.Errorf("nats server not ready within %s", wait)
		}
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
		n.probe.Store(nil)
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
type natsLog struct {
	log *slog.Logger

	mu    sync.Mutex // guards fatal
	fatal string     // the first fatal error nats-server reported
}

// firstFatal is the first error nats-server called fatal: as a library it
// logs it and carries on, not ready, where its own binary would exit.
func (l *natsLog) firstFatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}

func (l *natsLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *natsLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.mu.Lock()
	if l.fatal == "" {
		l.fatal = msg
	}
	l.mu.Unlock()
	l.log.Error(msg)
}
func (l *natsLog) Errorf(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLog) Debugf(format string, v ...any) {}
func (l *natsLog) Tracef(format string, v ...any) {}
