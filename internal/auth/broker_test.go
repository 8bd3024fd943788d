package auth

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/clock"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// Compile-time checks of the broker hooks.
var (
	_ broker.Authenticator         = (*Chain)(nil)
	_ broker.EnhancedAuthenticator = (*Chain)(nil)
	_ broker.Authorizer            = (*Policy)(nil)
)

func passwordChain(t *testing.T, users ...PasswordUser) *Chain {
	t.Helper()
	pw, err := NewPasswords("", users, nil)
	if err != nil {
		t.Fatal(err)
	}
	return NewChain([]Method{pw}, nil, testLogger())
}

func user(t *testing.T, name, pw string, attrs map[string]string) PasswordUser {
	return PasswordUser{Username: name, PasswordHash: hashOf(t, pw), Attributes: attrs}
}

func principal(t *testing.T, b *broker.Broker, id string) *broker.Principal {
	t.Helper()
	p, _, ok := b.ClientPrincipal(id)
	if !ok {
		t.Fatalf("client %s is not connected", id)
	}
	return p
}

// TestBrokerPasswords: Paho clients (MQTT 5 and 3.1.1) against a listener
// with a UsernamePassword chain; the CONNACK codes; anonymous access; the
// secure default; the metrics.
func TestBrokerPasswords(t *testing.T) {
	addr, b := startBroker(t)
	chain := passwordChain(t, user(t, "alice", "a-pw", map[string]string{"line": "1"}))
	b.SetListenerSecurity(listener, chain, nil, false)

	alice := mustDial(t, addr, userConn("c1", "alice", "a-pw"))
	if p := principal(t, b, "c1"); p.Username != "alice" || p.Attributes["line"] != "1" || p.Method != MethodUsernamePassword {
		t.Fatalf("principal %+v", p)
	}
	for _, tc := range []struct {
		cp   *paho.Connect
		want byte
	}{
		{userConn("c2", "alice", "wrong"), 0x86},
		{userConn("c3", "mallory", "a-pw"), 0x86},
		{&paho.Connect{ClientID: "c4", CleanStart: true}, 0x87},
	} {
		if got := refused(t, addr, tc.cp); got != tc.want {
			t.Errorf("%s: CONNACK 0x%02X, want 0x%02X", tc.cp.ClientID, got, tc.want)
		}
	}
	if _, err := dialV3(t, addr, "v3-bad", "alice", "wrong"); err == nil || !strings.Contains(err.Error(), "bad user name or password") {
		t.Fatalf("MQTT 3.1.1 wrong password: %v", err)
	}
	if _, err := dialV3(t, addr, "v3-ok", "alice", "a-pw"); err != nil {
		t.Fatalf("MQTT 3.1.1: %v", err)
	}

	// Anonymous access explicitly allowed: no credentials is anonymous,
	// wrong credentials are still wrong.
	b.SetListenerSecurity(listener, chain, nil, true)
	mustDial(t, addr, &paho.Connect{ClientID: "anon", CleanStart: true, Username: "admin", UsernameFlag: false})
	if p := principal(t, b, "anon"); p.Method != "anonymous" || p.Username != "" {
		t.Fatalf("anonymous principal %+v", p)
	}
	if got := refused(t, addr, userConn("c5", "alice", "wrong")); got != 0x86 {
		t.Fatalf("wrong password with anonymous access: 0x%02X", got)
	}
	if !alice.alive() {
		t.Fatal("a security change disconnected alice")
	}

	a := counters(b).Authentication
	if got := a[MethodUsernamePassword]; got.Successes != 2 || got.Deny != 4 {
		t.Errorf("UsernamePassword counters %+v, want 2 successes, 4 denials", got)
	}
	if a["none"].Deny != 1 || a["anonymous"].Successes != 1 {
		t.Errorf("counters %+v", a)
	}

	// Authentication required and nothing to authenticate with (a port on
	// a public address without authenticationRef): everyone goes.
	b.SetListenerSecurity(listener, nil, nil, false)
	alice.waitClosed()
	if d := alice.Discs.All(); len(d) != 1 || d[0].ReasonCode != 0x87 {
		t.Fatalf("alice was told %+v, want DISCONNECT 0x87", d)
	}
	if got := refused(t, addr, userConn("c6", "alice", "a-pw")); got != 0x87 {
		t.Fatalf("closed listener: 0x%02X", got)
	}
	if _, err := dialV3(t, addr, "v3-closed", "alice", "a-pw"); err == nil || !strings.Contains(err.Error(), "not Authorized") {
		t.Fatalf("closed listener, MQTT 3.1.1: %v", err)
	}
}

