package helm

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/edgeport/edgeport/internal/cli"
	"github.com/edgeport/edgeport/internal/testwait"
)

// report is the part of `edgeport check -o json` the tests read.
type report struct {
	Server string `json:"server"`
	Status string `json:"status"`
	Checks []struct {
		Name    string `json:"name"`
		Status  string `json:"status"`
		Message string `json:"message"`
		Items   []struct {
			Name    string `json:"name"`
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"items"`
	} `json:"checks"`
}

func (r report) check(name string) (status, message string, items []string) {
	for _, c := range r.Checks {
		if c.Name == name {
			for _, it := range c.Items {
				items = append(items, it.Status+" "+it.Name+": "+it.Message)
			}
			return c.Status, c.Message, items
		}
	}
	return "", "", nil
}

// checkKubernetes runs `edgeport check --kubernetes` in process and
// returns its exit code and report.
func (cl *cluster) checkKubernetes(t *testing.T, namespace, release string) (int, report, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := cli.Main([]string{"check", "--kubernetes", "--kubeconfig", cl.kubeconfig, "-n", namespace,
		"--release", release, "-o", "json"}, &stdout, &stderr)
	var rep report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("check -o json: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	return code, rep, stdout.String()
}

// TestChartInstall installs the chart with Helm v4 into a real API server
// (kwok's fake node plays the kubelet: pods are scheduled, marked running
// and ready, and get endpoints, but no container runs), checks the release
// with `edgeport check --kubernetes`, then a broken release, an upgrade and
// an uninstall.
func TestChartInstall(t *testing.T) {
	cl := startCluster(t)
	ctx := t.Context()

	// The volume an administrator provides (no dynamic provisioner here).
	cl.volume(ctx, t, "edgeport-data-0", "1Gi")
	out, err := cl.helm(t, "install", "edgeport", chartDir(t), "--namespace", "edgeport", "--create-namespace",
		"--wait", "--timeout", "3m", "--set", "listener.allowAnonymous=true")
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}

	var sts appsv1.StatefulSet
	if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "edgeport", Name: "edgeport"}, &sts); err != nil {
		t.Fatal(err)
	}
	if sts.Status.ReadyReplicas != 1 {
		t.Fatalf("StatefulSet ready replicas %d after helm install --wait", sts.Status.ReadyReplicas)
	}
	var pvc corev1.PersistentVolumeClaim
	if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "edgeport", Name: "data-edgeport-0"}, &pvc); err != nil {
		t.Fatal(err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName != "edgeport-data-0" {
		t.Fatalf("claim %s phase %s volume %q", pvc.Name, pvc.Status.Phase, pvc.Spec.VolumeName)
	}

	// The chart installed the CRDs: a resource in the namespace that no
	// operator has applied yet has no Ready condition.
	listener := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "edgeport.io/v1", "kind": "BrokerListener",
		"metadata": map[string]any{"name": "plant", "namespace": "edgeport"},
		"spec":     map[string]any{"ports": []any{map[string]any{"port": int64(8884), "protocol": "Mqtt", "address": "0.0.0.0"}}},
	}}
	if err := cl.c.Create(ctx, listener); err != nil {
		t.Fatalf("creating a BrokerListener: %v", err)
	}

	// A good release: every check passes.
	var rep report
	var code int
	var raw string
	if !testwait.Within(60*time.Second, func() bool {
		code, rep, raw = cl.checkKubernetes(t, "edgeport", "edgeport")
		s, _, _ := rep.check("services")
		return code == 0 && s == "ok"
	}) {
		t.Fatalf("check --kubernetes of the good release: exit %d\n%s", code, raw)
	}
	for name, want := range map[string]string{
		"cluster":   "ok",
		"release":   "ok",
		"pods":      "ok",
		"volumes":   "ok",
		"services":  "ok",
		"resources": "warn",
	} {
		if s, msg, items := rep.check(name); s != want {
			t.Errorf("good release: %s is %s (%s) %v, want %s", name, s, msg, items, want)
		}
	}
	if _, msg, _ := rep.check("pods"); msg != "1 of 1 pods ready" {
		t.Errorf("pods: %q", msg)
	}
	if _, msg, _ := rep.check("volumes"); msg != "1 of 1 claims Bound" {
		t.Errorf("volumes: %q", msg)
	}
	if _, msg, _ := rep.check("services"); msg != "3 of 3 Services have ready endpoints" {
		t.Errorf("services: %q", msg)
	}
	if _, msg, items := rep.check("resources"); msg != "0 of 1 resources Ready" || len(items) != 1 ||
		items[0] != "warn BrokerListener/plant: no Ready condition yet" {
		t.Errorf("resources: %q %v", msg, items)
	}

	// Once its status says Ready at its generation, the resource passes.
	// The test writes the status through the status subresource as the
	// operator does; operator mode itself is tested where it is built.
	if err := cl.c.Get(ctx, client.ObjectKeyFromObject(listener), listener); err != nil {
		t.Fatal(err)
	}
	setReady := func(u *unstructured.Unstructured, status, reason, message string) {
		t.Helper()
		_ = unstructured.SetNestedField(u.Object, u.GetGeneration(), "status", "observedGeneration")
		_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{"type": "Ready", "status": status,
			"reason": reason, "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"}}, "status", "conditions")
		if err := cl.c.Status().Update(ctx, u); err != nil {
			t.Fatalf("writing the status of %s: %v", u.GetName(), err)
		}
	}
	setReady(listener, "True", "Applied", "")
	code, rep, raw = cl.checkKubernetes(t, "edgeport", "edgeport")
	if s, msg, _ := rep.check("resources"); code != 0 || rep.Status != "ok" || s != "ok" || msg != "1 of 1 resources Ready" {
		t.Errorf("a Ready resource: exit %d, resources %s %q\n%s", code, s, msg, raw)
	}

	// A broken release: its claim asks for more than any volume offers, so
	// it stays Pending, the pod is never scheduled, and no Service has an
	// endpoint.
	out, err = cl.helm(t, "install", "broken", chartDir(t), "--namespace", "broken", "--create-namespace",
		"--set", "persistence.size=50Gi")
	if err != nil {
		t.Fatalf("helm install broken: %v\n%s", err, out)
	}
	if !testwait.Within(60*time.Second, func() bool {
		code, rep, raw = cl.checkKubernetes(t, "broken", "broken")
		_, _, items := rep.check("pods")
		return code == 1 && len(items) == 1 && strings.Contains(items[0], "not scheduled")
	}) {
		t.Fatalf("check --kubernetes of the broken release: exit %d\n%s", code, raw)
	}
	for name, want := range map[string]string{"release": "ok", "pods": "fail", "volumes": "fail", "services": "fail"} {
		if s, msg, items := rep.check(name); s != want {
			t.Errorf("broken release: %s is %s (%s) %v, want %s", name, s, msg, items, want)
		}
	}
	if _, _, items := rep.check("volumes"); len(items) != 1 || !strings.HasPrefix(items[0], "fail pvc/data-broken-edgeport-0: Pending") {
		t.Errorf("broken release volumes: %v", items)
	}
	if _, _, items := rep.check("pods"); !strings.Contains(items[0], "unbound immediate PersistentVolumeClaims") {
		t.Errorf("broken release pods: %v", items)
	}

	// A resource that is not Ready fails the check, with its reason.
	bad := listener.DeepCopy()
	bad.SetNamespace("broken")
	bad.SetResourceVersion("")
	unstructured.RemoveNestedField(bad.Object, "status")
	if err := cl.c.Create(ctx, bad); err != nil {
		t.Fatal(err)
	}
	setReady(bad, "False", "TLSError", "secret plant-cert not found")
	_, rep, raw = cl.checkKubernetes(t, "broken", "broken")
	if s, _, items := rep.check("resources"); s != "fail" || len(items) != 1 ||
		items[0] != "fail BrokerListener/plant: not Ready: TLSError: secret plant-cert not found" {
		t.Errorf("a resource not Ready: %s %v\n%s", s, items, raw)
	}

	// No release at all.
	code, rep, raw = cl.checkKubernetes(t, "edgeport", "nosuch")
	if s, _, _ := rep.check("release"); code != 1 || s != "fail" {
		t.Errorf("check of a release that does not exist: exit %d\n%s", code, raw)
	}

	// Upgrade: the MQTT Service becomes a NodePort, the rest stays.
	out, err = cl.helm(t, "upgrade", "edgeport", chartDir(t), "--namespace", "edgeport", "--reuse-values",
		"--set", "service.type=NodePort", "--wait", "--timeout", "3m")
	if err != nil {
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	var svc corev1.Service
	if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "edgeport", Name: "edgeport"}, &svc); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.Ports[0].NodePort == 0 {
		t.Errorf("after the upgrade the MQTT Service is %s, node port %d", svc.Spec.Type, svc.Spec.Ports[0].NodePort)
	}
	code, rep, raw = cl.checkKubernetes(t, "edgeport", "edgeport")
	if s, msg, _ := rep.check("release"); code != 0 || s != "ok" || msg != "revision 2 deployed" {
		t.Errorf("after the upgrade: exit %d, release %s %q\n%s", code, s, msg, raw)
	}

	// Uninstall: the workload goes, the data claim stays (retention Retain).
	out, err = cl.helm(t, "uninstall", "edgeport", "--namespace", "edgeport", "--wait", "--timeout", "2m")
	if err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	err = cl.c.Get(ctx, client.ObjectKey{Namespace: "edgeport", Name: "edgeport"}, &sts)
	if !apierrors.IsNotFound(err) {
		t.Errorf("StatefulSet after uninstall: %v", err)
	}
	if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "edgeport", Name: "data-edgeport-0"}, &pvc); err != nil {
		t.Errorf("the data claim did not survive the uninstall: %v", err)
	}
}
