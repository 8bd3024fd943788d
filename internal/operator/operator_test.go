package operator

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"go.yaml.in/yaml/v3"

	"github.com/edgeport/edgeport/internal/app"
	"github.com/edgeport/edgeport/internal/app/apptest"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/testpki"
	"github.com/edgeport/edgeport/internal/testwait"
)

// The tests share one real control plane: etcd and kube-apiserver built
// by scripts/k8s-tools.sh (KUBEBUILDER_ASSETS), with the committed CRDs
// installed. Each test works in a namespace of its own.
var (
	restCfg *rest.Config
	kc      client.Client
	nsSeq   atomic.Int64
)

func TestMain(m *testing.M) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = os.Getenv("EDGEPORT_K8S_BIN")
	}
	if assets == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the tests with scripts/test.sh, or export KUBEBUILDER_ASSETS=$(scripts/k8s-tools.sh)")
		os.Exit(1)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{"../../deploy/crds"},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	restCfg, err = env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtest:", err)
		os.Exit(1)
	}
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	_ = coordinationv1.AddToScheme(scheme)
	kc, err = client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		_ = env.Stop()
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "envtest stop:", err)
	}
	os.Exit(code)
}

func newNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("op-%d", nsSeq.Add(1))
	if err := kc.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// runOperator starts an operator on ns (without leader election unless
// o says) and stops it at cleanup, waiting for it.
func runOperator(t *testing.T, o Options) *Operator {
	t.Helper()
	op, _ := startOperator(t, o)
	return op
}

// startOperator starts an operator with o (on the test cluster) and
// returns it with a stop that ends it and returns what Start returned. The
// test's cleanup stops it if the test did not, failing on an error.
func startOperator(t *testing.T, o Options) (*Operator, func() error) {
	t.Helper()
	o.Config, o.Kinds = restCfg, config.Builtin()
	if o.Log == nil {
		o.Log = testLog(t)
	}
	op, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- op.Start(ctx) }()
	var once sync.Once
	var startErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			startErr = <-done
		})
		return startErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("operator: %v", err)
		}
	})
	return op, stop
}

// awaitElected fails the test unless op leads within 30 seconds.
func awaitElected(t *testing.T, op *Operator, what string) {
	t.Helper()
	select {
	case <-op.Elected():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s not elected", what)
	}
}

// attachAndAwait attaches a fresh resource store to op, which leads, and
// waits until op has applied the resource key to it.
func attachAndAwait(t *testing.T, op *Operator, what string, key config.Key) {
	t.Helper()
	store := config.NewStore(config.Builtin(), "", nil)
	op.Attach(store)
	testwait.For(t, what+" to apply the resource", func() bool {
		_, ok := store.Get(key)
		return ok
	})
}

// startApp runs a real Edgeport (no built-in listeners) with dataDir and
// attaches op to its resource store.
func startApp(t *testing.T, op *Operator, dataDir string) *app.App {
	t.Helper()
	a := apptest.Start(t, app.Config{MQTTAddr: app.Off, WSAddr: app.Off, HTTPAddr: app.Off, DataDir: dataDir, InMemory: true},
		testLog(t))
	awaitElected(t, op, "operator")
	op.Attach(a.Resources())
	return a
}

// object is a custom resource from the document a user would write for
// --config.
func object(t *testing.T, ns, yamlDoc string) *unstructured.Unstructured {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(yamlDoc), &v); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		t.Fatal(err)
	}
	u.SetNamespace(ns)
	return u
}

// update changes a custom resource, retrying when its status was written
// in between (a conflict on resourceVersion).
func update(t *testing.T, ns, kind, name string, mutate func(u *unstructured.Unstructured)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u := get(t, ns, kind, name)
		mutate(u)
		return kc.Update(context.Background(), u)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, ns, kind, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(GVK(kind))
	if err := kc.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		t.Fatalf("get %s/%s: %v", kind, name, err)
	}
	return u
}

func condition(u *unstructured.Unstructured, typ string) (status, reason, msg string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ {
			s, _ := m["status"].(string)
			r, _ := m["reason"].(string)
			g, _ := m["message"].(string)
			return s, r, g
		}
	}
	return "", "", ""
}

func observed(u *unstructured.Unstructured) int64 {
	g, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	return g
}

