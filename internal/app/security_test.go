package app

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/edgeport/edgeport/internal/auth"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/pki"
	"github.com/edgeport/edgeport/internal/testwait"
)

func tcp(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func login(id, user, pass string) *packet.Connect {
	return &packet.Connect{ClientID: id, HasUsername: true, Username: user, HasPassword: true, Password: []byte(pass)}
}

// connectCode connects and returns the CONNACK reason.
func connectCode(t *testing.T, addr string, cp *packet.Connect) packet.ReasonCode {
	t.Helper()
	_, ack := dialAs(t, tcp(t, addr), cp)
	return ack.ReasonCode
}

// loopbackTo turns a wildcard listen address into one to dial.
func loopbackTo(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return net.JoinHostPort("127.0.0.1", port)
}

// hashFor returns an argon2id hash of pw with the least parameters the
// password method accepts (the method reads them from the hash): the same
// verification as for auth.HashPassword's hashes, without their CPU cost,
// which a loaded -race run turns into seconds per CONNECT.
func hashFor(t *testing.T, pw string) string {
	t.Helper()
	salt := []byte(t.Name() + "-salt")
	key := argon2.IDKey([]byte(pw), salt, 1, 8, 1, 32)
	enc := base64.RawStdEncoding
	h := fmt.Sprintf("$argon2id$v=%d$m=8,t=1,p=1$%s$%s", argon2.Version, enc.EncodeToString(salt), enc.EncodeToString(key))
	if _, err := auth.NewPasswords("", []auth.PasswordUser{{Username: "u", PasswordHash: h}}, nil); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestSecurityResourcesLive: BrokerAuthentication and BrokerAuthorization
// resources are enforced on the ports that reference them, changes apply
// without restarting ports or disconnecting anyone still allowed, and a
// port on a public address is closed unless it says otherwise.
func TestSecurityResourcesLive(t *testing.T) {
	data := t.TempDir()
	a := startApp(t, Config{DataDir: data, InMemory: true})
	pwFile := filepath.Join(data, "passwords")
	if err := os.WriteFile(pwFile, []byte("bob:"+hashFor(t, "b-pw")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	authn := `apiVersion: edgeport.io/v1
kind: BrokerAuthentication
metadata: {name: plant-authn}
spec:
  authenticationMethods:
  - method: UsernamePassword
    usernamePasswordSettings:
      passwordFile: ` + pwFile + `
      users:
      - {username: alice, passwordHash: "` + hashFor(t, "a-pw") + `", attributes: {line: "1"}}
      - {username: carol, passwordHash: "` + hashFor(t, "c-pw") + `"}
`
	policy := func(users string) string {
		return `apiVersion: edgeport.io/v1
kind: BrokerAuthorization
metadata: {name: plant-authz}
spec:
  authorizationPolicies:
    rules:
    - principals: {usernames: [` + users + `]}
      brokerResources:
      - method: Connect
      - method: Publish
        topics: ["plant/#"]
      - method: Subscribe
        topics: ["plant/{principal.attributes.line}/#"]
`
	}
	apply(t, a, authn)
	apply(t, a, policy("alice, bob, carol"))
	for _, k := range []config.Key{{Kind: "BrokerAuthentication", Name: "plant-authn"}, {Kind: "BrokerAuthorization", Name: "plant-authz"}} {
		if c := waitStatus(t, a, k, config.ConditionTrue).Ready(); c.Reason != "Applied" {
			t.Fatalf("%s: %+v", k, c)
		}
	}
	apply(t, a, listenerYAML("plant", "{port: 0, authenticationRef: plant-authn, authorizationRef: plant-authz}"))
	apply(t, a, listenerYAML("open", "{port: 0, address: 0.0.0.0}"))
	apply(t, a, listenerYAML("anon", "{port: 0, address: 0.0.0.0, allowAnonymous: true}"))
	plantKey := config.Key{Kind: "BrokerListener", Name: "plant"}
	o := waitStatus(t, a, plantKey, config.ConditionTrue)
	addr := portAddr(t, o, 0)
	// Bound, but admitting nobody: not Ready, and the message says why.
	open := waitStatus(t, a, config.Key{Kind: "BrokerListener", Name: "open"}, config.ConditionFalse)
	if c := open.Ready(); c.Reason != "AdmitsNobody" || !strings.Contains(c.Message, "every client is refused") {
		t.Fatalf("open listener status %+v", c)
	}
	anon := waitStatus(t, a, config.Key{Kind: "BrokerListener", Name: "anon"}, config.ConditionTrue)

	// Secure default: a public port without authentication admits nobody,
	// unless anonymous access is explicit; the serve flags' loopback port
	// stays open.
	if got := connectCode(t, loopbackTo(portAddr(t, open, 0)), &packet.Connect{ClientID: "x"}); got != packet.NotAuthorized {
		t.Fatalf("public port without authentication: %v", got)
	}
	if got := connectCode(t, loopbackTo(portAddr(t, anon, 0)), &packet.Connect{ClientID: "x"}); got != packet.Success {
		t.Fatalf("public port with allowAnonymous: %v", got)
	}
	if got := connectCode(t, a.Addrs()["mqtt"].String(), &packet.Connect{ClientID: "x"}); got != packet.Success {
		t.Fatalf("built-in port: %v", got)
	}

	for _, tc := range []struct {
		cp   *packet.Connect
		want packet.ReasonCode
	}{
		{login("w", "alice", "wrong"), packet.BadUserNameOrPassword},
		{&packet.Connect{ClientID: "nobody"}, packet.NotAuthorized},
		{login("b0", "bob", "b-pw"), packet.Success}, // from the file
	} {
		if got := connectCode(t, addr, tc.cp); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.cp.ClientID, got, tc.want)
		}
	}
	alice, _ := dialAs(t, tcp(t, addr), login("alice", "alice", "a-pw"))
	carol, _ := dialAs(t, tcp(t, addr), login("carol", "carol", "c-pw"))
	p, _, _ := a.Broker().ClientPrincipal("alice")
	if p == nil || p.Username != "alice" || p.Attributes["line"] != "1" {
		t.Fatalf("principal %+v", p)
	}

	// A user added to the password file can connect without an apply.
	if err := os.WriteFile(pwFile, []byte("bob:"+hashFor(t, "b-pw")+"\ndave:"+hashFor(t, "d-pw")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "dave to be accepted", func() bool {
		c, ack := dialAs(t, tcp(t, addr), login("dave-probe", "dave", "d-pw"))
		c.conn.Close()
		return ack.ReasonCode == packet.NotAuthorized // known now; the policy does not list dave
	})

	// A stricter policy: carol goes (0x87), alice stays, the port stays.
	apply(t, a, policy("alice, bob"))
	if d := carol.disconnected(); d == nil || d.ReasonCode != packet.NotAuthorized {
		t.Fatalf("carol: %+v", d)
	}
	alice.alive()
	if o := waitStatus(t, a, plantKey, config.ConditionTrue); portAddr(t, o, 0) != addr {
		t.Fatal("the port was restarted")
	}

	// Another BrokerAuthentication on the port: applies to new clients,
	// alice stays connected, the port stays.
	apply(t, a, strings.NewReplacer("plant-authn", "other-authn", "alice", "erin").Replace(authn))
	apply(t, a, listenerYAML("plant", "{port: 0, authenticationRef: other-authn, authorizationRef: plant-authz}"))
	o = waitStatus(t, a, plantKey, config.ConditionTrue)
	if portAddr(t, o, 0) != addr {
		t.Fatal("changing authenticationRef restarted the port")
	}
	testwait.For(t, "the new authentication to apply", func() bool {
		return connectCode(t, addr, login("erin", "erin", "a-pw")) == packet.NotAuthorized // known, not in the policy
	})
	if got := connectCode(t, addr, login("alice2", "alice", "a-pw")); got != packet.BadUserNameOrPassword {
		t.Fatalf("alice under the new authentication: %v", got)
	}
	alice.alive()

	// The policy is deleted: a policy is still referenced, so nothing is
	// allowed, and the status says why.
	if _, err := a.Resources().Delete(config.Key{Kind: "BrokerAuthorization", Name: "plant-authz"}, ""); err != nil {
		t.Fatal(err)
	}
	if d := alice.disconnected(); d == nil || d.ReasonCode != packet.NotAuthorized {
		t.Fatalf("alice after the policy was deleted: %+v", d)
	}
	testwait.For(t, "the status to name the missing policy", func() bool {
		o, _ := a.Resources().Get(plantKey)
		return strings.Contains(o.Ready().Message, `BrokerAuthorization "plant-authz" not found: every operation is denied`)
	})
}

// TestX509Authentication: a TLS port whose BrokerAuthentication has an
// X509 method asks clients for their certificate; its CN becomes the user
// name and the configured attributes are given.
func TestX509Authentication(t *testing.T) {
	data := t.TempDir()
	a := startApp(t, Config{DataDir: data, InMemory: true})
	devices, _, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "devices"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(data, "devices.pem")
	if err := os.WriteFile(caFile, devices.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	apply(t, a, `apiVersion: edgeport.io/v1
kind: BrokerAuthentication
metadata: {name: certs}
spec:
  authenticationMethods:
  - method: X509
    x509Settings:
      trustedClientCaCertFile: `+caFile+`
      authorizationAttributes:
        press:
          subject: CN = press-7, O = Edgeport
          attributes: {line: "7"}
  - method: UsernamePassword
    usernamePasswordSettings:
      users: [{username: alice, passwordHash: "`+hashFor(t, "pw")+`"}]
`)
	apply(t, a, listenerYAML("tls", "{port: 0, authenticationRef: certs, tls: {mode: Automatic}}"))
	o := waitStatus(t, a, config.Key{Kind: "BrokerListener", Name: "tls"}, config.ConditionTrue)
	ca, err := pki.LoadCA(pki.Dir(data))
	if err != nil {
		t.Fatal(err)
	}
	addr := portAddr(t, o, 0)
	device := issue(t, devices, pki.Request{CommonName: "press-7", Client: true})
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: poolOf(ca.Cert), Certificates: []tls.Certificate{*device}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ack := dialAs(t, conn, &packet.Connect{ClientID: "press"}); ack.ReasonCode != packet.Success {
		t.Fatalf("certificate client: %v", ack.ReasonCode)
	}
	p, _, _ := a.Broker().ClientPrincipal("press")
	if p == nil || p.Username != "press-7" || p.Attributes["line"] != "7" || p.Method != auth.MethodX509 || !p.Expiry.Equal(device.Leaf.NotAfter) {
		t.Fatalf("principal %+v", p)
	}
	// No certificate: the next method (passwords) decides.
	conn, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: poolOf(ca.Cert)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ack := dialAs(t, conn, login("alice", "alice", "pw")); ack.ReasonCode != packet.Success {
		t.Fatalf("password client on the TLS port: %v", ack.ReasonCode)
	}
	// A certificate of another CA is refused.
	stranger := issue(t, ca, pki.Request{CommonName: "press-7", Client: true})
	conn, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: poolOf(ca.Cert), Certificates: []tls.Certificate{*stranger}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ack := dialAs(t, conn, &packet.Connect{ClientID: "stranger"}); ack.ReasonCode != packet.NotAuthorized {
		t.Fatalf("untrusted certificate: %v", ack.ReasonCode)
	}
}

// TestStateStoreAuthorizer: state store requests are judged by the
// stateStoreResources of the requester's listener policy.
func TestStateStoreAuthorizer(t *testing.T) {
	a := startApp(t, Config{})
	builtin := a.Addrs()["mqtt"].String()
	ssa := stateStoreAuthorizer{a.Broker()}
	dialAs(t, tcp(t, builtin), &packet.Connect{ClientID: "open-client"})
	if !ssa.Authorize("open-client", "", nil, []byte("any"), true) || !ssa.Authorize("gone", "", nil, []byte("any"), true) {
		t.Fatal("without any policy the state store is open")
	}
	apply(t, a, `apiVersion: edgeport.io/v1
kind: BrokerAuthentication
metadata: {name: users}
spec:
  authenticationMethods:
  - method: UsernamePassword
    usernamePasswordSettings:
      users: [{username: alice, passwordHash: "`+hashFor(t, "pw")+`"}]
`)
	apply(t, a, `apiVersion: edgeport.io/v1
kind: BrokerAuthorization
metadata: {name: keys}
spec:
  authorizationPolicies:
    rules:
    - principals: {usernames: [alice]}
      brokerResources: [{method: Connect}]
      stateStoreResources:
      - {method: ReadWrite, keyType: Pattern, keys: ["clients/{principal.clientId}/*"]}
      - {method: Read, keyType: String, keys: ["config"]}
`)
	apply(t, a, listenerYAML("ss", "{port: 0, authenticationRef: users, authorizationRef: keys}"))
	o := waitStatus(t, a, config.Key{Kind: "BrokerListener", Name: "ss"}, config.ConditionTrue)
	dialAs(t, tcp(t, portAddr(t, o, 0)), login("alice-1", "alice", "pw"))
	for _, tc := range []struct {
		client, key string
		write, want bool
	}{
		{"alice-1", "clients/alice-1/state", true, true},
		{"alice-1", "clients/alice-2/state", false, false},
		{"alice-1", "config", false, true},
		{"alice-1", "config", true, false},
		{"open-client", "config", true, true}, // the built-in port has no policy
		{"gone", "config", false, false},      // unknown requester while policies exist
	} {
		if got := ssa.Authorize(tc.client, "", nil, []byte(tc.key), tc.write); got != tc.want {
			t.Errorf("%s %q write=%v: %v, want %v", tc.client, tc.key, tc.write, got, tc.want)
		}
	}
}

// TestBuiltinListenerSecureDefault: a serve-flag listener bound beyond
// loopback admits nobody unless anonymous access is asked for.
func TestBuiltinListenerSecureDefault(t *testing.T) {
	for _, allow := range []bool{false, true} {
		a := startApp(t, Config{MQTTAddr: "0.0.0.0:0", AllowAnonymous: allow})
		_, port, _ := net.SplitHostPort(a.Addrs()["mqtt"].String())
		_, ack := dialAs(t, tcp(t, "127.0.0.1:"+port), &packet.Connect{ClientID: "anon"})
		want := packet.NotAuthorized
		if allow {
			want = packet.Success
		}
		if ack.ReasonCode != want {
			t.Fatalf("allowAnonymous=%v: CONNACK %s, want %s", allow, ack.ReasonCode, want)
		}
	}
}
