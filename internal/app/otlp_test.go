package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/testpeer/otlppeer"
	"github.com/edgeport/edgeport/internal/testwait"
)

// scrape reads the metric family names a GET of /metrics returns.
func scrape(t *testing.T, a *App) map[string]bool {
	t.Helper()
	resp, err := http.Get("http://" + a.Addrs()["http"].String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for n := range mfs {
		names[n] = true
	}
	return names
}

func pushedNames(r *otlppeer.Receiver) map[string]bool {
	names := map[string]bool{}
	for _, p := range r.DataPoints() {
		names[p.Name] = true
	}
	return names
}

// Edgeport pushes its own metrics, under the names /metrics serves, and
// its log records to the OpenTelemetry Collector's own OTLP receiver:
// first as the serve flags say (OTLP/gRPC), then, live, as a Broker
// resource's spec.diagnostics.otlp says (OTLP/HTTP to another collector,
// with a header), and after the resource is deleted as the flags say
// again.
func TestOTLPPushLive(t *testing.T) {
	flagsRcv := otlppeer.Start(t, otlppeer.Options{})
	a := startApp(t, Config{HTTPAddr: "127.0.0.1:0", OTLP: OTLPConfig{
		Endpoint: flagsRcv.GRPCAddr, Interval: 50 * time.Millisecond, LogLevel: "info",
	}})
	testwait.For(t, "broker metrics pushed", func() bool { return pushedNames(flagsRcv)["edgeport_broker_connections"] })
	// Every pushed name is one /metrics serves, and the other way round
	// (a family appears in both once it has samples).
	var pushed, served map[string]bool
	testwait.For(t, "the pushed names and /metrics agree", func() bool {
		pushed, served = pushedNames(flagsRcv), scrape(t, a)
		for n := range served {
			if !pushed[n] {
				return false
			}
		}
		return true
	})
	for n := range pushed {
		if !served[n] {
			t.Errorf("pushed %s, which /metrics does not serve", n)
		}
	}
	if len(pushed) < 20 {
		t.Fatalf("only %d metrics pushed: %v", len(pushed), keys(pushed))
	}
	var sawCounter bool
	for _, p := range flagsRcv.DataPoints() {
		if strings.HasSuffix(p.Name, "_total") && p.Type == "Sum" && p.Monotonic {
			sawCounter = true
		}
		if p.Resource["service.name"] != "edgeport" {
			t.Fatalf("resource %v", p.Resource)
		}
	}
	if !sawCounter {
		t.Error("no counter pushed as a monotonic sum")
	}

	// A log line arrives, with its attributes.
	a.log.Info("otlp test line", "answer", 42)
	testwait.For(t, "the log line pushed", func() bool {
		for _, l := range flagsRcv.LogRecords() {
			if l.Body == "otlp test line" && l.Attributes["answer"] == int64(42) && l.SeverityText == "INFO" {
				return true
			}
		}
		return false
	})
	a.log.Debug("below the level")

	// The Broker resource takes over, live.
	resRcv := otlppeer.Start(t, otlppeer.Options{})
	obj := apply(t, a, `apiVersion: edgeport.io/v1
kind: Broker
metadata: {name: default}
spec:
  diagnostics:
    otlp:
      endpoint: `+resRcv.HTTPURL()+`
      intervalSeconds: 1
      headers: {X-Tenant: plant-1}
      logs: {level: warn}
`)
	waitStatus(t, a, obj.Key(), config.ConditionTrue)
	testwait.For(t, "metrics pushed where the resource says", func() bool { return pushedNames(resRcv)["edgeport_broker_connections"] })
	if got := resRcv.Requests()[0].Metadata["x-tenant"]; len(got) != 1 || got[0] != "plant-1" {
		t.Fatalf("header %v", got)
	}
	a.log.Info("info is below the resource's level")
	a.log.Warn("warn line for the resource's collector")
	testwait.For(t, "the warn line pushed", func() bool {
		for _, l := range resRcv.LogRecords() {
			if l.Body == "warn line for the resource's collector" {
				return true
			}
		}
		return false
	})
	for _, l := range append(resRcv.LogRecords(), flagsRcv.LogRecords()...) {
		if l.Body == "info is below the resource's level" || l.Body == "below the level" {
			t.Fatalf("%q was pushed", l.Body)
		}
	}

	// Deleted: the flags' collector again.
	before := len(flagsRcv.Requests())
	if _, err := a.Resources().Delete(obj.Key(), "test"); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the flags' collector again", func() bool { return len(flagsRcv.Requests()) > before+2 })
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Without an endpoint nothing is pushed and logging is unchanged.
func TestOTLPOffByDefault(t *testing.T) {
	p, log, err := newPusher(Config{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	log.Error("nobody listens")
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p.DroppedLogs() != 0 {
		t.Fatal("records queued without an endpoint")
	}
}
