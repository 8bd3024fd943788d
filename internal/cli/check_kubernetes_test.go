package cli

import (
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The judgement of what the API server returned; test/helm runs the whole
// check against a real API server with good and broken releases.

func pod(name string, mut func(*corev1.Pod)) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.PodStatus{Phase: corev1.PodRunning,
		Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	if mut != nil {
		mut(&p)
	}
	return p
}

func notReady(p *corev1.Pod) { p.Status.Conditions[1].Status = corev1.ConditionFalse }

func TestJudgePod(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pod        corev1.Pod
		status     string
		msg, hint  string
		wantDetail any
	}{
		{name: "ready", pod: pod("p", nil), status: statusOK, msg: "Ready"},
		{name: "unscheduled", pod: pod("p", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodPending
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: "Unschedulable", Message: "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."}}
		}), status: statusFail, msg: "not scheduled: Unschedulable 0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."},
		{name: "crash loop", pod: pod("p", func(p *corev1.Pod) {
			notReady(p)
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{RestartCount: 4,
				State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 40s"}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}}}
		}), status: statusFail, msg: "not ready (Running): CrashLoopBackOff: back-off 40s, 4 restart(s)", hint: "kubectl logs --previous"},
		{name: "image", pod: pod("p", func(p *corev1.Pod) {
			notReady(p)
			p.Status.Phase = corev1.PodPending
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull"}}}}
		}), status: statusFail, msg: "not ready (Pending): ErrImageNeverPull"},
		{name: "terminating", pod: pod("p", func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }), status: statusWarn, msg: "terminating"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := judgePod(tc.pod)
			if got.Status != tc.status || got.Message != tc.msg || !strings.Contains(got.Hint, tc.hint) {
				t.Fatalf("got %s %q hint %q; want %s %q hint containing %q", got.Status, got.Message, got.Hint, tc.status, tc.msg, tc.hint)
			}
		})
	}
}

func TestJudgePodsCountsReplicas(t *testing.T) {
	two := int32(2)
	st := &kubeState{release: "r", listErrs: map[string]error{},
		statefulSets: []appsv1.StatefulSet{{Spec: appsv1.StatefulSetSpec{Replicas: &two}}},
		pods:         []corev1.Pod{pod("r-0", nil)}}
	got := judgePods(st)
	if got.Status != statusFail || got.Message != "1 of 2 pods ready" {
		t.Fatalf("one of two pods: %s %q", got.Status, got.Message)
	}
	st.statefulSets = nil
	if got := judgePods(st); got.Status != statusFail || !strings.Contains(got.Message, "no StatefulSet") {
		t.Fatalf("no StatefulSet: %s %q", got.Status, got.Message)
	}
}

func TestJudgeVolumes(t *testing.T) {
	withTemplate := []appsv1.StatefulSet{{Spec: appsv1.StatefulSetSpec{VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{}}}}}
	bound := corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data-0"}, Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-1"},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound, Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}
	pending := corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data-1"}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending}}
	for _, tc := range []struct {
		name   string
		sts    []appsv1.StatefulSet
		claims []corev1.PersistentVolumeClaim
		status string
		msg    string
	}{
		{"bound", withTemplate, []corev1.PersistentVolumeClaim{bound}, statusOK, "1 of 1 claims Bound"},
		{"pending", withTemplate, []corev1.PersistentVolumeClaim{bound, pending}, statusFail, "1 of 2 claims Bound"},
		{"no persistence", []appsv1.StatefulSet{{}}, nil, statusWarn, "no persistent volume: the data directory is lost with the pod"},
		{"claim missing", withTemplate, nil, statusFail, "no PersistentVolumeClaim was created"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := judgeVolumes(&kubeState{statefulSets: tc.sts, claims: tc.claims, listErrs: map[string]error{}})
			if got.Status != tc.status || got.Message != tc.msg {
				t.Fatalf("got %s %q, want %s %q", got.Status, got.Message, tc.status, tc.msg)
			}
		})
	}
}

