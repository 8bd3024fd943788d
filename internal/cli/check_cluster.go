package cli

import (
	"fmt"
	"strings"

	"github.com/edgeport/edgeport/internal/cluster"
)

// checkCluster judges the node's cluster: every member heard from, a
// JetStream meta leader, every meta peer current (as the leader sees it).
// A single node reports no cluster and the check is left out.
func checkCluster(c *cluster.Status) (checkResult, bool) {
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
