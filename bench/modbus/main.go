// Command modbus measures the Modbus connector: it simulates DEVICES Modbus
// TCP devices of REGISTERS input registers each (simonvetter/modbus'
// server) on loopback, writes a Device and an Asset per device into a
// config directory, runs `edgeport serve --config` on it, and after a
// warm-up reads Edgeport's own metrics twice to report polls/s, requests/s,
// messages/s and the CPU and resident memory of the Edgeport process.
//
//	go run ./bench/modbus -devices 100 -registers 100 -interval 1s -duration 60s
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/simonvetter/modbus"
)

// device serves input registers whose values change every second for a
// quarter of them, so that change detection publishes some of every poll.
type device struct {
	start    time.Time
	requests atomic.Int64
}

func (d *device) HandleCoils(*modbus.CoilsRequest) ([]bool, error) {
	return nil, modbus.ErrIllegalFunction
}

func (d *device) HandleDiscreteInputs(*modbus.DiscreteInputsRequest) ([]bool, error) {
	return nil, modbus.ErrIllegalFunction
}

func (d *device) HandleHoldingRegisters(*modbus.HoldingRegistersRequest) ([]uint16, error) {
	return nil, modbus.ErrIllegalFunction
}

func (d *device) HandleInputRegisters(req *modbus.InputRegistersRequest) ([]uint16, error) {
	d.requests.Add(1)
	sec := uint16(time.Since(d.start) / time.Second)
	out := make([]uint16, req.Quantity)
	for i := range out {
		a := req.Addr + uint16(i)
		out[i] = a
		if a%4 == 0 {
			out[i] = a + sec
		}
	}
	return out, nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func main() {
	devices := flag.Int("devices", 100, "simulated devices")
	registers := flag.Int("registers", 100, "input registers per device (one data point each)")
	interval := flag.Duration("interval", time.Second, "sampling interval")
	warmup := flag.Duration("warmup", 10*time.Second, "time before measuring")
	duration := flag.Duration("duration", 60*time.Second, "measurement window")
	bin := flag.String("edgeport", "", "edgeport binary (default: build one)")
	flag.Parse()
	if err := run(*devices, *registers, *interval, *warmup, *duration, *bin); err != nil {
		log.Fatal(err)
	}
}

func run(devices, registers int, interval, warmup, duration time.Duration, bin string) error {
	dir, err := os.MkdirTemp("", "edgeport-modbus-bench-")
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
	confDir := filepath.Join(dir, "config")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return err
	}
	var sims []*device
	for i := range devices {
		addr, err := freePort()
		if err != nil {
			return err
		}
		d := &device{start: time.Now()}
		srv, err := modbus.NewServer(&modbus.ServerConfiguration{URL: "tcp://" + addr, MaxClients: 4, Timeout: time.Minute}, d)
		if err != nil {
			return err
		}
		if err := srv.Start(); err != nil {
			return fmt.Errorf("simulated device %d on %s: %w", i, addr, err)
		}
		defer srv.Stop()
		sims = append(sims, d)
		var b strings.Builder
		fmt.Fprintf(&b, `apiVersion: edgeport.io/v1
kind: Device
metadata: {name: sim-%d}
spec:
  endpoints:
    inbound:
      tcp: {endpointType: Microsoft.Modbus, address: "modbus-tcp://%s"}
---
apiVersion: edgeport.io/v1
kind: Asset
metadata: {name: sim-%d}
spec:
  deviceRef: {deviceName: sim-%d, endpointName: tcp}
  datasets:
  - name: registers
    datasetConfiguration: {samplingInterval: %d}
    destinations: [{target: Mqtt, configuration: {topic: bench/sim-%d, qos: Qos0}}]
    dataPoints:
`, i, addr, i, i, interval.Milliseconds(), i)
		for r := range registers {
			fmt.Fprintf(&b, "    - {name: r%d, dataSource: \"input:%d\"}\n", r, r)
		}
		if err := os.WriteFile(filepath.Join(confDir, fmt.Sprintf("sim-%03d.yaml", i)), []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	httpAddr, err := freePort()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--config", confDir, "--data-dir", filepath.Join(dir, "data"),
		"--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off", "--http-addr", httpAddr, "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	fmt.Fprintf(os.Stderr, "%d devices × %d registers every %v; warming up %v\n", devices, registers, interval, warmup)
	time.Sleep(warmup)
	a, err := scrape(httpAddr)
	if err != nil {
		return err
	}
	t0 := time.Now()
	time.Sleep(duration)
	b, err := scrape(httpAddr)
	if err != nil {
		return err
	}
	wall := time.Since(t0).Seconds()
	var served int64
	for _, d := range sims {
		served += d.requests.Load()
	}
	rate := func(name string) float64 { return (b[name] - a[name]) / wall }
	fmt.Printf("devices %d, registers per device %d, interval %v, window %.0f s\n", devices, registers, interval, wall)
	fmt.Printf("polls/s %.1f (expected %.1f), failed polls %.0f\n", rate("polls_ok"), float64(devices)/interval.Seconds(), b["polls_failed"]-a["polls_failed"])
	fmt.Printf("requests/s %.1f, registers read/s %.0f\n", rate("requests"), rate("polls_ok")*float64(registers))
	fmt.Printf("messages/s %.1f, samples published/s %.0f, dropped %.0f\n", rate("messages"), rate("samples"), b["dropped"]-a["dropped"])
	fmt.Printf("request latency mean %.2f ms\n", 1000*(b["lat_sum"]-a["lat_sum"])/(b["lat_count"]-a["lat_count"]))
	fmt.Printf("edgeport CPU %.1f%% of one core, RSS %.1f MiB, goroutines %.0f\n",
		100*(b["cpu"]-a["cpu"])/wall, b["rss"]/(1<<20), b["goroutines"])
	return nil
}

var sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([-+0-9.eE]+|NaN)$`)

// scrape sums the families the report needs from /metrics.
func scrape(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := sampleRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[3], 64)
		name, labels := m[1], m[2]
		switch {
		case name == "edgeport_modbus_polls_total" && strings.Contains(labels, `result="ok"`):
			out["polls_ok"] += v
		case name == "edgeport_modbus_polls_total" && strings.Contains(labels, `result="failed"`):
			out["polls_failed"] += v
		case name == "edgeport_modbus_requests_total":
			out["requests"] += v
		case name == "edgeport_modbus_request_duration_seconds_sum":
			out["lat_sum"] += v
		case name == "edgeport_modbus_request_duration_seconds_count":
			out["lat_count"] += v
		case name == "edgeport_connector_messages_total":
			out["messages"] += v
		case name == "edgeport_connector_samples_total":
			out["samples"] += v
		case name == "edgeport_connector_dropped_messages_total":
			out["dropped"] += v
		case name == "process_cpu_seconds_total":
			out["cpu"] = v
		case name == "process_resident_memory_bytes":
			out["rss"] = v
		case name == "go_goroutines":
			out["goroutines"] = v
		}
	}
	return out, sc.Err()
}
