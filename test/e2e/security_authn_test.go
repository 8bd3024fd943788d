package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// mosq runs a mosquitto client to completion and returns its combined
// output and exit status (a refused connection is a non-zero status, not
// a test failure).
func mosq(t *testing.T, program string, args ...string) (string, int) {
	t.Helper()
	return runStatus(t, procLimit, program, args...)
}

// passwdLine runs edgeport passwd, as an operator would, with the password
// on standard input.
func passwdLine(t *testing.T, user, password, attrs string) string {
	t.Helper()
	out, errOut, code := cli(t, password+"\n", nil, "passwd", user)
	if code != 0 || !strings.HasPrefix(out, user+":$argon2id$") {
		t.Fatalf("edgeport passwd: exit %d %q %s", code, out, errOut)
	}
	line := strings.TrimSuffix(out, "\n")
	if attrs != "" {
		line += ":" + attrs
	}
	return line + "\n"
}

const securityConfig = `apiVersion: edgeport.io/v1
kind: BrokerAuthentication
metadata: {name: plant-authn}
spec:
  authenticationMethods:
  - method: ServiceAccountToken
    serviceAccountTokenSettings:
      audiences: [edgeport]
      jwksFile: %s
  - method: UsernamePassword
    usernamePasswordSettings:
      passwordFile: %s
---
apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: secure}
spec:
  ports:
  - {port: 0, authenticationRef: plant-authn, authorizationRef: plant-authz}
`

const securityPolicy = `apiVersion: edgeport.io/v1
kind: BrokerAuthorization
metadata: {name: plant-authz}
spec:
  authorizationPolicies:
    rules:
    - principals: {usernames: [%s]}
      brokerResources:
      - method: Connect
      - method: Publish
        topics: ["plant/#"]
      - method: Subscribe
        topics: ["plant/{principal.attributes.line}/#", "plant/public"]
`