func portAddress(u *unstructured.Unstructured) string {
	ports, _, _ := unstructured.NestedSlice(u.Object, "status", "ports")
	if len(ports) == 0 {
		return ""
	}
	a, _ := ports[0].(map[string]any)["address"].(string)
	return a
}

// Resources created in Kubernetes run, their status comes back with the
// generation it describes, a change is applied, and a deletion removes
// the resource.
func TestResourcesAppliedAndStatusWritten(t *testing.T) {
	ns := newNamespace(t)
	op := runOperator(t, Options{Namespace: ns, DataDir: t.TempDir()})
	a := startApp(t, op, t.TempDir())
	ctx := context.Background()

	l := object(t, ns, `
apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: plain}
spec:
  ports:
  - {port: 0, protocol: Mqtt, address: 127.0.0.1}
`)
	if err := kc.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	var u *unstructured.Unstructured
	testwait.For(t, "Ready and Accepted status of generation 1", func() bool {
		u = get(t, ns, "BrokerListener", "plain")
		s, _, _ := condition(u, "Ready")
		as, _, _ := condition(u, ConditionAccepted)
		return s == "True" && as == "True" && observed(u) == 1 && portAddress(u) != ""
	})
	addr := portAddress(u)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("the listener the custom resource asked for is not listening at %s: %v", addr, err)
	}
	conn.Close()
	if _, ok := a.Addrs()["plain:0"]; !ok {
		t.Errorf("app addresses %v lack plain:0", a.Addrs())
	}

	// A change: a second port with number 0 too, a duplicate for
	// Edgeport that the CRD schema cannot see. Generation 2 is observed:
	// Accepted turns False with the CLI's message, the running version
	// stays.
	update(t, ns, "BrokerListener", "plain", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedSlice(u.Object, []any{
			map[string]any{"port": int64(0), "protocol": "Mqtt", "address": "127.0.0.1"},
			map[string]any{"port": int64(0), "protocol": "WebSockets", "address": "127.0.0.1"},
		}, "spec", "ports")
	})
	want := `spec.ports[1].port: duplicate of spec.ports[0].port (one entry per port number)`
	testwait.For(t, "Accepted=False of generation 2", func() bool {
		u = get(t, ns, "BrokerListener", "plain")
		s, r, m := condition(u, ConditionAccepted)
		return s == "False" && r == ReasonInvalid && m == want && observed(u) == 2
	})
	if st, _, _ := condition(u, "Ready"); st != "True" {
		t.Errorf("the previous version should keep running: Ready %s", st)
	}
	if _, err := net.Dial("tcp", addr); err != nil {
		t.Errorf("previous version stopped: %v", err)
	}
	// The CLI says the same of the same document.
	_, err = config.Builtin().Decode([]byte(`
apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: plain}
spec:
  ports:
  - {port: 0, protocol: Mqtt, address: 127.0.0.1}
  - {port: 0, protocol: WebSockets, address: 127.0.0.1}
`))
	if d := config.Details(err); len(d) != 1 || d[0] != want {
		t.Errorf("CLI validation: %v, want %q", d, want)
	}

	// Fixed: generation 3 runs.
	update(t, ns, "BrokerListener", "plain", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedSlice(u.Object, []any{
			map[string]any{"port": int64(0), "protocol": "Mqtt", "address": "127.0.0.1"},
		}, "spec", "ports")
		_ = unstructured.SetNestedField(u.Object, "svc", "spec", "serviceName")
	})
	testwait.For(t, "generation 3 accepted and ready", func() bool {
		u = get(t, ns, "BrokerListener", "plain")
		s, _, _ := condition(u, "Ready")
		as, _, _ := condition(u, ConditionAccepted)
		return s == "True" && as == "True" && observed(u) == 3
	})
	if o, ok := a.Resources().Get(config.Key{Kind: "BrokerListener", Name: "plain"}); !ok ||
		o.Spec.(*config.BrokerListenerSpec).ServiceName != "svc" {
		t.Errorf("store has %+v", o)
	}

	// The REST API may not change what Kubernetes defines.
	obj, _ := a.Resources().Get(config.Key{Kind: "BrokerListener", Name: "plain"})
	obj.Metadata.Annotations = nil
	if _, _, err := a.Resources().Apply(obj, config.ApplyOptions{}); err == nil || !strings.Contains(err.Error(), "kubernetes:"+ns) {
		t.Errorf("API change of a Kubernetes resource: %v", err)
	}

	if err := kc.Delete(ctx, u); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the deleted resource to leave the store", func() bool {
		_, ok := a.Resources().Get(config.Key{Kind: "BrokerListener", Name: "plain"})
		return !ok
	})
	testwait.For(t, "the port to close", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
}

