package helm

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/edgeport/edgeport/internal/operator"
	"github.com/edgeport/edgeport/internal/testwait"
)

// lineProc is a program whose stdout is read line by line.
type lineProc struct {
	name  string
	lines chan string   // closed when stdout ends
	done  chan struct{} // closed when the program exited
	err   error         // its exit, once done is closed
}

// startLines starts a program for the test's lifetime (killed at cleanup
// if still running); stderr joins stdout.
func startLines(t *testing.T, name string, args ...string) *lineProc {
	t.Helper()
	cmd := exec.Command(name, args...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	w.Close()
	p := &lineProc{name: filepath.Base(name), lines: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		r.Close()
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

// waitLine returns the first line that match accepts, failing the test
// (with what was read) if the output ends or d passes first.
func (p *lineProc) waitLine(t *testing.T, d time.Duration, what string, match func(string) bool) string {
	t.Helper()
	deadline := time.After(d)
	var seen []string
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("%s ended before %s:\n%s", p.name, what, strings.Join(seen, "\n"))
			}
			if match(l) {
				return l
			}
			seen = append(seen, l)
		case <-deadline:
			t.Fatalf("%s: no %s within %s:\n%s", p.name, what, d, strings.Join(seen, "\n"))
		}
	}
}

var forwarding = regexp.MustCompile(`^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)$`)

// portForward runs `kubectl port-forward <target> :<port>` and returns the
// local port: the API server upgrades the connection and proxies it to
// the kubelet, which asks containerd to connect to the port inside the
// pod's network namespace. For svc/<name>, kubectl picks a ready pod of
// the Service and the Service port's target port.
func (cl *cluster) portForward(t *testing.T, namespace, target string, port int) int {
	t.Helper()
	p := startLines(t, k8sBin(t, "kubectl"), "--kubeconfig", cl.kubeconfig, "-n", namespace, "port-forward",
		"--address", "127.0.0.1", target, ":"+strconv.Itoa(port))
	l := p.waitLine(t, 30*time.Second, "Forwarding line", forwarding.MatchString)
	local, _ := strconv.Atoi(forwarding.FindStringSubmatch(l)[1])
	return local
}

// mqttRoundTrip subscribes with mosquitto_sub on 127.0.0.1:port, waits for
// the SUBACK, publishes with mosquitto_pub at QoS 1 and expects the
// message back.
func mqttRoundTrip(t *testing.T, port int, topic, payload string) {
	t.Helper()
	mqttAcross(t, port, port, topic, payload)
}

// mqttAcross subscribes on 127.0.0.1:subPort, waits for the SUBACK and
// publishes at QoS 1 on 127.0.0.1:pubPort until the subscriber has the
// message: across a cluster the subscription reaches the publisher's node
// a moment after the SUBACK, and a QoS 1 message published before that
// has no subscriber there.
func mqttAcross(t *testing.T, subPort, pubPort int, topic, payload string) {
	t.Helper()
	stdbuf := tool(t, "stdbuf", "coreutils")
	sub := tool(t, "mosquitto_sub", "mosquitto-clients")
	pub := tool(t, "mosquitto_pub", "mosquitto-clients")
	// -d prints the SUBACK; stdbuf -oL flushes the debug lines too.
	s := startLines(t, stdbuf, "-oL", sub, "-h", "127.0.0.1", "-p", strconv.Itoa(subPort), "-V", "mqttv5", "-q", "1", "-t", topic,
		"-C", "1", "-W", "90", "-d", "-F", "MSG|%t|%p")
	s.waitLine(t, 30*time.Second, "SUBACK", func(l string) bool { return strings.Contains(l, "received SUBACK") })
	want := "MSG|" + topic + "|" + payload
	deadline := time.After(60 * time.Second)
	var seen []string
	for publishes := 1; ; publishes++ {
		if out, err := exec.CommandContext(t.Context(), pub, "-h", "127.0.0.1", "-p", strconv.Itoa(pubPort), "-V", "mqttv5", "-q", "1",
			"-t", topic, "-m", payload).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
		retry := time.After(2 * time.Second)
	wait:
		for {
			select {
			case l, ok := <-s.lines:
				if !ok {
					t.Fatalf("mosquitto_sub ended before the message:\n%s", strings.Join(seen, "\n"))
				}
				if l == want {
					if subPort != pubPort {
						t.Logf("the message crossed from port %d to port %d after %d publish(es)", pubPort, subPort, publishes)
					}
					return
				}
				seen = append(seen, l)
			case <-retry:
				break wait
			case <-deadline:
				t.Fatalf("no message on port %d within 60 s of %d publish(es) on port %d:\n%s", subPort, publishes, pubPort, strings.Join(seen, "\n"))
			}
		}
	}
}

