package cluster_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/cluster/clustertest"
	"github.com/edgeport/edgeport/internal/pki"
	"github.com/edgeport/edgeport/internal/testlog"
	"github.com/edgeport/edgeport/internal/testwait"
)

// startLogged starts a node whose log (debug level, the embedded
// server's included) goes to the returned buffer.
func startLogged(t *testing.T, cfg cluster.Config) (*cluster.Node, *testlog.Buffer) {
	t.Helper()
	var buf testlog.Buffer
	nd, err := cluster.New(cfg, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := nd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nd.Stop(context.Background()) })
	return nd, &buf
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// routeInfo opens a TLS connection to a route port with the credentials
// of credDir (no client certificate when certless) and reads the INFO the
// server sends after the handshake.
func routeInfo(addr net.Addr, credDir string, certless bool) (map[string]any, error) {
	info, _, err := routeDial(addr, credDir, certless)
	return info, err
}

// routeDial is routeInfo that also returns the certificate the node
// presented.
func routeDial(addr net.Addr, credDir string, certless bool) (map[string]any, *x509.Certificate, error) {
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(filepath.Join(credDir, cluster.CAFileName))
	if err != nil {
		return nil, nil, err
	}
	pool.AppendCertsFromPEM(ca)
	tc := &tls.Config{RootCAs: pool, ServerName: cluster.RouteTLSName}
	if !certless {
		cert, err := tls.LoadX509KeyPair(filepath.Join(credDir, cluster.CertFileName), filepath.Join(credDir, cluster.KeyFileName))
		if err != nil {
			return nil, nil, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr.String(), tc)
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return nil, nil, err
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(line), "INFO ")), &info); err != nil {
		return nil, nil, fmt.Errorf("route INFO %q: %w", line, err)
	}
	return info, c.ConnectionState().PeerCertificates[0], nil
}

// TestSecureRoutesForm: three nodes with credentials from InitCredentials
// form a cluster whose routes require TLS and the secret, replicate
// through JetStream, and log nothing of the secret or the keys.
func TestSecureRoutesForm(t *testing.T) {
	cfgs := clustertest.Configs(t, 3)
	dir := clustertest.Secure(t, cfgs)
	var nodes []*cluster.Node
	var logs []*testlog.Buffer
	for _, c := range cfgs {
		nd, buf := startLogged(t, c)
		nodes, logs = append(nodes, nd), append(logs, buf)
	}
	clustertest.WaitFormed(t, nodes...)
	st := nodes[0].Status(context.Background())
	if !st.RouteAuth || !st.RouteTLS || len(st.Routes) != 2 {
		t.Fatalf("status: routeAuth %v routeTLS %v routes %v", st.RouteAuth, st.RouteTLS, st.Routes)
	}
	if na := st.RouteCertNotAfter; na == nil || na.Before(time.Now().AddDate(9, 0, 0)) {
		t.Fatalf("status: route certificate valid until %v, want the CA's ten years", na)
	}
	// The route port speaks TLS first, wants a client certificate of the
	// cluster CA, then asks for the secret.
	info, err := routeInfo(nodes[1].RouteAddr(), filepath.Join(dir, "node1"), false)
	if err != nil || info["tls_required"] != true || info["auth_required"] != true {
		t.Fatalf("route INFO after a TLS handshake with a node certificate: %v %v", info, err)
	}
	if info, err := routeInfo(nodes[1].RouteAddr(), filepath.Join(dir, "node1"), true); err == nil {
		t.Fatalf("a route connection without a client certificate got INFO %v", info)
	}
	ctx := context.Background()
	kv, err := nodes[0].JetStream().CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "sec", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	kv3, err := nodes[2].JetStream().KeyValue(ctx, "sec")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv3.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
		t.Fatalf("replicated read on node3: %v", err)
	}
	secret := readFile(t, filepath.Join(dir, cluster.SecretFileName))
	key := readFile(t, filepath.Join(dir, "node1", cluster.KeyFileName))
	keyBody := strings.Split(key, "\n")[1]
	for i, l := range logs {
		if s := l.String(); strings.Contains(s, secret) || strings.Contains(s, keyBody) {
			t.Fatalf("node%d logged the secret or its key:\n%s", i+1, s)
		}
		if !strings.Contains(l.String(), "route_tls=true route_auth=true") {
			t.Fatalf("node%d does not log how its routes are secured:\n%s", i+1, l.String())
		}
	}
}