// The API server refuses, by the CRD schema, what Edgeport's validation
// refuses, naming the same field.
func TestCRDSchemaRejectsWithOurFieldPaths(t *testing.T) {
	ns := newNamespace(t)
	cases := []struct {
		doc, field string
	}{
		{`{"apiVersion":"edgeport.io/v1","kind":"BrokerListener","metadata":{"name":"bad-port"},"spec":{"ports":[{"port":70000}]}}`, "spec.ports[0].port"},
		{`{"apiVersion":"edgeport.io/v1","kind":"BrokerListener","metadata":{"name":"bad-proto"},"spec":{"ports":[{"port":1883,"protocol":"Http"}]}}`, "spec.ports[0].protocol"},
		{`{"apiVersion":"edgeport.io/v1","kind":"Broker","metadata":{"name":"other"},"spec":{}}`, "metadata.name"},
		{`{"apiVersion":"edgeport.io/v1","kind":"Dataflow","metadata":{"name":"f"},"spec":{"mode":"On","operations":[{"operationType":"Source"}]}}`, "spec.mode"},
		{`{"apiVersion":"edgeport.io/v1","kind":"Schema","metadata":{"name":"s"},"spec":{"format":"JsonSchema/draft-07","versions":[]}}`, "spec.versions"},
	}
	for _, c := range cases {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON([]byte(c.doc)); err != nil {
			t.Fatal(err)
		}
		u.SetNamespace(ns)
		err := kc.Create(context.Background(), u)
		if err == nil || !apierrors.IsInvalid(err) {
			t.Errorf("%s: API server: %v, want Invalid", c.doc, err)
			continue
		}
		if !strings.Contains(err.Error(), c.field+":") && !strings.Contains(err.Error(), c.field+" ") {
			t.Errorf("API server error does not name %s: %v", c.field, err)
		}
		_, derr := config.Builtin().Decode([]byte(c.doc))
		if !hasField(config.Details(derr), c.field) {
			t.Errorf("Edgeport's validation of %s: %v, want an error at %s", c.doc, derr, c.field)
		}
		t.Logf("%s\n  API server: %v\n  edgeport:   %v", c.field, err, config.Details(derr))
	}
}

func hasField(details []string, field string) bool {
	for _, d := range details {
		if strings.HasPrefix(d, field+":") {
			return true
		}
	}
	return false
}

// A TLS port's certificate comes from a Secret; rotating the Secret
// rotates the certificate a TLS client sees, with no change to the
// resource; mosquitto_pub verifies each certificate against its CA.
func TestSecretRotationReloadsListener(t *testing.T) {
	ns := newNamespace(t)
	dataDir := t.TempDir()
	op := runOperator(t, Options{Namespace: ns, DataDir: dataDir})
	startApp(t, op, dataDir)
	ctx := context.Background()

	caA, crtA, keyA, serialA := newCert(t, "a")
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "listener-tls"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": crtA, "tls.key": keyA},
	}
	if err := kc.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	l := object(t, ns, `
apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: secure}
spec:
  ports:
  - port: 0
    address: 127.0.0.1
    tls: {mode: Manual, manual: {secretRef: listener-tls}}
`)
	if err := kc.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	var addr string
	testwait.For(t, "the TLS port ready", func() bool {
		u := get(t, ns, "BrokerListener", "secure")
		s, _, _ := condition(u, "Ready")
		addr = portAddress(u)
		return s == "True" && addr != ""
	})
	if got := servedSerial(t, addr); got.Cmp(serialA) != 0 {
		t.Fatalf("served certificate %v, want the Secret's %v", got, serialA)
	}
	mosquittoPub(t, addr, caA, true)

	caB, crtB, keyB, serialB := newCert(t, "b")
	secret.Data = map[string][]byte{"tls.crt": crtB, "tls.key": keyB}
	if err := kc.Update(ctx, secret); err != nil { // nothing else writes Secrets: no conflict
		t.Fatal(err)
	}
	testwait.For(t, "the rotated certificate to be served", func() bool {
		return servedSerial(t, addr).Cmp(serialB) == 0
	})
	mosquittoPub(t, addr, caB, true)
	mosquittoPub(t, addr, caA, false)
	if _, err := os.Lstat(filepath.Join(dataDir, "secrets", "listener-tls", "..data")); err != nil {
		t.Errorf("secret not mirrored the kubelet's way: %v", err)
	}

	// Deleting the resource removes the mirrored Secret from disk.
	if err := kc.Delete(ctx, get(t, ns, "BrokerListener", "secure")); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the unreferenced Secret to leave the data directory", func() bool {
		_, err := os.Stat(filepath.Join(dataDir, "secrets", "listener-tls"))
		return os.IsNotExist(err)
	})
}

