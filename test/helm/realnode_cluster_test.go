package helm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	epcluster "github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/telemetry"
)

// TestChartClusterOnRealNode installs the chart in cluster mode on a real
// node: three pods, routed to each other by their names in the headless
// Service (resolved by the node's cluster DNS) over mutual TLS with the
// route credentials the chart generates, each Ready by its /readyz (which
// in cluster mode needs the JetStream meta leader); the
// PodDisruptionBudget allows one pod down, as the disruption controller
// computes it; pod 0's /statusz lists three healthy members; and an MQTT
// message published to pod 0 reaches a subscriber on pod 2.
func TestChartClusterOnRealNode(t *testing.T) {
	const ns, release, replicas = "edgeport", "edgeport", 3
	var pods []string
	for i := range replicas {
		pods = append(pods, fmt.Sprintf("%s-%d", release, i))
	}
	cl := startRealNode(t, ns, pods)
	ctx := t.Context()
	cl.installOnNode(t, ns, release, "--set", "cluster.enabled=true,persistence.enabled=false")

	for _, name := range pods {
		var pod corev1.Pod
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &pod); err != nil {
			t.Fatal(err)
		}
		if len(pod.Status.ContainerStatuses) != 1 || !pod.Status.ContainerStatuses[0].Ready || pod.Spec.NodeName != nodeName {
			t.Fatalf("pod %s: phase %s, node %s, containers %+v", name, pod.Status.Phase, pod.Spec.NodeName, pod.Status.ContainerStatuses)
		}
		if rp := pod.Spec.Containers[0].ReadinessProbe; rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/readyz" {
			t.Fatalf("pod %s: readiness probe %+v", name, rp)
		}
		t.Logf("pod %s Ready at %s", name, pod.Status.PodIP)
	}

	// The budget lets one pod go at a time, and the disruption controller
	// counts the three healthy pods.
	var pdb policyv1.PodDisruptionBudget
	waitFor(t, "the disruption controller to count the pods", func() bool {
		return cl.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: release}, &pdb) == nil &&
			pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.ExpectedPods == replicas
	})
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil ||
		pdb.Status.CurrentHealthy != replicas || pdb.Status.DisruptionsAllowed != 1 {
		t.Fatalf("PodDisruptionBudget: spec %+v, status %+v", pdb.Spec, pdb.Status)
	}

	// Pod 0's view of the cluster: three healthy members, routes to the
	// other two (authenticated, TLS), a meta leader, and it is ready.
	// Beyond loopback the HTTP API takes the node's bearer token, which
	// `edgeport token` prints in the pod (as values.yaml tells).
	tok, err := exec.CommandContext(ctx, k8sBin(t, "kubectl"), "--kubeconfig", cl.kubeconfig, "-n", ns, "exec", pods[0], "--",
		"edgeport", "token", "--data-dir", "/var/lib/edgeport").Output()
	if err != nil {
		t.Fatalf("edgeport token in pod 0: %v", err)
	}
	httpPort := cl.portForward(t, ns, "pod/"+pods[0], 8080)
	var st telemetry.Status
	var cs epcluster.Status
	waitFor(t, "pod 0's /statusz to list three healthy members", func() bool {
		st = statusz(t, httpPort, strings.TrimSpace(string(tok)))
		if st.Cluster == nil {
			return false
		}
		cs = *st.Cluster
		healthy := 0
		for _, m := range cs.Members {
			if m.Healthy {
				healthy++
			}
		}
		return healthy == replicas && len(cs.Members) == replicas
	})
	if len(cs.Routes) != replicas-1 || !cs.RouteTLS || !cs.RouteAuth || cs.JetStream.MetaLeader == "" ||
		st.Readiness == nil || !st.Readiness.Ready {
		t.Fatalf("pod 0 /statusz: routes %v tls %v auth %v, meta leader %q, readiness %+v",
			cs.Routes, cs.RouteTLS, cs.RouteAuth, cs.JetStream.MetaLeader, st.Readiness)
	}
	t.Logf("pod 0: members %+v, routes %v, meta leader %s", cs.Members, cs.Routes, cs.JetStream.MetaLeader)

	// A message published on pod 0 reaches a subscriber on pod 2.
	mqttAcross(t, cl.portForward(t, ns, "pod/"+pods[2], 1883), cl.portForward(t, ns, "pod/"+pods[0], 1883),
		"e2e/cluster", "from-pod-0-to-pod-2")
}

// statusz reads a node's /statusz with its token (a zero Status while it
// does not answer, within 5 s a request).
func statusz(t *testing.T, port int, token string) telemetry.Status {
	t.Helper()
	var st telemetry.Status
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/statusz", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		_ = json.NewDecoder(resp.Body).Decode(&st)
	}
	return st
}