// TestRouteIntrudersRefused: of four route addresses, two nodes hold the
// cluster's credentials; a third has the right certificate but a wrong
// secret, a fourth the right secret but a certificate of another CA. The
// two form routes with each other only; the refusals are logged (saying
// why, without the secret).
func TestRouteIntrudersRefused(t *testing.T) {
	cfgs := clustertest.Configs(t, 4)
	dir := clustertest.Secure(t, cfgs)
	secret := readFile(t, filepath.Join(dir, cluster.SecretFileName))

	// node3: its own directory with the secret replaced.
	wrong := "a-wrong-secret-of-sufficient-length"
	if err := os.WriteFile(filepath.Join(dir, "node3", cluster.SecretFileName), []byte(wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// node4: certificates of another cluster's CA, this cluster's secret.
	other := t.TempDir()
	if _, err := cluster.InitCredentials(other, []string{"node4"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfgs[3].CredentialsDir = filepath.Join(other, "node4")
	cfgs[3].RouteSecretFile = filepath.Join(dir, cluster.SecretFileName)

	n1, log1 := startLogged(t, cfgs[0])
	n2, log2 := startLogged(t, cfgs[1])
	n3, log3 := startLogged(t, cfgs[2])
	n4, log4 := startLogged(t, cfgs[3])

	testwait.For(t, "node1 and node2 routed", func() bool {
		r1, r2 := n1.Status(context.Background()).Routes, n2.Status(context.Background()).Routes
		return len(r1) > 0 && len(r2) > 0
	})
	all := func() string { return log1.String() + log2.String() + log3.String() + log4.String() }
	// nats-server's words: the accepting side of a route with a wrong
	// password logs an authorization failure; a certificate of another CA
	// fails the handshake on both sides.
	testwait.For(t, "the wrong secret refused", func() bool {
		return strings.Contains(log1.String()+log2.String(), "authentication error") ||
			strings.Contains(log3.String(), "Authorization Violation")
	})
	testwait.For(t, "the foreign certificate refused", func() bool {
		return strings.Contains(all(), "certificate signed by unknown authority") ||
			strings.Contains(all(), "unknown certificate authority")
	})
	// The routes once settled. A refused route is listed on the side that
	// dialed it for the milliseconds between the remote's INFO and its
	// refusal, again at every retry (node1 listed node3 in 0.3% of
	// samples taken a millisecond apart): the steady state is judged, the
	// refusals are shown by the logs above.
	want := map[*cluster.Node][]string{n1: {"node2"}, n2: {"node1"}, n3: nil, n4: nil}
	got := map[*cluster.Node][]string{}
	if !testwait.Within(testwait.Timeout, func() bool {
		settled := true
		for nd, w := range want {
			got[nd] = nd.Status(context.Background()).Routes
			settled = settled && slices.Equal(got[nd], w)
		}
		return settled
	}) {
		for nd, w := range want {
			if !slices.Equal(got[nd], w) {
				t.Errorf("%s routes to %v, want %v (node1 and node2 to each other only, the intruders to none)", nd.Name(), got[nd], w)
			}
		}
	}
	if s := all(); strings.Contains(s, secret) || strings.Contains(s, wrong) {
		t.Fatalf("a secret was logged:\n%s", s)
	}
}

// TestExposedRoutesNeedCredentials: a node whose route listener is not on
// loopback, or which routes to another machine, does not start without
// the secret and TLS, and says which flags (and Broker fields) are
// missing; it binds nothing.
func TestExposedRoutesNeedCredentials(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		cfg  cluster.Config
		want string
	}{
		{cluster.Config{Name: "a", Listen: "0.0.0.0:0", Routes: []string{"127.0.0.1:1"}, StoreDir: dir},
			"--cluster-listen 0.0.0.0:0 is reachable from other machines, so routes must be authenticated and encrypted: missing --cluster-secret-file (spec.cluster.secretFile) and --cluster-tls-ca, --cluster-tls-cert and --cluster-tls-key (spec.cluster.tls)"},
		{cluster.Config{Name: "a", Listen: ":0", Routes: []string{"127.0.0.1:1"}, StoreDir: dir, RouteSecretFile: "s"},
			"missing --cluster-tls-ca, --cluster-tls-cert and --cluster-tls-key (spec.cluster.tls); --cluster-credentials <dir> (spec.cluster.credentialsDir)"},
		{cluster.Config{Name: "a", Listen: "[::]:0", Routes: []string{"127.0.0.1:1"}, StoreDir: dir, RouteTLS: cluster.TLSFiles{CA: "c", Cert: "c", Key: "k"}},
			"missing --cluster-secret-file (spec.cluster.secretFile);"},
		{cluster.Config{Name: "a", Listen: "127.0.0.1:0", Routes: []string{"127.0.0.1:1", "edge-1.plant:6222"}, StoreDir: dir, RouteSecretFile: "s"},
			"--routes[1] edge-1.plant:6222 is on another machine, so routes must be authenticated and encrypted: missing --cluster-tls-ca"},
	} {
		nd, err := cluster.New(c.cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = nd.Start(context.Background())
		if err == nil {
			_ = nd.Stop(context.Background())
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v:\n got %v\nwant %q", c.cfg, err, c.want)
		}
	}
}

func TestRouteSecurityValidate(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		cfg  cluster.Config
		want string
	}{
		{cluster.Config{Name: "a", StoreDir: dir, RouteTLS: cluster.TLSFiles{CA: "c"}},
			"--cluster-tls-ca, --cluster-tls-cert and --cluster-tls-key go together"},
		{cluster.Config{Name: "a", StoreDir: dir, Routes: []string{"nats-route://u:hunter2hunter2@h:1"}},
			"--routes[0]: a route address takes no credentials"},
		{cluster.Config{Name: "a", StoreDir: dir, ClientListen: "0.0.0.0:4222"},
			"--nats-listen 0.0.0.0:4222: the embedded server's NATS client port is plain TCP with a token, so it listens on loopback only"},
		{cluster.Config{Name: "a", StoreDir: dir, NATSAuth: cluster.NATSAuth{TokenFile: "t"}},
			"are for an external NATS (--nats-url)"},
		{cluster.Config{Name: "a", NATSURL: "nats://u:hunter2,hunter2@h:4222"},
			"--nats-url: URL 2 has credentials but no scheme (a comma in a password? use --nats-password-file)"},
		{cluster.Config{Name: "a", NATSURL: "nats://h:4222", CredentialsDir: "d"},
			"secure the embedded server's routes"},
		{cluster.Config{Name: "a", NATSURL: "nats://h:4222", NATSAuth: cluster.NATSAuth{TokenFile: "t", CredsFile: "c"}},
			"give at most one"},
		{cluster.Config{Name: "a", NATSURL: "nats://h:4222", NATSAuth: cluster.NATSAuth{User: "u"}},
			"--nats-user and --nats-password-file go together"},
		{cluster.Config{Name: "a", NATSURL: "nats://h:4222", NATSAuth: cluster.NATSAuth{TLS: cluster.TLSFiles{Cert: "c"}}},
			"--nats-tls-cert and --nats-tls-key go together"},
	} {
		_, err := cluster.New(c.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v:\n got %v\nwant %q", c.cfg, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error shows a password: %v", err)
		}
	}
	// On loopback no credentials are needed; with a credentials
	// directory the node takes all four files from it.
	nd, err := cluster.New(cluster.Config{Name: "a", StoreDir: dir, CredentialsDir: "/creds"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := nd.Config()
	if got.RouteSecretFile != "/creds/secret" || got.RouteTLS != (cluster.TLSFiles{CA: "/creds/ca.crt", Cert: "/creds/tls.crt", Key: "/creds/tls.key"}) {
		t.Fatalf("from the credentials directory: %+v %+v", got.RouteSecretFile, got.RouteTLS)
	}
}

// TestRouteSecretTooShort: a weak secret is refused at start, naming the
// flag and the file, not the content.
func TestRouteSecretTooShort(t *testing.T) {
	cfgs := clustertest.Configs(t, 1)
	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgs[0].RouteSecretFile = f
	nd, err := cluster.New(cfgs[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	err = nd.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--cluster-secret-file "+f+": must hold at least 16 characters") || strings.Contains(err.Error(), "short") {
		t.Fatalf("start with a short secret: %v", err)
	}
}

// TestInitCredentials: a second run keeps the CA and secret, adds new
// nodes and leaves existing ones alone; a node's directory holds what it
// needs and not the CA's key.
func TestInitCredentials(t *testing.T) {
	dir := t.TempDir()
	res, err := cluster.InitCredentials(dir, []string{"n1", "n2"}, time.Now())
	if err != nil || !res.CreatedCA || !res.CreatedSecret || len(res.Created) != 2 {
		t.Fatalf("first run: %+v %v", res, err)
	}
	cert1 := readFile(t, filepath.Join(dir, "n1", cluster.CertFileName))
	res, err = cluster.InitCredentials(dir, []string{"n1", "n3"}, time.Now())
	if err != nil || res.CreatedCA || res.CreatedSecret || len(res.Created) != 1 || res.Created[0] != "n3" || len(res.Kept) != 1 {
		t.Fatalf("second run: %+v %v", res, err)
	}
	if readFile(t, filepath.Join(dir, "n1", cluster.CertFileName)) != cert1 {
		t.Fatal("n1's certificate was reissued")
	}
	if readFile(t, filepath.Join(dir, "n3", cluster.SecretFileName)) != readFile(t, filepath.Join(dir, "n1", cluster.SecretFileName)) {
		t.Fatal("n3 got another secret")
	}
	ents, err := os.ReadDir(filepath.Join(dir, "n3"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		fi, _ := e.Info()
		if (e.Name() == cluster.KeyFileName || e.Name() == cluster.SecretFileName) && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", e.Name(), fi.Mode().Perm())
		}
	}
	if strings.Join(names, ",") != "ca.crt,secret,tls.crt,tls.key" {
		t.Fatalf("n3 holds %v", names)
	}
	if _, err := cluster.InitCredentials(dir, []string{"bad name"}, time.Now()); err == nil {
		t.Fatal("a bad node name was accepted")
	}
}

// TestRouteCertReloaded: a node replaces its route certificate when the
// files change (a renewal), with no restart: new route connections get
// the new one.
func TestRouteCertReloaded(t *testing.T) {
	cfgs := clustertest.Configs(t, 1)
	dir := clustertest.Secure(t, cfgs)
	nd, _ := startLogged(t, cfgs[0])
	own := filepath.Join(dir, "node1")
	_, old, err := routeDial(nd.RouteAddr(), own, false)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := ca.Issue(pki.Request{CommonName: "node1", DNSNames: []string{cluster.RouteTLSName}, Peer: true}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := pki.EncodePEM(renewed)
	if err != nil {
		t.Fatal(err)
	}
	// Each file replaced whole, as a Kubernetes Secret volume or cert-manager does.
	for name, data := range map[string][]byte{cluster.KeyFileName: keyPEM, cluster.CertFileName: certPEM} {
		tmp := filepath.Join(own, "."+name)
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(own, name)); err != nil {
			t.Fatal(err)
		}
	}
	var served *x509.Certificate
	testwait.For(t, "the renewed certificate served", func() bool {
		_, served, err = routeDial(nd.RouteAddr(), own, false)
		return err == nil && served.SerialNumber.Cmp(renewed.Leaf.SerialNumber) == 0
	})
	if served.SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Fatal("still the old certificate")
	}
	if na := nd.Status(context.Background()).RouteCertNotAfter; na == nil || !na.Equal(renewed.Leaf.NotAfter) {
		t.Fatalf("status: route certificate until %v, want the renewed one's %v", na, renewed.Leaf.NotAfter)
	}
}

// TestRouteCertCheckedAtStart: a certificate of the cluster CA that the
// other nodes would refuse — without the route name, or for server
// authentication only — stops the node at start, saying why.
func TestRouteCertCheckedAtStart(t *testing.T) {
	for name, req := range map[string]pki.Request{
		"no route name": {CommonName: "node1", DNSNames: []string{"node1"}, Peer: true},
		"server only":   {CommonName: "node1", DNSNames: []string{cluster.RouteTLSName}},
	} {
		cfgs := clustertest.Configs(t, 1)
		dir := clustertest.Secure(t, cfgs)
		ca, err := pki.LoadCA(filepath.Join(dir, "ca"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := ca.Issue(req, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		certPEM, keyPEM, err := pki.EncodePEM(c)
		if err != nil {
			t.Fatal(err)
		}
		own := filepath.Join(dir, "node1")
		for f, data := range map[string][]byte{cluster.CertFileName: certPEM, cluster.KeyFileName: keyPEM} {
			if err := os.WriteFile(filepath.Join(own, f), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		nd, err := cluster.New(cfgs[0], nil)
		if err != nil {
			t.Fatal(err)
		}
		err = nd.Start(context.Background())
		if err == nil {
			_ = nd.Stop(context.Background())
		}
		want := "--cluster-tls-cert " + filepath.Join(own, cluster.CertFileName) + ": not usable for routes (it must be signed by the cluster CA, name route.edgeport.cluster and allow server and client authentication)"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", name, err, want)
		}
	}
}
