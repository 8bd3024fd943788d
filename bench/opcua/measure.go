package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
)

// bulkChanges reads the server's count of bulk value changes made so far
// (ns=2;s=BulkChanges): what the server generated, to compare with what
// arrived.
func bulkChanges(url string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := opcua.NewClient(url, opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.AutoReconnect(false))
	if err != nil {
		return 0, err
	}
	if err := c.Connect(ctx); err != nil {
		return 0, err
	}
	defer c.Close(context.Background())
	v, err := c.Node(ua.NewStringNodeID(2, "BulkChanges")).Value(ctx)
	if err != nil {
		return 0, err
	}
	f, _ := v.Value().(float64)
	return f, nil
}

// summarizeNodeProfile prints where node-opcua spent its CPU, from the
// .cpuprofile files node --cpu-prof wrote into dir: self time by npm
// package and by function.
func summarizeNodeProfile(dir string, w io.Writer) error {
	files, _ := filepath.Glob(filepath.Join(dir, "*.cpuprofile"))
	if len(files) == 0 {
		return fmt.Errorf("no .cpuprofile in %s", dir)
	}
	var prof struct {
		Nodes []struct {
			ID        int `json:"id"`
			CallFrame struct {
				FunctionName string `json:"functionName"`
				URL          string `json:"url"`
				LineNumber   int    `json:"lineNumber"`
			} `json:"callFrame"`
		} `json:"nodes"`
		Samples    []int   `json:"samples"`
		TimeDeltas []int64 `json:"timeDeltas"`
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &prof); err != nil {
		return err
	}
	byID := map[int]int{}
	for i, n := range prof.Nodes {
		byID[n.ID] = i
	}
	self := map[int]int64{} // node index -> microseconds
	var total int64
	for i, id := range prof.Samples {
		if i+1 < len(prof.TimeDeltas) {
			d := prof.TimeDeltas[i+1]
			self[byID[id]] += d
			total += d
		}
	}
	pkg := map[string]int64{}
	fn := map[string]int64{}
	for i, us := range self {
		cf := prof.Nodes[i].CallFrame
		p := cf.URL
		if j := strings.LastIndex(p, "node_modules/"); j >= 0 {
			p = strings.SplitN(p[j+len("node_modules/"):], "/", 2)[0]
		} else if p == "" {
			p = "(" + cf.FunctionName + ")"
		} else {
			p = filepath.Base(p)
		}
		pkg[p] += us
		fn[fmt.Sprintf("%s %s:%d", cf.FunctionName, filepath.Base(cf.URL), cf.LineNumber+1)] += us
	}
	top := func(title string, m map[string]int64, n int) {
		type kv struct {
			k string
			v int64
		}
		var l []kv
		for k, v := range m {
			l = append(l, kv{k, v})
		}
		sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v })
		fmt.Fprintf(w, "node-opcua CPU profile, self time by %s (of %.1f s sampled):\n", title, float64(total)/1e6)
		for i := 0; i < n && i < len(l); i++ {
			fmt.Fprintf(w, "  %5.1f%%  %s\n", 100*float64(l[i].v)/float64(total), l[i].k)
		}
	}
	top("package", pkg, 15)
	top("function", fn, 25)
	return nil
}

// window measures what happens between its start and end: the server's
// generated changes, the processes' CPU, node's main thread (running, or
// runnable and waiting for a CPU) and the machine's load.
type window struct {
	url        string
	pids       []int
	t0         time.Time
	changes0   float64
	cpu0       []float64
	main0      [2]float64
	nodePID    int
	loadBefore string
}

func startWindow(url string, nodePID int, pids ...int) *window {
	w := &window{url: url, pids: pids, nodePID: nodePID}
	w.changes0, _ = bulkChanges(url)
	for _, pid := range pids {
		w.cpu0 = append(w.cpu0, cpuSeconds(pid))
	}
	w.main0[0], w.main0[1] = mainThread(nodePID)
	w.loadBefore = loadAvg()
	w.t0 = time.Now()
	return w
}

// result is a finished window.
type result struct {
	seconds      float64
	generated    float64   // server changes per second
	cpu          []float64 // per pid, share of one core
	nodeRun      float64   // node's main thread: running, share of wall time
	nodeWait     float64   // node's main thread: runnable, waiting for a CPU
	load0, load1 string
}

func (w *window) end() result {
	r := result{seconds: time.Since(w.t0).Seconds(), load0: w.loadBefore}
	for i, pid := range w.pids {
		r.cpu = append(r.cpu, (cpuSeconds(pid)-w.cpu0[i])/r.seconds)
	}
	run, wait := mainThread(w.nodePID)
	r.nodeRun, r.nodeWait = (run-w.main0[0])/r.seconds, (wait-w.main0[1])/r.seconds
	r.load1 = loadAvg()
	if c, err := bulkChanges(w.url); err == nil {
		r.generated = (c - w.changes0) / r.seconds
	}
	return r
}

func (r result) print() {
	fmt.Printf("server generated %.0f changes/s; node-opcua main thread running %.0f%%, runnable but waiting for a CPU %.0f%% (%.0f%% busy)\n",
		r.generated, 100*r.nodeRun, 100*r.nodeWait, 100*(r.nodeRun+r.nodeWait))
	fmt.Printf("load average before %s, after %s (2 cores shared with other work)\n", r.load0, r.load1)
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
