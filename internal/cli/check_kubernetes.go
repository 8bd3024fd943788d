package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// edgeportGroupVersion is the API group and version of Edgeport's custom
// resources.
const edgeportGroupVersion = "edgeport.io/v1"

// kubeFlags select the release `check --kubernetes` evaluates.
type kubeFlags struct {
	enabled    bool
	kubeconfig string
	context    string
	namespace  string
	release    string
}

// kubeState is what the check reads from the API server, so that judging
// it (judgeRelease) is separate from fetching it.
type kubeState struct {
	host, version       string
	namespace, release  string
	helm                []helmRevision
	helmErr             error
	statefulSets        []appsv1.StatefulSet
	pods                []corev1.Pod
	claims              []corev1.PersistentVolumeClaim
	services            []corev1.Service
	endpointSlices      []discoveryv1.EndpointSlice
	resources           map[string][]apiObject // by plural
	resourcesErr        error
	crdsInstalled       bool
	listErrs            map[string]error // a list that failed, by what it lists
	statefulSetSelector string
}

// helmRevision is one stored revision of a Helm release: Helm 3 and 4
// keep each in a Secret labelled owner=helm, name, status and version.
type helmRevision struct {
	version int
	status  string
}

// runKubeChecks evaluates the release named by f in its namespace.
func runKubeChecks(ctx context.Context, f kubeFlags, timeout time.Duration) checkReport {
	rep := checkReport{Server: "kubernetes"}
	cfg, ns, err := kubeConfig(f)
	if err != nil {
		rep.add(checkResult{Name: "cluster", Status: statusFail, Message: err.Error(),
			Hint: "pass --kubeconfig, set KUBECONFIG, or run inside a pod with a service account"})
		return rep.finish()
	}
	rep.Server = fmt.Sprintf("kubernetes %s %s/%s", cfg.Host, ns, f.release)
	cfg.Timeout = timeout
	st, err := fetchKubeState(ctx, cfg, ns, f.release)
	if err != nil {
		rep.add(checkResult{Name: "cluster", Status: statusFail, Message: err.Error(),
			Hint: "is the API server reachable, and are the kubeconfig's credentials valid?"})
		return rep.finish()
	}
	for _, c := range judgeRelease(st) {
		rep.add(c)
	}
	return rep.finish()
}

// kubeConfig loads the kubeconfig as kubectl does (--kubeconfig, else
// KUBECONFIG, else ~/.kube/config, else the in-cluster service account)
// and returns it with the namespace to check.
func kubeConfig(f kubeFlags) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if f.kubeconfig != "" {
		rules.ExplicitPath = f.kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: f.context}
	if f.namespace != "" {
		overrides.Context.Namespace = f.namespace
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("loading the kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("the kubeconfig's namespace: %w", err)
	}
	return cfg, ns, nil
}

func fetchKubeState(ctx context.Context, cfg *rest.Config, ns, release string) (*kubeState, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", cfg.Host, err)
	}
	v, err := dc.ServerVersion()
	if err != nil {
		return nil, fmt.Errorf("reaching %s: %w", cfg.Host, err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", cfg.Host, err)
	}
	st := &kubeState{host: cfg.Host, version: v.GitVersion, namespace: ns, release: release,
		listErrs: map[string]error{}, resources: map[string][]apiObject{}}
	inRelease := client.MatchingLabels{"app.kubernetes.io/instance": release}
	inNS := client.InNamespace(ns)

	var secrets corev1.SecretList
	if err := c.List(ctx, &secrets, inNS, client.MatchingLabels{"owner": "helm", "name": release}); err != nil {
		st.helmErr = err
	}
	for _, s := range secrets.Items {
		n, _ := strconv.Atoi(s.Labels["version"])
		st.helm = append(st.helm, helmRevision{version: n, status: s.Labels["status"]})
	}
	sort.Slice(st.helm, func(i, j int) bool { return st.helm[i].version > st.helm[j].version })

	var sts appsv1.StatefulSetList
	if err := c.List(ctx, &sts, inNS, inRelease); err != nil {
		st.listErrs["statefulsets"] = err
	}
	st.statefulSets = sts.Items
	// The pods are the StatefulSets' own (their selector), not whatever
	// else carries the release label.
	var pods corev1.PodList
	for _, s := range st.statefulSets {
		if s.Spec.Selector == nil {
			continue
		}
		sel := labels.SelectorFromSet(s.Spec.Selector.MatchLabels)
		st.statefulSetSelector = sel.String()
		var list corev1.PodList
		if err := c.List(ctx, &list, inNS, client.MatchingLabelsSelector{Selector: sel}); err != nil {
			st.listErrs["pods"] = err
		}
		pods.Items = append(pods.Items, list.Items...)
	}
	st.pods = pods.Items
	var claims corev1.PersistentVolumeClaimList
	if err := c.List(ctx, &claims, inNS, inRelease); err != nil {
		st.listErrs["persistentvolumeclaims"] = err
	}
	st.claims = claims.Items
	var svcs corev1.ServiceList
	if err := c.List(ctx, &svcs, inNS, inRelease); err != nil {
		st.listErrs["services"] = err
	}
	st.services = svcs.Items
	for _, s := range st.services {
		var list discoveryv1.EndpointSliceList
		if err := c.List(ctx, &list, inNS, client.MatchingLabels{discoveryv1.LabelServiceName: s.Name}); err != nil {
			st.listErrs["endpointslices"] = err
		}
		st.endpointSlices = append(st.endpointSlices, list.Items...)
	}

	// Edgeport's resources: every kind the edgeport.io group serves.
	rl, err := dc.ServerResourcesForGroupVersion(edgeportGroupVersion)
	switch {
	case apierrors.IsNotFound(err):
		// No CRDs installed.
	case err != nil:
		st.resourcesErr = err
	default:
		st.crdsInstalled = true
		gv, _ := schema.ParseGroupVersion(edgeportGroupVersion)
		for _, r := range rl.APIResources {
			if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "list") {
				continue
			}
			list := &unstructured.UnstructuredList{}
			list.SetGroupVersionKind(gv.WithKind(r.Kind + "List"))
			if err := c.List(ctx, list, inNS); err != nil {
				st.resourcesErr = errors.Join(st.resourcesErr, fmt.Errorf("listing %s: %w", r.Name, err))
				continue
			}
			for _, u := range list.Items {
				var obj apiObject
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &obj); err != nil {
					b, _ := json.Marshal(u.Object)
					_ = json.Unmarshal(b, &obj)
				}
				obj.Kind = r.Kind
				st.resources[r.Name] = append(st.resources[r.Name], obj)
			}
		}
	}
	return st, nil
}

