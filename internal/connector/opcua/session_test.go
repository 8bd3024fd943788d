package opcua

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/connector/opcua/testserver"
)

func plantGroup(pi time.Duration) GroupSpec {
	return GroupSpec{
		Name:               "plant",
		PublishingInterval: pi,
		Items: []ItemSpec{
			{Name: "counter", NodeID: "ns=2;s=Counter", SamplingInterval: 100 * time.Millisecond, QueueSize: 10},
			{Name: "temperature", NodeID: "nsu=urn:edgeport:test;s=Temperature"},
		},
	}
}

// Every security policy and mode both gopcua and node-opcua implement
// delivers data, with anonymous and username users.
func TestSecurityModes(t *testing.T) {
	cases := []struct{ policy, mode string }{
		{"None", "None"},
		{"Basic256Sha256", "Sign"},
		{"Basic256Sha256", "SignAndEncrypt"},
		{"Aes128_Sha256_RsaOaep", "Sign"},
		{"Aes128_Sha256_RsaOaep", "SignAndEncrypt"},
		{"Aes256_Sha256_RsaPss", "Sign"},
		{"Aes256_Sha256_RsaPss", "SignAndEncrypt"},
	}
	d := newDialer(t, shared)
	for i, c := range cases {
		auth := Auth{Kind: AuthAnonymous}
		if i%2 == 1 {
			auth = Auth{Kind: AuthUserPass, Username: "operator", Password: "secret"}
		}
		t.Run(fmt.Sprintf("%s_%s_%s", c.policy, c.mode, auth.Kind), func(t *testing.T) {
			t.Parallel()
			rec := newRecorder()
			startSession(t, d, Options{
				Endpoint: Endpoint{URL: shared.URL, Policy: c.policy, Mode: c.mode, Auth: auth},
				Groups:   []GroupSpec{plantGroup(200 * time.Millisecond)},
			}, rec)
			waitFor(t, 20*time.Second, "counter samples", func() bool { return rec.count("counter") >= 3 })
			smp := rec.get("counter")
			for i := 1; i < len(smp); i++ {
				a, b := smp[i-1].Value.(int32), smp[i].Value.(int32)
				if b <= a {
					t.Fatalf("counter did not increase: %d then %d", a, b)
				}
			}
			if smp[0].SourceTimestamp.IsZero() || smp[0].Status != 0 {
				t.Fatalf("sample lacks source timestamp or is not Good: %+v", smp[0])
			}
			waitFor(t, 10*time.Second, "temperature (nsu= node id)", func() bool { return rec.count("temperature") >= 1 })
			if _, ok := rec.get("temperature")[0].Value.(float64); !ok {
				t.Fatalf("temperature is %T, want float64", rec.get("temperature")[0].Value)
			}
		})
	}
}

// A wrong password is a clear session error, and nothing is delivered.
func TestBadPassword(t *testing.T) {
	d := newDialer(t, shared)
	rec := newRecorder()
	startSession(t, d, Options{
		Endpoint:       Endpoint{URL: shared.URL, Policy: "Basic256Sha256", Mode: "SignAndEncrypt", Auth: Auth{Kind: AuthUserPass, Username: "operator", Password: "wrong"}},
		Groups:         []GroupSpec{plantGroup(200 * time.Millisecond)},
		BackoffInitial: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
	}, rec)
	waitFor(t, 20*time.Second, "an error status", func() bool { return rec.lastStatus().State == StateError })
	if err := rec.lastStatusIn(StateError).Err; !errors.Is(err, ErrUserRejected) || !strings.HasPrefix(err.Error(), `user "operator" rejected by the server: BadUserAccessDenied`) {
		t.Fatalf("error %q does not say the server refused the user", err)
	}
	if n := rec.count("counter"); n != 0 {
		t.Fatalf("%d samples delivered without a session", n)
	}
}

