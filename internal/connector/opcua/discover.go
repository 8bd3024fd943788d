package opcua

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/config"
)

// DiscoverRequest is the body of POST discover: discovery URLs to ask, and
// a host and port range to scan (each address answering FindServers).
type DiscoverRequest struct {
	URLs []string `json:"urls,omitempty"`
	// Range is "HOST[-LASTHOST]:PORT[,PORT...]" over IPv4, e.g.
	// "10.0.0.10-10.0.0.40:4840,48400"; at most 4096 addresses.
	Range string `json:"range,omitempty"`
	// TimeoutMillis bounds each FindServers (default 2000).
	TimeoutMillis int `json:"timeoutMillis,omitempty"`
}

// DiscoverResult is one server found.
type DiscoverResult struct {
	Name   string `json:"name"` // the DiscoveredDevice
	Result string `json:"result"`
	Server Server `json:"server"`
}

// maxRange bounds a scan.
const maxRange = 4096

// ExpandRange turns a DiscoverRequest range into opc.tcp URLs.
func ExpandRange(r string) ([]string, error) {
	hosts, ports, ok := strings.Cut(r, ":")
	if !ok || ports == "" {
		return nil, fmt.Errorf("range %q: want HOST[-LASTHOST]:PORT[,PORT]", r)
	}
	first, last, isRange := strings.Cut(hosts, "-")
	a := net.ParseIP(first).To4()
	if a == nil {
		return nil, fmt.Errorf("range %q: %q is not an IPv4 address", r, first)
	}
	b := a
	if isRange {
		if b = net.ParseIP(last).To4(); b == nil {
			return nil, fmt.Errorf("range %q: %q is not an IPv4 address", r, last)
		}
	}
	from, to := ipToInt(a), ipToInt(b)
	if to < from {
		return nil, fmt.Errorf("range %q: %s comes before %s", r, last, first)
	}
	var ps []int
	for _, p := range strings.Split(ports, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("range %q: port %q is not 1-65535", r, p)
		}
		ps = append(ps, n)
	}
	if (uint64(to-from)+1)*uint64(len(ps)) > maxRange {
		return nil, fmt.Errorf("range %q: more than %d addresses", r, maxRange)
	}
	var out []string
	for ip := from; ; ip++ {
		for _, p := range ps {
			out = append(out, fmt.Sprintf("opc.tcp://%s", net.JoinHostPort(intToIP(ip).String(), strconv.Itoa(p))))
		}
		if ip == to {
			break
		}
	}
	return out, nil
}

func ipToInt(ip net.IP) uint32 {
	return uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
}

func intToIP(n uint32) net.IP { return net.IPv4(byte(n>>24), byte(n>>16), byte(n>>8), byte(n)) }

// Discover asks every URL (FindServers, 16 at a time) and records each
// server found as a DiscoveredDevice in store, unless a Device already
// reads that address. Addresses that do not answer are skipped.
func Discover(ctx context.Context, store *config.Store, urls []string, timeout time.Duration) ([]DiscoverResult, error) {
	type found struct {
		url string
		s   Server
	}
	var mu sync.Mutex
	var all []found
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, u := range urls {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			servers, err := FindServers(ctx, u, timeout)
			if err != nil {
				return
			}
			mu.Lock()
			for _, s := range servers {
				all = append(all, found{u, s})
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(all, func(i, j int) bool { return all[i].s.ApplicationURI < all[j].s.ApplicationURI })

	known := map[string]string{} // address -> device
	for _, o := range store.List("Device", config.Selector{}) {
		for _, ep := range o.Spec.(*config.DeviceSpec).Endpoints.Inbound {
			known[ep.Address] = o.Metadata.Name
		}
	}
	var out []DiscoverResult
	seen := map[string]bool{}
	for _, f := range all {
		if seen[f.s.ApplicationURI] {
			continue
		}
		seen[f.s.ApplicationURI] = true
		addr := f.url
		for _, d := range f.s.DiscoveryURLs {
			if strings.HasPrefix(d, "opc.tcp://") {
				addr = d
				break
			}
		}
		name := discoveredName(f.s)
		if dev, ok := known[addr]; ok {
			out = append(out, DiscoverResult{Name: dev, Result: "already a device", Server: f.s})
			continue
		}
		attrs, _ := json.Marshal(map[string]string{"applicationUri": f.s.ApplicationURI, "productUri": f.s.ProductURI, "applicationName": f.s.Name})
		spec := &config.DiscoveredDeviceSpec{DiscoveryID: f.s.ApplicationURI, Version: 1, Attributes: config.JSON(attrs)}
		spec.Endpoints.Inbound = map[string]config.DiscoveredEndpoint{"opc": {
			EndpointType: config.EndpointTypeOpcUa, Address: addr,
			SupportedAuthenticationMethods: []string{config.AuthAnonymous, config.AuthUsernamePassword, config.AuthCertificate},
		}}
		res := "created"
		if old, ok := store.Get(config.Key{Kind: "DiscoveredDevice", Name: name}); ok {
			os := old.Spec.(*config.DiscoveredDeviceSpec)
			spec.Version = os.Version
			if reflect.DeepEqual(os.Endpoints, spec.Endpoints) && string(os.Attributes) == string(spec.Attributes) {
				out = append(out, DiscoverResult{Name: name, Result: "unchanged", Server: f.s})
				continue
			}
			spec.Version++
			res = "updated"
		}
		obj := &config.Object{APIVersion: config.APIVersion, Kind: "DiscoveredDevice", Metadata: config.Metadata{Name: name}, Spec: spec}
		if _, _, err := store.Apply(obj, config.ApplyOptions{}); err != nil {
			return out, fmt.Errorf("recording %s: %w", name, err)
		}
		out = append(out, DiscoverResult{Name: name, Result: res, Server: f.s})
	}
	return out, nil
}

// discoveredName derives a resource name from the server's name, with a
// hash of its application URI so two servers of the same product differ.
func discoveredName(s Server) string {
	base := strings.ToLower(s.Name)
	var b strings.Builder
	dash := false
	for _, r := range base {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	n := strings.Trim(b.String(), "-")
	if len(n) > 40 {
		n = strings.Trim(n[:40], "-")
	}
	if n == "" {
		n = "opcua"
	}
	sum := sha1.Sum([]byte(s.ApplicationURI))
	return n + "-" + hex.EncodeToString(sum[:3])
}
