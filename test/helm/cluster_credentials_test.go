package helm

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	epcluster "github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/cluster/clustertest"
)

// secretData decodes a rendered Secret's data.
func secretData(t *testing.T, s map[string]any) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for k, v := range get(s, "data").(map[string]any) {
		b, err := base64.StdEncoding.DecodeString(v.(string))
		if err != nil {
			t.Fatalf("data %s: %v", k, err)
		}
		out[k] = b
	}
	return out
}

// TestChartClusterGenerated: by default cluster mode generates the route
// secret and a route certificate of a new CA, and mounts them where the
// pods' flags read them. The generated certificate is what the nodes
// need (the DNS name, server and client authentication, signed by the
// CA): three real cluster nodes started with the rendered files form a
// cluster over mutual TLS and the secret.
func TestChartClusterGenerated(t *testing.T) {
	objs := manifests(t, render(t, "testdata/default.values.yaml", "--set", "cluster.enabled=true"))
	sec := secretData(t, find(t, objs, "Secret", "edgeport-cluster-secret"))
	tlsSec := find(t, objs, "Secret", "edgeport-cluster-tls")
	if get(tlsSec, "type") != "kubernetes.io/tls" {
		t.Errorf("route TLS Secret type %v", get(tlsSec, "type"))
	}
	tlsData := secretData(t, tlsSec)
	if len(sec["secret"]) < 40 {
		t.Fatalf("generated secret of %d bytes", len(sec["secret"]))
	}
	blk, _ := pem.Decode(tlsData["tls.crt"])
	if blk == nil {
		t.Fatal("tls.crt holds no PEM certificate")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(leaf.DNSNames, epcluster.RouteTLSName) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) ||
		!slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Fatalf("route certificate: names %v, usages %v", leaf.DNSNames, leaf.ExtKeyUsage)
	}

	sts := find(t, objs, "StatefulSet", "edgeport")
	c := get(sts, "spec", "template", "spec", "containers", 0)
	var args []string
	for _, a := range get(c, "args").([]any) {
		args = append(args, a.(string))
	}
	mounts := map[string]string{}
	for _, m := range get(c, "volumeMounts").([]any) {
		mounts[get(m, "name").(string)] = get(m, "mountPath").(string)
	}
	vols := map[string]string{}
	for _, v := range get(sts, "spec", "template", "spec", "volumes").([]any) {
		if s, ok := get(v, "secret", "secretName").(string); ok {
			vols[get(v, "name").(string)] = s
		}
	}
	for _, want := range []string{"--cluster-secret-file=" + mounts["cluster-secret"] + "/secret",
		"--cluster-tls-ca=" + mounts["cluster-tls"] + "/ca.crt", "--cluster-tls-cert=" + mounts["cluster-tls"] + "/tls.crt",
		"--cluster-tls-key=" + mounts["cluster-tls"] + "/tls.key"} {
		if !slices.Contains(args, want) {
			t.Errorf("args %v: missing %s", args, want)
		}
	}
	if vols["cluster-secret"] != "edgeport-cluster-secret" || vols["cluster-tls"] != "edgeport-cluster-tls" {
		t.Errorf("secret volumes %v", vols)
	}

	// The rendered files run a real cluster.
	dir := t.TempDir()
	files := map[string][]byte{"secret": sec["secret"], "ca.crt": tlsData["ca.crt"], "tls.crt": tlsData["tls.crt"], "tls.key": tlsData["tls.key"]}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfgs := clustertest.Configs(t, 3)
	for i := range cfgs {
		cfgs[i].CredentialsDir = dir // every pod mounts the same Secrets
	}
	nodes := clustertest.Start(t, cfgs)
	if st := nodes[0].Status(context.Background()); !st.RouteTLS || !st.RouteAuth || len(st.Routes) != 2 {
		t.Fatalf("status: routes %v tls %v auth %v", st.Routes, st.RouteTLS, st.RouteAuth)
	}
}

// TestChartClusterCredentialModes: existing Secrets are mounted as they
// are (nothing generated), cert-manager gets a Certificate for the route
// name and both usages, and a mode missing what it needs fails the render
// naming the value.
func TestChartClusterCredentialModes(t *testing.T) {
	objs := manifests(t, render(t, "testdata/default.values.yaml", "--set",
		"cluster.enabled=true,cluster.routeSecret.existingSecret=my-routes,cluster.routeTLS.mode=Secret,cluster.routeTLS.existingSecret=my-route-tls"))
	for _, o := range objs {
		if o["kind"] == "Secret" && strings.HasPrefix(get(o, "metadata", "name").(string), "edgeport-cluster") {
			t.Errorf("a Secret generated though existing ones are given: %v", get(o, "metadata", "name"))
		}
	}
	vols := map[string]string{}
	for _, v := range get(find(t, objs, "StatefulSet", "edgeport"), "spec", "template", "spec", "volumes").([]any) {
		if s, ok := get(v, "secret", "secretName").(string); ok {
			vols[get(v, "name").(string)] = s
		}
	}
	if vols["cluster-secret"] != "my-routes" || vols["cluster-tls"] != "my-route-tls" {
		t.Errorf("secret volumes %v", vols)
	}

	objs = manifests(t, render(t, "testdata/cluster.values.yaml"))
	crt := find(t, objs, "Certificate", "edgeport-cluster-tls")
	if get(crt, "spec", "secretName") != "edgeport-cluster-tls" || get(crt, "spec", "dnsNames", 0) != epcluster.RouteTLSName ||
		get(crt, "spec", "usages", 1) != "client auth" || get(crt, "spec", "issuerRef", "name") != "plant-cluster-ca" {
		t.Errorf("Certificate spec %v", get(crt, "spec"))
	}

	for set, want := range map[string]string{
		"cluster.enabled=true,cluster.routeTLS.mode=Secret":      "cluster.routeTLS.existingSecret: required with cluster.routeTLS.mode Secret",
		"cluster.enabled=true,cluster.routeTLS.mode=CertManager": "cluster.routeTLS.certManager.issuerRef.name: required",
	} {
		out, err := helmCmd(t, "template", "edgeport", chartDir(t), "--namespace", "edgeport", "--set", set)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: %v\n%s", set, err, out)
		}
	}
}

// TestChartClusterCredentialsKept: on a real API server, the generated
// route secret and certificate survive an upgrade unchanged (the chart
// looks them up instead of generating new ones, which would split the
// cluster while the pods roll).
func TestChartClusterCredentialsKept(t *testing.T) {
	cl := startCluster(t)
	ctx := t.Context()
	if out, err := cl.helm(t, "install", "edgeport", chartDir(t), "--namespace", "edgeport", "--create-namespace",
		"--set", "cluster.enabled=true,persistence.enabled=false"); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	read := func() (secret, cert []byte) {
		t.Helper()
		var s, c corev1.Secret
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "edgeport", Name: "edgeport-cluster-secret"}, &s); err != nil {
			t.Fatal(err)
		}
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "edgeport", Name: "edgeport-cluster-tls"}, &c); err != nil {
			t.Fatal(err)
		}
		return s.Data["secret"], c.Data["tls.crt"]
	}
	s1, c1 := read()
	if len(s1) == 0 || len(c1) == 0 {
		t.Fatal("install made empty credentials")
	}
	if out, err := cl.helm(t, "upgrade", "edgeport", chartDir(t), "--namespace", "edgeport", "--reuse-values",
		"--set", "broker.logLevel=debug"); err != nil {
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	s2, c2 := read()
	if string(s1) != string(s2) || string(c1) != string(c2) {
		t.Fatal("the upgrade replaced the route secret or certificate")
	}
}