// newCert makes a CA and a server certificate for 127.0.0.1 signed by it.
func newCert(t *testing.T, name string) (caPEM, crtPEM, keyPEM []byte, serial *big.Int) {
	t.Helper()
	ca := testpki.NewCA(t, pkix.Name{CommonName: "test CA " + name})
	leaf := ca.Server(t, "edgeport "+name)
	return ca.CertPEM(), leaf.CertPEM(), leaf.KeyPEM(), leaf.Cert.SerialNumber
}

func servedSerial(t *testing.T, addr string) *big.Int {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) // the test inspects the certificate itself
	if err != nil {
		return big.NewInt(-1)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// mosquittoPub publishes one message over TLS verifying the server
// against ca; ok says whether that must work.
func mosquittoPub(t *testing.T, addr string, ca []byte, ok bool) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "mosquitto_pub", "-h", host, "-p", port, "--cafile", caFile,
		"-V", "mqttv5", "-i", "k8s-test", "-t", "k8s/test", "-m", "hello", "-q", "1").CombinedOutput()
	if ok && err != nil {
		t.Errorf("mosquitto_pub with the current CA: %v: %s", err, out)
	}
	if !ok && err == nil {
		t.Errorf("mosquitto_pub trusted a certificate its CA did not sign")
	}
}

// Two replicas: the second waits while the first holds the Lease, and
// takes over (applying the resources) when the first stops.
func TestLeaderElectionSecondReplicaWaits(t *testing.T) {
	ns := newNamespace(t)
	short := func(o Options) Options {
		o.Namespace, o.LeaderElection, o.LeaseName = ns, true, "edgeport"
		o.LeaseDuration, o.RenewDeadline, o.RetryPeriod = 4*time.Second, 3*time.Second, 200*time.Millisecond
		return o
	}
	ctx := context.Background()
	l := object(t, ns, `
apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: l}
spec:
  ports: [{port: 0, address: 127.0.0.1}]
`)
	if err := kc.Create(ctx, l); err != nil {
		t.Fatal(err)
	}

	// The first replica leads.
	o1 := short(Options{Identity: "replica-1", DataDir: t.TempDir()})
	o1.Log = testLog(t).With("replica", 1)
	op1, stop1 := startOperator(t, o1)
	awaitElected(t, op1, "first replica")
	listener := config.Key{Kind: "BrokerListener", Name: "l"}
	attachAndAwait(t, op1, "the first replica", listener)

	// The second one starts and waits.
	op2 := runOperator(t, short(Options{Identity: "replica-2", DataDir: t.TempDir()}))
	lease := &coordinationv1.Lease{}
	renewed := func() time.Time {
		if err := kc.Get(ctx, client.ObjectKey{Namespace: ns, Name: "edgeport"}, lease); err != nil {
			t.Fatal(err)
		}
		if lease.Spec.RenewTime == nil {
			return time.Time{}
		}
		return lease.Spec.RenewTime.Time
	}
	first := renewed()
	// Several renewals by the first replica after the second started: the
	// second has tried (every RetryPeriod) and found the Lease held.
	var renewals int
	testwait.For(t, "the first replica to renew its Lease while the second tries", func() bool {
		if r := renewed(); r.After(first) {
			first = r
			renewals++
		}
		return renewals >= 3
	})
	if h := *lease.Spec.HolderIdentity; h != "replica-1" {
		t.Fatalf("lease holder %q, want replica-1", h)
	}
	select {
	case <-op2.Elected():
		t.Fatal("the second replica leads while the first holds the Lease")
	default:
	}

	// The first stops (releasing the Lease): the second takes over.
	if err := stop1(); err != nil {
		t.Errorf("first replica: %v", err)
	}
	awaitElected(t, op2, "the second replica (taking over)")
	attachAndAwait(t, op2, "the second replica", listener)
	renewed()
	if h := *lease.Spec.HolderIdentity; h != "replica-2" {
		t.Errorf("lease holder %q, want replica-2", h)
	}
}

