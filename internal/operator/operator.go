// Package operator runs Edgeport as a Kubernetes operator: it watches the
// edgeport.io custom resources of one namespace and applies them to the resource store.
package operator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/crd"
)

// Options configure an Operator.
type Options struct {
	// Config reaches the API server (RESTConfig builds one).
	Config *rest.Config
	// Namespace is the one namespace whose resources are applied.
	Namespace string
	// DataDir is the data directory of the Edgeport it drives: Secrets and
	// ConfigMaps that resources reference are written under
	// DataDir/secrets/<name>/ and DataDir/configmaps/<name>/, where the
	// single-machine code reads (and watches) them.
	DataDir string
	Kinds   *config.Kinds
	Log     *slog.Logger // nil discards

	// LeaderElection makes replicas take a Lease (named LeaseName) so that
	// one of them runs Edgeport and the others wait.
	LeaderElection bool
	LeaseName      string        // default "edgeport"
	Identity       string        // default host name plus a random suffix
	LeaseDuration  time.Duration // default 15s
	RenewDeadline  time.Duration // default 10s
	RetryPeriod    time.Duration // default 2s
	// StatusInterval bounds how often a status that only counts (samples,
	// messages) is written to the API server; a changed condition or
	// generation is written at once. Default 10s.
	StatusInterval time.Duration
}

// DefaultLeaseName is the Lease replicas compete for.
const DefaultLeaseName = "edgeport"

// Source is the value of the edgeport.io/config-file annotation of
// resources applied from Kubernetes; the store refuses REST API changes
// to them (Kubernetes is their source of truth).
func Source(namespace, kind, name string) string {
	return "kubernetes:" + namespace + "/" + kind + "/" + name
}

// RESTConfig returns the configuration of the API server: the kubeconfig
// file when one is given (or $KUBECONFIG is set), else the pod's
// in-cluster service account.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" && os.Getenv("KUBECONFIG") == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes: not in a pod (%w); give --kubeconfig", err)
		}
		return c, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	c, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	return c, nil
}

// PodNamespace is the namespace of the pod Edgeport runs in: $POD_NAMESPACE
// (the chart sets it from the downward API), else the service account's
// namespace file, else "default".
func PodNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
		if ns := strings.TrimSpace(string(b)); ns != "" {
			return ns
		}
	}
	return "default"
}

// Operator keeps the resource store of one Edgeport in step with the
// custom resources of a namespace, and their status in step with the
// store. It is built on controller-runtime: a manager (shared cache,
// leader election) with one controller per kind and one each for Secrets
// and ConfigMaps.
type Operator struct {
	o   Options
	log *slog.Logger
	mgr manager.Manager
	c   client.Client // the manager's: reads from the cache, writes to the API server

	storeSet  chan struct{} // closed by Attach
	storeOnce sync.Once
	store     *config.Store // set once, before storeSet is closed

	// applyMu serializes the reconcilers' changes to the store with the
	// mirror syncs that go with them. A Secret's sync that ran between a
	// resource's own sync and its Apply saw a store without the resource,
	// and removed the files it was about to reference: its TLS port then
	// failed on a missing tls.crt, and nothing wrote the file again
	// (TestSecretRotationReloadsListener, 2 runs in 15).
	applyMu sync.Mutex
	mirror  *mirror
	status  *statusWriter
	events  recorder.EventRecorder // Events on the custom resources (events.go)
}

var setLoggersOnce sync.Once

