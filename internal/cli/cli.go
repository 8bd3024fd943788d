// Package cli implements the edgeport command line: serve, bench, version
// and the management commands, as cobra commands over internal packages.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/app"
	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/broker/listener"
	"github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/otlp"
)

// Version is set at build time with -ldflags "-X .../internal/cli.Version=v1.2.3"
// (scripts/build.sh sets it from git describe).
var Version = ""

func version() string {
	bi, _ := debug.ReadBuildInfo()
	return versionOf(Version, bi)
}

// versionOf names a build, from the most to the least deliberate source:
// the version set at link time; the main module's version, which
// `go install module@v1.2.3` sets and which go build (since Go 1.24) derives
// from the VCS tag or revision (v0.0.0-20261206031500-abcdef123456+dirty);
// the VCS revision itself (12 digits, "+dirty" when the tree had changes),
// for builds whose module version says nothing; else "(devel)", which only
// a build without version control information gives (go run, -buildvcs=false).
func versionOf(ldflag string, bi *debug.BuildInfo) string {
	if ldflag != "" {
		return ldflag
	}
	if bi == nil {
		return "(devel)"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "(devel)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "+dirty"
	}
	return rev
}

// Main runs the command line and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			return int(ee)
		}
		fmt.Fprintln(stderr, "edgeport:", err)
		return 1
	}
	return 0
}

// exitError ends the process with a status after the command printed its own report.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "edgeport",
		Short:         "Edgeport: an edge IoT data platform (MQTT broker and more) in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
		// edgeport --version prints what edgeport version prints.
		Version: version(),
	}
	root.SetVersionTemplate("edgeport {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newServe(stderr), newVersion(stdout), newBench(stdout), newCheck(stdout), newState(stdout, stderr),
		newCA(stdout, stderr), newPasswd(stdout, stderr), newConnector(stdout), newApprove(stdout), newPub(), newSub(stdout), newCRDs(stdout),
		newSecret(stdout), newConfigMap(stdout), newSchema(stdout, stderr), newClusterCmd(stdout))
	addResourceCommands(root, stdout, stderr)
	return root
}

func newVersion(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(stdout, "edgeport", version())
			return nil
		},
	}
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", format)
}

