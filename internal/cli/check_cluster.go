package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/cluster"
)

// checkCluster judges the node's cluster: every member heard from, a
// JetStream meta leader, every meta peer current (as the leader sees it).
// A single node reports no cluster and the check is left out.
func checkCluster(c *cluster.Status) (checkResult, bool) { return checkClusterAt(c, time.Now()) }

// routeCertWarn is how long before its expiry a route certificate is
// warned about.
const routeCertWarn = 30 * 24 * time.Hour

// checkClusterAt is checkCluster at the time now (tests give it).
func checkClusterAt(c *cluster.Status, now time.Time) (checkResult, bool) {
	if c == nil {
		return checkResult{}, false
	}
	res := checkResult{Name: "cluster", Status: statusOK}
	js := c.JetStream
	res.Details = map[string]any{"node": c.Node, "cluster": c.ClusterName, "external": c.External,
		"metaLeader": js.MetaLeader, "streams": js.Streams, "replicas": c.Replicas, "shards": c.Shards}
	if c.Routing != nil {
		res.Details["routing"] = c.Routing
	}
	res.Details["routeAuth"], res.Details["routeTLS"], res.Details["natsTLS"] = c.RouteAuth, c.RouteTLS, c.NATSTLS
	res.Items = append(res.Items, clusterSecurityItem(c, now))
	healthy := 0
	for _, m := range c.Members {
		item := checkResult{Name: "member " + m.Name, Status: statusOK, Message: "heard from"}
		if m.Self {
			item.Message = "this node"
		}
		if !m.Healthy {
			item.Status = statusFail
			item.Message = "not heard from since " + m.LastSeen.Format("15:04:05")
			item.Hint = "is the node running, and can it reach this one's route address?"
		} else {
			healthy++
		}
		res.Items = append(res.Items, item)
	}
	for _, p := range js.Peers {
		item := checkResult{Name: "jetstream peer " + p.Name, Status: statusOK, Message: "current"}
		switch {
		case p.Offline:
			item.Status, item.Message = statusFail, "offline"
		case !p.Current:
			item.Status, item.Message = statusWarn, fmt.Sprintf("lagging (%d operations behind)", p.Lag)
		}
		res.Items = append(res.Items, item)
	}
	for _, it := range res.Items {
		res.Status = worse(res.Status, it.Status)
	}
	leader := js.MetaLeader
	if leader == "" {
		leader = "none"
	}
	res.Message = fmt.Sprintf("node %s of %q: %d/%d members healthy, JetStream meta leader %s", c.Node, c.ClusterName, healthy, len(c.Members), leader)
	if ok, why := c.Healthy(); !ok {
		res.Status = worse(res.Status, statusWarn)
		res.Hint = strings.Join(why, "; ")
		if !c.Connected || js.MetaLeader == "" {
			res.Status = statusFail
		}
	}
	return res, true
}

// clusterSecurityItem says how the node's links to the cluster are secured. A
// node only runs unsecured routes on loopback (it refuses to start
// otherwise), so that is reported, not judged.
func clusterSecurityItem(c *cluster.Status, now time.Time) checkResult {
	it := checkResult{Name: "route security", Status: statusOK}
	switch {
	case c.External && c.NATSTLS:
		it.Name, it.Message = "NATS connection", "TLS"
	case c.External:
		it.Name, it.Message = "NATS connection", "not encrypted (NATS on loopback)"
	case c.RouteTLS && c.RouteAuth:
		it.Message = "mutual TLS with the cluster CA, authenticated with the cluster secret"
	case c.RouteAuth:
		it.Message = "authenticated with the cluster secret, not encrypted (route listener on loopback)"
	case c.RouteTLS:
		it.Message = "mutual TLS with the cluster CA"
	default:
		it.Message = "neither authenticated nor encrypted (route listener on loopback)"
		it.Hint = "edgeport cluster init and --cluster-credentials secure them (docs/cluster.md)"
	}
	if na := c.RouteCertNotAfter; na != nil {
		switch left := na.Sub(now); {
		case left <= 0:
			it.Status = statusFail
			it.Message += "; the route certificate expired " + na.Format(time.DateOnly)
			it.Hint = "renew it (edgeport cluster init for a new node directory, or the chart's cert-manager): other nodes refuse it"
		case left < routeCertWarn:
			it.Status = statusWarn
			it.Message += "; the route certificate expires " + na.Format(time.DateOnly)
			it.Hint = "renew it before then: the node reloads a replaced certificate file"
		}
	}
	return it
}