// TestBrokerServiceAccountTokens: K8S-SAT enhanced authentication with a
// JWKS served by the test, re-authentication extending the credential,
// and disconnection when it expires.
func TestBrokerServiceAccountTokens(t *testing.T) {
	// Tokens are checked against real time; the broker's expiry timers run
	// on a fake clock that the test moves past a token's expiry.
	clk := clock.NewFake(time.Now())
	addr, b := startBrokerOn(t, clk)
	is := newIssuer(t, false)
	tokens, err := NewTokens(TokenOptions{Audiences: []string{"edgeport"}, JWKSURL: is.srv.URL + "/keys",
		HTTPClient: is.srv.Client(), AttributeClaims: map[string]string{"group": "group"}})
	if err != nil {
		t.Fatal(err)
	}
	b.SetListenerSecurity(listener, NewChain([]Method{tokens}, nil, testLogger()), nil, false)
	tok := func(exp time.Duration) string {
		return is.token(t, "system:serviceaccount:plant:line1", []string{"edgeport"}, exp, map[string]any{"group": "ops"})
	}
	ctx := context.Background()

	c := mustDial(t, addr, satConn("sat1", tok(time.Hour)))
	if c.Connack.Properties == nil || c.Connack.Properties.AuthMethod != SATMethod {
		t.Fatalf("CONNACK %+v does not confirm the method", c.Connack.Properties)
	}
	p := principal(t, b, "sat1")
	if p.Username != "system:serviceaccount:plant:line1" || p.Attributes["group"] != "ops" || p.Method != MethodServiceAccountToken {
		t.Fatalf("principal %+v", p)
	}
	// Re-authentication with a fresher token moves the expiry.
	resp, err := c.Authenticate(ctx, &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: SATMethod, AuthData: []byte(tok(2 * time.Hour))}})
	if err != nil || !resp.Success {
		t.Fatalf("re-authentication: %+v %v", resp, err)
	}
	if d := time.Until(principal(t, b, "sat1").Expiry); d < 119*time.Minute {
		t.Fatalf("expiry after re-authentication in %v, want about 2h", d)
	}

	if got := refused(t, addr, satConn("sat2", is.token(t, "x", []string{"elsewhere"}, time.Hour, nil))); got != 0x87 {
		t.Fatalf("wrong audience: 0x%02X", got)
	}
	other := &paho.Connect{ClientID: "sat3", CleanStart: true, Properties: &paho.ConnectProperties{AuthMethod: "SCRAM-SHA-256", AuthData: []byte("x")}}
	if got := refused(t, addr, other); got != 0x8C {
		t.Fatalf("unsupported method: 0x%02X", got)
	}
	// MQTT 3.1.1 clients give the token as the password of user K8S-SAT.
	if _, err := dialV3(t, addr, "sat-v3", SATMethod, tok(time.Hour)); err != nil {
		t.Fatalf("MQTT 3.1.1 token: %v", err)
	}

	// A failed re-authentication ends the connection with its reason.
	bad := mustDial(t, addr, satConn("sat4", tok(time.Hour)))
	resp, err = bad.Authenticate(ctx, &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: SATMethod, AuthData: []byte("forged")}})
	if err != nil || resp.Success || resp.ReasonCode != 0x87 {
		t.Fatalf("forged re-authentication: %+v %v", resp, err)
	}
	bad.waitClosed()

	// Expiry: a client that does not re-authenticate is closed when its
	// token expires (no DISCONNECT, as Azure IoT Operations does); one
	// that does stays.
	short := mustDial(t, addr, satConn("short", tok(2*time.Second)))
	renewed := mustDial(t, addr, satConn("renewed", tok(2*time.Second)))
	firstExpiry := principal(t, b, "renewed").Expiry
	if resp, err := renewed.Authenticate(ctx, &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: SATMethod, AuthData: []byte(tok(time.Hour))}}); err != nil || !resp.Success {
		t.Fatalf("renewal: %+v %v", resp, err)
	}
	if !short.alive() {
		t.Fatal("closed before its credential expired")
	}
	clk.Advance(firstExpiry.Sub(clk.Now()) + 300*time.Millisecond)
	short.waitClosed()
	if d := short.Discs.All(); len(d) != 0 {
		t.Fatalf("expired client got %+v", d)
	}
	if !renewed.alive() || !c.alive() {
		t.Fatal("a client whose credential is valid was disconnected")
	}
}

