package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/cluster"
)

func TestCheckClusterVerdicts(t *testing.T) {
	if _, ok := checkCluster(nil); ok {
		t.Fatal("a single node got a cluster check")
	}
	healthy := func() *cluster.Status {
		return &cluster.Status{Node: "n1", ClusterName: "c", Connected: true,
			Members: []cluster.Member{{Name: "n1", Self: true, Healthy: true}, {Name: "n2", Healthy: true}},
			JetStream: cluster.JetStreamState{Enabled: true, Current: true, MetaLeader: "n2",
				Peers: []cluster.PeerInfo{{Name: "n1", Current: true}, {Name: "n2", Current: true}}}}
	}
	for _, c := range []struct {
		name   string
		change func(*cluster.Status)
		want   string
	}{
		{"healthy", func(*cluster.Status) {}, statusOK},
		{"peer lagging", func(s *cluster.Status) { s.JetStream.Peers[1].Current = false }, statusWarn},
		{"peer offline", func(s *cluster.Status) { s.JetStream.Peers[1].Offline = true }, statusFail},
		{"member unheard", func(s *cluster.Status) { s.Members[1].Healthy = false; s.Members[1].LastSeen = time.Now() }, statusFail},
		{"no meta leader", func(s *cluster.Status) { s.JetStream.MetaLeader = "" }, statusFail},
		{"disconnected", func(s *cluster.Status) { s.Connected = false }, statusFail},
	} {
		st := healthy()
		c.change(st)
		res, _ := checkCluster(st)
		if res.Status != c.want {
			t.Errorf("%s: %s (%s; %s), want %s", c.name, res.Status, res.Message, res.Hint, c.want)
		}
	}
	for _, c := range []struct {
		change func(*cluster.Status)
		want   string
	}{
		{func(s *cluster.Status) { s.RouteTLS, s.RouteAuth = true, true }, "route security: mutual TLS with the cluster CA, authenticated with the cluster secret"},
		{func(s *cluster.Status) { s.RouteAuth = true }, "route security: authenticated with the cluster secret, not encrypted (route listener on loopback)"},
		{func(*cluster.Status) {}, "route security: neither authenticated nor encrypted (route listener on loopback)"},
		{func(s *cluster.Status) { s.External, s.NATSTLS = true, true }, "NATS connection: TLS"},
	} {
		st := healthy()
		c.change(st)
		res, _ := checkCluster(st)
		if it := res.Items[0]; it.Name+": "+it.Message != c.want || it.Status != statusOK {
			t.Errorf("got %s: %s (%s), want %s", it.Name, it.Message, it.Status, c.want)
		}
	}
	// The route certificate's expiry: fine a year ahead, a warning within
	// 30 days, a failure once expired (and the cluster check with it).
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		notAfter time.Time
		status   string
		suffix   string
	}{
		{now.AddDate(1, 0, 0), statusOK, "secret"},
		{now.AddDate(0, 0, 10), statusWarn, "; the route certificate expires 2026-12-16"},
		{now.AddDate(0, 0, -1), statusFail, "; the route certificate expired 2026-12-05"},
	} {
		st := healthy()
		st.RouteTLS, st.RouteAuth, st.RouteCertNotAfter = true, true, &c.notAfter
		res, _ := checkClusterAt(st, now)
		if it := res.Items[0]; it.Status != c.status || !strings.HasSuffix(it.Message, c.suffix) || res.Status != c.status {
			t.Errorf("certificate until %s: item %s %q, check %s", c.notAfter, it.Status, it.Message, res.Status)
		}
	}
}