// judgeRelease turns what was read into the report's checks.
func judgeRelease(st *kubeState) []checkResult {
	return []checkResult{
		{Name: "cluster", Status: statusOK, Message: fmt.Sprintf("Kubernetes %s at %s", st.version, st.host)},
		judgeHelm(st),
		judgePods(st),
		judgeVolumes(st),
		judgeServices(st),
		judgeKubeResources(st),
	}
}

func judgeHelm(st *kubeState) checkResult {
	res := checkResult{Name: "release"}
	switch {
	case st.helmErr != nil:
		res.Status, res.Message = statusWarn, "cannot read the Helm release: "+st.helmErr.Error()
		res.Hint = "Helm keeps releases in Secrets; reading them needs list on secrets in the namespace"
	case len(st.helm) == 0:
		res.Status = statusFail
		res.Message = fmt.Sprintf("no Helm release %q in namespace %s", st.release, st.namespace)
		res.Hint = "helm list -A shows the installed releases; pass --release and --namespace"
	default:
		last := st.helm[0]
		res.Details = map[string]any{"revision": last.version, "status": last.status}
		res.Message = fmt.Sprintf("revision %d %s", last.version, last.status)
		switch {
		case last.status == "deployed":
			res.Status = statusOK
		case strings.HasPrefix(last.status, "pending"):
			res.Status = statusWarn
			res.Hint = "an install, upgrade or rollback is in progress (or was interrupted: helm rollback)"
		default:
			res.Status = statusFail
			res.Hint = "helm history " + st.release + " -n " + st.namespace + " shows what failed"
		}
	}
	return res
}

func judgePods(st *kubeState) checkResult {
	res := checkResult{Name: "pods", Status: statusOK}
	if err := st.listErrs["statefulsets"]; err != nil {
		res.Status, res.Message = statusFail, "listing StatefulSets: "+err.Error()
		return res
	}
	if len(st.statefulSets) == 0 {
		res.Status, res.Message = statusFail, fmt.Sprintf("no StatefulSet of release %s", st.release)
		res.Hint = "was the chart installed under another release name?"
		return res
	}
	if err := st.listErrs["pods"]; err != nil {
		res.Status, res.Message = statusFail, "listing pods: "+err.Error()
		return res
	}
	want := int32(0)
	for _, s := range st.statefulSets {
		if s.Spec.Replicas != nil {
			want += *s.Spec.Replicas
		} else {
			want++
		}
		if s.Status.UpdateRevision != "" && s.Status.CurrentRevision != s.Status.UpdateRevision {
			res.Status = worse(res.Status, statusWarn)
			res.Items = append(res.Items, checkResult{Name: "statefulset/" + s.Name, Status: statusWarn,
				Message: fmt.Sprintf("rolling out revision %s (%d of %d pods updated)", s.Status.UpdateRevision, s.Status.UpdatedReplicas, want)})
		}
	}
	ready := 0
	sort.Slice(st.pods, func(i, j int) bool { return st.pods[i].Name < st.pods[j].Name })
	for _, p := range st.pods {
		item := judgePod(p)
		if item.Status == statusOK {
			ready++
		}
		res.Status = worse(res.Status, item.Status)
		res.Items = append(res.Items, item)
	}
	res.Message = fmt.Sprintf("%d of %d pods ready", ready, want)
	if int32(ready) < want && res.Status == statusOK {
		res.Status = statusFail
	}
	if len(st.pods) == 0 && want > 0 {
		res.Status = statusFail
		res.Hint = "no pod was created: kubectl describe statefulset shows why (quota, admission, missing ServiceAccount)"
	}
	return res
}