// An unknown server certificate is refused and listed as rejected with its
// thumbprint, subject, endpoint and time; trusting it lets the very next
// attempt connect, without restarting the session.
func TestRejectedThenTrusted(t *testing.T) {
	d := newDialer(t) // trusts nothing
	rec := newRecorder()
	startSession(t, d, Options{
		Endpoint: Endpoint{URL: shared.URL, Policy: "Basic256Sha256", Mode: "SignAndEncrypt"},
		Groups:   []GroupSpec{plantGroup(200 * time.Millisecond)},
		// A long backoff: the session must retry because of the trust
		// change, not because a timer ran out.
		BackoffInitial: time.Hour, BackoffMax: time.Hour,
	}, rec)
	waitFor(t, 20*time.Second, "an untrusted-certificate error", func() bool { return rec.lastStatus().State == StateError })
	var ue *UntrustedError
	if err := rec.lastStatus().Err; !errors.As(err, &ue) {
		t.Fatalf("error %v is not an UntrustedError", err)
	}
	if ue.Thumbprint != shared.Thumbprint {
		t.Fatalf("thumbprint %s, server's is %s", ue.Thumbprint, shared.Thumbprint)
	}
	want := "server certificate not trusted: run `edgeport connector opcua certs trust " + shared.Thumbprint + "`"
	if !strings.HasPrefix(ue.Error(), want) {
		t.Fatalf("message %q does not start with %q", ue.Error(), want)
	}
	list, err := d.Trust.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].List != "rejected" || list[0].Thumbprint != shared.Thumbprint ||
		list[0].Endpoint != shared.URL || list[0].RejectedAt.IsZero() || !strings.Contains(list[0].Subject, "edgeport-test-server") && list[0].Subject == "" {
		t.Fatalf("rejected list = %+v", list)
	}
	if n := rec.count("counter"); n != 0 {
		t.Fatalf("%d samples from an untrusted server", n)
	}
	if _, err := d.Trust.Trust(shared.Thumbprint[:10]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "samples after trusting", func() bool { return rec.count("counter") >= 2 })

	// Rejecting it again refuses the next session.
	if _, err := d.Trust.Reject(shared.Thumbprint); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Dial(t.Context(), &Endpoint{URL: shared.URL, Policy: "Basic256Sha256", Mode: "Sign"}); !errors.As(err, &ue) {
		t.Fatalf("dial after reject: %v, want UntrustedError", err)
	}
}

// Invalid and unknown node ids are reported per item; the good items of the
// same subscription keep delivering.
func TestBadNodeIDs(t *testing.T) {
	d := newDialer(t, shared)
	rec := newRecorder()
	g := plantGroup(200 * time.Millisecond)
	g.Items = append(g.Items,
		ItemSpec{Name: "missing", NodeID: "ns=2;s=NoSuchNode"},
		ItemSpec{Name: "garbage", NodeID: "ns=x;s=Counter"},
		ItemSpec{Name: "unknownns", NodeID: "nsu=urn:nobody;s=Counter"},
	)
	startSession(t, d, Options{Endpoint: Endpoint{URL: shared.URL}, Groups: []GroupSpec{g}}, rec)
	waitFor(t, 20*time.Second, "counter samples", func() bool { return rec.count("counter") >= 3 })
	for name, want := range map[string]string{
		"missing":   "BadNodeIdUnknown",
		"garbage":   "invalid namespace id",
		"unknownns": "namespace uri",
	} {
		err, seen := rec.itemErr(name)
		if !seen || err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("item %s: status %v, want an error containing %q", name, err, want)
		}
	}
	if err, _ := rec.itemErr("counter"); err != nil {
		t.Errorf("counter: %v", err)
	}
}

// An unreachable endpoint is a clear error and retries with backoff.
func TestUnreachable(t *testing.T) {
	d := newDialer(t)
	rec := newRecorder()
	startSession(t, d, Options{
		Endpoint:       Endpoint{URL: "opc.tcp://127.0.0.1:1", DialTimeout: time.Second},
		Groups:         []GroupSpec{plantGroup(time.Second)},
		BackoffInitial: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
	}, rec)
	waitFor(t, 10*time.Second, "two failed attempts", func() bool { return rec.statusCount(StateError) >= 2 })
	if err := rec.lastStatusIn(StateError).Err; err == nil || !strings.Contains(err.Error(), "getting endpoints of opc.tcp://127.0.0.1:1") {
		t.Fatalf("error %q does not name the endpoint", err)
	}
}