// localVolume is a local PersistentVolume on the node, as an
// administrator provides one, of a StorageClass that binds a claim when
// its pod is scheduled (WaitForFirstConsumer). The kubelet gives the
// directory the pod's fsGroup, so that uid 65532 writes to a private
// directory root created.
func (cl *cluster) localVolume(t *testing.T, class, name, size string) string {
	t.Helper()
	ctx := t.Context()
	path := filepath.Join(cl.dir, name)
	// Root's and private: the pod's user gets in through the fsGroup
	// the kubelet gives the directory (mode 2770), not by its mode.
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	mode := storagev1.VolumeBindingWaitForFirstConsumer
	if err := cl.c.Create(ctx, &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: class},
		Provisioner:       "kubernetes.io/no-provisioner",
		VolumeBindingMode: &mode,
	}); err != nil {
		t.Fatal(err)
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              class,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: path}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{nodeName}}},
			}}}},
		},
	}
	if err := cl.c.Create(ctx, pv); err != nil {
		t.Fatalf("creating volume %s: %v", name, err)
	}
	return path
}

// startRealNode starts a control plane and a real node running the image
// scripts/build-image.sh builds. When the test fails, the logs of pods
// and the namespace's events are logged (before the node's cleanup
// deletes the pods).
func startRealNode(t *testing.T, ns string, pods []string) *cluster {
	t.Helper()
	requireRoot(t)
	platform := "linux/" + runtime.GOARCH
	img := sharedImage(t)
	if img.digests[platform] == "" {
		t.Fatalf("no %s image: the image is built for %v", platform, imagePlatforms)
	}
	cl := startClusterWith(t, clusterOptions{realNode: true})
	cl.startNode(t, img.dockerArchive(platform))
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		var cmds [][]string
		for _, p := range pods {
			cmds = append(cmds, []string{"logs", "--tail=80", p})
		}
		for _, args := range append(cmds, []string{"get", "events", "-o", "wide"}) {
			out, _ := exec.Command(k8sBin(t, "kubectl"), append([]string{"--kubeconfig", cl.kubeconfig, "-n", ns}, args...)...).CombinedOutput()
			t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
		}
	})
	return cl
}

// installOnNode installs the chart on the real node with the test image,
// anonymous MQTT and the API server's address, and waits for the release.
func (cl *cluster) installOnNode(t *testing.T, ns, release string, args ...string) {
	t.Helper()
	apiPort := strings.TrimPrefix(cl.cfg.Host, "https://"+nodeGateway+":")
	// No kube-proxy routes the kubernetes Service's ClusterIP: the pod
	// reaches the API server at the gateway address instead (in-cluster
	// configuration with the pod's token and CA; only the address differs).
	env := fmt.Sprintf(`[{"name":"KUBERNETES_SERVICE_HOST","value":%q},{"name":"KUBERNETES_SERVICE_PORT","value":%q}]`, nodeGateway, apiPort)
	out, err := cl.helm(t, append([]string{"install", release, chartDir(t), "--namespace", ns, "--create-namespace",
		"--wait", "--timeout", "5m",
		"--set", "image.repository=" + testImageRepo, "--set", "image.tag=" + testImageTag, "--set", "image.pullPolicy=Never",
		"--set", "listener.allowAnonymous=true",
		"--set-json", "broker.extraEnv=" + env}, args...)...)
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
}

