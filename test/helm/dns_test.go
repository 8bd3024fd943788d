package helm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// clusterDomain is the node's DNS domain (the kubelet's clusterDomain,
// the chart's cluster.clusterDomain default).
const clusterDomain = "cluster.local"

// clusterDNS serves the node's cluster DNS on the gateway address, which
// the kubelet gives pods as their name server: Debian's dnsmasq answers
// from a hosts directory it watches, which this writes from the API
// server's EndpointSlices the way CoreDNS serves a headless Service's
// pods (<hostname>.<service>.<namespace>.svc.<domain>, every endpoint the
// slice calls ready, which with publishNotReadyAddresses is every pod).
// Other names are not answered: pods reach nothing outside the node.
func (cl *cluster) clusterDNS(t *testing.T) {
	t.Helper()
	dnsmasq := tool(t, "dnsmasq", "dnsmasq-base")
	dir := filepath.Join(cl.dir, "dns")
	if err := os.MkdirAll(filepath.Join(dir, "hosts"), 0o755); err != nil {
		t.Fatal(err)
	}
	cl.runPath(t, "dnsmasq", dnsmasq, "--keep-in-foreground", "--log-facility=-", "--user=root",
		"--bind-interfaces", "--listen-address="+nodeGateway, "--port=53",
		"--no-resolv", "--no-hosts", "--no-negcache", "--hostsdir="+filepath.Join(dir, "hosts"))

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		var last string
		for {
			if hosts, err := cl.endpointHosts(ctx); err == nil && hosts != last {
				// Written beside the directory and renamed into it: dnsmasq
				// reads a file once it is whole.
				tmp := filepath.Join(dir, "endpoints.tmp")
				if os.WriteFile(tmp, []byte(hosts), 0o644) == nil && os.Rename(tmp, filepath.Join(dir, "hosts", "endpoints")) == nil {
					last = hosts
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// endpointHosts is the hosts file of every named, ready endpoint.
func (cl *cluster) endpointHosts(ctx context.Context) (string, error) {
	var list discoveryv1.EndpointSliceList
	if err := cl.c.List(ctx, &list); err != nil {
		return "", err
	}
	var lines []string
	for _, s := range list.Items {
		svc := s.Labels[discoveryv1.LabelServiceName]
		for _, e := range s.Endpoints {
			if svc == "" || e.Hostname == nil || len(e.Addresses) == 0 || (e.Conditions.Ready != nil && !*e.Conditions.Ready) {
				continue
			}
			lines = append(lines, fmt.Sprintf("%s %s.%s.%s.svc.%s", e.Addresses[0], *e.Hostname, svc, s.Namespace, clusterDomain))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n", nil
}