// satToken signs a Kubernetes-style service account token.
func satToken(t *testing.T, key *ecdsa.PrivateKey, aud string, exp time.Duration) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "e2e"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(sig).Claims(jwt.Claims{Subject: "system:serviceaccount:plant:press", Audience: jwt.Audience{aud},
		Expiry: jwt.NewNumericDate(time.Now().Add(exp)), IssuedAt: jwt.NewNumericDate(time.Now())}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestMosquittoSecurity runs mosquitto_pub and mosquitto_sub with -u/-P and
// with K8S-SAT enhanced authentication against a port whose
// BrokerAuthentication and BrokerAuthorization come from a config
// directory, changes the policy live, and checks metrics and logs.
func TestMosquittoSecurity(t *testing.T) {
	t.Parallel()
	dir, files := t.TempDir(), t.TempDir()
	pwFile := filepath.Join(files, "passwords")
	secrets := map[string]string{"alice": "alice-pw-7f3a", "bob": "bob-pw-91c2", "carol": "carol-pw-0d5e"}
	content := "# plant users\n" + passwdLine(t, "alice", secrets["alice"], "line=1") +
		passwdLine(t, "bob", secrets["bob"], "line=2") + passwdLine(t, "carol", secrets["carol"], "line=3")
	if err := os.WriteFile(pwFile, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "e2e", Algorithm: "ES256", Use: "sig"}}})
	jwksFile := filepath.Join(files, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	writeConfig := func(name, body string) {
		t.Helper()
		tmp := filepath.Join(dir, "."+name)
		if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("security.yaml", fmt.Sprintf(securityConfig, jwksFile, pwFile))
	writeConfig("policy.yaml", fmt.Sprintf(securityPolicy, "alice, bob, carol, system:serviceaccount:plant:press"))
	e := startEdgeport(t, "--config", dir)
	m := newMosquitto(t, e)
	m.port = e.port(t, "secure:0")
	as := func(user string) []string { return []string{"-u", user, "-P", secrets[user]} }
	hostPort := []string{"-h", m.host, "-p", m.port}

	// Wrong password, unknown user, no credentials: refused, both versions.
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"-V", "5", "-u", "alice", "-P", "wrong"}, 134, "Bad User Name or Password"},
		{[]string{"-V", "mqttv311", "-u", "alice", "-P", "wrong"}, 4, "bad user name or password"},
		{[]string{"-V", "5", "-u", "mallory", "-P", secrets["alice"]}, 134, "Bad User Name or Password"},
		{[]string{"-V", "5"}, 135, "Not authorized"},
		{[]string{"-V", "mqttv311"}, 5, "not authorised"},
	} {
		out, code := mosq(t, m.pub, append(append(hostPort, tc.args...), "-t", "plant/x", "-m", "x")...)
		if code != tc.code || !strings.Contains(out, tc.says) {
			t.Errorf("mosquitto_pub %v: exit %d, want %d (%q)\n%s", tc.args, code, tc.code, tc.says, out)
		}
	}

	// Allowed traffic with -u/-P; subscriptions limited to the user's line.
	alice := m.subscribe(append(as("alice"), "-V", "5", "-q", "1", "-t", "plant/1/#", "-t", "plant/public")...)
	m.publish(append(as("bob"), "-V", "5", "-q", "1", "-t", "plant/1/temp", "-m", "21.5")...)
	alice.waitLine(t, lineWait, "bob's message", func(l string) bool { return strings.HasPrefix(l, msgPrefix+"plant/1/temp|1|0|") })
	out, _ := mosq(t, m.sub, append(append(hostPort, as("bob")...), "-V", "5", "-t", "plant/#", "-C", "1", "-W", "2")...)
	if !strings.Contains(out, "All subscription requests were denied") {
		t.Errorf("bob subscribing plant/#:\n%s", out)
	}
	out, code := mosq(t, m.pub, append(append(hostPort, as("bob")...), "-V", "5", "-q", "1", "-t", "elsewhere/x", "-m", "x")...)
	if code != 0 || !strings.Contains(out, "Publish 1 failed: Not authorized") {
		t.Errorf("bob publishing outside plant/: exit %d\n%s", code, out)
	}

	// K8S-SAT through mosquitto's enhanced authentication options, as Azure
	// IoT Operations documents it.
	sat := func(token string) (string, int) {
		return mosq(t, m.pub, append(hostPort, "-V", "5", "-q", "1", "-t", "plant/public", "-m", "from-sat",
			"-D", "CONNECT", "authentication-method", "K8S-SAT", "-D", "CONNECT", "authentication-data", token)...)
	}
	good := satToken(t, key, "edgeport", time.Hour)
	if out, code := sat(good); code != 0 {
		t.Fatalf("K8S-SAT: exit %d\n%s", code, out)
	}
	alice.waitLine(t, lineWait, "the SAT client's message", func(l string) bool { return strings.Contains(l, "|from-sat") })
	wrongAud := satToken(t, key, "somebody-else", time.Hour)
	if out, code := sat(wrongAud); code != 135 {
		t.Errorf("K8S-SAT with another audience: exit %d\n%s", code, out)
	}

	// The policy changes live: carol may no longer connect and is
	// disconnected; alice is not.
	carol := m.subscribe(append(as("carol"), "-V", "5", "-t", "plant/public")...)
	writeConfig("policy.yaml", fmt.Sprintf(securityPolicy, "alice, bob, system:serviceaccount:plant:press"))
	select {
	case <-carol.done:
	case <-time.After(lineWait):
		t.Fatal("carol's mosquitto_sub was not disconnected by the new policy")
	}
	m.publish(append(as("bob"), "-V", "5", "-q", "1", "-t", "plant/public", "-m", "after-change")...)
	alice.waitLine(t, lineWait, "a message after the change", func(l string) bool { return strings.Contains(l, "|after-change") })
	if out, code := mosq(t, m.pub, append(append(hostPort, as("carol")...), "-V", "5", "-t", "plant/x", "-m", "x")...); code != 135 {
		t.Errorf("carol after the change: exit %d\n%s", code, out)
	}

	// Metrics count both sides.
	_, metrics := httpGet(t, "http://"+e.addr(t, "http")+"/metrics")
	for _, want := range []string{
		`edgeport_broker_authentication_successes_total{listener="secure:0",method="UsernamePassword"}`,
		`edgeport_broker_authentication_deny_total{listener="secure:0",method="UsernamePassword"}`,
		`edgeport_broker_authentication_successes_total{listener="secure:0",method="ServiceAccountToken"}`,
		`edgeport_broker_authentication_deny_total{listener="secure:0",method="ServiceAccountToken"}`,
		`edgeport_broker_authorization_deny_total{listener="secure:0"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// No password or token reached the debug log.
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	logs := e.logs.String()
	for _, s := range []string{secrets["alice"], secrets["bob"], secrets["carol"], good, wrongAud} {
		if strings.Contains(logs, s) {
			t.Errorf("a secret (%.8s…) reached the log", s)
		}
	}
	if !strings.Contains(logs, "authentication failed") {
		t.Error("the debug log does not record refused authentications, so the check above is vacuous")
	}
}
