package portal_test

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeport/edgeport/internal/app"
	"github.com/edgeport/edgeport/internal/app/apptest"
	"github.com/edgeport/edgeport/internal/auth"
	"github.com/edgeport/edgeport/internal/cli"
	"github.com/edgeport/edgeport/internal/portal"
	"github.com/edgeport/edgeport/internal/testwait"
)

// startEdgeport runs a whole Edgeport (store, broker, API, portal) on
// loopback ports chosen by the system.
func startEdgeport(t *testing.T) (*app.App, string, string) {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	cfg := app.Config{
		MQTTAddr: "127.0.0.1:0", WSAddr: app.Off, HTTPAddr: "127.0.0.1:0", DataDir: dir,
		SelfTestInterval: 200 * time.Millisecond, CheckReport: cli.CheckReport,
		PortalSampleInterval: 250 * time.Millisecond,
	}
	cfg.Broker.Version = "v0.0.0-test"
	a := apptest.Start(t, cfg, log)
	tok, err := os.ReadFile(filepath.Join(dir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	return a, "http://" + a.Addrs()["http"].String(), strings.TrimSpace(string(tok))
}

// watcher records what the browser did that the portal must never do:
// requests to another origin, CSP violations, script errors; and how many
// bytes each page load transferred.
type watcher struct {
	origin string

	mu         sync.Mutex // guards the fields below
	foreign    []string
	violations []string
	bytes      int64
}

func (w *watcher) listen(ev any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		u := e.Request.URL
		if !strings.HasPrefix(u, w.origin+"/") && u != w.origin && !strings.HasPrefix(u, "data:") && u != "about:blank" {
			w.foreign = append(w.foreign, u)
		}
	case *network.EventLoadingFinished:
		w.bytes += int64(e.EncodedDataLength)
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeWarning {
			var parts []string
			for _, a := range e.Args {
				parts = append(parts, string(a.Value))
			}
			w.violations = append(w.violations, "console "+string(e.Type)+": "+strings.Join(parts, " "))
		}
	case *runtime.EventExceptionThrown:
		w.violations = append(w.violations, "exception: "+e.ExceptionDetails.Text+" "+exceptionText(e.ExceptionDetails))
	case *cdplog.EventEntryAdded:
		// Network errors are the answers the test asks for (401 for a
		// wrong token, 422 for an invalid resource); anything else the
		// browser logs as an error, CSP reports first, is a fault.
		if e.Entry.Source != cdplog.EntrySourceNetwork && e.Entry.Level == cdplog.EntryLevelError || strings.Contains(e.Entry.Text, "Content Security Policy") {
			w.violations = append(w.violations, "log "+string(e.Entry.Source)+": "+e.Entry.Text)
		}
	}
}

func (w *watcher) resetBytes() {
	w.mu.Lock()
	w.bytes = 0
	w.mu.Unlock()
}

func (w *watcher) loaded() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bytes
}

// reportViolations is injected before any page script: a CSP violation
// becomes a console error the watcher sees.
const reportViolations = `document.addEventListener("securitypolicyviolation", (e) =>
  console.error("CSP violation: " + e.violatedDirective + " blocked " + e.blockedURI));`

func startBrowser(t *testing.T, origin string, downloads string) (context.Context, *watcher) {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is needed (apt-get install -y chromium; scripts/test.sh installs it): %v", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	w := &watcher{origin: origin}
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithListener(w.listen))
	t.Cleanup(cancelCtx)
	// The first run starts the browser, which lives as long as ctx: no
	// deadline on it.
	if err := chromedp.Do(ctx,
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
				return err
			}
			if _, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{}); err != nil {
				return err
			}
			if _, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: reportViolations}); err != nil {
				return err
			}
			_, err := cdp.Call(ctx, tg, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: 1280, Height: 800, DeviceScaleFactor: 1})
			return err
		})); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads}); err != nil {
		t.Fatalf("chromium downloads: %v", err)
	}
	return ctx, w
}

// run runs steps with a deadline, failing the test with what.
func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// get runs one action with a deadline and returns its value.
func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// poll waits until the JavaScript expression is true.
func poll(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(20*time.Millisecond))
}

func emulateScheme(scheme string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
		return err
	})
}