// New builds the operator; Start runs it.
func New(o Options) (*Operator, error) {
	if o.Config == nil || o.Namespace == "" || o.Kinds == nil {
		return nil, errors.New("operator: Config, Namespace and Kinds are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.LeaseName == "" {
		o.LeaseName = DefaultLeaseName
	}
	if o.Identity == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		o.Identity = host + "_" + hex.EncodeToString(b[:])
	}
	if o.LeaseDuration == 0 {
		o.LeaseDuration = 15 * time.Second
	}
	if o.RenewDeadline == 0 {
		o.RenewDeadline = 10 * time.Second
	}
	if o.RetryPeriod == 0 {
		o.RetryPeriod = 2 * time.Second
	}
	if o.StatusInterval == 0 {
		o.StatusInterval = 10 * time.Second
	}
	lg := logr.FromSlogHandler(o.Log.With("component", "kubernetes").Handler())
	// client-go logs through klog and controller-runtime through its
	// package logger: both are process-wide, set once to the first
	// operator's handler.
	setLoggersOnce.Do(func() {
		klog.SetLogger(lg)
		ctrllog.SetLogger(lg)
	})

	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	var lock resourcelock.Interface
	if o.LeaderElection {
		var err error
		// Our own lock, for an identity that logs and tests can name.
		lock, err = resourcelock.NewFromKubeconfig(resourcelock.LeasesResourceLock, o.Namespace, o.LeaseName,
			resourcelock.ResourceLockConfig{Identity: o.Identity}, o.Config, o.RenewDeadline)
		if err != nil {
			return nil, fmt.Errorf("kubernetes: leader election: %w", err)
		}
	}
	mgr, err := manager.New(o.Config, manager.Options{
		Scheme:                              scheme,
		Logger:                              lg,
		Cache:                               cache.Options{DefaultNamespaces: map[string]cache.Config{o.Namespace: {}}},
		Metrics:                             metricsserver.Options{BindAddress: "0"}, // Edgeport serves /metrics itself
		HealthProbeBindAddress:              "0",
		LeaderElection:                      o.LeaderElection,
		LeaderElectionID:                    o.LeaseName,
		LeaderElectionNamespace:             o.Namespace,
		LeaderElectionReleaseOnCancel:       true, // a replica stopping hands over at once
		LeaderElectionResourceLockInterface: lock,
		LeaseDuration:                       &o.LeaseDuration,
		RenewDeadline:                       &o.RenewDeadline,
		RetryPeriod:                         &o.RetryPeriod,
		GracefulShutdownTimeout:             ptr(10 * time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	op := &Operator{
		o:        o,
		log:      o.Log.With("component", "kubernetes"),
		mgr:      mgr,
		c:        mgr.GetClient(),
		storeSet: make(chan struct{}),
		events:   mgr.GetEventRecorder(EventController),
	}
	op.mirror = newMirror(o.DataDir, o.Namespace, op.c, op.log)
	op.status = newStatusWriter(op)
	if err := mgr.Add(op.status); err != nil {
		return nil, err
	}
	skip := true
	for _, def := range o.Kinds.All() {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(GVK(def.Kind))
		err := builder.ControllerManagedBy(mgr).
			For(u, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{},
				predicate.LabelChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
			Named("edgeport-" + def.Singular()).
			// Names must otherwise be unique in the process; tests run two operators.
			WithOptions(controller.Options{SkipNameValidation: &skip}).
			Complete(&kindReconciler{op: op, def: def})
		if err != nil {
			return nil, fmt.Errorf("kubernetes: controller for %s: %w", def.Kind, err)
		}
	}
	for name, obj := range map[string]client.Object{"secret": &corev1.Secret{}, "configmap": &corev1.ConfigMap{}} {
		err := builder.ControllerManagedBy(mgr).For(obj).Named("edgeport-" + name).
			WithOptions(controller.Options{SkipNameValidation: &skip}).
			Complete(&mirrorReconciler{op: op})
		if err != nil {
			return nil, fmt.Errorf("kubernetes: controller for %ss: %w", name, err)
		}
	}
	return op, nil
}

// GVK is the group, version and kind of an Edgeport kind.
func GVK(kind string) schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: crd.Group, Version: crd.Version, Kind: kind}
}

// Identity is this replica's name in the Lease.
func (op *Operator) Identity() string { return op.o.Identity }

// Elected is closed when this replica leads (at once without leader
// election): the caller then starts Edgeport and calls Attach.
func (op *Operator) Elected() <-chan struct{} { return op.mgr.Elected() }

// Attach hands the operator the store of the Edgeport now running; the
// controllers, which wait for it, start applying resources.
func (op *Operator) Attach(s *config.Store) {
	op.storeOnce.Do(func() {
		op.store = s
		s.WatchStatus(op.status.enqueue)
		// A status set by the reconciler after an apply is enqueued by
		// the watch; the first pass covers resources applied before it.
		close(op.storeSet)
	})
}

// waitStore returns the attached store, or nil when ctx ends first.
func (op *Operator) waitStore(ctx context.Context) *config.Store {
	select {
	case <-op.storeSet:
		return op.store
	case <-ctx.Done():
		return nil
	}
}

// Start runs the manager until ctx ends or leadership is lost (an error:
// the caller stops Edgeport, since another replica now runs it).
func (op *Operator) Start(ctx context.Context) error {
	op.log.Info("watching Edgeport resources", "namespace", op.o.Namespace,
		"leader_election", op.o.LeaderElection, "identity", op.o.Identity)
	if err := op.mgr.Start(ctx); err != nil {
		return fmt.Errorf("kubernetes: %w", err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
