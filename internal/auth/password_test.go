package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

func TestHashes(t *testing.T) {
	argon, err := HashPassword([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(argon, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("argon2id hash %q", argon)
	}
	again, _ := HashPassword([]byte("s3cret"))
	if again == argon {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	bc, err := HashPasswordBcrypt([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	// A hash from another implementation ($2y$, htpasswd's spelling).
	y := "$2y$" + strings.TrimPrefix(bc, "$2a$")
	for _, h := range []string{argon, bc, y} {
		v, err := parseHash(h)
		if err != nil {
			t.Fatalf("%s: %v", h, err)
		}
		if !v.verify([]byte("s3cret")) {
			t.Errorf("%s does not verify its password", h)
		}
		if v.verify([]byte("s3cret ")) || v.verify(nil) {
			t.Errorf("%s verifies a wrong password", h)
		}
	}
	for _, bad := range []string{
		"plain", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=18$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", // 4 GiB: refused
		"$argon2id$v=19$m=19456,t=0,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=19456,t=2,p=1$!!$aGFzaGhhc2hoYXNoaGFzaA",
		"$2a$99$abcdefghijklmnopqrstuu",
	} {
		if _, err := parseHash(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func connectInfo(user, pass string) *broker.ConnectInfo {
	return &broker.ConnectInfo{ClientID: "c", Username: user, HasUsername: true, Password: []byte(pass), HasPassword: true,
		RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}
}

// hashOf returns an argon2id hash of pw with the least parameters
// parseHash accepts: verification runs the same code as for
// HashPassword's, without a CPU cost that a loaded -race run turns into
// seconds per CONNECT (TestHashes covers HashPassword's parameters).
func hashOf(t *testing.T, pw string) string {
	t.Helper()
	salt := make([]byte, argon2SaltLen)
	if _, err := rand.Read(salt); err != nil {
		t.Fatal(err)
	}
	p := argon2Params{time: 1, memory: 8, threads: 1}
	return encodeArgon2(p, salt, argon2.IDKey([]byte(pw), salt, p.time, p.memory, p.threads, argon2KeyLen))
}

func wantCode(t *testing.T, err error, code packet.ReasonCode) {
	t.Helper()
	var ae *broker.AuthError
	if !errors.As(err, &ae) || ae.Code != code {
		t.Fatalf("error %v, want an AuthError with %v", err, code)
	}
}

func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "passwords")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("# users\n\nalice:" + hashOf(t, "a-pw") + ":line=1, site=berlin\n")
	var logs bytes.Buffer
	pw, err := NewPasswords(file, []PasswordUser{{Username: "inline", PasswordHash: hashOf(t, "i-pw")}}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	pw.reloadGap = 0
	ctx := context.Background()
	p, err := pw.Verify(ctx, connectInfo("alice", "a-pw"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Username != "alice" || p.Attributes["line"] != "1" || p.Attributes["site"] != "berlin" {
		t.Fatalf("principal %+v", p)
	}
	if _, err := pw.Verify(ctx, connectInfo("inline", "i-pw")); err != nil {
		t.Fatal(err)
	}
	_, err = pw.Verify(ctx, connectInfo("alice", "wrong"))
	wantCode(t, err, packet.BadUserNameOrPassword)
	_, err = pw.Verify(ctx, connectInfo("mallory", "a-pw"))
	wantCode(t, err, packet.BadUserNameOrPassword)

	// The file changes: bob appears, alice's password changes.
	write("alice:" + hashOf(t, "new-pw") + "\nbob:" + hashOf(t, "b-pw") + "\n")
	if _, err := pw.Verify(ctx, connectInfo("bob", "b-pw")); err != nil {
		t.Fatalf("bob after reload: %v", err)
	}
	if _, err := pw.Verify(ctx, connectInfo("alice", "a-pw")); err == nil {
		t.Fatal("alice's old password still works")
	}
	// A broken file keeps the users that were loaded, and says why.
	write("bob:not-a-hash\n")
	if _, err := pw.Verify(ctx, connectInfo("bob", "b-pw")); err != nil {
		t.Fatalf("bob after a broken reload: %v", err)
	}
	if err := pw.Status(); err == nil || !strings.Contains(err.Error(), "passwords:1") {
		t.Fatalf("status %v", err)
	}
	if strings.Contains(logs.String(), "b-pw") || strings.Contains(logs.String(), "a-pw") {
		t.Fatalf("a password reached the log:\n%s", logs.String())
	}
	if !pw.Applies(connectInfo("alice", "x")) || pw.Applies(connectInfo(SATMethod, "token")) ||
		pw.Applies(&broker.ConnectInfo{}) {
		t.Error("Applies")
	}
}

func TestPasswordFileErrors(t *testing.T) {
	dir := t.TempDir()
	h := hashOf(t, "x")
	for _, tc := range []struct{ content, want string }{
		{"nocolon\n", "want username:hash"},
		{"a:" + h + "\na:" + h + "\n", "appears twice"},
		{"a:" + h + ":novalue\n", "not name=value"},
		{"a:md5hash\n", "not an argon2id or bcrypt hash"},
	} {
		f := filepath.Join(dir, "p")
		if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readPasswordFile(f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.content, err, tc.want)
		}
	}
	// A missing file is not fatal: no users, and a status.
	pw, err := NewPasswords(filepath.Join(dir, "missing"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pw.Status() == nil {
		t.Error("no status for a missing file")
	}
	_, err = pw.Verify(context.Background(), connectInfo("a", "x"))
	wantCode(t, err, packet.BadUserNameOrPassword)
}

// countingVerifier counts the checks made with the verifier it wraps.
type countingVerifier struct {
	verifier
	n atomic.Int32
}

func (c *countingVerifier) verify(p []byte) bool { c.n.Add(1); return c.verifier.verify(p) }

// TestUnknownUserTiming: a user who does not exist costs the same hash as
// a wrong password, so timing does not tell which names exist: the decoy
// an unknown name is checked against has the users' parameters, and it is
// checked. (Proved by parameters, not by a stopwatch a loaded machine
// makes unreliable.)
func TestUnknownUserTiming(t *testing.T) {
	bc, err := HashPasswordBcrypt([]byte("pw"), bcrypt.MinCost+1)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{hashOf(t, "pw"), bc} {
		pw, err := NewPasswords("", []PasswordUser{{Username: "alice", PasswordHash: h}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		switch user := pw.users["alice"].v.(type) {
		case *argon2Hash:
			if d, ok := pw.decoy.(*argon2Hash); !ok || d.p != user.p || len(d.key) != len(user.key) {
				t.Fatalf("decoy %+v for a user hash with %+v", pw.decoy, user.p)
			}
		case bcryptHash:
			if d, ok := pw.decoy.(bcryptHash); !ok || d.cost != user.cost {
				t.Fatalf("decoy %+v for a user hash of cost %d", pw.decoy, user.cost)
			}
		}
		decoy := &countingVerifier{verifier: pw.decoy}
		pw.decoy = decoy
		_, err = pw.Verify(context.Background(), connectInfo("nobody", "pw"))
		wantCode(t, err, packet.BadUserNameOrPassword)
		if decoy.n.Load() != 1 {
			t.Fatalf("%s: an unknown user was not checked against the decoy", h[:4])
		}
	}
}

func TestThrottle(t *testing.T) {
	th := NewThrottle(10*time.Millisecond, 80*time.Millisecond)
	now := time.Unix(1000, 0)
	th.now = func() time.Time { return now }
	a := &net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 5}
	other := &net.TCPAddr{IP: net.ParseIP("10.0.0.2"), Port: 5}
	if th.Delay(a) != 0 {
		t.Fatal("delay before any failure")
	}
	var got []time.Duration
	for range 6 {
		th.Failed(a)
		got = append(got, th.Delay(a))
	}
	want := []time.Duration{10, 20, 40, 80, 80, 80}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("delays %v, want %v ms", got, want)
		}
	}
	if th.Delay(other) != 0 {
		t.Fatal("another address is slowed down")
	}
	// The same host on another port, and IPv6 hosts of one /64, count together.
	if th.Delay(&net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 9}) == 0 {
		t.Fatal("a new port escapes the penalty")
	}
	th.Failed(&net.TCPAddr{IP: net.ParseIP("2001:db8::1")})
	if th.Delay(&net.TCPAddr{IP: net.ParseIP("2001:db8::ffff")}) == 0 {
		t.Fatal("another address of the /64 escapes the penalty")
	}
	// Forgotten after the window.
	now = now.Add(DefaultThrottleWindow + time.Second)
	if th.Delay(a) != 0 {
		t.Fatal("the penalty outlived the window")
	}
	// Bounded memory.
	th.maxEntries = 100
	for i := range 1000 {
		th.Failed(&net.TCPAddr{IP: net.IPv4(10, 1, byte(i>>8), byte(i))})
	}
	if n := th.Len(); n > 100 {
		t.Fatalf("%d entries, bound 100", n)
	}
	// Wait honours its context.
	th.Failed(a)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := th.Wait(ctx, a); err == nil {
		t.Fatal("Wait ignored a cancelled context")
	}
	var nilT *Throttle
	nilT.Failed(a)
	if nilT.Delay(a) != 0 || nilT.Wait(context.Background(), a) != nil {
		t.Fatal("a nil Throttle slowed something down")
	}
}

// TestChain: the first method that applies decides; one that cannot
// decide hands over; none applying is ErrNoCredentials with the code the
// client's credentials call for; denials slow the address down.
func TestChain(t *testing.T) {
	pw, err := NewPasswords("", []PasswordUser{{Username: "alice", PasswordHash: hashOf(t, "pw")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	down := &fakeMethod{name: "Custom", applies: true, err: unavailable(errors.New("connection refused"))}
	th := NewThrottle(time.Millisecond, 2*time.Millisecond)
	c := NewChain([]Method{down, pw}, th, nil)
	ctx := context.Background()
	p, err := c.Authenticate(ctx, connectInfo("alice", "pw"))
	if err != nil || p.Method != MethodUsernamePassword || p.ClientID != "c" || p.Username != "alice" {
		t.Fatalf("fell through to passwords: %+v %v", p, err)
	}
	_, err = c.Authenticate(ctx, connectInfo("alice", "bad"))
	wantCode(t, err, packet.BadUserNameOrPassword)
	if th.Len() != 1 {
		t.Fatal("a denial was not throttled")
	}
	_, err = c.Authenticate(ctx, &broker.ConnectInfo{ClientID: "anon"})
	if !errors.Is(err, broker.ErrNoCredentials) {
		t.Fatalf("no credentials: %v", err)
	}
	wantCode(t, err, packet.NotAuthorized)
	// An enhanced method nobody serves.
	if _, err := NewChain([]Method{pw}, nil, nil).StartAuth(ctx, &broker.ConnectInfo{AuthMethod: "SCRAM-SHA-1"}); err == nil {
		t.Fatal("StartAuth accepted an unknown method")
	} else {
		wantCode(t, err, packet.BadAuthenticationMethod)
	}
	// A method that decides stops the chain even if a later one would allow.
	deny := &fakeMethod{name: "Custom", applies: true, err: deny(MethodCustom, packet.Banned, "banned")}
	_, err = NewChain([]Method{deny, pw}, nil, nil).Authenticate(ctx, connectInfo("alice", "pw"))
	wantCode(t, err, packet.Banned)
}

type fakeMethod struct {
	name    string
	applies bool
	p       *broker.Principal
	err     error
}

func (f *fakeMethod) Name() string                     { return f.name }
func (f *fakeMethod) Applies(*broker.ConnectInfo) bool { return f.applies }
func (f *fakeMethod) Verify(context.Context, *broker.ConnectInfo) (*broker.Principal, error) {
	return f.p, f.err
}