// judgePod reports a pod's Ready condition, and when it is not ready the
// most telling reason: unscheduled, a waiting container, or restarts.
func judgePod(p corev1.Pod) checkResult {
	item := checkResult{Name: "pod/" + p.Name, Details: map[string]any{"phase": string(p.Status.Phase), "node": p.Spec.NodeName}}
	restarts := int32(0)
	var waiting, terminated string
	for _, cs := range p.Status.ContainerStatuses {
		restarts += cs.RestartCount
		if w := cs.State.Waiting; w != nil && waiting == "" {
			waiting = w.Reason
			if w.Message != "" {
				waiting += ": " + w.Message
			}
		}
		if t := cs.LastTerminationState.Terminated; t != nil && terminated == "" {
			terminated = fmt.Sprintf("last exit %d (%s)", t.ExitCode, t.Reason)
		}
	}
	item.Details["restarts"] = restarts
	if p.DeletionTimestamp != nil {
		item.Status, item.Message = statusWarn, "terminating"
		return item
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
			item.Status = statusFail
			item.Message = "not scheduled: " + strings.TrimSpace(c.Reason+" "+c.Message)
			return item
		}
	}
	if podReady(p) {
		item.Status, item.Message = statusOK, "Ready"
		if restarts > 0 {
			item.Message = fmt.Sprintf("Ready, %d restart(s)", restarts)
		}
		return item
	}
	item.Status = statusFail
	switch {
	case waiting != "":
		item.Message = fmt.Sprintf("not ready (%s): %s", p.Status.Phase, waiting)
	case terminated != "":
		item.Message = fmt.Sprintf("not ready (%s), %s", p.Status.Phase, terminated)
	default:
		item.Message = fmt.Sprintf("not ready (%s)", p.Status.Phase)
	}
	if restarts > 0 {
		item.Message += fmt.Sprintf(", %d restart(s)", restarts)
		item.Hint = "kubectl logs --previous shows why the container stopped"
	}
	return item
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func judgeVolumes(st *kubeState) checkResult {
	res := checkResult{Name: "volumes", Status: statusOK}
	if err := st.listErrs["persistentvolumeclaims"]; err != nil {
		res.Status, res.Message = statusFail, "listing PersistentVolumeClaims: "+err.Error()
		return res
	}
	templates := 0
	for _, s := range st.statefulSets {
		templates += len(s.Spec.VolumeClaimTemplates)
	}
	if len(st.claims) == 0 {
		if templates == 0 {
			res.Status, res.Message = statusWarn, "no persistent volume: the data directory is lost with the pod"
			res.Hint = "persistence.enabled=true keeps sessions, retained messages and the state store"
			return res
		}
		res.Status, res.Message = statusFail, "no PersistentVolumeClaim was created"
		return res
	}
	bound := 0
	sort.Slice(st.claims, func(i, j int) bool { return st.claims[i].Name < st.claims[j].Name })
	for _, c := range st.claims {
		item := checkResult{Name: "pvc/" + c.Name, Details: map[string]any{"phase": string(c.Status.Phase)}}
		if sc := c.Spec.StorageClassName; sc != nil {
			item.Details["storageClass"] = *sc
		}
		switch c.Status.Phase {
		case corev1.ClaimBound:
			bound++
			item.Status = statusOK
			size := c.Status.Capacity[corev1.ResourceStorage]
			item.Message = fmt.Sprintf("Bound to %s (%s)", c.Spec.VolumeName, size.String())
		case corev1.ClaimLost:
			item.Status, item.Message = statusFail, "Lost: its PersistentVolume is gone"
		default:
			item.Status, item.Message = statusFail, "Pending: no PersistentVolume or StorageClass provides it"
			item.Hint = "kubectl describe pvc " + c.Name + " shows the provisioner's events; set persistence.storageClassName"
		}
		res.Status = worse(res.Status, item.Status)
		res.Items = append(res.Items, item)
	}
	res.Message = fmt.Sprintf("%d of %d claims Bound", bound, len(st.claims))
	return res
}

