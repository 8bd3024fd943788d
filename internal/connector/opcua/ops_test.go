package opcua

import (
	"errors"
	"github.com/gopcua/opcua/ua"
	"strings"
	"testing"
	"time"
)

func connected(t *testing.T) *Session {
	t.Helper()
	rec := newRecorder()
	s := startSession(t, newDialer(t, shared), Options{
		Endpoint: Endpoint{URL: shared.URL, Policy: "Basic256Sha256", Mode: "SignAndEncrypt", Auth: Auth{Kind: AuthUserPass, Username: "operator", Password: "secret"}},
		Groups:   []GroupSpec{{Name: "g", PublishingInterval: 100 * time.Millisecond, Items: []ItemSpec{{Name: "setpoint", NodeID: "ns=2;s=Setpoint"}}}},
	}, rec)
	waitFor(t, 20*time.Second, "connected", func() bool { return rec.lastStatus().State == StateConnected })
	return s
}

func TestBrowse(t *testing.T) {
	s := connected(t)
	top, err := s.Browse(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	var plant string
	for _, n := range top {
		if n.BrowseName == "Plant" {
			plant = n.NodeID
		}
	}
	if plant != "ns=2;s=Plant" {
		t.Fatalf("Objects has no Plant folder: %+v", top)
	}
	kids, err := s.Browse(t.Context(), plant)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Node{}
	for _, n := range kids {
		got[n.BrowseName] = n
	}
	if n := got["Counter"]; n.NodeClass != "Variable" || n.DataType != "Int32" || n.NodeID != "ns=2;s=Counter" {
		t.Fatalf("Counter = %+v", n)
	}
	if n := got["Boiler"]; n.NodeClass != "Object" {
		t.Fatalf("Boiler = %+v", n)
	}
	if _, err := s.Browse(t.Context(), "nonsense"); err == nil {
		t.Fatal("browsing a malformed node id succeeded")
	}
}

func TestWriteAndCall(t *testing.T) {
	s := connected(t)
	ctx := t.Context()
	if err := s.Write(ctx, "ns=2;s=Setpoint", 21.5); err != nil {
		t.Fatal(err)
	}
	c, _ := s.current()
	v, err := c.Node(mustNode(t, "ns=2;s=Setpoint")).Value(ctx)
	if err != nil || v.Float() != 21.5 {
		t.Fatalf("read back %v, %v", v, err)
	}
	for _, bad := range []struct {
		node  string
		value any
		want  string
	}{
		{"ns=2;s=Setpoint", "hot", "want a number for Double"},
		{"ns=2;s=Counter", 1.5, "does not fit Int32"},
		{"ns=2;s=Constant", 1.0, "BadNotWritable"},
		{"ns=2;s=Nope", 1.0, "BadNodeIdUnknown"},
	} {
		if err := s.Write(ctx, bad.node, bad.value); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Write(%s, %v) = %v, want %q", bad.node, bad.value, err, bad.want)
		}
	}

	out, err := s.Call(ctx, "ns=2;s=Boiler", "ns=2;s=Boiler.Add", []any{2.0, 40.0})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0] != 42.0 {
		t.Fatalf("Add(2, 40) = %v", out)
	}
	if _, err := s.Call(ctx, "ns=2;s=Boiler", "ns=2;s=Boiler.Add", []any{2.0}); !errors.Is(err, ErrBadValue) {
		t.Fatalf("one argument: %v", err)
	}
	if _, err := s.Call(ctx, "ns=2;s=Boiler", "ns=2;s=Boiler.Add", []any{"a", 1.0}); !errors.Is(err, ErrBadValue) {
		t.Fatalf("string argument: %v", err)
	}
}

func TestFindServers(t *testing.T) {
	servers, err := FindServers(t.Context(), shared.URL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 1 || servers[0].ApplicationURI != "urn:edgeport:test-server" || len(servers[0].DiscoveryURLs) == 0 {
		t.Fatalf("FindServers = %+v", servers)
	}
	if _, err := FindServers(t.Context(), "opc.tcp://127.0.0.1:1", time.Second); err == nil {
		t.Fatal("FindServers on a closed port succeeded")
	}
}

func mustNode(t *testing.T, s string) *ua.NodeID {
	n, err := parseNodeID(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func FuzzParseNodeID(f *testing.F) {
	for _, s := range []string{"ns=2;s=Counter", "i=85", "ns=1;i=70000", "nsu=urn:edgeport:test;s=X", "ns=x;s=y", "", "ns=2;g=5a1b0c3e-0000-0000-0000-000000000000", "ns=2;b=AAE="} {
		f.Add(s)
	}
	ns := []string{"http://opcfoundation.org/UA/", "urn:server", "urn:edgeport:test"}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseNodeID(s, ns)
		if err != nil {
			return
		}
		// What parses must print back to something that parses to the same.
		n2, err := parseNodeID(n.String(), ns)
		if err != nil {
			t.Fatalf("%q parsed to %s, which does not parse: %v", s, n, err)
		}
		if n2.String() != n.String() {
			t.Fatalf("%q: %s then %s", s, n, n2)
		}
	})
}