func newServe(stderr io.Writer) *cobra.Command {
	cfg := app.Config{}
	var kf serveKubeFlags
	var logLevel, logFormat string
	var sysInterval time.Duration
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run Edgeport (MQTT broker, WebSocket, metrics) with zero configuration",
		Long: `Run Edgeport. With no flags it listens for MQTT on 127.0.0.1:1883, MQTT over
WebSocket on 127.0.0.1:8083/mqtt and health/metrics on 127.0.0.1:8080, keeping
data in ./edgeport-data. An address of "off" disables that listener; port 0
picks a free port (the chosen addresses are logged).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(stderr, logLevel, logFormat)
			if err != nil {
				return err
			}
			cfg.Broker.SysInterval = sysInterval
			if cfg.Cluster.NATSURL != "" {
				cfg.ClusterEnabled = true
			}
			if err := checkServeFlags(&cfg); err != nil {
				return err
			}
			cfg.Broker.Version = version()
			cfg.CheckReport = CheckReport // the portal's support bundle
			// A flag of 0 lifts its limit (the one rule in broker.Options).
			cfg.Broker.MaxQueuedBytes = broker.BoundMaxQueuedBytes.FromUser(cfg.Broker.MaxQueuedBytes)
			if sysInterval == 0 {
				cfg.Broker.SysInterval = broker.Unlimited
			}
			if kf.enabled {
				if err := clusterLeaderElection(cfg.ClusterEnabled, cmd.Flags().Changed("leader-elect"), &kf); err != nil {
					return err
				}
				ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				return serveKubernetes(ctx, cfg, kf, log)
			}
			a, err := app.New(cfg, log)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := a.Start(ctx); err != nil {
				return err
			}
			log.Info("edgeport started", "version", version(), "data_dir", cfg.DataDir)
			<-ctx.Done()
			log.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return a.Stop(sctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.MQTTAddr, "mqtt-addr", "127.0.0.1:1883", `MQTT over TCP listen address ("off" to disable)`)
	f.StringVar(&cfg.WSAddr, "ws-addr", "127.0.0.1:8083", `MQTT over WebSocket listen address ("off" to disable)`)
	f.StringVar(&cfg.WSPath, "ws-path", "/mqtt", "MQTT over WebSocket HTTP path")
	f.StringSliceVar(&cfg.WSAllowedOrigins, "ws-allowed-origins", nil, "web origins (scheme://host[:port], or *) whose pages may connect to --ws-addr; pages served from the address the browser connects to (an IP address or localhost) always may, pages of other origins get 403")
	f.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:8080", `health and metrics listen address ("off" to disable)`)
	f.StringVar(&cfg.DataDir, "data-dir", "edgeport-data", "directory for persistent data")
	f.StringVar(&cfg.ConfigDir, "config", "", "directory of resource files (*.yaml, *.yml) applied at start and whenever they change")
	f.StringVar(&cfg.HTTPTLSCert, "http-tls-cert", "", "PEM certificate: serve --http-addr (API, portal, metrics) over HTTPS; reloaded when it changes (with --http-tls-key)")
	f.StringVar(&cfg.HTTPTLSKey, "http-tls-key", "", "PEM private key of --http-tls-cert")
	f.BoolVar(&cfg.HTTPTLSAuto, "http-tls-auto", false, "serve --http-addr over HTTPS with a certificate issued by the data directory's CA (edgeport ca export gives clients the CA)")
	f.BoolVar(&cfg.APIRequireToken, "api-require-token", false, "require the REST API's bearer token even on a loopback HTTP address (always required on other addresses)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.DurationVar(&sysInterval, "sys-interval", broker.DefaultSysInterval, "$SYS statistics publish interval (0 disables)")
	f.DurationVar(&cfg.SelfTestInterval, "selftest-interval", 5*time.Second, "self-test probe interval: publish and receive through the broker, measuring latency (0 disables)")
	f.IntVar(&cfg.Broker.MaxPacketSize, "max-packet-size", broker.DefaultMaxPacketSize, "largest MQTT packet accepted, in bytes")
	f.IntVar(&cfg.Broker.MaxQueuedMessages, "max-queued-messages", broker.DefaultMaxQueuedMessages, "messages queued per session before the queue policy drops")
	f.StringVar((*string)(&cfg.Store.Sync), "sync-policy", "batch", "when a QoS 1/2 message counts as stored: always (fsync each commit), batch (group commit, kill -9 safe), none (UNSAFE: no fsync)")
	f.Int64Var(&cfg.Store.QuotaBytes, "storage-quota", 0, "disk quota for the store in bytes; QoS 1/2 publishes beyond it are refused with 0x97 (0 = unlimited)")
	f.Int64Var(&cfg.Store.ReserveBytes, "storage-reserve", 0, "free space in bytes kept on the data directory's file system: below it QoS 1/2 publishes are refused with 0x97 and retained QoS 0 ones dropped, and half of it is held in a reserve file released if the disk fills anyway (0 = 32 MiB, or a twentieth of a smaller file system; -1 = off)")
	f.BoolVar(&cfg.AllowAnonymous, "allow-anonymous", false, "admit unauthenticated clients on --mqtt-addr/--ws-addr even when they are not on loopback (by default such listeners refuse everyone)")
	f.BoolVar(&cfg.InMemory, "in-memory", false, "keep all state in memory (nothing survives a restart)")
	f.StringVar(&cfg.OTLP.Endpoint, "otlp-endpoint", "", "push metrics (the names /metrics serves) and logs to an OpenTelemetry collector: host:port for OTLP/gRPC (e.g. otel:4317) or an http(s):// URL for OTLP/HTTP (e.g. http://otel:4318); a Broker resource's spec.diagnostics.otlp replaces it")
	f.StringVar(&cfg.OTLP.Protocol, "otlp-protocol", "", "grpc or http (default: what --otlp-endpoint's form implies)")
	f.DurationVar(&cfg.OTLP.Interval, "otlp-interval", 15*time.Second, "how often metrics are pushed to --otlp-endpoint")
	f.StringToStringVar(&cfg.OTLP.Headers, "otlp-header", nil, "header sent with every OTLP export, as key=value (repeatable)")
	f.StringVar(&cfg.OTLP.LogLevel, "otlp-log-level", "info", "lowest level of the log records pushed to --otlp-endpoint (debug, info, warn, error, or off)")
	f.Int64Var(&cfg.Broker.MaxQueuedBytes, "max-queued-bytes", 0, "payload bytes queued per session before the queue policy drops (0 = unlimited)")
	f.IntVar(&cfg.Broker.MaxInflight, "max-inflight", broker.DefaultMaxInflight, "unacknowledged QoS 1/2 deliveries per session")
	f.BoolVar(&cfg.ClusterEnabled, "cluster", false, "run as a node of a cluster: an embedded NATS server with routes to the other nodes and JetStream storing under <data-dir>/cluster (see docs/cluster.md)")
	f.StringVar(&cfg.Cluster.NATSURL, "nats-url", "", "run as a node of a cluster on this external NATS (comma-separated URLs) instead of an embedded server; implies --cluster")
	f.StringVar(&cfg.Cluster.Name, "node-name", "", "with --cluster: this node's name, unique in the cluster (default the host name)")
	f.StringVar(&cfg.Cluster.ClusterName, "cluster-name", "", "with --cluster: the cluster's name, the same on every node (default edgeport; a Broker resource's spec.cluster.name when set)")
	f.StringVar(&cfg.Cluster.Listen, "cluster-listen", cluster.DefaultListen, "with --cluster: the embedded NATS server's route address, where the other nodes connect")
	f.StringSliceVar(&cfg.Cluster.Routes, "routes", nil, "with --cluster: route addresses (host:port) of the cluster's nodes; list every node, this one included (default: this node's own, a cluster of one that others join)")
	f.StringVar(&cfg.Cluster.ClientListen, "nats-listen", "", "with --cluster: also open the embedded NATS server's client port here, on loopback (for the nats CLI; default none)")
	f.IntVar(&cfg.Cluster.Replicas, "cluster-replicas", 0, "with --cluster: replication of the JetStream streams and buckets (default 3)")
	f.StringVar(&cfg.Cluster.CredentialsDir, "cluster-credentials", "", "with --cluster: this node's route credentials directory from `edgeport cluster init` (secret, ca.crt, tls.crt, tls.key); stands for the four flags below")
	f.StringVar(&cfg.Cluster.RouteSecretFile, "cluster-secret-file", "", "with --cluster: file holding the cluster's shared secret, which routes authenticate with (required, with route TLS, when --cluster-listen is not on loopback)")
	f.StringVar(&cfg.Cluster.RouteTLS.CA, "cluster-tls-ca", "", "with --cluster: PEM file of the cluster CA that every node's route certificate must chain to")
	f.StringVar(&cfg.Cluster.RouteTLS.Cert, "cluster-tls-cert", "", "with --cluster: PEM certificate of this node's routes (server and client authentication, DNS name "+cluster.RouteTLSName+"); reloaded when it changes")
	f.StringVar(&cfg.Cluster.RouteTLS.Key, "cluster-tls-key", "", "with --cluster: PEM private key of --cluster-tls-cert")
	f.StringVar(&cfg.Cluster.NATSAuth.User, "nats-user", "", "with --nats-url: user name (with --nats-password-file)")
	f.StringVar(&cfg.Cluster.NATSAuth.PasswordFile, "nats-password-file", "", "with --nats-url: file holding --nats-user's password")
	f.StringVar(&cfg.Cluster.NATSAuth.TokenFile, "nats-token-file", "", "with --nats-url: file holding the authentication token")
	f.StringVar(&cfg.Cluster.NATSAuth.NKeyFile, "nats-nkey", "", "with --nats-url: file holding an NKey seed to authenticate with")
	f.StringVar(&cfg.Cluster.NATSAuth.CredsFile, "nats-creds", "", "with --nats-url: user credentials file (JWT and NKey seed, as nsc makes it)")
	f.StringVar(&cfg.Cluster.NATSAuth.TLS.CA, "nats-tls-ca", "", "with --nats-url: PEM CA file to verify the NATS server with (default the system's); a NATS not on loopback is reached over TLS only")
	f.StringVar(&cfg.Cluster.NATSAuth.TLS.Cert, "nats-tls-cert", "", "with --nats-url: PEM client certificate, for a server that asks for one (with --nats-tls-key)")
	f.StringVar(&cfg.Cluster.NATSAuth.TLS.Key, "nats-tls-key", "", "with --nats-url: PEM private key of --nats-tls-cert")
	f.BoolVar(&kf.enabled, "kubernetes", false, "operator mode: apply the edgeport.io custom resources of --namespace (and the Secrets and ConfigMaps they reference) and write their status")
	f.StringVar(&kf.kubeconfig, "kubeconfig", "", "with --kubernetes: kubeconfig file (default $KUBECONFIG, else the pod's service account)")
	f.StringVar(&kf.namespace, "namespace", "", "with --kubernetes: namespace to watch (default the pod's: $POD_NAMESPACE or the service account's)")
	f.BoolVar(&kf.leaderElect, "leader-elect", true, "with --kubernetes: take a Lease so that one replica runs Edgeport and the others wait (not ready) until it stops; off with --cluster, where every replica serves")
	f.StringVar(&kf.leaseName, "lease-name", "edgeport", "with --kubernetes: name of the leader Lease")
	return cmd
}

// checkServeFlags validates serve's flags so that every error names the flag.
// clusterLeaderElection turns operator mode's leader election off for a
// cluster node: every replica of a cluster serves (a standby replica
// would never start its node, and the cluster would lack its quorum).
// Each replica then applies the resources to its own node and writes
// their status. --leader-elect=true given with --cluster is refused.
func clusterLeaderElection(clustered, given bool, kf *serveKubeFlags) error {
	if !clustered || !kf.leaderElect {
		return nil
	}
	if given {
		return errors.New("--leader-elect: a cluster node (--cluster or --nats-url) cannot wait on the leader lease: every node of a cluster serves; use --leader-elect=false")
	}
	kf.leaderElect = false
	return nil
}

func checkServeFlags(cfg *app.Config) error {
	var errs []error
	addr := func(flag, v string) {
		if strings.EqualFold(v, app.Off) {
			return
		}
		host, port, err := net.SplitHostPort(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %q is not host:port or off", flag, v))
			return
		}
		if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("--%s: port %q must be a number from 0 to 65535", flag, port))
		}
		if host != "" && net.ParseIP(host) == nil && host != "localhost" {
			errs = append(errs, fmt.Errorf("--%s: host %q must be an IP address or localhost", flag, host))
		}
	}
	addr("mqtt-addr", cfg.MQTTAddr)
	addr("ws-addr", cfg.WSAddr)
	addr("http-addr", cfg.HTTPAddr)
	if (cfg.HTTPTLSCert == "") != (cfg.HTTPTLSKey == "") {
		errs = append(errs, errors.New("--http-tls-cert and --http-tls-key: give both or neither"))
	}
	if cfg.HTTPTLSAuto && cfg.HTTPTLSCert != "" {
		errs = append(errs, errors.New("--http-tls-auto: excludes --http-tls-cert"))
	}
	if !strings.HasPrefix(cfg.WSPath, "/") {
		errs = append(errs, fmt.Errorf("--ws-path: %q must start with /", cfg.WSPath))
	}
	if _, err := listener.CheckOrigins(cfg.WSAllowedOrigins); err != nil {
		errs = append(errs, fmt.Errorf("--ws-allowed-origins: %w", err))
	}
	// The broker's bounds, as the Broker resource checks them.
	bound := func(b broker.Bound, v int64) {
		if err := b.Check(v); err != nil {
			errs = append(errs, fmt.Errorf("--%s: %d %w", b.Flag, v, err))
		}
	}
	bound(broker.BoundMaxPacketSize, int64(cfg.Broker.MaxPacketSize))
	bound(broker.BoundMaxInflight, int64(cfg.Broker.MaxInflight))
	bound(broker.BoundMaxQueuedMessages, int64(cfg.Broker.MaxQueuedMessages))
	bound(broker.BoundMaxQueuedBytes, cfg.Broker.MaxQueuedBytes)
	if iv := cfg.Broker.SysInterval; iv < 0 || iv > time.Duration(broker.BoundSysInterval.Max)*time.Second {
		errs = append(errs, fmt.Errorf("--%s: %v must be between 0 (off) and %ds", broker.BoundSysInterval.Flag, iv, broker.BoundSysInterval.Max))
	}
	switch cfg.Store.Sync {
	case "always", "batch", "none":
	default:
		errs = append(errs, fmt.Errorf("--sync-policy: %q is not always, batch or none", cfg.Store.Sync))
	}
	if cfg.Store.QuotaBytes < 0 {
		errs = append(errs, errors.New("--storage-quota: must not be negative"))
	}
	if cfg.SelfTestInterval < 0 {
		errs = append(errs, errors.New("--selftest-interval: must not be negative"))
	}
	if cfg.DataDir == "" {
		errs = append(errs, errors.New("--data-dir: must not be empty"))
	}
	if cfg.OTLP.Endpoint != "" {
		if _, _, _, err := otlp.Resolve(cfg.OTLP.Endpoint, cfg.OTLP.Protocol, false); err != nil {
			errs = append(errs, fmt.Errorf("--otlp-endpoint: %w", err))
		}
		if p := strings.ToLower(cfg.OTLP.Protocol); p != "" && p != otlp.ProtocolGRPC && p != otlp.ProtocolHTTP {
			errs = append(errs, fmt.Errorf("--otlp-protocol: %q is not grpc or http", cfg.OTLP.Protocol))
		}
		if cfg.OTLP.Interval <= 0 {
			errs = append(errs, errors.New("--otlp-interval: must be positive"))
		}
	}
	if cfg.ConfigDir != "" {
		if fi, err := os.Stat(cfg.ConfigDir); err != nil {
			errs = append(errs, fmt.Errorf("--config: %w", err))
		} else if !fi.IsDir() {
			errs = append(errs, fmt.Errorf("--config: %s is not a directory", cfg.ConfigDir))
		}
	}
	return errors.Join(errs...)
}