func judgeServices(st *kubeState) checkResult {
	res := checkResult{Name: "services", Status: statusOK}
	for _, what := range []string{"services", "endpointslices"} {
		if err := st.listErrs[what]; err != nil {
			res.Status, res.Message = statusFail, "listing "+what+": "+err.Error()
			return res
		}
	}
	if len(st.services) == 0 {
		res.Status, res.Message = statusFail, fmt.Sprintf("no Service of release %s", st.release)
		return res
	}
	served := 0
	sort.Slice(st.services, func(i, j int) bool { return st.services[i].Name < st.services[j].Name })
	for _, s := range st.services {
		item := judgeService(s, st.endpointSlices)
		if item.Status == statusOK {
			served++
		}
		res.Status = worse(res.Status, item.Status)
		res.Items = append(res.Items, item)
	}
	res.Message = fmt.Sprintf("%d of %d Services have ready endpoints", served, len(st.services))
	return res
}

func judgeService(s corev1.Service, all []discoveryv1.EndpointSlice) checkResult {
	item := checkResult{Name: "service/" + s.Name}
	var ports []string
	for _, p := range s.Spec.Ports {
		port := fmt.Sprintf("%s %d", p.Name, p.Port)
		if p.NodePort != 0 {
			port += fmt.Sprintf(" (node %d)", p.NodePort)
		}
		ports = append(ports, port)
	}
	item.Details = map[string]any{"type": string(s.Spec.Type), "clusterIP": s.Spec.ClusterIP, "ports": strings.Join(ports, ", ")}
	ready, total := 0, 0
	for _, es := range all {
		if es.Labels[discoveryv1.LabelServiceName] != s.Name {
			continue
		}
		for _, ep := range es.Endpoints {
			total++
			// A nil ready condition means ready (the EndpointSlice API's rule).
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				ready++
			}
		}
	}
	item.Details["readyEndpoints"], item.Details["endpoints"] = ready, total
	headless := s.Spec.ClusterIP == corev1.ClusterIPNone
	switch {
	case ready == 0 && headless && total > 0:
		// A headless Service publishes pods that are not ready too.
		item.Status, item.Message = statusWarn, fmt.Sprintf("headless, %d endpoint(s), none ready", total)
	case ready == 0:
		item.Status, item.Message = statusFail, "no ready endpoint: clients reach nothing"
		item.Hint = "the Service has no ready pod behind it: see the pods check"
	case headless:
		item.Status, item.Message = statusOK, fmt.Sprintf("headless, %d ready endpoint(s)", ready)
	default:
		item.Status, item.Message = statusOK, fmt.Sprintf("%s, %d ready endpoint(s)", s.Spec.Type, ready)
	}
	if s.Spec.Type == corev1.ServiceTypeLoadBalancer {
		var addrs []string
		for _, in := range s.Status.LoadBalancer.Ingress {
			if in.IP != "" {
				addrs = append(addrs, in.IP)
			} else if in.Hostname != "" {
				addrs = append(addrs, in.Hostname)
			}
		}
		if len(addrs) == 0 {
			item.Status = worse(item.Status, statusWarn)
			item.Message += "; LoadBalancer address pending"
			item.Hint = "no load balancer assigned an address (K3s: is ServiceLB enabled and are the ports free on a node?)"
		} else {
			item.Details["loadBalancer"] = strings.Join(addrs, ", ")
			item.Message += " at " + strings.Join(addrs, ", ")
		}
	}
	return item
}

func judgeKubeResources(st *kubeState) checkResult {
	res := checkResult{Name: "resources", Status: statusOK}
	if st.resourcesErr != nil && !st.crdsInstalled {
		res.Status, res.Message = statusWarn, "cannot read Edgeport's resources: "+st.resourcesErr.Error()
		return res
	}
	if !st.crdsInstalled {
		res.Status, res.Message = statusWarn, "the edgeport.io CRDs are not installed"
		res.Hint = "operator mode needs them: they are in the chart's crds/ (kubectl apply -f deploy/helm/edgeport/crds/)"
		return res
	}
	if st.resourcesErr != nil {
		res.Status = statusWarn
		res.Items = append(res.Items, checkResult{Name: "list", Status: statusWarn, Message: st.resourcesErr.Error()})
	}
	total, ready := 0, 0
	kinds := make([]string, 0, len(st.resources))
	for k := range st.resources {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		objs := st.resources[k]
		sort.Slice(objs, func(i, j int) bool { return objs[i].Metadata.Name < objs[j].Metadata.Name })
		for _, obj := range objs {
			total++
			item := readiness(k, obj)
			if item.Status == statusOK {
				ready++
			}
			res.Status = worse(res.Status, item.Status)
			res.Items = append(res.Items, item)
		}
	}
	res.Message = fmt.Sprintf("%d of %d resources Ready", ready, total)
	return res
}
