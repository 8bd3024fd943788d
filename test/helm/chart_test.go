package helm

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/edgeport/edgeport/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden renders in testdata/")

// helmCmd runs the real helm with its state kept inside the test's
// temporary directory, returning stdout; stderr goes into the error.
func helmCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.CommandContext(t.Context(), k8sBin(t, "helm"), args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.New(strings.TrimSpace(stderr.String() + "\n" + stdout.String() + "\n" + err.Error()))
	}
	return stdout.String(), nil
}

// valuesCases are the values files of testdata/, each with its golden render.
func valuesCases(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/*.values.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no values files in testdata: %v", err)
	}
	return files
}

func TestChartLint(t *testing.T) {
	for _, vf := range valuesCases(t) {
		t.Run(strings.TrimSuffix(filepath.Base(vf), ".values.yaml"), func(t *testing.T) {
			out, err := helmCmd(t, "lint", "--strict", chartDir(t), "-f", vf)
			if err != nil {
				t.Fatalf("helm lint: %v", err)
			}
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint did not pass:\n%s", out)
			}
		})
	}
}

// TestChartGolden renders the chart with each values file and compares the
// output with the committed golden file; -update rewrites them.
func TestChartGolden(t *testing.T) {
	for _, vf := range valuesCases(t) {
		name := strings.TrimSuffix(filepath.Base(vf), ".values.yaml")
		t.Run(name, func(t *testing.T) {
			got := render(t, vf)
			golden := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test ./test/helm -run TestChartGolden -update writes it)", err)
			}
			if got != string(want) {
				t.Errorf("render differs from %s (rerun with -update if the change is intended):\n%s", golden, lineDiff(string(want), got))
			}
		})
	}
}

func render(t *testing.T, valuesFile string, args ...string) string {
	t.Helper()
	out, err := helmCmd(t, append([]string{"template", "edgeport", chartDir(t), "--namespace", "edgeport", "-f", valuesFile}, args...)...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	return out
}

// lineDiff shows the first lines that differ, enough to see what changed.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 20; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString("line " + itoa(i+1) + ":\n  - " + wl + "\n  + " + gl + "\n")
			shown++
		}
	}
	return b.String()
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		if i /= 10; i == 0 {
			return string(b[n:])
		}
	}
}

// manifests decodes a render into its objects.
func manifests(t *testing.T, rendered string) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(rendered))
	var objs []map[string]any
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("decoding the render: %v", err)
		}
		if m != nil {
			objs = append(objs, m)
		}
	}
}

func find(t *testing.T, objs []map[string]any, kind, name string) map[string]any {
	t.Helper()
	for _, o := range objs {
		if o["kind"] == kind && get(o, "metadata", "name") == name {
			return o
		}
	}
	t.Fatalf("no %s %s in the render", kind, name)
	return nil
}

// get walks maps and lists (an int key indexes a list).
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// TestChartContract checks what the chart promises of the default render:
// a non-root, read-only pod that writes only to its data volume and /tmp,
// probes on /readyz and /healthz, and least-privilege RBAC.
func TestChartContract(t *testing.T) {
	objs := manifests(t, render(t, "testdata/default.values.yaml"))
	sts := find(t, objs, "StatefulSet", "edgeport")
	pod := get(sts, "spec", "template", "spec")
	c := get(pod, "containers", 0)

	for _, tc := range []struct {
		path []any
		want any
	}{
		{[]any{"securityContext", "runAsNonRoot"}, true},
		{[]any{"securityContext", "runAsUser"}, 65532},
		{[]any{"securityContext", "seccompProfile", "type"}, "RuntimeDefault"},
	} {
		if got := get(pod, tc.path...); got != tc.want {
			t.Errorf("pod %v = %v, want %v", tc.path, got, tc.want)
		}
	}
	for _, tc := range []struct {
		path []any
		want any
	}{
		{[]any{"securityContext", "readOnlyRootFilesystem"}, true},
		{[]any{"securityContext", "allowPrivilegeEscalation"}, false},
		{[]any{"securityContext", "capabilities", "drop", 0}, "ALL"},
		{[]any{"readinessProbe", "httpGet", "path"}, "/readyz"},
		{[]any{"livenessProbe", "httpGet", "path"}, "/healthz"},
		{[]any{"startupProbe", "httpGet", "path"}, "/healthz"},
	} {
		if got := get(c, tc.path...); got != tc.want {
			t.Errorf("container %v = %v, want %v", tc.path, got, tc.want)
		}
	}

	// Writable mounts: the data volume (a PVC) and the /tmp emptyDir only.
	var writable []string
	for _, m := range get(c, "volumeMounts").([]any) {
		if get(m, "readOnly") != true {
			writable = append(writable, get(m, "mountPath").(string))
		}
	}
	slices.Sort(writable)
	if !slices.Equal(writable, []string{"/tmp", "/var/lib/edgeport"}) {
		t.Errorf("writable mounts %v, want /tmp and /var/lib/edgeport", writable)
	}
	args := get(c, "args").([]any)
	if !slices.Contains(args, any("--data-dir=/var/lib/edgeport")) {
		t.Errorf("args %v: want the data dir on the volume", args)
	}
	if get(sts, "spec", "volumeClaimTemplates", 0, "metadata", "name") != "data" {
		t.Error("no volumeClaimTemplate for the data volume")
	}

	// RBAC (operator mode): namespaced Role only, no wildcard verbs, and
	// write access only where operator mode needs it.
	objs = manifests(t, render(t, "testdata/default.values.yaml", "--set", "operator.enabled=true"))
	for _, o := range objs {
		if o["kind"] == "ClusterRole" || o["kind"] == "ClusterRoleBinding" {
			t.Errorf("%s %v: the chart must need no cluster-wide rights", o["kind"], get(o, "metadata", "name"))
		}
	}
	role := find(t, objs, "Role", "edgeport")
	// Edgeport's resources are named one by one: the CRDs of crds/.
	var plurals []any
	crds, _ := filepath.Glob(filepath.Join(chartDir(t), "crds", "*.yaml"))
	for _, f := range crds {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd map[string]any
		if err := yaml.Unmarshal(b, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		plurals = append(plurals, get(crd, "spec", "names", "plural"))
	}
	slices.SortFunc(plurals, func(a, b any) int { return strings.Compare(a.(string), b.(string)) })
	if len(plurals) == 0 {
		plurals = []any{"*"} // no CRDs in the chart yet: the whole group
	}
	if got := get(role, "rules", 0, "resources"); !slices.Equal(got.([]any), plurals) {
		t.Errorf("Role's edgeport.io resources %v, want the CRDs' %v", got, plurals)
	}
	for _, r := range get(role, "rules").([]any) {
		verbs := get(r, "verbs").([]any)
		res := get(r, "resources").([]any)
		if slices.Contains(verbs, any("*")) {
			t.Errorf("rule %v grants every verb", r)
		}
		writes := slices.ContainsFunc(verbs, func(v any) bool { return v != "get" && v != "list" && v != "watch" })
		if !writes {
			continue
		}
		for _, x := range res {
			s := x.(string)
			if !strings.HasSuffix(s, "/status") && s != "leases" && s != "events" {
				t.Errorf("rule %v may write %s", r, s)
			}
		}
	}
}

// TestChartCluster checks the clustered render (cluster.enabled): N pods,
// each `serve --cluster` named after its pod, routing to every pod's name
// in the headless Service (which publishes pods before they are ready and
// carries the route port), no leader lease, and a PodDisruptionBudget.
func TestChartCluster(t *testing.T) {
	objs := manifests(t, render(t, "testdata/cluster.values.yaml", "--set", "cluster.replicas=5,cluster.routePort=7222"))
	sts := find(t, objs, "StatefulSet", "edgeport")
	if got := get(sts, "spec", "replicas"); got != 5 {
		t.Errorf("replicas %v, want 5", got)
	}
	if got := get(sts, "spec", "podManagementPolicy"); got != "Parallel" {
		t.Errorf("podManagementPolicy %v, want Parallel (a node is ready only once a quorum has started)", got)
	}
	c := get(sts, "spec", "template", "spec", "containers", 0)
	var args []string
	for _, a := range get(c, "args").([]any) {
		args = append(args, a.(string))
	}
	var routes []string
	for i := range 5 {
		routes = append(routes, "edgeport-"+itoa(i)+".edgeport-headless.edgeport.svc.cluster.local:7222")
	}
	for _, want := range []string{"--cluster", "--node-name=$(POD_NAME)", "--cluster-listen=0.0.0.0:7222",
		"--cluster-replicas=3", "--routes=" + strings.Join(routes, ","), "--kubernetes", "--leader-elect=false"} {
		if !slices.Contains(args, want) {
			t.Errorf("args %v: missing %s", args, want)
		}
	}
	if slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--lease-name") }) {
		t.Errorf("args %v: a cluster node takes no lease", args)
	}
	var port any
	for _, p := range get(c, "ports").([]any) {
		if get(p, "name") == "cluster" {
			port = get(p, "containerPort")
		}
	}
	if port != 7222 {
		t.Errorf("container port cluster = %v, want 7222", port)
	}
	hl := find(t, objs, "Service", "edgeport-headless")
	if get(hl, "spec", "publishNotReadyAddresses") != true || get(hl, "spec", "clusterIP") != "None" {
		t.Errorf("headless Service %v: want clusterIP None and publishNotReadyAddresses", get(hl, "spec"))
	}
	if get(hl, "spec", "ports", 1, "name") != "cluster" || get(hl, "spec", "ports", 1, "port") != 7222 {
		t.Errorf("headless Service ports %v: want the route port", get(hl, "spec", "ports"))
	}
	pdb := find(t, objs, "PodDisruptionBudget", "edgeport")
	if get(pdb, "spec", "maxUnavailable") != 1 {
		t.Errorf("PodDisruptionBudget %v: want maxUnavailable 1", get(pdb, "spec"))
	}

	// Without cluster mode: no routes, the lease as configured, no PDB.
	objs = manifests(t, render(t, "testdata/default.values.yaml"))
	for _, o := range objs {
		if o["kind"] == "PodDisruptionBudget" {
			t.Error("a PodDisruptionBudget without cluster mode or podDisruptionBudget.enabled")
		}
	}
	c = get(find(t, objs, "StatefulSet", "edgeport"), "spec", "template", "spec", "containers", 0)
	if args := get(c, "args").([]any); slices.Contains(args, any("--cluster")) || !slices.Contains(args, any("--leader-elect=true")) {
		t.Errorf("default args %v: want no --cluster and --leader-elect=true", args)
	}
}

// TestChartConfigIsValid decodes the Edgeport resources each render writes
// into the configuration ConfigMap with Edgeport's own validation: the chart
// never ships a listener the server would refuse.
func TestChartConfigIsValid(t *testing.T) {
	kinds := config.Builtin()
	for _, vf := range valuesCases(t) {
		t.Run(strings.TrimSuffix(filepath.Base(vf), ".values.yaml"), func(t *testing.T) {
			cm := find(t, manifests(t, render(t, vf)), "ConfigMap", "edgeport-config")
			data, _ := get(cm, "data").(map[string]any)
			if len(data) == 0 {
				t.Fatal("empty configuration")
			}
			var all strings.Builder
			for file, v := range data {
				if !strings.HasSuffix(file, ".yaml") {
					t.Errorf("%s: not a .yaml file, serve --config would ignore it", file)
				}
				all.WriteString("---\n" + v.(string))
			}
			docs, err := kinds.DecodeAll([]byte(all.String()))
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range docs {
				if d.Err != nil {
					t.Errorf("%s %s: %v", d.Kind, d.Name, d.Err)
				}
				if len(d.Warnings) > 0 {
					t.Errorf("%s %s: warnings %v", d.Kind, d.Name, d.Warnings)
				}
			}
		})
	}
}

// TestChartRejectsBadValues checks that values.schema.json and the
// templates refuse bad values with an error naming the value.
func TestChartRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name, set, want string
	}{
		{"service type", "service.type=Ingress", "at '/service/type': value must be one of 'ClusterIP', 'NodePort', 'LoadBalancer'"},
		{"unknown key", "listner.mqtt.port=1", "additional properties 'listner' not allowed"},
		{"port range", "listener.mqtt.port=70000", "at '/listener/mqtt/port': maximum: got 70,000, want 65,535"},
		{"tls mode", "tls.mode=Manual", "at '/tls/mode': value must be one of 'Automatic', 'CertManager', 'Secret'"},
		{"cert-manager issuer", "listener.mqtts.enabled=true,tls.mode=CertManager", "tls.certManager.issuerRef.name: required with tls.mode CertManager"},
		{"sync policy", "broker.syncPolicy=sometimes", "at '/broker/syncPolicy': value must be one of 'always', 'batch', 'none'"},
		{"jetstream replicas", "cluster.jetStreamReplicas=7", "at '/cluster/jetStreamReplicas': maximum: got 7, want 5"},
		{"cluster smaller than its replication", "cluster.enabled=true,cluster.replicas=2", "cluster.jetStreamReplicas: 3 is more than cluster.replicas (2)"},
		{"resource kind", "config.resources[0].apiVersion=edgeport.io/v1,config.resources[0].metadata.name=x", "missing property 'kind'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helmCmd(t, "template", "edgeport", chartDir(t), "--set", tc.set)
			if err == nil {
				t.Fatalf("--set %s rendered", tc.set)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("--set %s: error does not name %s:\n%v", tc.set, tc.want, err)
			}
		})
	}
}