func TestValidation(t *testing.T) {
	d := newDialer(t)
	cases := []struct {
		opts Options
		want string
	}{
		{Options{Endpoint: Endpoint{URL: "http://x:1"}}, `address: "http://x:1" is not an opc.tcp:// URL`},
		{Options{Endpoint: Endpoint{URL: "opc.tcp://x"}}, `address: "opc.tcp://x"`},
		{Options{Endpoint: Endpoint{URL: "opc.tcp://x:1", Policy: "Basic128Rsa15"}}, `securityPolicy: "Basic128Rsa15" is not one of`},
		{Options{Endpoint: Endpoint{URL: "opc.tcp://x:1", Policy: "None", Mode: "Sign"}}, `securityMode: Sign does not go with securityPolicy None`},
		{Options{Endpoint: Endpoint{URL: "opc.tcp://x:1", Auth: Auth{Kind: AuthUserPass}}}, `authentication: UsernamePassword needs a username`},
		{Options{Endpoint: Endpoint{URL: "opc.tcp://x:1"}, Groups: []GroupSpec{{Items: []ItemSpec{{NodeID: ""}}}}}, `groups[0].items[0]: dataSource: node id is empty`},
		{Options{Endpoint: Endpoint{URL: "opc.tcp://x:1"}, Groups: []GroupSpec{{Items: []ItemSpec{{NodeID: "ns=2;s=a", DeadbandType: "Relative"}}}}}, `deadbandType: "Relative" is not None, Absolute or Percent`},
		{Options{Endpoint: Endpoint{URL: "opc.tcp://x:1"}, Groups: []GroupSpec{{Items: []ItemSpec{{NodeID: "ns=2;s=a", DeadbandType: "Percent", DeadbandValue: 150}}}}}, `deadbandValue: 150 is more than 100 percent`},
	}
	for _, c := range cases {
		_, err := NewSession(d, c.opts, newRecorder())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewSession(%+v) = %v, want error containing %q", c.opts.Endpoint, err, c.want)
		}
	}
}

// Absolute deadband suppresses small changes; percent deadband works on an
// analog item's EURange; heartbeat re-delivers an unchanged value.
func TestDeadbandAndHeartbeat(t *testing.T) {
	d := newDialer(t, shared)
	rec := newRecorder()
	startSession(t, d, Options{Endpoint: Endpoint{URL: shared.URL}, Groups: []GroupSpec{{
		Name:               "g",
		PublishingInterval: 100 * time.Millisecond,
		Items: []ItemSpec{
			{Name: "counter5", NodeID: "ns=2;s=Counter", SamplingInterval: 100 * time.Millisecond, QueueSize: 100, DeadbandType: "Absolute", DeadbandValue: 5},
			{Name: "level10pct", NodeID: "ns=2;s=Level", SamplingInterval: 100 * time.Millisecond, QueueSize: 100, DeadbandType: "Percent", DeadbandValue: 10},
			{Name: "constant", NodeID: "ns=2;s=Constant", Heartbeat: 300 * time.Millisecond},
		},
	}}}, rec)
	waitFor(t, 20*time.Second, "deadband samples", func() bool {
		return rec.count("counter5") >= 4 && rec.count("level10pct") >= 4 && rec.count("constant") >= 4
	})
	check := func(name string, min float64) {
		s := rec.get(name)
		for i := 1; i < len(s); i++ {
			a, b := toFloat(s[i-1].Value), toFloat(s[i].Value)
			if diff := b - a; diff <= min && diff >= 0 {
				t.Fatalf("%s: consecutive values %v and %v differ by no more than the deadband %v", name, a, b, min)
			}
		}
	}
	check("counter5", 5)
	check("level10pct", 10) // EURange 0..100: 10% is 10
	c := rec.get("constant")
	if c[0].Heartbeat || !c[1].Heartbeat || !c[2].Heartbeat {
		t.Fatalf("constant: want a change then heartbeats, got %+v", c[:3])
	}
	if c[1].Value != c[0].Value || !c[1].SourceTimestamp.Equal(c[0].SourceTimestamp) {
		t.Fatalf("heartbeat %+v differs from the value it repeats %+v", c[1], c[0])
	}
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int32:
		return float64(x)
	case float64:
		return x
	}
	panic(fmt.Sprintf("%T", v))
}

