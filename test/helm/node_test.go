package helm

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/edgeport/edgeport/internal/testwait"
)

// The node network: a Linux bridge on this machine whose address is the
// pods' gateway, the way the CNI bridge plugin sets it up. The host and
// the pods' network namespaces (made by containerd for this test) reach
// each other on it; nothing leaves the machine.
const (
	nodeBridge  = "edgeport-e2e0"
	nodeSubnet  = "10.244.0.0/24"
	nodeGateway = "10.244.0.1"
	nodeName    = "localhost" // the API server reaches the kubelet by this host name
	pauseImage  = "registry.invalid/pause:e2e"
)

// requireRoot fails a test that runs a real node without root: containerd,
// runc, the kubelet's mounts and the bridge need it (CI runs as root).
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("a real node (containerd, runc, the kubelet's mounts, a bridge) needs root: run the tests as root, as scripts/test.sh and CI do")
	}
}

// tool returns the path of a program a Debian package installs, failing
// the test with the package to install.
func tool(t *testing.T, path, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err != nil {
		t.Fatalf("%s not found (apt-get install %s; scripts/test.sh does): %v", path, pkg, err)
	}
	return p
}

// nodeNetwork creates the bridge with the gateway address before the API
// server binds to it, and deletes it when the test ends (after the node,
// whose cleanup is registered later and so runs first).
func nodeNetwork(t *testing.T) {
	t.Helper()
	requireRoot(t)
	ip := tool(t, "ip", "iproute2")
	// A bridge left by a test that was killed: ours by its name.
	_ = exec.Command(ip, "link", "del", nodeBridge).Run()
	for _, args := range [][]string{
		{"link", "add", nodeBridge, "type", "bridge"},
		{"addr", "add", nodeGateway + "/24", "dev", nodeBridge},
		{"link", "set", nodeBridge, "up"},
	} {
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			_ = exec.Command(ip, "link", "del", nodeBridge).Run()
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ip, "link", "del", nodeBridge).CombinedOutput(); err != nil {
			t.Errorf("deleting the bridge %s: %v\n%s", nodeBridge, err, out)
		}
	})
}

// node is a real Kubernetes node on this machine: Debian's containerd
// (with runc and the CNI bridge plugin) and the kubelet that
// scripts/k8s-tools.sh builds, registered as "localhost" with the test's
// control plane. Pods really run, in network namespaces on the bridge.
// There is no kube-proxy: Service ClusterIPs do not route; the cluster
// DNS (clusterDNS) names a headless Service's pods.
type node struct {
	dir  string // containerd's root and state, the kubelet's root, CNI state
	sock string // containerd's socket
	cri  runtimeapi.RuntimeServiceClient
}

