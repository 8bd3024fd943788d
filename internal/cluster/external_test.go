package cluster_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/cluster/clustertest"
	"github.com/edgeport/edgeport/internal/testpki"
)

// tlsFiles are a test CA's certificate, a server certificate for
// 127.0.0.1 and a client certificate, written as PEM files.
type tlsFiles struct{ ca, srvCert, srvKey, cliCert, cliKey string }

func newTLSFiles(t *testing.T) tlsFiles {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, pkix.Name{CommonName: "external NATS test CA"})
	srv := ca.Server(t, "nats")
	cli := ca.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "edgeport-node"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	f := tlsFiles{}
	for _, w := range []struct {
		path *string
		name string
		data []byte
	}{
		{&f.ca, "ca.crt", ca.CertPEM()},
		{&f.srvCert, "server.crt", srv.CertPEM()}, {&f.srvKey, "server.key", srv.KeyPEM()},
		{&f.cliCert, "client.crt", cli.CertPEM()}, {&f.cliKey, "client.key", cli.KeyPEM()},
	} {
		*w.path = filepath.Join(dir, w.name)
		testpki.WriteFile(t, *w.path, w.data)
	}
	return f
}

// startExternal starts a node on the external NATS at url; the error is
// Start's.
func startExternal(t *testing.T, url string, auth cluster.NATSAuth) (*cluster.Node, error) {
	t.Helper()
	nd, err := cluster.New(cluster.Config{Name: "ext1", NATSURL: url, NATSAuth: auth, HeartbeatInterval: 200 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nd.Start(ctx); err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = nd.Stop(context.Background()) })
	return nd, nil
}

// TestExternalNATSTokenAndMutualTLS: a standalone nats-server requiring a
// token and TLS with client certificates. A node with the token file, the
// server's CA and a client certificate joins (its status says TLS, and
// JetStream answers); a wrong token, a missing CA or a missing client
// certificate is refused with an error that names what to fix and shows
// no token.
func TestExternalNATSTokenAndMutualTLS(t *testing.T) {
	const token = "external-token-0123456789abcdef"
	tf := newTLSFiles(t)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: tf.srvCert, KeyFile: tf.srvKey, CaFile: tf.ca, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := clustertest.StartNATS(t, func(o *server.Options) {
		o.Authorization = token
		o.TLSConfig, o.TLS, o.TLSVerify = tc, true, true
	})
	dir := t.TempDir()
	tokFile, wrongFile := filepath.Join(dir, "token"), filepath.Join(dir, "wrong")
	testpki.WriteFile(t, tokFile, []byte(token+"\n"))
	testpki.WriteFile(t, wrongFile, []byte("not-the-token-at-all\n"))
	mtls := cluster.TLSFiles{CA: tf.ca, Cert: tf.cliCert, Key: tf.cliKey}

	nd, err := startExternal(t, srv.ClientURL(), cluster.NATSAuth{TokenFile: tokFile, TLS: mtls})
	if err != nil {
		t.Fatal(err)
	}
	st := nd.Status(context.Background())
	if !st.Connected || !st.External || !st.NATSTLS || !st.JetStream.Enabled || st.JetStream.Error != "" {
		t.Fatalf("status: %+v", st)
	}

	for _, c := range []struct {
		name string
		auth cluster.NATSAuth
		want string
	}{
		{"wrong token", cluster.NATSAuth{TokenFile: wrongFile, TLS: mtls}, "Authorization Violation (check --nats-user/--nats-password-file, --nats-token-file"},
		{"no CA", cluster.NATSAuth{TokenFile: tokFile, TLS: cluster.TLSFiles{Cert: tf.cliCert, Key: tf.cliKey}}, "certificate signed by unknown authority (check --nats-tls-ca"},
		{"no client certificate", cluster.NATSAuth{TokenFile: tokFile, TLS: cluster.TLSFiles{CA: tf.ca}}, "(check --nats-tls-ca, and --nats-tls-cert/--nats-tls-key"}, // "certificate required" or the connection closed, as TLS 1.3 goes
		{"no token", cluster.NATSAuth{TLS: mtls}, "Authorization Violation"},
	} {
		_, err := startExternal(t, srv.ClientURL(), c.auth)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "NATS at tls://127.0.0.1:") {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), token) {
			t.Errorf("%s: the error shows the token: %v", c.name, err)
		}
	}
}