func TestJudgeService(t *testing.T) {
	yes, no := true, false
	slice := func(svc string, ready ...*bool) discoveryv1.EndpointSlice {
		es := discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{discoveryv1.LabelServiceName: svc}}}
		for _, r := range ready {
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Conditions: discoveryv1.EndpointConditions{Ready: r}})
		}
		return es
	}
	svc := func(name string, typ corev1.ServiceType, clusterIP string) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Type: typ, ClusterIP: clusterIP}}
	}
	lb := svc("e", corev1.ServiceTypeLoadBalancer, "10.0.0.2")
	lbUp := lb
	lbUp.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.168.1.5"}}
	for _, tc := range []struct {
		name   string
		svc    corev1.Service
		slices []discoveryv1.EndpointSlice
		status string
		msg    string
	}{
		{"ready", svc("e", corev1.ServiceTypeClusterIP, "10.0.0.1"), []discoveryv1.EndpointSlice{slice("e", &yes), slice("other", &no)}, statusOK, "ClusterIP, 1 ready endpoint(s)"},
		{"nil ready is ready", svc("e", corev1.ServiceTypeClusterIP, "10.0.0.1"), []discoveryv1.EndpointSlice{slice("e", nil)}, statusOK, "ClusterIP, 1 ready endpoint(s)"},
		{"none ready", svc("e", corev1.ServiceTypeClusterIP, "10.0.0.1"), []discoveryv1.EndpointSlice{slice("e", &no)}, statusFail, "no ready endpoint: clients reach nothing"},
		{"no slice", svc("e", corev1.ServiceTypeClusterIP, "10.0.0.1"), nil, statusFail, "no ready endpoint: clients reach nothing"},
		{"headless not ready", svc("e", corev1.ServiceTypeClusterIP, "None"), []discoveryv1.EndpointSlice{slice("e", &no)}, statusWarn, "headless, 1 endpoint(s), none ready"},
		{"lb pending", lb, []discoveryv1.EndpointSlice{slice("e", &yes)}, statusWarn, "LoadBalancer, 1 ready endpoint(s); LoadBalancer address pending"},
		{"lb address", lbUp, []discoveryv1.EndpointSlice{slice("e", &yes)}, statusOK, "LoadBalancer, 1 ready endpoint(s) at 192.168.1.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := judgeService(tc.svc, tc.slices)
			if got.Status != tc.status || got.Message != tc.msg {
				t.Fatalf("got %s %q, want %s %q", got.Status, got.Message, tc.status, tc.msg)
			}
		})
	}
}

func TestJudgeHelm(t *testing.T) {
	for _, tc := range []struct {
		name   string
		revs   []helmRevision
		err    error
		status string
		msg    string
	}{
		{"deployed", []helmRevision{{2, "deployed"}, {1, "superseded"}}, nil, statusOK, "revision 2 deployed"},
		{"failed", []helmRevision{{3, "failed"}}, nil, statusFail, "revision 3 failed"},
		{"pending", []helmRevision{{1, "pending-install"}}, nil, statusWarn, "revision 1 pending-install"},
		{"missing", nil, nil, statusFail, `no Helm release "r" in namespace ns`},
		{"forbidden", nil, errors.New("secrets is forbidden"), statusWarn, "cannot read the Helm release: secrets is forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := judgeHelm(&kubeState{release: "r", namespace: "ns", helm: tc.revs, helmErr: tc.err})
			if got.Status != tc.status || got.Message != tc.msg {
				t.Fatalf("got %s %q, want %s %q", got.Status, got.Message, tc.status, tc.msg)
			}
		})
	}
}

func TestJudgeKubeResources(t *testing.T) {
	if got := judgeKubeResources(&kubeState{}); got.Status != statusWarn || !strings.Contains(got.Message, "CRDs are not installed") {
		t.Fatalf("no CRDs: %s %q", got.Status, got.Message)
	}
	var ok, bad apiObject
	ok.Metadata.Name, bad.Metadata.Name = "a", "b"
	ok.Kind, bad.Kind = "BrokerListener", "BrokerListener"
	ok.Status.Conditions = append(ok.Status.Conditions, struct {
		Type    string `json:"type"`
		Status  string `json:"status"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}{"Ready", "True", "Applied", ""})
	bad.Status.Conditions = append(bad.Status.Conditions, struct {
		Type    string `json:"type"`
		Status  string `json:"status"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}{"Ready", "False", "TLSError", "secret plant-cert not found"})
	got := judgeKubeResources(&kubeState{crdsInstalled: true, resources: map[string][]apiObject{"brokerlisteners": {bad, ok}}})
	if got.Status != statusFail || got.Message != "1 of 2 resources Ready" || got.Items[1].Message != "not Ready: TLSError: secret plant-cert not found" {
		t.Fatalf("got %+v", got)
	}
}