// TestChartOnRealNode installs the chart with Helm v4 on a real node:
// the image scripts/build-image.sh builds, imported into containerd; the
// StatefulSet's pod started by the kubelet, running as uid 65532 on a
// read-only root file system, Ready by its /readyz probe; its claim bound
// to a local volume it writes to; an MQTT round trip through the installed
// Service (kubectl port-forward svc/edgeport); operator mode in the pod
// applying a BrokerListener created in Kubernetes, writing its status and
// Events, and serving the new port; and `edgeport check --kubernetes`
// passing every check on the release.
func TestChartOnRealNode(t *testing.T) {
	const ns, release = "edgeport", "edgeport"
	cl := startRealNode(t, ns, []string{release + "-0"})
	ctx := t.Context()
	dataDir := cl.localVolume(t, "edgeport-local", "edgeport-data-0", "1Gi")
	cl.installOnNode(t, ns, release, "--set", "persistence.storageClassName=edgeport-local")

	// The pod really runs: started by containerd, Ready by its probe.
	var pod corev1.Pod
	if err := cl.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: release + "-0"}, &pod); err != nil {
		t.Fatal(err)
	}
	if len(pod.Status.ContainerStatuses) != 1 {
		t.Fatalf("pod status: %+v", pod.Status)
	}
	cs := pod.Status.ContainerStatuses[0]
	if pod.Status.Phase != corev1.PodRunning || !cs.Ready || cs.State.Running == nil || !strings.HasPrefix(cs.ContainerID, "containerd://") ||
		cs.ImageID == "" || pod.Spec.NodeName != nodeName || pod.Status.PodIP == "" {
		t.Fatalf("pod %s: phase %s, container %+v, node %s, IP %s", pod.Name, pod.Status.Phase, cs, pod.Spec.NodeName, pod.Status.PodIP)
	}
	if rp := pod.Spec.Containers[0].ReadinessProbe; rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/readyz" {
		t.Fatalf("readiness probe %+v", rp)
	}
	t.Logf("pod %s Running and Ready on %s at %s, image %s", pod.Name, pod.Spec.NodeName, pod.Status.PodIP, cs.ImageID)

	// Its claim is bound to the local volume, which it writes to as uid
	// 65532 (the kubelet gave the directory the pod's fsGroup).
	var pvc corev1.PersistentVolumeClaim
	if err := cl.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "data-" + release + "-0"}, &pvc); err != nil {
		t.Fatal(err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName != "edgeport-data-0" {
		t.Fatalf("claim %s: phase %s, volume %q", pvc.Name, pvc.Status.Phase, pvc.Spec.VolumeName)
	}
	owned := ownedBy(t, dataDir, 65532)
	if len(owned) == 0 {
		t.Fatalf("nothing in the volume %s is owned by uid 65532", dataDir)
	}
	t.Logf("written by uid 65532 on the volume: %v", owned)

	// MQTT through the installed Service.
	mqttRoundTrip(t, cl.portForward(t, ns, "svc/"+release, 1883), "e2e/service", "through-the-service")

	// Operator mode in the pod: a BrokerListener created in Kubernetes is
	// applied, its status and Events written by the pod, its port served.
	extra := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "edgeport.io/v1", "kind": "BrokerListener",
		"metadata": map[string]any{"name": "extra", "namespace": ns},
		"spec": map[string]any{"ports": []any{map[string]any{
			"port": int64(1884), "protocol": "Mqtt", "address": "0.0.0.0", "allowAnonymous": true}}},
	}}
	if err := cl.c.Create(ctx, extra); err != nil {
		t.Fatalf("creating a BrokerListener: %v", err)
	}
	waitFor(t, "the pod to write BrokerListener extra's status", func() bool {
		u := extra.DeepCopy()
		if err := cl.c.Get(ctx, client.ObjectKeyFromObject(extra), u); err != nil {
			return false
		}
		g, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		ready, accepted := false, false
		for _, c := range conds {
			m, _ := c.(map[string]any)
			ready = ready || (m["type"] == "Ready" && m["status"] == "True")
			accepted = accepted || (m["type"] == operator.ConditionAccepted && m["status"] == "True")
		}
		return g == 1 && ready && accepted
	})
	waitFor(t, "the pod's Applied and Ready Events on BrokerListener extra", func() bool {
		var evs corev1.EventList
		if err := cl.c.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return false
		}
		applied, ready := false, false
		for _, e := range evs.Items {
			if e.InvolvedObject.Name != "extra" || e.ReportingController != operator.EventController ||
				!strings.HasPrefix(e.ReportingInstance, operator.EventController+"-"+release+"-0") {
				continue
			}
			applied = applied || (e.Reason == operator.EventApplied && e.Message == "generation 1 created")
			ready = ready || (e.Reason == operator.EventReady && e.Message == "ready: listening on [::]:1884")
		}
		return applied && ready
	})
	mqttRoundTrip(t, cl.portForward(t, ns, "pod/"+release+"-0", 1884), "e2e/operator", "on-the-new-port")

	// Every check of the installed release passes, the resource included.
	var rep report
	var code int
	var raw string
	if !testwait.Within(60*time.Second, func() bool {
		code, rep, raw = cl.checkKubernetes(t, ns, release)
		return code == 0 && rep.Status == "ok"
	}) {
		t.Fatalf("check --kubernetes of the release on the real node: exit %d\n%s", code, raw)
	}
	for name, want := range map[string]string{
		"cluster":   "ok",
		"release":   "revision 1 deployed",
		"pods":      "1 of 1 pods ready",
		"volumes":   "1 of 1 claims Bound",
		"services":  "3 of 3 Services have ready endpoints",
		"resources": "1 of 1 resources Ready",
	} {
		s, msg, items := rep.check(name)
		if s != "ok" || (name != "cluster" && msg != want) {
			t.Errorf("%s: %s %q %v, want ok %q", name, s, msg, items, want)
		}
	}
	t.Logf("edgeport check --kubernetes:\n%s", raw)
}

// nodeWait bounds what waits on the node and its pod: a real kubelet and
// container on a loaded machine take longer than testwait.Timeout.
const nodeWait = 90 * time.Second

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !testwait.Within(nodeWait, cond) {
		t.Fatalf("timed out after %v waiting for %s", nodeWait, what)
	}
}

// ownedBy lists the files under dir owned by uid.
func ownedBy(t *testing.T, dir string, uid uint32) []string {
	t.Helper()
	var names []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == uid && p != dir {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) > 8 {
		names = names[:8]
	}
	return names
}