// screenshotDir is where page screenshots go: the test's artifact
// directory, or EDGEPORT_SCREENSHOTS (docs/portal-img refreshes the docs').
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("EDGEPORT_SCREENSHOTS"); d != "" {
		if !filepath.IsAbs(d) {
			// Relative to the repository root (two levels up from here).
			d = filepath.Join("..", "..", d)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.ArtifactDir()
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png := get(t, ctx, "screenshot "+name, chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPortalInBrowser drives the portal in a real headless Chromium: log
// in, watch a publish arrive in the topic browser, disconnect a client,
// apply an invalid resource, download a support bundle, and visit every
// page, never reaching another origin nor breaking the CSP.
func TestPortalInBrowser(t *testing.T) {
	a, base, token := startEdgeport(t)
	mqttAddr := a.Addrs()["mqtt"].String()
	downloads := t.TempDir()
	ctx, w := startBrowser(t, base, downloads)
	shots := screenshotDir(t)
	t.Logf("screenshots in %s", shots)

	// A client that stays connected, for the clients page.
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID("portal-victim").
		SetAutoReconnect(false).SetCleanSession(true)
	lost := make(chan error, 1)
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	victim := mqtt.NewClient(opts)
	if tok := victim.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect: %v", tok.Error())
	}
	defer victim.Disconnect(0)
	if tok := victim.Subscribe("factory/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho subscribe: %v", tok.Error())
	}

	// A sensor publishing all along, so that the charts and the topic
	// browser have something to show.
	sensor := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID("sensor-1"))
	if tok := sensor.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect: %v", tok.Error())
	}
	stopSensor := make(chan struct{})
	var sensorWG sync.WaitGroup
	sensorWG.Add(1)
	go func() {
		defer sensorWG.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopSensor:
				return
			case <-tick.C:
				sensor.Publish("factory/line2/rpm", 0, false, fmt.Sprintf(`{"rpm":%d}`, 1400+i%50))
			}
		}
	}()
	t.Cleanup(func() {
		close(stopSensor)
		sensorWG.Wait()
		sensor.Disconnect(0)
	})

	// Logging in: a wrong token is refused, the right one lets in.
	run(t, ctx, "login page",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#password")),
		chromedp.SendKeys(chromedp.CSS("#password"), "wrong-token"),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#login-error")))
	errText := get(t, ctx, "login error", chromedp.Text(chromedp.CSS("#login-error")))
	if !strings.Contains(errText, "Wrong token") {
		t.Fatalf("login error = %q", errText)
	}
	screenshot(t, ctx, shots, "login")
	run(t, ctx, "log in",
		chromedp.SendKeys(chromedp.CSS("#password"), token),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#verdict")),
		poll(`document.getElementById("verdict-level").textContent !== "…" &&
			document.querySelectorAll("#c-in polyline, #c-in text").length > 0`))

	t.Run("overview", func(t *testing.T) {
		run(t, ctx, "overview", poll(`document.getElementById("f-connections").textContent.includes("client")`))
		level := get(t, ctx, "verdict", chromedp.Text(chromedp.CSS("#verdict-level")))
		conns := get(t, ctx, "connections", chromedp.Text(chromedp.CSS("#f-connections")))
		if level != portal.Healthy && level != portal.Degraded {
			t.Fatalf("verdict %q", level)
		}
		if !strings.HasSuffix(conns, "clients") && !strings.HasSuffix(conns, "client") {
			t.Fatalf("connections %q has no unit", conns)
		}
	})

	t.Run("topics", func(t *testing.T) {
		pub := func(args ...string) {
			t.Helper()
			out, err := exec.Command("mosquitto_pub", append([]string{"-h", "127.0.0.1", "-p", portOf(mqttAddr)}, args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("mosquitto_pub: %v: %s", err, out)
			}
		}
		pub("-t", "factory/line1/config", "-m", "speed=3", "-r")
		run(t, ctx, "topics page",
			chromedp.Navigate(base+"/topics"),
			chromedp.WaitVisible(chromedp.CSS(`[data-topic="factory/line1/config"]`)))
		// The page subscribed (the retained message came): a live publish
		// appears too.
		pub("-t", "factory/line1/temperature", "-m", `{"value":21.5,"unit":"°C"}`)
		run(t, ctx, "live publish",
			chromedp.WaitVisible(chromedp.CSS(`[data-topic="factory/line1/temperature"]`)),
			chromedp.Click(chromedp.CSS(`[data-topic="factory/line1/temperature"]`)),
			chromedp.WaitVisible(chromedp.CSS("#payload")),
			poll(`document.getElementById("payload").textContent.includes("21.5")`))
		payload := get(t, ctx, "payload", chromedp.Text(chromedp.CSS("#payload")))
		if !strings.Contains(payload, `"value": 21.5`) {
			t.Fatalf("payload viewer shows %q, want the JSON pretty-printed", payload)
		}
		retained := get(t, ctx, "retained flag", chromedp.Evaluate[bool](
			`!!document.querySelector('[data-topic="factory/line1/config"] .retained')`))
		if !retained {
			t.Fatal("the retained message has no retained flag")
		}
		screenshot(t, ctx, shots, "topics")
	})

	t.Run("clients", func(t *testing.T) {
		row := `tr[data-client="portal-victim"]`
		run(t, ctx, "clients page",
			chromedp.Navigate(base+"/clients"),
			chromedp.WaitVisible(chromedp.CSS(row)),
			chromedp.Click(chromedp.CSS(row)),
			chromedp.WaitVisible(chromedp.CSS("#client-disconnect")))
		screenshot(t, ctx, shots, "clients")
		run(t, ctx, "disconnect",
			chromedp.Click(chromedp.CSS("#client-disconnect")),
			chromedp.WaitNotPresent(chromedp.CSS(row)))
		select {
		case <-lost:
		case <-time.After(10 * time.Second):
			t.Fatal("the client was not disconnected")
		}
	})

	t.Run("resources", func(t *testing.T) {
		bad := "apiVersion: edgeport.io/v1\nkind: BrokerListener\nmetadata:\n  name: broken\nspec:\n  ports:\n  - port: 70000\n"
		run(t, ctx, "resources page",
			chromedp.Navigate(base+"/resources"),
			chromedp.WaitVisible(chromedp.CSS("#empty-kinds")),
			chromedp.Click(chromedp.CSS("#res-new")),
			chromedp.SetValue(chromedp.CSS("#res-yaml"), bad),
			chromedp.Click(chromedp.CSS("#res-apply")),
			chromedp.WaitVisible(chromedp.CSS("#res-field-errors")))
		errs := get(t, ctx, "field errors", chromedp.Text(chromedp.CSS("#res-field-errors")))
		if !strings.Contains(errs, "spec.ports[0].port") {
			t.Fatalf("field errors = %q, want spec.ports[0].port", errs)
		}
		screenshot(t, ctx, shots, "resources")
		// A valid one applies and is listed.
		hash, err := auth.HashPasswordBcrypt([]byte("ops-secret"), 4)
		if err != nil {
			t.Fatal(err)
		}
		good := "apiVersion: edgeport.io/v1\nkind: BrokerAuthentication\nmetadata:\n  name: operators\nspec:\n  authenticationMethods:\n" +
			"  - method: UsernamePassword\n    usernamePasswordSettings:\n      portal: true\n      users:\n      - username: ops\n" +
			"        passwordHash: \"" + hash + "\"\n"
		run(t, ctx, "apply",
			chromedp.SetValue(chromedp.CSS("#res-yaml"), good),
			chromedp.Click(chromedp.CSS("#res-apply")),
			chromedp.WaitVisible(chromedp.CSS("#res-ok")),
			chromedp.WaitVisible(chromedp.CSS(`[data-kind="BrokerAuthentication"] tr[data-name="operators"]`)))
	})

	t.Run("schemas", func(t *testing.T) { testSchemasPage(t, ctx, a, base, mqttAddr, shots) })

	t.Run("state", func(t *testing.T) {
		run(t, ctx, "state page",
			chromedp.Navigate(base+"/state"),
			chromedp.WaitVisible(chromedp.CSS("#state-form")),
			chromedp.SendKeys(chromedp.CSS("#state-key"), "line1/setpoint"),
			chromedp.SendKeys(chromedp.CSS("#state-value"), "42"),
			chromedp.Click(chromedp.CSS("#state-set")),
			chromedp.WaitVisible(chromedp.CSS(`tr[data-key="line1/setpoint"]`)))
		screenshot(t, ctx, shots, "state")
	})

	t.Run("diagnostics", func(t *testing.T) {
		run(t, ctx, "diagnostics page",
			chromedp.Navigate(base+"/diagnostics"),
			chromedp.WaitVisible(chromedp.CSS("#log-lines tr")),
			poll(`[...document.querySelectorAll("#log-lines td")].some((td) => td.textContent.includes("portal login"))`))
		screenshot(t, ctx, shots, "diagnostics")
		run(t, ctx, "level filter",
			chromedp.SetValue(chromedp.CSS("#log-level"), "ERROR"),
			chromedp.Evaluate[chromedp.Void](`void document.getElementById("log-level").dispatchEvent(new Event("change"))`),
			poll(`![...document.querySelectorAll("#log-lines td")].some((td) => td.textContent.includes("portal login"))`))
		run(t, ctx, "download", chromedp.Click(chromedp.CSS("#bundle")))
		var zipPath string
		testwait.For(t, "the support bundle download", func() bool {
			m, _ := filepath.Glob(filepath.Join(downloads, "edgeport-support-*.zip"))
			if len(m) == 1 {
				zipPath = m[0]
			}
			return zipPath != ""
		})
		checkBundle(t, zipPath)
	})

	t.Run("every page", func(t *testing.T) {
		defer func() {
			run(t, ctx, "dark theme", emulateScheme("dark"), chromedp.Navigate(base+"/"), poll(`document.querySelectorAll("svg polyline").length === 4`))
			screenshot(t, ctx, shots, "overview-dark")
			run(t, ctx, "light theme", emulateScheme("light"))
		}()
		for _, pg := range portal.Pages {
			w.resetBytes()
			run(t, ctx, pg.Title,
				chromedp.Navigate(base+pg.Path),
				chromedp.WaitVisible(chromedp.CSS("main h1")),
				chromedp.WaitReady(chromedp.CSS("body")))
			name := strings.Trim(pg.Path, "/")
			if name == "" {
				name = "overview"
			}
			if !slices.Contains([]string{"topics", "clients", "resources", "schemas", "state", "diagnostics"}, name) {
				if name == "overview" {
					// The charts have a few seconds of the sensor's traffic.
					run(t, ctx, "charts", poll(`document.querySelectorAll("svg polyline").length === 4`))
				}
				screenshot(t, ctx, shots, name)
			}
			// Scripts, styles and the page itself; the live streams never
			// finish and are not counted.
			n := w.loaded()
			if n > 300<<10 {
				t.Errorf("%s transferred %d bytes (over 300 KB)", pg.Path, n)
			}
			// Measured, not asserted (a loaded CI machine is no baseline).
			fcp := get(t, ctx, "first paint", chromedp.Evaluate[float64](
				`(performance.getEntriesByName("first-contentful-paint")[0] || {startTime: -1}).startTime`))
			t.Logf("%-12s %6d bytes transferred, first contentful paint %.0f ms", pg.Path, n, fcp)
		}
	})

	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.foreign) > 0 {
		t.Errorf("requests to other origins: %v", w.foreign)
	}
	if len(w.violations) > 0 {
		t.Errorf("CSP violations or script errors: %v", w.violations)
	}
}