// TestBrokerWebhook: the custom authentication webhook decides; when it
// is down the next method does, and the log says so.
func TestBrokerWebhook(t *testing.T) {
	addr, b := startBroker(t)
	ws := newWebhookServer(t)
	var logs bytes.Buffer
	hook := testWebhook(t, ws, &logs, wait) // a bound: every answer comes at once
	pw, err := NewPasswords("", []PasswordUser{user(t, "bob", "b-pw", nil)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.SetListenerSecurity(listener, NewChain([]Method{hook, pw}, nil, slog.New(slog.NewTextHandler(&logs, nil))), nil, false)

	mustDial(t, addr, userConn("w1", "expire-alice", "pw"))
	p := principal(t, b, "w1")
	if p.Method != MethodCustom || p.Attributes["group"] != "g1" || p.Expiry.IsZero() {
		t.Fatalf("principal %+v", p)
	}
	if got := refused(t, addr, userConn("w2", "deny-carol", "pw")); got != 0x87 {
		t.Fatalf("webhook denial: 0x%02X", got)
	}
	if got := refused(t, addr, userConn("w3", "ban-dave", "pw")); got != 0x8A {
		t.Fatalf("webhook ban: 0x%02X", got)
	}
	ws.close()
	mustDial(t, addr, userConn("w4", "bob", "b-pw"))
	if p := principal(t, b, "w4"); p.Method != MethodUsernamePassword {
		t.Fatalf("fallback principal %+v", p)
	}
	if got := refused(t, addr, userConn("w5", "alice", "pw")); got != 0x86 {
		t.Fatalf("webhook down, unknown to the next method: 0x%02X", got)
	}
	if !strings.Contains(logs.String(), "webhook unavailable") {
		t.Fatalf("no log of the webhook being down:\n%s", logs.String())
	}
}

const authzPolicy = `
apiVersion: edgeport.io/v1
kind: BrokerAuthorization
metadata: {name: plant}
spec:
  authorizationPolicies:
    rules:
    - principals: {usernames: [alice, bob, ops]}
      brokerResources:
      - method: Connect
      - method: Publish
        topics: ["plant/{principal.attributes.line}/{principal.username}/#", "wills/{principal.username}", "plant/public"]
      - method: Subscribe
        topics: ["plant/{principal.attributes.line}/#", "plant/public"]
    - principals: {usernames: [ops]}
      brokerResources:
      - method: Subscribe
        topics: ["plant/#", "wills/#"]
`

// TestBrokerAuthorization: PUBLISH, SUBSCRIBE (shared ones too), retained
// delivery and wills are checked; MQTT 5 hears 0x87, MQTT 3.1.1 gets
// 0x80 on SUBACK and its denied publishes are dropped but acknowledged.
func TestBrokerAuthorization(t *testing.T) {
	addr, b := startBroker(t)
	chain := passwordChain(t, user(t, "alice", "pw", map[string]string{"line": "1"}), user(t, "bob", "pw", nil),
		user(t, "ops", "pw", nil), user(t, "mallory", "pw", nil))
	pol := policyFrom(t, authzPolicy)
	b.SetListenerSecurity(listener, chain, pol, false)

	if got := refused(t, addr, userConn("m", "mallory", "pw")); got != 0x87 {
		t.Fatalf("connect without a Connect rule: 0x%02X", got)
	}
	ops := mustDial(t, addr, userConn("ops", "ops", "pw"))
	for filter, want := range map[string]byte{
		"plant/#": 1, "#": 0x87, "$share/g/plant/#": 1, "$share/g/#": 0x87, "wills/#": 1, "$SYS/#": 0x87,
	} {
		if got := ops.sub(filter, 1); got != want {
			t.Errorf("ops subscribe %q: 0x%02X, want 0x%02X", filter, got, want)
		}
	}
	alice := mustDial(t, addr, userConn("alice", "alice", "pw"))
	if got := alice.pub("plant/2/alice/t", "no", false); got != 0x87 {
		t.Fatalf("forbidden publish: 0x%02X", got)
	}
	if got := alice.pub("plant/1/bob/t", "no", false); got != 0x87 {
		t.Fatalf("publish as another user: 0x%02X", got)
	}
	if got := alice.pub("plant/1/alice/t", "yes", false); got != 0 {
		t.Fatalf("allowed publish: 0x%02X", got)
	}
	ops.waitFor("plant/1/alice/t", 1)
	if len(ops.got("plant/2/alice/t"))+len(ops.got("plant/1/bob/t")) != 0 {
		t.Fatal("a denied publish was delivered")
	}
	if got := alice.sub("plant/1/#", 1); got != 1 {
		t.Fatalf("alice subscribe plant/1/#: 0x%02X", got)
	}
	if got := alice.sub("plant/+/alice/#", 1); got != 0x87 {
		t.Fatalf("alice subscribe plant/+/alice/#: 0x%02X", got)
	}

	// Retained messages reach only allowed subscriptions.
	if got := alice.pub("plant/1/alice/state", "retained", true); got != 0 {
		t.Fatalf("retained publish: 0x%02X", got)
	}
	bob := mustDial(t, addr, userConn("bob", "bob", "pw"))
	if got := bob.sub("plant/1/#", 1); got != 0x87 {
		t.Fatalf("bob subscribe plant/1/#: 0x%02X", got)
	}
	alice2 := mustDial(t, addr, userConn("alice2", "alice", "pw"))
	alice2.sub("plant/1/#", 1)
	alice2.waitFor("plant/1/alice/state", 1)
	bob.sub("plant/public", 1)
	alice.pub("plant/public", "marker", false)
	bob.waitFor("plant/public", 1)
	if got := bob.got("plant/1/alice/state"); len(got) != 0 {
		t.Fatalf("bob got the retained message of a denied subscription: %v", got)
	}

	// MQTT 3.1.1: SUBACK 0x80, and a denied QoS 1 publish is acknowledged
	// but dropped.
	v3c, err := dialV3(t, addr, "alice-v3", "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	st := v3c.Subscribe("plant/#", 1, nil)
	if !st.WaitTimeout(wait) {
		t.Fatal("3.1.1 subscribe timed out")
	}
	if rc := st.(interface{ Result() map[string]byte }).Result()["plant/#"]; rc != 0x80 {
		t.Fatalf("3.1.1 SUBACK 0x%02X, want 0x80", rc)
	}
	pt := v3c.Publish("plant/2/alice/v3", 1, false, "dropped")
	if !pt.WaitTimeout(wait) || pt.Error() != nil {
		t.Fatalf("3.1.1 denied publish not acknowledged: %v", pt.Error())
	}
	if !v3c.IsConnectionOpen() {
		t.Fatal("3.1.1 client disconnected by a denied publish")
	}

	// Wills are checked against their owner when published.
	deniedBefore := counters(b).AuthorizationDenied
	forbidden := &paho.Connect{ClientID: "will-bad", CleanStart: true, KeepAlive: 30, Username: "alice", UsernameFlag: true,
		Password: []byte("pw"), PasswordFlag: true, WillMessage: &paho.WillMessage{Topic: "plant/2/x", Payload: []byte("w"), QoS: 1}}
	mustDial(t, addr, forbidden).drop()
	testwait.For(t, "the forbidden will to be refused", func() bool { return counters(b).AuthorizationDenied > deniedBefore })
	allowed := *forbidden
	allowed.ClientID, allowed.WillMessage = "will-ok", &paho.WillMessage{Topic: "wills/alice", Payload: []byte("gone"), QoS: 1}
	mustDial(t, addr, &allowed).drop()
	ops.waitFor("wills/alice", 1)
	if got := ops.got("plant/2/x"); len(got) != 0 {
		t.Fatal("a forbidden will was delivered")
	}
	// The rules change after CONNECT: the will follows the rules in force.
	later := allowed
	later.ClientID = "will-later"
	lc := mustDial(t, addr, &later)
	strict := policyFrom(t, strings.Replace(authzPolicy, `"wills/{principal.username}", `, "", 1))
	b.SetListenerSecurity(listener, chain, strict, false)
	deniedBefore = counters(b).AuthorizationDenied
	lc.drop()
	testwait.For(t, "the now forbidden will to be refused", func() bool { return counters(b).AuthorizationDenied > deniedBefore })
	alice.pub("plant/1/alice/t", "after", false)
	ops.waitFor("plant/1/alice/t", 2)
	if got := ops.got("wills/alice"); len(got) != 1 {
		t.Fatalf("wills delivered: %v, want only the first", got)
	}

	lc2 := counters(b)
	if lc2.AuthorizationAllowed == 0 || lc2.AuthorizationDenied < 8 {
		t.Fatalf("authorization counters allowed %d denied %d", lc2.AuthorizationAllowed, lc2.AuthorizationDenied)
	}
}

const livePolicyV1 = `
apiVersion: edgeport.io/v1
kind: BrokerAuthorization
metadata: {name: live}
spec:
  authorizationPolicies:
    rules:
    - principals: {usernames: [alice, bob, carol]}
      brokerResources:
      - method: Connect
      - method: Publish
        topics: ["plant/#"]
      - method: Subscribe
        topics: ["plant/#"]
`

const livePolicyV2 = `
apiVersion: edgeport.io/v1
kind: BrokerAuthorization
metadata: {name: live}
spec:
  authorizationPolicies:
    rules:
    - principals: {usernames: [alice, bob]}
      brokerResources:
      - method: Connect
      - method: Publish
        topics: ["plant/line1/#"]
      - method: Subscribe
        topics: ["plant/line1/#"]
`

// TestLivePolicyChange: a stricter policy applies at once. A client no
// longer allowed to connect is disconnected (0x87); subscriptions no longer
// allowed stop receiving; publish decisions cached under the old policy
// are gone; everyone still allowed stays connected, and a persistent
// session resumed later is held to the new rules too.
func TestLivePolicyChange(t *testing.T) {
	addr, b := startBroker(t)
	chain := passwordChain(t, user(t, "alice", "pw", nil), user(t, "bob", "pw", nil), user(t, "carol", "pw", nil))
	b.SetListenerSecurity(listener, chain, policyFrom(t, livePolicyV1), false)

	alice := mustDial(t, addr, userConn("alice", "alice", "pw"))
	alice.sub("plant/#", 1)
	bob := mustDial(t, addr, userConn("bob", "bob", "pw"))
	carol := mustDial(t, addr, userConn("carol", "carol", "pw"))
	carol3, err := dialV3(t, addr, "carol-v3", "carol", "pw")
	if err != nil {
		t.Fatal(err)
	}
	expiry := uint32(600)
	dave := userConn("dave", "alice", "pw") // alice's persistent session
	dave.CleanStart = false
	dave.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	dc := mustDial(t, addr, dave)
	dc.sub("plant/#", 1)
	_ = dc.Disconnect(&paho.Disconnect{})
	testwait.For(t, "dave's session to go offline", func() bool { _, _, on := b.ClientPrincipal("dave"); return !on })

	for range 3 {
		if got := bob.pub("plant/line2/x", "v1", false); got != 0 {
			t.Fatalf("publish under v1: 0x%02X", got)
		}
	}
	alice.waitFor("plant/line2/x", 3)
	subsBefore := b.Counters().Subscriptions

	b.SetListenerSecurity(listener, chain, policyFrom(t, livePolicyV2), false)

	carol.waitClosed()
	if d := carol.Discs.All(); len(d) != 1 || d[0].ReasonCode != 0x87 {
		t.Fatalf("carol was told %+v, want DISCONNECT 0x87", d)
	}
	testwait.For(t, "the 3.1.1 client to be disconnected", func() bool { return !carol3.IsConnectionOpen() })
	if !alice.alive() || !bob.alive() {
		t.Fatal("a client still allowed to connect was disconnected")
	}
	if got := bob.pub("plant/line2/x", "v2", false); got != 0x87 {
		t.Fatalf("publish allowed (and cached) under v1, after v2: 0x%02X", got)
	}
	if got := b.Counters().Subscriptions; got != subsBefore-1 {
		t.Fatalf("subscriptions %d, want %d: alice's plant/# is not removed", got, subsBefore-1)
	}
	// alice's plant/# is gone: a message only it matched does not arrive.
	b.Publish(&broker.Message{Topic: "plant/line2/y", Payload: []byte("gone"), QoS: 1})
	if got := alice.sub("plant/line1/#", 1); got != 1 {
		t.Fatalf("subscribe under v2: 0x%02X", got)
	}
	if got := bob.pub("plant/line1/z", "still", false); got != 0 {
		t.Fatalf("publish under v2: 0x%02X", got)
	}
	alice.waitFor("plant/line1/z", 1)
	if got := alice.got("plant/line2/y"); len(got) != 0 {
		t.Fatalf("a removed subscription still receives: %v", got)
	}
	if got := alice.sub("plant/#", 1); got != 0x87 {
		t.Fatalf("subscribe plant/# under v2: 0x%02X", got)
	}

	// The persistent session resumes under v2: its plant/# is pruned.
	dave.CleanStart = false
	dc = mustDial(t, addr, dave)
	if !dc.Connack.SessionPresent {
		t.Fatal("session not resumed")
	}
	b.Publish(&broker.Message{Topic: "plant/line2/w", Payload: []byte("gone"), QoS: 1})
	dc.sub("plant/line1/#", 1)
	b.Publish(&broker.Message{Topic: "plant/line1/w", Payload: []byte("here"), QoS: 1})
	dc.waitFor("plant/line1/w", 1)
	if got := dc.got("plant/line2/w"); len(got) != 0 {
		t.Fatalf("a resumed session kept a subscription v2 forbids: %v", got)
	}
}

// rawConn is a packet-level MQTT 5 client, for exchanges Paho cannot make.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	r    *packet.Reader
}

func rawDial(t *testing.T, addr string, cp *packet.Connect) (*rawConn, *packet.ConnAck) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawConn{t: t, conn: conn, r: packet.NewReader(conn, 0)}
	cp.ProtocolName, cp.Version, cp.CleanStart = "MQTT", packet.V5, true
	c.send(cp)
	h, body := c.next()
	var ack packet.ConnAck
	if h.Type != packet.CONNACK || ack.Decode(h.Flags, body, packet.V5) != nil {
		t.Fatalf("no CONNACK: %v", h.Type)
	}
	return c, &ack
}

func (c *rawConn) send(p packet.Packet) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(wait))
	if _, err := c.conn.Write(p.Append(nil, packet.V5)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawConn) next() (packet.FixedHeader, []byte) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	h, body, err := c.r.Next(0)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return h, body
}