// startNode starts containerd and the kubelet, imports the docker-archive
// images, and waits for the node to be Ready. Its cleanup (also on
// failure) deletes the workloads and waits for the kubelet to stop their
// pods, stops the kubelet, stops and removes every pod sandbox through
// the CRI, stops containerd and any shim left, and unmounts what is still
// mounted under the node's directory; the kubelet's pod logs under
// /var/log/pods and network namespaces the test made are removed.
func (cl *cluster) startNode(t *testing.T, images ...string) *node {
	t.Helper()
	requireRoot(t)
	containerd := tool(t, "containerd", "containerd")
	ctr := tool(t, "ctr", "containerd")
	tool(t, "runc", "runc")
	tool(t, "/usr/lib/cni/bridge", "containernetworking-plugins")
	kubelet := k8sBin(t, "kubelet")

	// Short: containerd's sockets live under it.
	dir, err := os.MkdirTemp("", "ep-node-")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{dir: dir, sock: filepath.Join(dir, "containerd.sock")}
	before := map[string][]string{"/var/run/netns": listDir("/var/run/netns"), "/var/log/pods": listDir("/var/log/pods"),
		"/var/log/containers": listDir("/var/log/containers")}
	// Runs last: whatever is still mounted, the leftovers outside dir.
	t.Cleanup(func() {
		n.unmountAll(t)
		for d, had := range before {
			for _, e := range listDir(d) {
				if slices.Contains(had, e) || (d == "/var/run/netns" && !strings.HasPrefix(e, "cni-")) {
					continue
				}
				p := filepath.Join(d, e)
				_ = syscall.Unmount(p, syscall.MNT_DETACH)
				if err := os.RemoveAll(p); err != nil {
					t.Errorf("removing %s: %v", p, err)
				}
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing the node directory: %v", err)
		}
	})

	pause := n.pauseImage(t)
	if err := os.WriteFile(filepath.Join(dir, "containerd.toml"), []byte(n.containerdConfig()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "cni"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cni", "10-bridge.conflist"), []byte(n.cniConfig()), 0o644); err != nil {
		t.Fatal(err)
	}
	// Runs after containerd stopped: a shim outlives containerd.
	t.Cleanup(func() { n.killShims(t) })
	cl.runPath(t, "containerd", containerd, "--config", filepath.Join(dir, "containerd.toml"))
	conn, err := grpc.NewClient("unix://"+n.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n.cri = runtimeapi.NewRuntimeServiceClient(conn)
	ctx := t.Context()
	waitFor(t, "containerd's CRI to answer", func() bool {
		_, err := n.cri.Version(ctx, &runtimeapi.VersionRequest{})
		return err == nil
	})
	for _, img := range append([]string{pause}, images...) {
		out, err := exec.CommandContext(ctx, ctr, "--address", n.sock, "-n", "k8s.io", "images", "import", img).CombinedOutput()
		if err != nil {
			t.Fatalf("ctr images import %s: %v\n%s", img, err, out)
		}
	}
	// Runs after the kubelet stopped, before containerd stops.
	t.Cleanup(func() { n.removeSandboxes(t) })

	cl.clusterDNS(t)
	kubeletCfg := filepath.Join(dir, "kubelet.yaml")
	if err := os.WriteFile(kubeletCfg, []byte(n.kubeletConfig(freePort(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	cl.runPath(t, "kubelet", kubelet, "--config="+kubeletCfg, "--kubeconfig="+cl.kubeconfig,
		"--root-dir="+filepath.Join(dir, "kubelet"), "--cert-dir="+filepath.Join(dir, "kubelet", "pki"),
		"--hostname-override="+nodeName)
	// Runs first, while the kubelet and the control plane still run.
	t.Cleanup(func() { cl.deleteWorkloads(t) })
	cl.waitNodeReady(t, nodeName)
	return n
}

func listDir(d string) []string {
	es, _ := os.ReadDir(d)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// pauseImage builds the sandbox image from testdata/pause (a static
// binary, the image's only file) as a docker-archive.
func (n *node) pauseImage(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(n.dir, "pause")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./testdata/pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the pause program: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var layerTar bytes.Buffer
	tw := tar.NewWriter(&layerTar)
	if err := tw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar.Bytes())), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint = []string{"/pause"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(pauseImage)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(n.dir, "pause.tar")
	if err := tarball.WriteToFile(out, tag, img); err != nil {
		t.Fatal(err)
	}
	return out
}

// containerdConfig: containerd with its own socket, root and state, and
// the CRI plugin on runc and the CNI bridge. This machine is cgroup v1
// without CAP_SYS_RESOURCE: a negative oom_score_adj (the sandbox's -998)
// makes runc fail, so scores are clamped to containerd's own.
func (n *node) containerdConfig() string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[4]q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[5]q
`, filepath.Join(n.dir, "root"), filepath.Join(n.dir, "state"), n.sock, pauseImage, filepath.Join(n.dir, "cni"))
}

func (n *node) cniConfig() string {
	return fmt.Sprintf(`{"cniVersion": "0.4.0", "name": "edgeport-e2e", "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q, "gateway": %q}]]}},
  {"type": "loopback"}]}
`, nodeBridge, filepath.Join(n.dir, "ipam"), nodeSubnet, nodeGateway)
}

// kubeletConfig: the API server reaches the kubelet on loopback without
// client certificates (port-forward, logs); cgroup v1 with cgroupfs and
// no QoS cgroups; eviction only on memory and no image garbage collection,
// so that a full disk on the machine does not evict the test's pod; the
// pods' name server is the node's cluster DNS (clusterDNS).
func (n *node) kubeletConfig(port int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzPort: 0
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix://%s
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "1Mi"}
resolvConf: /etc/resolv.conf
clusterDNS: [%s]
clusterDomain: %s
`, port, n.sock, nodeGateway, clusterDomain)
}

// deleteWorkloads deletes the StatefulSets and pods of every namespace
// and waits for the kubelet to stop the pods, so that the pods' sandboxes
// are torn down the normal way (network and namespaces removed).
func (cl *cluster) deleteWorkloads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var nss corev1.NamespaceList
	if err := cl.c.List(ctx, &nss); err != nil {
		t.Errorf("listing namespaces: %v", err)
		return
	}
	for _, ns := range nss.Items {
		_ = cl.c.DeleteAllOf(ctx, &appsv1.StatefulSet{}, client.InNamespace(ns.Name))
		_ = cl.c.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns.Name))
	}
	gone := testwait.Within(80*time.Second, func() bool {
		var pods corev1.PodList
		return cl.c.List(ctx, &pods) == nil && len(pods.Items) == 0
	})
	if !gone {
		t.Logf("pods still there after 80 s; their sandboxes are removed through the CRI")
	}
}

// removeSandboxes stops and removes every pod sandbox (and so its
// containers, network and network namespace) through containerd's CRI.
func (n *node) removeSandboxes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := n.cri.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Errorf("listing pod sandboxes: %v", err)
		return
	}
	for _, sb := range resp.Items {
		if _, err := n.cri.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			t.Errorf("stopping sandbox %s: %v", sb.Id, err)
		}
		if _, err := n.cri.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			t.Errorf("removing sandbox %s: %v", sb.Id, err)
		}
	}
}

// killShims kills the containerd shims of this node's containerd that are
// still running (found by its socket on their command line), by PID.
func (n *node) killShims(t *testing.T) {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte("containerd-shim")) || !bytes.Contains(cmdline, []byte(n.sock)) {
			continue
		}
		t.Logf("killing shim %d left by containerd", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// unmountAll detaches every mount under the node's directory, deepest
// first, so that removing the directory cannot reach into a mounted one.
func (n *node) unmountAll(t *testing.T) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("reading mounts: %v", err)
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if p := unescapeMount(fields[4]); p == n.dir || strings.HasPrefix(p, n.dir+"/") {
			points = append(points, p)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && err != syscall.EINVAL && err != syscall.ENOENT {
			t.Errorf("unmounting %s: %v", p, err)
		}
	}
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