// Events arrive with the selected fields; the where clause filters on the
// server.
func TestEvents(t *testing.T) {
	d := newDialer(t, shared)
	rec := newRecorder()
	startSession(t, d, Options{Endpoint: Endpoint{URL: shared.URL}, Groups: []GroupSpec{{
		Name:               "alarms",
		PublishingInterval: 100 * time.Millisecond,
		Events: []EventSpec{
			{Name: "all", NotifierID: "ns=2;s=Boiler"},
			{Name: "severe", NotifierID: "ns=2;s=Boiler", Fields: []string{"Message", "Severity"}, MinSeverity: 500, TypeDefinition: "i=2041"},
		},
	}}}, rec)
	waitFor(t, 20*time.Second, "events", func() bool {
		n := 0
		for _, e := range rec.eventList() {
			if e.Name == "severe" {
				n++
			}
		}
		return n >= 3
	})
	var all, severe int
	for _, e := range rec.eventList() {
		switch e.Name {
		case "all":
			all++
			if _, ok := e.Fields["EventId"]; !ok {
				t.Fatalf("event lacks EventId: %v", e.Fields)
			}
		case "severe":
			severe++
			if sev, _ := e.Fields["Severity"].(uint16); sev < 500 {
				t.Fatalf("filtered event with severity %v: %v", e.Fields["Severity"], e.Fields)
			}
			if msg, _ := e.Fields["Message"].(string); !strings.HasPrefix(msg, "boiler event ") {
				t.Fatalf("event message %q", msg)
			}
			if len(e.Fields) != 2 {
				t.Fatalf("selected 2 fields, got %v", e.Fields)
			}
		}
	}
	if all < severe {
		t.Fatalf("%d unfiltered events but %d filtered", all, severe)
	}
}

// Restarting the server mid-subscription: the session notices, reconnects
// with backoff and data resumes.
func TestServerRestart(t *testing.T) {
	srv := startServer(t, testserver.Config{AllowAnonymous: true, AutoAccept: true})
	d := newDialer(t, srv)
	rec := newRecorder()
	s := startSession(t, d, Options{
		Endpoint:       Endpoint{URL: srv.URL, Policy: "Basic256Sha256", Mode: "SignAndEncrypt"},
		Groups:         []GroupSpec{plantGroup(100 * time.Millisecond)},
		BackoffInitial: 100 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
	}, rec)
	waitFor(t, 20*time.Second, "samples", func() bool { return rec.count("counter") >= 2 })
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	before := rec.count("counter")
	waitFor(t, 30*time.Second, "samples after the restart", func() bool {
		// The restarted server counts from zero again.
		s := rec.get("counter")
		return len(s) > before+2 && s[len(s)-1].Value.(int32) < s[before-1].Value.(int32)+1000 && s[len(s)-1].Value.(int32) >= 1
	})
	if c := s.Counters(); c.Reconnects < 1 {
		t.Fatalf("counters %+v: want a reconnect", c)
	}
}

// Freezing the server (SIGSTOP) keeps the TCP connection open but silent:
// only the watchdog can notice. It rebuilds the session, and data resumes
// after the server thaws.
func TestFreezeWatchdog(t *testing.T) {
	srv := startServer(t, testserver.Config{AllowAnonymous: true, AutoAccept: true})
	d := newDialer(t, srv)
	rec := newRecorder()
	s := startSession(t, d, Options{
		Endpoint:           Endpoint{URL: srv.URL, DialTimeout: time.Second, RequestTimeout: time.Second},
		Groups:             []GroupSpec{plantGroup(100 * time.Millisecond)},
		KeepAlive:          time.Second,
		WatchdogKeepAlives: 2,
		BackoffInitial:     100 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
	}, rec)
	waitFor(t, 20*time.Second, "samples", func() bool { return rec.count("counter") >= 2 })
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	var werr error
	waitFor(t, 20*time.Second, "the watchdog's status", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, st := range rec.statuses {
			if errors.Is(st.Err, ErrWatchdog) {
				werr = st.Err
			}
		}
		return werr != nil
	})
	if !strings.Contains(werr.Error(), "rebuilding the session") || s.Counters().WatchdogFires < 1 {
		t.Fatalf("watchdog status %v, counters %+v", werr, s.Counters())
	}
	before := rec.count("counter")
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "samples after the thaw", func() bool { return rec.count("counter") > before+2 })
	waitFor(t, 10*time.Second, "connected", func() bool { return rec.lastStatus().State == StateConnected })
}
