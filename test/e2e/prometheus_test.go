package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testserve"
)

// Grafana's interval variables, as the dashboard test substitutes them: a
// 10 s window holds about ten 1 s scrapes.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "10s",
	"$__interval", "10s",
	"${instance}", ".*",
	"$instance", ".*",
)

// dashboardQueries returns every panel target's expression of the dashboard.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "edgeport-broker.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	queries := make(map[string]string)
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("panel %q target %s has no expr", p.Title, tg.RefID)
				continue
			}
			name := p.Title + " / " + tg.RefID
			if _, dup := queries[name]; dup {
				t.Errorf("two targets named %q", name)
			}
			queries[name] = grafanaVars.Replace(tg.Expr)
		}
	}
	if len(queries) < 20 {
		t.Fatalf("only %d dashboard queries", len(queries))
	}
	return queries
}

// freePort returns a port that was free a moment ago, for a program that
// cannot be told to pick its own and report it.
func freePort(t *testing.T) string { return testserve.FreeAddr(t) }

// promResult is the part of a Prometheus instant query answer the test reads.
type promResult struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

func promQuery(ctx context.Context, base, expr string) (promResult, error) {
	var r promResult
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	if err != nil {
		return r, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, fmt.Errorf("decoding: %w", err)
	}
	if r.Status != "success" {
		return r, fmt.Errorf("query failed: %s", r.Error)
	}
	return r, nil
}

// hasData reports whether a result holds at least one number (NaN, as a
// quantile of nothing gives, does not count).
func (r promResult) hasData() bool {
	for _, s := range r.Data.Result {
		v, ok := s.Value[1].(string)
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(f) {
			return true
		}
	}
	return false
}

// TestGrafanaDashboardQueries runs a real Prometheus (Debian's package)
// scraping a running Edgeport under traffic and checks that every query of
// deploy/grafana/edgeport-broker.json returns data.
func TestGrafanaDashboardQueries(t *testing.T) {
	t.Parallel()
	prom := requirePeer(t, "prometheus", "Debian's prometheus package")
	queries := dashboardQueries(t)
	e := startEdgeport(t, "--selftest-interval", "250ms")

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: edgeport
    static_configs:
      - targets: ['%s']
`, e.addr(t, "http"))), 0o600); err != nil {
		t.Fatal(err)
	}
	promAddr := freePort(t)
	startProc(t, 2*time.Minute, dir, prom, "--config.file", cfg, "--storage.tsdb.path", filepath.Join(dir, "tsdb"),
		"--web.listen-address", promAddr, "--log.level", "warn")
	base := "http://" + promAddr

	stopTraffic := generateTraffic(t, e.addr(t, "mqtt"))
	defer stopTraffic()

	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	pending := queries
	var lastErr map[string]string
	for {
		lastErr = make(map[string]string)
		next := make(map[string]string)
		for name, expr := range pending {
			r, err := promQuery(ctx, base, expr)
			switch {
			case err != nil:
				lastErr[name] = err.Error()
				next[name] = expr
			case !r.hasData():
				lastErr[name] = fmt.Sprintf("no data: %+v", r.Data.Result)
				next[name] = expr
			}
		}
		pending = next
		if len(pending) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			var b strings.Builder
			for name, expr := range pending {
				fmt.Fprintf(&b, "\n  %s: %s\n    %s", name, expr, lastErr[name])
			}
			t.Fatalf("%d of %d dashboard queries returned no data:%s", len(pending), len(queries), b.String())
		case <-time.After(500 * time.Millisecond):
		}
	}
	t.Logf("all %d dashboard queries returned data", len(queries))
}

// generateTraffic keeps publishing until the returned function is called:
// QoS 1 messages to a live subscriber, some retained, and QoS 0 messages to
// an offline persistent session (dropped as offline_qos0).
func generateTraffic(t *testing.T, addr string) (stop func()) {
	t.Helper()
	sub, _ := dialMQTT(t, addr, &packet.Connect{ClientID: "dash-sub", CleanStart: true})
	sub.subscribe(1, "load/#", 1)
	persist := &packet.Connect{ClientID: "dash-offline", CleanStart: true}
	persist.Properties.SessionExpiry = 300
	persist.Properties.Set(packet.PropSessionExpiry)
	off, _ := dialMQTT(t, addr, persist)
	off.subscribe(1, "load/#", 0)
	off.disconnect()
	pub, ack := dialMQTT(t, addr, &packet.Connect{ClientID: "dash-pub", CleanStart: true})
	if ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK %v", ack.ReasonCode)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		payload := []byte(strings.Repeat("x", 100))
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			p := &packet.Publish{QoS: 1, PacketID: uint16(i%60000 + 1), Topic: "load/" + strconv.Itoa(i%4), Payload: payload}
			if i%10 == 0 {
				p.Topic, p.Retain = "load/retained/"+strconv.Itoa(i%5), true
			}
			if err := pub.publish(p); err != nil {
				t.Errorf("publishing: %v", err)
				return
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}
