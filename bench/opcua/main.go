// Command opcua measures the OPC UA connector end to end: a node-opcua
// server with N variables changing every interval, Edgeport (the built
// binary, its own process) subscribed to all of them, and an MQTT 5
// subscriber counting what arrives. It reports samples per second
// delivered, source-timestamp-to-subscriber latency (p50/p99) and
// Edgeport's CPU and RSS from /proc.
//
//	go run ./bench/opcua -items 10000 -interval 100ms -duration 30s
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/connector/opcua/testserver"
)

// params are the benchmark's flags.
type params struct {
	items, datasets     int
	interval, sampling  time.Duration
	onChange            bool
	queue               int
	duration, warmup    time.Duration
	policy, bin         string
	sessions, subs, out int
	nodeProf            bool
	serverCap           int
}

func main() {
	var p params
	flag.IntVar(&p.items, "items", 10000, "monitored items (server variables)")
	flag.IntVar(&p.datasets, "datasets", 10, "datasets the items are split into (one MQTT message per dataset per publishing interval)")
	flag.DurationVar(&p.interval, "interval", 100*time.Millisecond, "value change and publishing interval")
	flag.DurationVar(&p.sampling, "sampling", 0, "sampling interval (default: -interval)")
	flag.BoolVar(&p.onChange, "onchange", false, "request sampling interval 0: node-opcua then reports every change from the write itself, with no sampling timer")
	flag.IntVar(&p.queue, "queue", 1, "monitored item queue size")
	flag.DurationVar(&p.duration, "duration", 30*time.Second, "measurement window")
	flag.DurationVar(&p.warmup, "warmup", 15*time.Second, "time after the first message before measuring")
	flag.StringVar(&p.policy, "policy", "None", "security policy (None, Basic256Sha256, ...)")
	flag.StringVar(&p.bin, "edgeport", "", "edgeport binary (default: build one)")
	raw := flag.Bool("raw", false, "measure gopcua against node-opcua alone (no Edgeport, no MQTT)")
	flag.IntVar(&p.sessions, "sessions", 1, "with -raw: OPC UA sessions the items are split across")
	flag.IntVar(&p.subs, "subs", 1, "with -raw: subscriptions per session (0: none, the server's own cost)")
	flag.IntVar(&p.out, "outstanding", 0, "with -raw: publish requests in flight per session (0: gopcua's own loop, one)")
	flag.BoolVar(&p.nodeProf, "node-prof", false, "run node with --cpu-prof and print where it spent its CPU")
	flag.IntVar(&p.serverCap, "server-cap", 0, "the server's cap on notifications per publish response (default: -items)")
	flag.Parse()
	if p.sampling == 0 {
		p.sampling = p.interval
	}
	run := run
	if *raw {
		run = runRaw
	}
	if err := run(p); err != nil {
		fmt.Fprintln(os.Stderr, "bench/opcua:", err)
		os.Exit(1)
	}
}

// samplingMs is the OPC UA sampling interval to request, in milliseconds.
func (p params) samplingMs() int {
	if p.onChange {
		return 0
	}
	return int(p.sampling / time.Millisecond)
}

// startServer starts node-opcua with the bulk variables, under node's CPU
// profiler with -node-prof.
func startServer(dir string, p params) (*testserver.Server, error) {
	fmt.Fprintf(os.Stderr, "starting node-opcua with %d variables changing every %s\n", p.items, p.interval)
	cfg := testserver.Config{AllowAnonymous: true, AutoAccept: true, Bulk: p.items, BulkIntervalMs: int(p.interval / time.Millisecond), MaxNotificationsPerPublish: p.serverCap}
	if p.nodeProf {
		cfg.NodeArgs = []string{"--cpu-prof", "--cpu-prof-dir=" + filepath.Join(dir, "prof")}
	}
	return testserver.Start(filepath.Join(dir, "server"), cfg)
}