// eventsOf lists the Events recorded on the custom resource kind/name in
// ns, as "Type Reason: note" (" (xN)" when recorded N times) in the order they were recorded (through the
// core API, which also serves events.k8s.io Events: `kubectl describe`'s view).
func eventsOf(t *testing.T, ns, kind, name string) []string {
	t.Helper()
	var list corev1.EventList
	if err := kc.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	slices.SortStableFunc(list.Items, func(a, b corev1.Event) int { return a.EventTime.Compare(b.EventTime.Time) })
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind != kind || e.InvolvedObject.Name != name {
			continue
		}
		if e.ReportingController != EventController || e.InvolvedObject.UID == "" || e.InvolvedObject.APIVersion != "edgeport.io/v1" {
			t.Errorf("event %s: controller %q, involved object %+v", e.Name, e.ReportingController, e.InvolvedObject)
		}
		s := e.Type + " " + e.Reason + ": " + e.Message
		if e.Series != nil && e.Series.Count > 1 {
			s += fmt.Sprintf(" (x%d)", e.Series.Count) // recorded again: a series
		}
		out = append(out, s)
	}
	return out
}

// TestEventsRecorded follows the Events operator mode records on a
// resource: its generation applied, Ready, a generation refused with the
// field errors `edgeport apply` prints, and a port that cannot bind
// (Ready=False with its reason).
func TestEventsRecorded(t *testing.T) {
	ns := newNamespace(t)
	op := runOperator(t, Options{Namespace: ns, DataDir: t.TempDir()})
	startApp(t, op, t.TempDir())
	ctx := context.Background()

	if err := kc.Create(ctx, object(t, ns, `
apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: evented}
spec:
  ports:
  - {port: 0, protocol: Mqtt, address: 127.0.0.1}
`)); err != nil {
		t.Fatal(err)
	}
	var evs []string
	has := func(want string) bool { return slices.Contains(evs, want) }
	testwait.For(t, "Applied and Ready events", func() bool {
		evs = eventsOf(t, ns, "BrokerListener", "evented")
		return has("Normal Applied: generation 1 created") && len(evs) == 2 && strings.HasPrefix(evs[1], "Normal Ready: ready")
	})

	// Refused by our validation (the CRD schema cannot see a duplicate):
	// a Warning with the field path.
	update(t, ns, "BrokerListener", "evented", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedSlice(u.Object, []any{
			map[string]any{"port": int64(0), "protocol": "Mqtt", "address": "127.0.0.1"},
			map[string]any{"port": int64(0), "protocol": "WebSockets", "address": "127.0.0.1"},
		}, "spec", "ports")
	})
	invalid := "Warning Invalid: generation 2 rejected: spec.ports[1].port: duplicate of spec.ports[0].port (one entry per port number)"
	testwait.For(t, "the Invalid event", func() bool {
		evs = eventsOf(t, ns, "BrokerListener", "evented")
		return has(invalid)
	})

	// A port another program holds: Ready turns False, recorded with the
	// condition's reason.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := int64(busy.Addr().(*net.TCPAddr).Port)
	update(t, ns, "BrokerListener", "evented", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedSlice(u.Object, []any{
			map[string]any{"port": port, "protocol": "Mqtt", "address": "127.0.0.1"},
		}, "spec", "ports")
	})
	testwait.For(t, "Applied generation 3 and the BindFailed warning", func() bool {
		evs = eventsOf(t, ns, "BrokerListener", "evented")
		for _, e := range evs {
			if strings.HasPrefix(e, "Warning BindFailed: not ready: ") && strings.Contains(e, "address already in use") {
				return has("Normal Applied: generation 3 configured")
			}
		}
		return false
	})
	// The refusal was recorded once, not a series (a repeated reconcile of
	// the refused generation records nothing new).
	if !has(invalid) {
		t.Errorf("the Invalid event was recorded more than once: %q", evs)
	}
	t.Logf("events: %q", evs)
}