func (c *rawConn) auth(code packet.ReasonCode, method, data string) *packet.Auth {
	c.t.Helper()
	a := &packet.Auth{ReasonCode: code}
	a.Properties.AuthMethod, a.Properties.AuthData = method, []byte(data)
	a.Properties.Set(packet.PropAuthMethod)
	a.Properties.Set(packet.PropAuthData)
	c.send(a)
	h, body := c.next()
	var in packet.Auth
	if h.Type != packet.AUTH || in.Decode(h.Flags, body, packet.V5) != nil {
		c.t.Fatalf("got %v, want AUTH", h.Type)
	}
	return &in
}

// TestReauthWebhookUnavailable: a re-authentication the webhook cannot
// answer gets AUTH 0x18 and the client keeps its connection and
// credential; once the webhook is back, re-authentication succeeds.
func TestReauthWebhookUnavailable(t *testing.T) {
	addr, b := startBroker(t)
	ws := newWebhookServer(t)
	var logs bytes.Buffer
	b.SetListenerSecurity(listener, NewChain([]Method{testWebhook(t, ws, &logs, wait)}, nil, testLogger()), nil, false)
	cp := &packet.Connect{ClientID: "custom", KeepAlive: 0}
	cp.Properties.AuthMethod, cp.Properties.AuthData = "TOKEN", []byte("expire-alice")
	cp.Properties.Set(packet.PropAuthMethod)
	cp.Properties.Set(packet.PropAuthData)
	c, ack := rawDial(t, addr, cp)
	if ack.ReasonCode != packet.Success || ack.Properties.AuthMethod != "TOKEN" {
		t.Fatalf("CONNACK %v %q", ack.ReasonCode, ack.Properties.AuthMethod)
	}
	first := principal(t, b, "custom")
	if first.Username != "" || first.Attributes["group"] != "g1" || first.Expiry.IsZero() {
		t.Fatalf("principal %+v", first)
	}
	ws.down.Store(true)
	if in := c.auth(packet.ReAuthenticate, "TOKEN", "expire-alice"); in.ReasonCode != packet.ContinueAuthentication {
		t.Fatalf("re-authentication with the webhook down: AUTH %v, want 0x18", in.ReasonCode)
	}
	c.send(&packet.PingReq{})
	if h, _ := c.next(); h.Type != packet.PINGRESP {
		t.Fatalf("got %v, want PINGRESP: the connection did not survive", h.Type)
	}
	if principal(t, b, "custom") != first {
		t.Fatal("the credential changed without a re-authentication")
	}
	ws.down.Store(false)
	if in := c.auth(packet.ReAuthenticate, "TOKEN", "expire-alice"); in.ReasonCode != packet.Success {
		t.Fatalf("re-authentication: AUTH %v", in.ReasonCode)
	}
	if principal(t, b, "custom") == first {
		t.Fatal("a successful re-authentication did not replace the principal")
	}
	// A denial ends the connection: banned is no DISCONNECT reason, so 0x87.
	c.send(func() *packet.Auth {
		a := &packet.Auth{ReasonCode: packet.ReAuthenticate}
		a.Properties.AuthMethod, a.Properties.AuthData = "TOKEN", []byte("ban-alice")
		a.Properties.Set(packet.PropAuthMethod)
		a.Properties.Set(packet.PropAuthData)
		return a
	}())
	h, body := c.next()
	var d packet.Disconnect
	err := d.Decode(h.Flags, body, packet.V5)
	if h.Type != packet.DISCONNECT || err != nil || d.ReasonCode != packet.NotAuthorized {
		t.Fatalf("got %v %v (%v), want DISCONNECT 0x87", h.Type, d.ReasonCode, err)
	}
}