// checkBundle opens the support bundle and checks every part is there and
// the password hash is not.
func checkBundle(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("the bundle is not a zip archive: %v", err)
	}
	files := map[string]string{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		files[f.Name] = string(b)
	}
	for _, name := range []string{"README.txt", "logs.jsonl", "resources.yaml", "metrics.txt", "status.json", "sessions.json", "check.json"} {
		if _, ok := files[name]; !ok {
			t.Errorf("the bundle lacks %s (has %v)", name, keys(files))
		}
	}
	for name := range files {
		if strings.HasSuffix(name, ".error.txt") {
			t.Errorf("%s: %s", name, files[name])
		}
	}
	if !strings.Contains(files["logs.jsonl"], "portal login") {
		t.Errorf("logs.jsonl lacks the login: %.300s", files["logs.jsonl"])
	}
	if res := files["resources.yaml"]; !strings.Contains(res, "name: operators") || !strings.Contains(res, portal.Redacted) || strings.Contains(res, "$2a$") {
		t.Errorf("resources.yaml: the password hash must be redacted and the resource kept:\n%s", res)
	}
	if !strings.Contains(files["metrics.txt"], "edgeport_broker_") {
		t.Errorf("metrics.txt has no broker metric: %.300s", files["metrics.txt"])
	}
	if !strings.Contains(files["check.json"], `"checks"`) || !strings.Contains(files["check.json"], `"listeners"`) {
		t.Errorf("check.json is not a check report: %.300s", files["check.json"])
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func portOf(addr string) string {
	i := strings.LastIndex(addr, ":")
	return addr[i+1:]
}

func exceptionText(d *runtime.ExceptionDetails) string {
	if d.Exception != nil {
		return d.Exception.Description
	}
	return ""
}
