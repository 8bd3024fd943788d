package helm

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/edgeport/edgeport/internal/testwait"
)

// kwokVersion is the kwok release scripts/k8s-tools.sh builds; its stage
// definitions (how fake nodes and pods move through their lifecycle) are
// read from the module's source in the module cache.
const kwokVersion = "v0.8.0"

// cluster is a real Kubernetes control plane on loopback: etcd and
// kube-apiserver (envtest), kube-controller-manager (StatefulSets create
// pods and claims, claims bind to volumes, Services get EndpointSlices),
// kube-scheduler, and kwok, which plays the kubelet of one fake node: pods
// scheduled there are marked running and ready, but no container runs.
type cluster struct {
	kubeconfig string
	cfg        *rest.Config
	c          client.Client
	dir        string
}

// clusterOptions vary the control plane.
type clusterOptions struct {
	// realNode prepares it for a real kubelet (startNode) instead of
	// kwok's fake node: the API server serves on the node network's
	// gateway address, which pods reach, admits pods with their service
	// account token and CA (the ServiceAccount admission plugin, which
	// envtest turns off), reaches kubelets by host name (the node is
	// "localhost"), and kube-controller-manager publishes the CA as
	// kube-root-ca.crt.
	realNode bool
}

func startCluster(t *testing.T) *cluster { return startClusterWith(t, clusterOptions{}) }

func startClusterWith(t *testing.T, o clusterOptions) *cluster {
	t.Helper()
	binDir := filepath.Dir(k8sBin(t, "kube-apiserver"))
	for _, b := range []string{"etcd", "kubectl", "kube-controller-manager", "kube-scheduler", "kwok", "helm"} {
		k8sBin(t, b)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: binDir}
	controllers := "statefulset-controller,persistentvolume-binder-controller,endpointslice-controller,disruption-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller"
	if o.realNode {
		nodeNetwork(t)
		api := env.ControlPlane.GetAPIServer()
		// The serving certificate envtest makes names this address.
		api.SecureServing.Address = nodeGateway
		api.SecureServing.Port = strconv.Itoa(freePortOn(t, nodeGateway))
		api.Configure().
			Disable("disable-admission-plugins").
			Set("kubelet-preferred-address-types", "Hostname")
		controllers += ",root-ca-certificate-publisher-controller"
	}
	if _, err := env.Start(); err != nil {
		t.Fatalf("starting etcd and kube-apiserver: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stopping the control plane: %v", err)
		}
	})
	user, err := env.AddUser(envtest.User{Name: "test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cl := &cluster{kubeconfig: filepath.Join(dir, "kubeconfig"), cfg: user.Config(), dir: dir}
	if err := os.WriteFile(cl.kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	if cl.c, err = client.New(cl.cfg, client.Options{}); err != nil {
		t.Fatal(err)
	}

	cl.run(t, "kube-controller-manager",
		"--kubeconfig="+cl.kubeconfig, "--secure-port=0", "--leader-elect=false",
		"--use-service-account-credentials=false",
		// What a chart release needs: StatefulSets, claims bound to
		// volumes, endpoints, garbage collection for uninstall.
		"--controllers="+controllers)
	cl.run(t, "kube-scheduler", "--kubeconfig="+cl.kubeconfig, "--secure-port=0", "--leader-elect=false")
	if o.realNode {
		return cl
	}
	cl.run(t, "kwok", "--kubeconfig="+cl.kubeconfig, "--config="+kwokStages(t, dir),
		"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--node-ip=127.0.0.1", "--node-port=0", "--server-address=127.0.0.1:"+strconv.Itoa(freePort(t)))

	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "kwok-node-0",
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
			Labels:      map[string]string{"kubernetes.io/hostname": "kwok-node-0", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok"}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"), corev1.ResourcePods: resource.MustParse("110")},
		},
	}
	if err := cl.c.Create(t.Context(), node); err != nil {
		t.Fatalf("creating the kwok node: %v", err)
	}
	cl.waitNodeReady(t, node.Name)
	return cl
}

// waitNodeReady waits until node name is Ready and schedulable.
func (cl *cluster) waitNodeReady(t *testing.T, name string) {
	t.Helper()
	ctx := t.Context()
	ready := testwait.Within(60*time.Second, func() bool {
		var n corev1.Node
		if err := cl.c.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
			return false
		}
		// The node-lifecycle controller would lift the not-ready taint the
		// API server puts on a new node; it does not run here.
		var keep []corev1.Taint
		for _, taint := range n.Spec.Taints {
			if taint.Key != corev1.TaintNodeNotReady {
				keep = append(keep, taint)
			}
		}
		if len(keep) != len(n.Spec.Taints) {
			n.Spec.Taints = keep
			_ = cl.c.Update(ctx, &n)
			return false
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	})
	if !ready {
		t.Fatalf("timed out waiting for node %s to be Ready and schedulable", name)
	}
}

// run starts a control plane program for the test's lifetime, its output
// in a log file shown when the test fails.
func (cl *cluster) run(t *testing.T, name string, args ...string) {
	t.Helper()
	cl.runPath(t, name, k8sBin(t, name), args...)
}

// runPath is run of the program at path.
func (cl *cluster) runPath(t *testing.T, name, path string, args ...string) {
	t.Helper()
	logPath := filepath.Join(cl.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("%s log (tail):\n%s", name, b)
		}
	})
}

// kwokStages writes kwok's configuration: the upstream "fast" node and pod
// stages from the kwok module's source.
func kwokStages(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", "sigs.k8s.io/kwok@"+kwokVersion).Output()
	if err != nil {
		t.Fatalf("locating the kwok module (scripts/k8s-tools.sh downloads it): %v", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download sigs.k8s.io/kwok: %v %s", err, out)
	}
	var cfg bytes.Buffer
	for _, st := range []string{"node/fast/node-initialize.yaml", "node/heartbeat/node-heartbeat.yaml",
		"pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml"} {
		b, err := os.ReadFile(filepath.Join(mod.Dir, "kustomize", "stage", st))
		if err != nil {
			t.Fatal(err)
		}
		cfg.WriteString("---\n")
		cfg.Write(b)
		cfg.WriteString("\n")
	}
	p := filepath.Join(dir, "kwok.yaml")
	if err := os.WriteFile(p, cfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func freePort(t *testing.T) int { return testserve.FreePort(t, "127.0.0.1") }

// freePortOn is a TCP port free on host at the time of the call.
func freePortOn(t *testing.T, host string) int { return testserve.FreePort(t, host) }

// helm runs the real helm against the cluster.
func (cl *cluster) helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return helmCmd(t, append(args, "--kubeconfig", cl.kubeconfig)...)
}

// volume creates a PersistentVolume a claim of the chart can bind to, as
// an administrator of a cluster without a dynamic provisioner would.
func (cl *cluster) volume(ctx context.Context, t *testing.T, name, size string) {
	t.Helper()
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: filepath.Join(cl.dir, name)}},
		},
	}
	if err := cl.c.Create(ctx, pv); err != nil {
		t.Fatalf("creating volume %s: %v", name, err)
	}
}