// TestExternalNATSUserAndNKey: user and password, and an NKey seed, each
// on a server that requires it (plain TCP on loopback is allowed). A
// password in the URL never shows in the status or an error.
func TestExternalNATSUserAndNKey(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	dir := t.TempDir()
	seedFile, pwFile := filepath.Join(dir, "user.nk"), filepath.Join(dir, "password")
	testpki.WriteFile(t, seedFile, seed)
	testpki.WriteFile(t, pwFile, []byte("s3cret-password\n"))

	nk := clustertest.StartNATS(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })
	nd, err := startExternal(t, nk.ClientURL(), cluster.NATSAuth{NKeyFile: seedFile})
	if err != nil {
		t.Fatal(err)
	}
	if st := nd.Status(context.Background()); !st.Connected || st.NATSTLS || !st.JetStream.Enabled {
		t.Fatalf("nkey: status %+v", st)
	}
	if _, err := startExternal(t, nk.ClientURL(), cluster.NATSAuth{}); err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
		t.Fatalf("no nkey: %v", err)
	}

	up := clustertest.StartNATS(t, func(o *server.Options) { o.Username, o.Password = "edge", "s3cret-password" })
	nd, err = startExternal(t, up.ClientURL(), cluster.NATSAuth{User: "edge", PasswordFile: pwFile})
	if err != nil {
		t.Fatal(err)
	}
	if st := nd.Status(context.Background()); !st.Connected || !st.JetStream.Enabled {
		t.Fatalf("user/password: status %+v", st)
	}
	// Credentials in the URL work too (nats.go takes them), and are
	// redacted from the status and errors.
	u := strings.Replace(up.ClientURL(), "nats://", "nats://edge:s3cret-password@", 1)
	nd, err = startExternal(t, u, cluster.NATSAuth{})
	if err != nil {
		t.Fatal(err)
	}
	if st := nd.Status(context.Background()); strings.Contains(st.NATSURL, "s3cret") {
		t.Fatalf("status shows the password: %s", st.NATSURL)
	}
	bad := strings.Replace(up.ClientURL(), "nats://", "nats://edge:wrong-s3cret@", 1)
	if _, err := startExternal(t, bad, cluster.NATSAuth{}); err == nil || strings.Contains(err.Error(), "wrong-s3cret") || !strings.Contains(err.Error(), "xxxxx") {
		t.Fatalf("a wrong password in the URL: %v", err)
	}
}

// TestExternalNATSCredsFile: a nats-server in operator mode (JWT
// accounts, as nsc sets one up) admits a node with a user credentials
// file (--nats-creds) and refuses one with the credentials of a user its
// operator did not sign.
func TestExternalNATSCredsFile(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	oclaims, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	account := func(signer nkeys.KeyPair, js bool) (nkeys.KeyPair, string) {
		akp, _ := nkeys.CreateAccount()
		apub, _ := akp.PublicKey()
		ac := jwt.NewAccountClaims(apub)
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		ajwt, err := ac.Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		if err := resolver.Store(apub, ajwt); err != nil {
			t.Fatal(err)
		}
		return akp, apub
	}
	_, sysPub := account(okp, false)
	akp, _ := account(okp, true)
	creds := func(akp nkeys.KeyPair) string {
		ukp, _ := nkeys.CreateUser()
		upub, _ := ukp.PublicKey()
		ujwt, err := jwt.NewUserClaims(upub).Encode(akp)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := ukp.Seed()
		b, err := jwt.FormatUserConfig(ujwt, seed)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "user.creds")
		testpki.WriteFile(t, f, b)
		return f
	}
	srv := clustertest.StartNATS(t, func(o *server.Options) {
		o.TrustedOperators = []*jwt.OperatorClaims{oclaims}
		o.AccountResolver = resolver
		o.SystemAccount = sysPub
	})
	nd, err := startExternal(t, srv.ClientURL(), cluster.NATSAuth{CredsFile: creds(akp)})
	if err != nil {
		t.Fatal(err)
	}
	if st := nd.Status(context.Background()); !st.Connected || !st.JetStream.Enabled || st.JetStream.Error != "" {
		t.Fatalf("status %+v", st)
	}
	// An account signed by another operator is unknown to this server.
	other, _ := nkeys.CreateOperator()
	foreign, _ := account(other, true)
	if _, err := startExternal(t, srv.ClientURL(), cluster.NATSAuth{CredsFile: creds(foreign)}); err == nil || !strings.Contains(err.Error(), "--nats-creds") {
		t.Fatalf("foreign credentials: %v", err)
	}
}