// stopServer stops the server and, with -node-prof, prints its profile.
func stopServer(dir string, srv *testserver.Server, p params) {
	srv.Stop()
	if p.nodeProf {
		if err := summarizeNodeProfile(filepath.Join(dir, "prof"), os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "node profile:", err)
		}
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func run(p params) error {
	items, datasets, interval, queue, duration, warmup, policy, bin := p.items, p.datasets, p.interval, p.queue, p.duration, p.warmup, p.policy, p.bin
	dir, err := os.MkdirTemp("", "bench-opcua-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin == "" {
		bin = filepath.Join(dir, "edgeport")
		build := exec.Command("go", "build", "-o", bin, "./cmd/edgeport")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building edgeport: %w", err)
		}
	}
	srv, err := startServer(dir, p)
	if err != nil {
		return err
	}
	defer srv.Stop() // a second Stop (stopServer's) returns at once

	mqttPort, httpPort := freePort(), freePort()
	data := filepath.Join(dir, "data")
	ep := exec.Command(bin, "serve", "--data-dir", data, "--mqtt-addr", fmt.Sprintf("127.0.0.1:%d", mqttPort),
		"--ws-addr", "off", "--http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort), "--log-level", "warn")
	ep.Stderr = os.Stderr
	if err := ep.Start(); err != nil {
		return err
	}
	defer func() {
		ep.Process.Signal(os.Interrupt)
		ep.Wait()
	}()
	api := fmt.Sprintf("http://127.0.0.1:%d/api/v1", httpPort)
	if err := waitHTTP(api+"/devices", 20*time.Second); err != nil {
		return err
	}

	// Trust the server's certificate up front: the benchmark measures
	// data, not the trust workflow.
	pem, err := os.ReadFile(filepath.Join(srv.PKI(), "own", "certs", "certificate.pem"))
	if err != nil {
		return err
	}
	if err := post(api+"/connectors/opcua/certs", "application/octet-stream", pem); err != nil {
		return err
	}

	mode := "None"
	if policy != "None" {
		mode = "SignAndEncrypt"
	}
	ms := int(interval / time.Millisecond)
	var docs []string
	docs = append(docs, fmt.Sprintf(`{"apiVersion":"edgeport.io/v1","kind":"Device","metadata":{"name":"bench"},"spec":{"endpoints":{"inbound":{"opc":{"endpointType":"Microsoft.OpcUa","address":%q,"additionalConfiguration":{"securityPolicy":%q,"securityMode":%q}}}}}}`, srv.URL, policy, mode))
	per := (items + datasets - 1) / datasets
	type point struct {
		Name       string `json:"name"`
		DataSource string `json:"dataSource"`
	}
	for d := 0; d < datasets; d++ {
		var pts []point
		for i := d * per; i < (d+1)*per && i < items; i++ {
			pts = append(pts, point{Name: "b" + strconv.Itoa(i), DataSource: "ns=2;s=Bulk/" + strconv.Itoa(i)})
		}
		asset := map[string]any{
			"apiVersion": "edgeport.io/v1", "kind": "Asset", "metadata": map[string]any{"name": fmt.Sprintf("bench-%d", d)},
			"spec": map[string]any{
				"deviceRef": map[string]any{"deviceName": "bench", "endpointName": "opc"},
				"datasets": []any{map[string]any{
					"name":                 "bulk",
					"datasetConfiguration": map[string]any{"publishingInterval": ms, "samplingInterval": p.samplingMs(), "queueSize": queue},
					"destinations":         []any{map[string]any{"target": "Mqtt", "configuration": map[string]any{"topic": fmt.Sprintf("bench/%d", d), "qos": "Qos0"}}},
					"dataPoints":           pts,
				}},
			},
		}
		b, _ := json.Marshal(asset)
		docs = append(docs, string(b))
	}

	// The subscriber: counts samples and measures source-to-arrival latency.
	var mu sync.Mutex
	var measuring bool
	var samples, messages int
	var lat []float64
	first := make(chan struct{})
	var firstOnce sync.Once
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", mqttPort))
	if err != nil {
		return err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			now := time.Now()
			firstOnce.Do(func() { close(first) })
			var m map[string]struct {
				SourceTimestamp time.Time
			}
			if err := json.Unmarshal(pr.Packet.Payload, &m); err != nil {
				return true, nil
			}
			mu.Lock()
			if measuring {
				messages++
				samples += len(m)
				for _, s := range m {
					lat = append(lat, now.Sub(s.SourceTimestamp).Seconds())
				}
			}
			mu.Unlock()
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "bench-sub", CleanStart: true, KeepAlive: 60}); err != nil {
		return err
	}
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "bench/#", QoS: 0}}}); err != nil {
		return err
	}
	for _, d := range docs {
		if err := post(api+"/"+kindPlural(d), "application/json", []byte(d)); err != nil {
			return err
		}
	}
	select {
	case <-first:
	case <-time.After(120 * time.Second):
		return fmt.Errorf("no message within 120s")
	}
	fmt.Fprintf(os.Stderr, "data flowing; warming up %s, measuring %s\n", warmup, duration)
	time.Sleep(warmup)

	pid := ep.Process.Pid
	w := startWindow(srv.URL, srv.PID(), pid, srv.PID())
	mu.Lock()
	measuring = true
	mu.Unlock()
	var rssMax, rssSum, rssN int
	tick := time.NewTicker(time.Second)
	for end := time.Now().Add(duration); time.Now().Before(end); {
		<-tick.C
		r := rssKB(pid)
		rssSum += r
		rssN++
		rssMax = max(rssMax, r)
	}
	tick.Stop()
	mu.Lock()
	measuring = false
	res := w.end()
	el := res.seconds
	cpu, nodeCPU := res.cpu[0], res.cpu[1]
	n, msgs := samples, messages
	l := slices.Clone(lat)
	mu.Unlock()
	slices.Sort(l)
	pct := func(p float64) float64 {
		if len(l) == 0 {
			return 0
		}
		return l[min(len(l)-1, int(p*float64(len(l))))] * 1000
	}
	expected := float64(items) / interval.Seconds()
	fmt.Printf("items=%d datasets=%d publishing=%s sampling=%dms queue=%d policy=%s duration=%.0fs\n", items, datasets, interval, p.samplingMs(), queue, policy, el)
	fmt.Printf("samples/s delivered: %.0f (target %.0f/s: %.1f%%; server generated %.0f/s), messages/s: %.1f\n", float64(n)/el, expected, 100*float64(n)/el/expected, res.generated, float64(msgs)/el)
	fmt.Printf("latency source->subscriber: p50 %.1f ms, p99 %.1f ms\n", pct(0.50), pct(0.99))
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort)); err == nil {
		var b strings.Builder
		buf := make([]byte, 1<<20)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		for _, line := range strings.Split(b.String(), "\n") {
			if strings.HasPrefix(line, "edgeport_connector_samples_total") && strings.Contains(line, `asset="bench-0"`) ||
				strings.HasPrefix(line, "edgeport_connector_dropped") || strings.HasPrefix(line, "edgeport_connector_publish_latency_seconds_sum") ||
				strings.HasPrefix(line, "edgeport_connector_publish_latency_seconds_count") || strings.HasPrefix(line, "edgeport_opcua_") {
				fmt.Fprintln(os.Stderr, "  ", line)
			}
		}
	}
	fmt.Printf("edgeport CPU: %.0f%% of one core (%.1f µs per delivered sample), RSS avg %d MB max %d MB; node-opcua CPU: %.0f%%\n",
		cpu*100, cpu*1e6/max(float64(n)/el, 1), rssSum/max(rssN, 1)/1024, rssMax/1024, nodeCPU*100)
	res.print()
	stopServer(dir, srv, p)
	return nil
}

func kindPlural(doc string) string {
	if strings.Contains(doc, `"kind":"Device"`) {
		return "devices"
	}
	return "assets"
}

func post(url, ct string, body []byte) error {
	resp, err := http.Post(url, ct, strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var b [2048]byte
		n, _ := resp.Body.Read(b[:])
		return fmt.Errorf("POST %s: %s %s", url, resp.Status, b[:n])
	}
	return nil
}

func waitHTTP(url string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not up after %s", url, d)
}

// cpuSeconds is a process's user+system CPU time from /proc/PID/stat.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// rssKB is a process's resident set from /proc/PID/status.
func rssKB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			return n
		}
	}
	return 0
}

// mainThread is a process's main thread's CPU time and the time it spent
// runnable but waiting for a CPU (/proc/PID/task/PID/schedstat): on a
// shared machine the sum of both near 100% of the wall time says the thread
// is saturated (Node.js runs JavaScript on that one thread), a small sum
// that it is idle.
func mainThread(pid int) (cpu, wait float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/schedstat", pid, pid))
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, 0
	}
	c, _ := strconv.ParseFloat(f[0], 64)
	w, _ := strconv.ParseFloat(f[1], 64)
	return c / 1e9, w / 1e9
}
