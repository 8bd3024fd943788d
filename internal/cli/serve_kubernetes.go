package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/app"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/operator"
)

// serveKubeFlags are serve's operator-mode flags.
type serveKubeFlags struct {
	enabled     bool
	kubeconfig  string
	namespace   string
	leaderElect bool
	leaseName   string
}

// serveKubernetes runs Edgeport as an operator: it waits for the leader
// Lease (meanwhile /healthz answers and /readyz says standby, so a
// Service sends the replica nothing), then starts Edgeport and applies the
// custom resources of its namespace. Losing the Lease stops Edgeport and
// ends the process with an error: another replica runs it now, and the
// restarted pod waits again.
func serveKubernetes(ctx context.Context, cfg app.Config, kf serveKubeFlags, log *slog.Logger) error {
	rc, err := operator.RESTConfig(kf.kubeconfig)
	if err != nil {
		return err
	}
	ns := kf.namespace
	if ns == "" {
		ns = operator.PodNamespace()
	}
	op, err := operator.New(operator.Options{
		Config: rc, Namespace: ns, DataDir: cfg.DataDir, Kinds: config.Builtin(), Log: log,
		LeaderElection: kf.leaderElect, LeaseName: kf.leaseName,
	})
	if err != nil {
		return err
	}
	octx, cancel := context.WithCancel(ctx)
	defer cancel()
	opDone := make(chan error, 1)
	go func() { opDone <- op.Start(octx) }()
	// On the way out the operator stops first (releasing the Lease) and
	// is waited for.
	defer func() { cancel(); <-opDone }()

	if kf.leaderElect {
		log.Info("waiting for the leader lease", "namespace", ns, "lease", kf.leaseName, "identity", op.Identity())
	}
	standby, err := startStandby(cfg.HTTPAddr)
	if err != nil {
		return err
	}
	select {
	case <-op.Elected():
	case err := <-opDone:
		opDone <- err
		_ = standby.Close()
		return err
	case <-ctx.Done():
		return standby.Close()
	}
	if err := standby.Close(); err != nil {
		return err
	}
	log.Info("leading: starting Edgeport", "namespace", ns)
	a, err := app.New(cfg, log)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	op.Attach(a.Resources())
	log.Info("edgeport started", "version", version(), "data_dir", cfg.DataDir, "namespace", ns)
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-opDone:
		opDone <- runErr
		if runErr == nil {
			runErr = errors.New("kubernetes: the operator stopped")
		}
		log.Error("stopping Edgeport: no longer the leader", "err", runErr)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	return errors.Join(runErr, a.Stop(sctx))
}

// startStandby serves /healthz (alive) and /readyz (not ready: standby) on
// the HTTP address while another replica leads; nil without an address.
func startStandby(addr string) (*http.Server, error) {
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second}
	if isOffAddr(addr) {
		return srv, nil
	}
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }
	mux.HandleFunc("/healthz", ok)
	mux.HandleFunc("/livez", ok)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "standby: another replica holds the leader lease", http.StatusServiceUnavailable)
	})
	srv.Handler = mux
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http-addr: %w", err)
	}
	go func() { _ = srv.Serve(ln) }() // ends when Close closes ln
	return srv, nil
}

func isOffAddr(addr string) bool { return addr == "" || strings.EqualFold(addr, app.Off) }
