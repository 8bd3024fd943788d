package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/cluster"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/edgeport/edgeport/internal/testwait"
)

// The fault tests (issue 18 item 4) run three `edgeport serve --cluster`
// processes on loopback and hurt one of them for real: SIGKILL, SIGTERM
// and a restart, SIGSTOP, or iptables rules that cut its routes. The
// clients are the crash test's (crashclient_test.go): they know which
// packet acknowledged which message, keep their QoS 2 state across
// connections and resend with the original packet identifiers. A roamer
// moves each one to another node when its connection ends or stops
// answering PINGREQ, with the same client identifier and Clean Start 0, as
// a client given the addresses of all three nodes does.
//
// They run as their own step of scripts/test.sh (go test -run
// TestClusterFault), one at a time: each is a cluster of three processes.

// faultGIDs numbers the process groups the nodes run as (root only), so
// that iptables can tell one node's packets from the others'.
var faultGIDs atomic.Int32

// faultCluster is three cluster nodes, each with its own data directory
// and fixed ports, so that a node can be killed or stopped and started
// again as the same member at the same addresses.
type faultCluster struct {
	t                   *testing.T
	routes, mqtt, https []string
	dirs                []string
	gids                []int // the nodes' process group, 0: unchanged (not root)

	mu    sync.Mutex
	nodes []*edgeport // the current process of each node
}

func newFaultCluster(t *testing.T) *faultCluster {
	t.Helper()
	// Fixed ports: a node starts again on its own.
	ports := testserve.FreeAddrs(t, 9)
	c := &faultCluster{t: t, routes: ports[0:3], mqtt: ports[3:6], https: ports[6:9], nodes: make([]*edgeport, 3)}
	for range 3 {
		c.dirs = append(c.dirs, t.TempDir())
		gid := 0
		if os.Geteuid() == 0 {
			gid = 47000 + int(faultGIDs.Add(1))
		}
		c.gids = append(c.gids, gid)
	}
	for i := range 3 {
		c.start(i)
	}
	c.waitHealthy(90 * time.Second)
	return c
}

func (c *faultCluster) name(i int) string { return "n" + strconv.Itoa(i+1) }

// start starts node i (again) on its data directory and ports.
func (c *faultCluster) start(i int) {
	c.t.Helper()
	e := startEdgeportCmd(c.t, c.dirs[i], func(cmd *exec.Cmd) {
		if c.gids[i] != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
				Uid: uint32(os.Geteuid()), Gid: uint32(c.gids[i]), NoSetGroups: true}}
		}
	}, "--cluster", "--node-name", c.name(i), "--cluster-listen", c.routes[i], "--routes", strings.Join(c.routes, ","),
		"--mqtt-addr", c.mqtt[i], "--http-addr", c.https[i], "--max-queued-messages", "1000000")
	c.mu.Lock()
	c.nodes[i] = e
	c.mu.Unlock()
}

func (c *faultCluster) node(i int) *edgeport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// kill ends node i with SIGKILL.
func (c *faultCluster) kill(i int) { c.node(i).kill() }

// stop stops node i with SIGTERM, as a rolling restart does; a node that
// does not exit cleanly within stopTimeout fails the test (it is killed).
func (c *faultCluster) stop(i int) {
	c.t.Helper()
	if err := c.node(i).stop(); err != nil {
		c.t.Errorf("stopping %s: %v", c.name(i), err)
	}
}

// signal sends sig (SIGSTOP, SIGCONT) to node i; after SIGSTOP it waits
// until every thread of the process is stopped (the signal is delivered
// asynchronously: a thread still running may read what is sent next).
func (c *faultCluster) signal(i int, sig syscall.Signal) {
	c.t.Helper()
	pid := c.node(i).cmd.Process.Pid
	if err := c.node(i).cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("%s: %v: %v", c.name(i), sig, err)
	}
	if sig != syscall.SIGSTOP {
		return
	}
	var running string
	if !testwait.Within(10*time.Second, func() bool {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			running = err.Error()
			return false
		}
		for _, task := range tasks {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			if err != nil {
				continue // ended
			}
			// pid (comm) state ...: comm may hold spaces and parentheses.
			f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
			if len(f) == 0 || f[0] != "T" && f[0] != "t" {
				running = "thread " + task.Name() + " in state " + strings.Join(f[:min(1, len(f))], "")
				return false
			}
		}
		return true
	}) {
		c.t.Fatalf("%s not stopped 10s after SIGSTOP: %s", c.name(i), running)
	}
}

// status reads node i's view of the cluster from /statusz.
func (c *faultCluster) status(i int) (*cluster.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.https[i]+"/statusz", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var doc struct {
		Cluster *cluster.Status `json:"cluster"`
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/statusz: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return nil, err
	}
	if doc.Cluster == nil {
		return nil, errors.New("/statusz has no cluster section")
	}
	return doc.Cluster, nil
}

// waitHealthy waits until every node sees every member, a JetStream meta
// leader and every meta peer current: a node started again has rejoined
// and caught up.
func (c *faultCluster) waitHealthy(timeout time.Duration) {
	c.t.Helper()
	var why []string
	if !testwait.Within(timeout, func() bool {
		why = why[:0]
		for i := range c.nodes {
			st, err := c.status(i)
			if err != nil {
				why = append(why, c.name(i)+": "+err.Error())
				continue
			}
			if ok, reasons := st.Healthy(); !ok {
				why = append(why, c.name(i)+": "+strings.Join(reasons, "; "))
			}
		}
		return len(why) == 0
	}) {
		c.t.Fatalf("the cluster is not healthy after %v: %s", timeout, strings.Join(why, " | "))
	}
}

// isolate cuts node i's routes to the other nodes with iptables (both
// directions, packets dropped as a partition does) and leaves its MQTT
// listener reachable. Its packets are told apart by its process group:
// every connection on which it sends from or to a route port is marked,
// and marked connections are dropped. The returned function heals it; the
// test's cleanup does too.
func (c *faultCluster) isolate(i int) (heal func()) {
	c.t.Helper()
	if c.gids[i] == 0 {
		c.t.Fatal("isolating a node needs root (its own process group and iptables rules); scripts/test.sh runs as root")
	}
	requirePeer(c.t, "iptables", "iptables")
	chain := fmt.Sprintf("EPFAULT-%d-%d", os.Getpid(), c.gids[i])
	mark := fmt.Sprintf("0x%x", c.gids[i])
	var ports []string
	for _, r := range c.routes {
		_, p, _ := net.SplitHostPort(r)
		ports = append(ports, p)
	}
	ipt := func(args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w", "10"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	var once sync.Once
	heal = func() {
		once.Do(func() {
			for _, err := range []error{ipt("-D", "OUTPUT", "-j", chain), ipt("-F", chain), ipt("-X", chain)} {
				if err != nil {
					c.t.Errorf("healing %s: %v", c.name(i), err)
				}
			}
		})
	}
	steps := [][]string{
		{"-N", chain},
		{"-A", chain, "-p", "tcp", "-m", "owner", "--gid-owner", strconv.Itoa(c.gids[i]),
			"-m", "multiport", "--ports", strings.Join(ports, ","), "-j", "CONNMARK", "--set-mark", mark},
		{"-A", chain, "-m", "connmark", "--mark", mark, "-j", "DROP"},
		// New connections to its route port, before it answers any.
		{"-A", chain, "-p", "tcp", "--dport", ports[i], "-j", "DROP"},
		{"-I", "OUTPUT", "-j", chain},
	}
	for n, args := range steps {
		if err := ipt(args...); err != nil {
			if n > 0 {
				_ = ipt("-F", chain)
				_ = ipt("-X", chain)
			}
			c.t.Fatal(err)
		}
	}
	c.t.Cleanup(heal)
	return heal
}

// roamClient is a crash test client a roamer keeps connected.
type roamClient interface {
	connect(addr string, first bool) (bool, error)
	current() *crashConn
	detach() *crashConn
}

// roamDeadAfter is how long a connection may leave PINGREQs unanswered
// before its client moves to another node (a frozen node answers nothing).
// A node also leaves them unanswered while its commits wait for JetStream
// (up to the store's 10 s when a stream's leader is lost): the longest
// wait each client saw is logged.
const roamDeadAfter = 15 * time.Second

// roamer keeps one client connected to the cluster: when the connection
// ends or stops answering PINGREQ it reconnects to the next node that
// accepts it, with Clean Start 0, and counts on the session being there.
type roamer struct {
	name string
	cl   *faultCluster
	c    roamClient
	move chan int
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu        sync.Mutex
	at        int                      // the node connected to
	moves     []string                 // each reconnection: from, to, why, how long
	took      []time.Duration          // each failover: connection lost → CONNACK
	lost      []string                 // reconnections without the session
	stalls    map[string]time.Duration // by node: the longest wait for a PINGRESP
	unreached string                   // why the last reconnection failed for good
}

// roam connects rc to node home with a clean session and keeps it
// connected until the test ends.
func (c *faultCluster) roam(name string, rc roamClient, home int) *roamer {
	c.t.Helper()
	// A node refuses clients (0x88) until its cluster state is ready.
	var err error
	testwait.Within(time.Minute, func() bool {
		_, err = rc.connect(c.mqtt[home], true)
		return err == nil
	})
	if err != nil {
		c.t.Fatalf("%s on %s: %v", name, c.name(home), err)
	}
	r := &roamer{name: name, cl: c, c: rc, at: home, move: make(chan int), stop: make(chan struct{}), done: make(chan struct{}),
		stalls: map[string]time.Duration{}}
	go r.run()
	c.t.Cleanup(r.halt)
	return r
}

func (r *roamer) halt() {
	r.once.Do(func() { close(r.stop) })
	<-r.done
}

// where returns the node the client is connected to.
func (r *roamer) where() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.at
}

// moveTo moves the client to node i (dropping its connection, as a client
// that goes back to its nearest node does) and waits until it is there.
func (r *roamer) moveTo(t *testing.T, i int) {
	t.Helper()
	select {
	case r.move <- i:
	case <-r.done:
		t.Fatalf("%s: roamer ended", r.name)
	}
	testwait.For(t, fmt.Sprintf("%s to reconnect to %s", r.name, r.cl.name(i)), func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.at == i || r.unreached != ""
	})
	if msg := r.failure(); msg != "" {
		t.Fatal(msg)
	}
}

func (r *roamer) failure() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.unreached != "":
		return r.name + ": " + r.unreached
	case len(r.lost) > 0:
		return r.name + ": session not present after reconnecting to " + strings.Join(r.lost, ", ")
	}
	return ""
}

func (r *roamer) run() {
	defer close(r.done)
	ping := time.NewTicker(500 * time.Millisecond)
	defer ping.Stop()
	for {
		conn := r.c.current()
		target := -1
		why := "moved"
		select {
		case <-r.stop:
			return
		case target = <-r.move:
		case <-conn.done:
			why = "connection closed"
		case <-ping.C:
			wait := time.Since(time.Unix(0, conn.pong.Load()))
			r.mu.Lock()
			if node := r.cl.name(r.at); wait > r.stalls[node] {
				r.stalls[node] = wait
			}
			r.mu.Unlock()
			if wait < roamDeadAfter {
				_ = conn.send(&packet.PingReq{})
				continue
			}
			why = "no PINGRESP for " + roamDeadAfter.String()
		}
		lostAt := time.Now()
		if old := r.c.detach(); old != nil {
			old.close(false)
		}
		r.mu.Lock()
		from := r.at
		r.at = -1
		r.mu.Unlock()
		to, present, tried, err := r.reconnect(from, target)
		r.mu.Lock()
		switch {
		case err != nil:
			r.unreached = err.Error()
		case !present:
			r.lost = append(r.lost, r.cl.name(to))
		}
		if err == nil {
			r.at = to
			took := time.Since(lostAt)
			move := fmt.Sprintf("%s→%s (%s) in %v", r.cl.name(from), r.cl.name(to), why, took.Round(time.Millisecond))
			if len(tried) > 0 {
				move += fmt.Sprintf(" after %d refusals (%s)", len(tried), tried[len(tried)-1])
			}
			r.moves = append(r.moves, move)
			if target < 0 {
				r.took = append(r.took, took)
			}
		}
		r.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// reconnect tries the nodes after from in turn (only target when it is
// one) until one accepts the client, for at most a minute; a client
// backs off a little after a round in which none did. It returns why the
// nodes tried before refused.
func (r *roamer) reconnect(from, target int) (int, bool, []string, error) {
	n := len(r.cl.mqtt)
	deadline := time.Now().Add(time.Minute)
	var errs []string
	for time.Now().Before(deadline) {
		for k := 1; k <= n; k++ {
			i := (from + k) % n
			if target >= 0 {
				i = target
			}
			t0 := time.Now()
			present, err := r.c.connect(r.cl.mqtt[i], false)
			if err == nil {
				return i, present, errs, nil
			}
			errs = append(errs, fmt.Sprintf("%s after %v: %v", r.cl.name(i), time.Since(t0).Round(time.Millisecond), err))
			if target >= 0 {
				break
			}
		}
		select {
		case <-r.stop:
			return 0, false, errs, errors.New("stopped while reconnecting")
		case <-time.After(200 * time.Millisecond):
		}
	}
	return 0, false, errs, fmt.Errorf("no node accepted the client within a minute: %s", strings.Join(errs[max(0, len(errs)-6):], "; "))
}

// faultLoad is a steady load through all three nodes: on each node a
// persistent subscriber of crash/q1 (QoS 1) and crash/q2 (QoS 2) and a
// QoS 1 publisher, and QoS 2 publishers on the first and last node. Every
// message reaches every subscriber.
type faultLoad struct {
	t       *testing.T
	c       *faultCluster
	subs    []*crashSub // the Paho subscriber's counts last
	paho    *pahoRoamer
	pubs    []*crashPub
	roamers []*roamer // subscribers' then publishers'
	homes   []int     // by roamer: the node it started on
	pubHome []int     // by publisher: the node it started on
	sent    chan int  // each publisher's run reports here
	mark    []int     // by publisher: acknowledged count at the last mark
}

func newFaultLoad(t *testing.T, c *faultCluster, prefix string) *faultLoad {
	t.Helper()
	l := &faultLoad{t: t, c: c, sent: make(chan int, 8)}
	for i := range 3 {
		s := newCrashSub(fmt.Sprintf("%s-sub-%s", prefix, c.name(i)))
		l.subs = append(l.subs, s)
		l.addRoamer(s.name, s, i)
		if err := s.subscribe(packet.Subscription{Filter: "crash/q1", QoS: 1}, packet.Subscription{Filter: "crash/q2", QoS: 2}); err != nil {
			t.Fatal(err)
		}
	}
	l.paho = newPahoRoamer(t, c, prefix+"-paho-sub", 2)
	l.subs = append(l.subs, l.paho.counts)
	for _, pc := range []struct {
		node int
		qos  byte
	}{{0, 1}, {1, 1}, {2, 1}, {0, 2}, {2, 2}} {
		p := newCrashPub(fmt.Sprintf("%s-pub-q%d-%s", prefix, pc.qos, c.name(pc.node)), pc.qos, false)
		p.roaming = true
		l.pubs = append(l.pubs, p)
		l.pubHome = append(l.pubHome, pc.node)
		l.addRoamer(p.name, p, pc.node)
	}
	l.probe(prefix)
	l.markAcked()
	return l
}

// probe waits until the subscriptions are routed: probes published on
// every node, on both topics, reach every subscriber. (Probes count under
// their own names, which the checks leave out.)
func (l *faultLoad) probe(prefix string) {
	l.t.Helper()
	var probes []*crashPub
	for i := range 3 {
		for _, qos := range []byte{1, 2} {
			p := newCrashPub(fmt.Sprintf("%s-probe-q%d-%s", prefix, qos, l.c.name(i)), qos, false)
			var err error
			testwait.Within(time.Minute, func() bool {
				_, err = p.connect(l.c.mqtt[i], true)
				return err == nil
			})
			if err != nil {
				l.t.Fatal(err)
			}
			probes = append(probes, p)
		}
	}
	defer func() {
		for _, p := range probes {
			p.halt()
		}
	}()
	if !testwait.Within(time.Minute, func() bool {
		for _, p := range probes {
			p.run(1)
			if err := p.settled(10 * time.Second); err != nil {
				l.t.Fatal(err)
			}
		}
		for _, s := range l.subs {
			for _, p := range probes {
				if !slices.Contains(s.counts(p.name), 1) {
					return false
				}
			}
		}
		return true
	}) {
		l.t.Fatal("probes published on each node did not reach every subscriber within a minute")
	}
}

func (l *faultLoad) addRoamer(name string, rc roamClient, home int) {
	l.roamers = append(l.roamers, l.c.roam(name, rc, home))
	l.homes = append(l.homes, home)
}

// faultInterval paces each publisher: a steady load the subscribers keep
// up with, a few thousand messages per scenario.
const faultInterval = 20 * time.Millisecond

// start starts the publishers' load.
func (l *faultLoad) start() {
	for _, p := range l.pubs {
		go func() {
			tick := time.NewTicker(faultInterval)
			defer tick.Stop()
			n := 0
			for p.run(1) == 1 {
				n++
				<-tick.C
			}
			l.sent <- n
		}()
	}
	l.t.Cleanup(func() {
		for _, p := range l.pubs {
			p.finish()
		}
	})
}

// acked counts a publisher's acknowledged messages.
func acked(p *crashPub) int {
	state, _, _, _ := p.snapshot()
	n := 0
	for _, st := range state {
		if st == msgAcked || st == msgComplete {
			n++
		}
	}
	return n
}

// markAcked remembers each publisher's acknowledged count.
func (l *faultLoad) markAcked() {
	l.mark = l.mark[:0]
	for _, p := range l.pubs {
		l.mark = append(l.mark, acked(p))
	}
}

// waitAcked waits until every publisher had n more messages acknowledged
// since the last mark, then marks again; it fails the test if a roamer
// lost its session or found no node.
func (l *faultLoad) waitAcked(n int, what string, timeout time.Duration) {
	l.t.Helper()
	var behind string
	if !testwait.Within(timeout, func() bool {
		if l.failed() != "" {
			return true
		}
		behind = ""
		for i, p := range l.pubs {
			if got := acked(p) - l.mark[i]; got < n {
				behind = fmt.Sprintf("%s: %d of %d acknowledged", p.name, got, n)
				return false
			}
		}
		return true
	}) {
		l.t.Fatalf("%s: %s after %v", what, behind, timeout)
	}
	if msg := l.failed(); msg != "" {
		l.t.Fatalf("%s: %s", what, msg)
	}
	l.markAcked()
}

// failed reports a roamer that lost its session or its way, or a
// publisher that saw a protocol violation.
func (l *faultLoad) failed() string {
	for _, r := range l.roamers {
		if msg := r.failure(); msg != "" {
			return msg
		}
	}
	if msg := l.paho.failure(); msg != "" {
		return msg
	}
	for _, p := range l.pubs {
		if _, _, _, err := p.snapshot(); err != nil {
			return err.Error()
		}
	}
	return ""
}

// waitLeft waits until no client is on node i any more.
func (l *faultLoad) waitLeft(i int, timeout time.Duration) time.Duration {
	l.t.Helper()
	start := time.Now()
	if !testwait.Within(timeout, func() bool {
		for _, r := range l.roamers {
			if r.where() == i || r.where() < 0 {
				return l.failed() != ""
			}
		}
		return true
	}) {
		l.t.Fatalf("clients still on %s (or between nodes) after %v", l.c.name(i), timeout)
	}
	if msg := l.failed(); msg != "" {
		l.t.Fatal(msg)
	}
	return time.Since(start)
}

// goHome moves the clients that started on node i back to it.
func (l *faultLoad) goHome(i int) {
	l.t.Helper()
	for k, r := range l.roamers {
		if l.homes[k] == i {
			r.moveTo(l.t, i)
		}
	}
}

// awaitAcked waits until every subscriber has every acknowledged message.
func (l *faultLoad) awaitAcked(timeout time.Duration) {
	l.t.Helper()
	missing := ""
	if !testwait.Within(timeout, func() bool {
		missing = ""
		for _, s := range l.subs {
			for _, p := range l.pubs {
				state, _, _, _ := p.snapshot()
				counts := s.counts(p.name)
				for seq, st := range state {
					if (st == msgAcked || st == msgComplete) && (seq >= len(counts) || counts[seq] == 0) {
						missing = fmt.Sprintf("%s has not received %s:%d", s.name, p.name, seq)
						return false
					}
				}
			}
		}
		return true
	}) {
		l.t.Logf("after %v: %s (and maybe more)", timeout, missing) // counted by check
	}
}

// finish stops the publishers, lets what is in flight be acknowledged,
// sends one last message each (on the ordered topics it comes after every
// redelivery), waits for the subscribers and checks the counts.
func (l *faultLoad) finish(what string) faultTally {
	l.t.Helper()
	for _, p := range l.pubs {
		p.finish()
	}
	for range l.pubs {
		<-l.sent
	}
	for _, p := range l.pubs {
		if err := p.settled(time.Minute); err != nil {
			l.t.Fatalf("%s: %v", what, err)
		}
		p.again()
		p.run(1)
		if err := p.settled(time.Minute); err != nil {
			l.t.Fatalf("%s: %v", what, err)
		}
	}
	l.awaitAcked(time.Minute)
	return l.check(what)
}

// pahoRoamer is Eclipse Paho's Go MQTT 5 client (autopaho) as a
// persistent subscriber of both topics, given every node's address (its
// own node's first): it moves by itself when its connection fails, with
// Clean Start 0 after the first connection, and keeps its QoS 2 state.
// What it receives is counted in a crashSub.
type pahoRoamer struct {
	name   string
	counts *crashSub

	mu     sync.Mutex
	ups    []string // each connection: node, session present
	lost   []string // connections after the first without the session
	first  bool     // the first connection is made
	dialed string   // the address of the last connection attempt
}

func newPahoRoamer(t *testing.T, c *faultCluster, name string, home int) *pahoRoamer {
	t.Helper()
	r := &pahoRoamer{name: name, counts: newCrashSub(name)}
	var urls []*url.URL
	byHost := map[string]string{}
	for k := range 3 {
		i := (home + k) % 3
		urls = append(urls, &url.URL{Scheme: "mqtt", Host: c.mqtt[i]})
		byHost[c.mqtt[i]] = c.name(i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := autopaho.ClientConfig{
		ServerUrls:                    urls,
		KeepAlive:                     10,
		CleanStartOnInitialConnection: true,
		SessionExpiryInterval:         3600,
		ReconnectBackoff:              func(int) time.Duration { return 200 * time.Millisecond },
		ConnectTimeout:                10 * time.Second,
		// Autopaho's own TCP dial, remembering the node.
		AttemptConnection: func(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
			r.mu.Lock()
			r.dialed = u.Host
			r.mu.Unlock()
			var d net.Dialer
			return d.DialContext(ctx, "tcp", u.Host)
		},
		OnConnectionUp: func(_ *autopaho.ConnectionManager, ack *paho.Connack) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.ups = append(r.ups, fmt.Sprintf("%s (session present %v)", byHost[r.dialed], ack.SessionPresent))
			if r.first && !ack.SessionPresent {
				r.lost = append(r.lost, fmt.Sprintf("connection %d", len(r.ups)))
			}
			r.first = true
		},
		ClientConfig: paho.ClientConfig{
			ClientID: name,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				r.counts.record(pr.Packet.Payload, pr.Packet.QoS)
				return true, nil
			}},
		},
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-cm.Done()
	})
	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	defer acancel()
	if err := cm.AwaitConnection(actx); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if _, err := cm.Subscribe(actx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "crash/q1", QoS: 1}, {Topic: "crash/q2", QoS: 2}}}); err != nil {
		t.Fatalf("%s: SUBSCRIBE: %v", name, err)
	}
	return r
}

func (r *pahoRoamer) failure() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lost) > 0 {
		return r.name + ": session not present on " + strings.Join(r.lost, ", ")
	}
	return ""
}

// faultTally is what a scenario checked, summed over subscribers and
// publishers (each message counts once per subscriber).
type faultTally struct {
	published, acknowledged, refused, received, lost, duplicated, redelivered, reordered int
}

func (f faultTally) String() string {
	return fmt.Sprintf("published %d, acknowledged %d, refused %d, received %d (QoS 1 redeliveries %d), lost %d, QoS 2 duplicated %d, out of order %d",
		f.published, f.acknowledged, f.refused, f.received, f.redelivered, f.lost, f.duplicated, f.reordered)
}

// check requires, at every subscriber, every acknowledged QoS 1 message at
// least once, every acknowledged QoS 2 message exactly once, a refused
// QoS 2 message at most once, nothing never sent, each publisher's
// messages first received in order, and no protocol violation; it logs
// the counts.
func (l *faultLoad) check(what string) faultTally {
	l.t.Helper()
	var sum faultTally
	// Problems by kind: lost, duplicated, order, protocol.
	errs := map[string][]string{}
	for _, s := range l.subs {
		var ft faultTally
		for _, v := range s.violations() {
			if !strings.HasPrefix(v, "QoS 2 message ") { // counted below
				errs["protocol"] = append(errs["protocol"], s.name+": "+v)
			}
		}
		for _, p := range l.pubs {
			state, _, _, err := p.snapshot()
			// Order: among the messages the broker acknowledged (it did
			// not accept a refused one).
			reorders := s.outOfOrder(p.name, func(seq int) bool {
				return seq < len(state) && (state[seq] == msgAcked || state[seq] == msgComplete)
			})
			ft.reordered += len(reorders)
			for _, r := range reorders {
				errs["order"] = append(errs["order"], s.name+" got "+r)
			}
			if err != nil {
				errs["protocol"] = append(errs["protocol"], err.Error())
			}
			counts := s.counts(p.name)
			if len(counts) > len(state) {
				errs["protocol"] = append(errs["protocol"], fmt.Sprintf("%s got %s:%d, which was never sent", s.name, p.name, len(counts)-1))
			}
			var lostSeqs []int
			for seq, st := range state {
				n := 0
				if seq < len(counts) {
					n = int(counts[seq])
				}
				ft.published++
				if n > 0 {
					ft.received++
				}
				if p.qos == 1 && n > 1 {
					ft.redelivered += n - 1
				}
				if p.qos == 2 && n > 1 {
					ft.duplicated++
					errs["duplicated"] = append(errs["duplicated"], fmt.Sprintf("%s got QoS 2 %s:%d %d times", s.name, p.name, seq, n))
				}
				switch st {
				case msgAcked, msgComplete:
					ft.acknowledged++
					if n == 0 {
						ft.lost++
						lostSeqs = append(lostSeqs, seq)
						errs["lost"] = append(errs["lost"], fmt.Sprintf("%s never got acknowledged %s:%d", s.name, p.name, seq))
					}
				case msgRefused:
					ft.refused++
				default:
					errs["protocol"] = append(errs["protocol"], fmt.Sprintf("%s:%d never settled", p.name, seq))
				}
			}
			if len(lostSeqs) > 0 {
				l.t.Logf("%s: %s lost %d of %s: %s", what, s.name, len(lostSeqs), p.name, seqRanges(lostSeqs))
			}
		}
		l.t.Logf("%s: %s: %v", what, s.name, ft)
		sum.add(ft)
	}
	l.t.Logf("%s: all subscribers: %v", what, sum)
	stalls := map[string]time.Duration{}
	for _, r := range l.roamers {
		r.mu.Lock()
		if len(r.moves) > 0 {
			l.t.Logf("%s: %s reconnected: %s", what, r.name, strings.Join(r.moves, ", "))
		}
		for node, d := range r.stalls {
			stalls[node] = max(stalls[node], d)
		}
		r.mu.Unlock()
	}
	// PINGREQs go every 500 ms: more than a second is a stalled node.
	l.t.Logf("%s: longest wait for a PINGRESP (a frozen node's included): n1 %v, n2 %v, n3 %v", what,
		stalls["n1"].Round(time.Millisecond), stalls["n2"].Round(time.Millisecond), stalls["n3"].Round(time.Millisecond))
	l.paho.mu.Lock()
	l.t.Logf("%s: %s (Paho) connected to %s", what, l.paho.name, strings.Join(l.paho.ups, ", "))
	l.paho.mu.Unlock()
	for _, kind := range []string{"lost", "duplicated", "order", "protocol"} {
		e := errs[kind]
		if len(e) == 0 {
			continue
		}
		l.t.Errorf("%s: %s: %d, first: %s", what, kind, len(e), strings.Join(e[:min(8, len(e))], " | "))
	}
	return sum
}

// seqRanges writes ascending sequence numbers as ranges: "3-7, 9, 12-40".
func seqRanges(seqs []int) string {
	var b strings.Builder
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", seqs[i], seqs[j])
		} else {
			fmt.Fprintf(&b, "%d", seqs[i])
		}
		i = j + 1
	}
	return b.String()
}

func (f *faultTally) add(o faultTally) {
	f.published += o.published
	f.acknowledged += o.acknowledged
	f.refused += o.refused
	f.received += o.received
	f.lost += o.lost
	f.duplicated += o.duplicated
	f.redelivered += o.redelivered
	f.reordered += o.reordered
}

// TestClusterFaultKill: under a steady load through all three nodes one
// node is killed with SIGKILL. Its clients reconnect to another node and
// resume their sessions; no acknowledged message is lost, no QoS 2
// message duplicated; the node starts again, rejoins (every member heard,
// JetStream meta group current) and its clients go back to it.
func TestClusterFaultKill(t *testing.T) {
	c := newFaultCluster(t)
	l := newFaultLoad(t, c, "kill")
	l.start()
	l.waitAcked(200, "before the kill", time.Minute)
	c.kill(2)
	t.Logf("killed n3; its clients moved in %v", l.waitLeft(2, 90*time.Second).Round(time.Millisecond))
	l.waitAcked(200, "after the kill", time.Minute)
	restart := time.Now()
	c.start(2)
	c.waitHealthy(90 * time.Second)
	t.Logf("n3 started again and caught up in %v", time.Since(restart).Round(time.Millisecond))
	l.goHome(2)
	l.waitAcked(200, "after n3 rejoined", time.Minute)
	l.finish("kill -9 of n3")
}

// TestClusterFaultRollingRestart stops (SIGTERM) and restarts each node in
// turn under the load; the clients of the node being restarted move to
// another and back. Nothing acknowledged is lost.
func TestClusterFaultRollingRestart(t *testing.T) {
	c := newFaultCluster(t)
	l := newFaultLoad(t, c, "roll")
	l.start()
	l.waitAcked(100, "before the restarts", time.Minute)
	for i := range 3 {
		stopAt := time.Now()
		c.stop(i)
		t.Logf("%s stopped in %v; its clients moved in %v", c.name(i), time.Since(stopAt).Round(time.Millisecond),
			l.waitLeft(i, 90*time.Second).Round(time.Millisecond))
		l.waitAcked(100, "while "+c.name(i)+" is down", time.Minute)
		restart := time.Now()
		c.start(i)
		c.waitHealthy(90 * time.Second)
		t.Logf("%s started again and caught up in %v", c.name(i), time.Since(restart).Round(time.Millisecond))
		l.goHome(i)
		l.waitAcked(100, "after "+c.name(i)+" rejoined", time.Minute)
	}
	l.finish("rolling restart")
}

// frozenFor is how long the others must have heard nothing of a frozen
// node's JetStream: past Raft's election timeouts (4-9 s) and lost-quorum
// interval (10 s), and the cluster store's write timeout (10 s).
const frozenFor = 20 * time.Second

// frozenRoutesEnv, set, holds TestClusterFaultFrozen's freeze until n1
// and n2 have closed their routes to n3 (40 s or more under the load), as
// in a run whose clients were slow to move: a thawed node then has no
// route for a moment, and its view of the others is older than theirs of it.
const frozenRoutesEnv = "EDGEPORT_E2E_FROZEN_ROUTES_CLOSED"

// TestClusterFaultFrozen freezes a node with SIGSTOP until the others'
// JetStream has not heard from it for frozenFor: its clients, unanswered, move to the other
// nodes and resume; after SIGCONT it rejoins without undoing what the
// others did meanwhile (its stale view of the sessions it held loses to
// the newer claims), and its clients go back to it.
func TestClusterFaultFrozen(t *testing.T) {
	c := newFaultCluster(t)
	l := newFaultLoad(t, c, "frozen")
	l.start()
	l.waitAcked(200, "before the freeze", time.Minute)
	c.signal(2, syscall.SIGSTOP)
	t.Cleanup(func() { _ = c.node(2).cmd.Process.Signal(syscall.SIGCONT) })
	frozen := time.Now()
	t.Logf("froze n3; its clients moved in %v", l.waitLeft(2, 90*time.Second).Round(time.Millisecond))
	// The meta leader's view: only the leader knows when it last heard
	// each peer (a follower reports 0).
	var view string
	if !testwait.Within(90*time.Second, func() bool {
		view = "neither n1 nor n2 leads the meta group"
		for i := range 2 {
			st, err := c.status(i)
			if err != nil {
				view = err.Error()
				return false
			}
			if st.JetStream.MetaLeader != c.name(i) {
				continue
			}
			view = fmt.Sprintf("%s: meta leader %q, peers %+v", c.name(i), st.JetStream.MetaLeader, st.JetStream.Peers)
			// A leader elected during the freeze never heard from n3
			// (Active 0): nobody has since the freeze.
			return slices.ContainsFunc(st.JetStream.Peers, func(p cluster.PeerInfo) bool {
				return p.Name == "n3" && (p.Offline || !p.Current && (p.Active >= frozenFor || p.Active == 0 && time.Since(frozen) >= frozenFor))
			})
		}
		return false
	}) {
		t.Fatalf("n1 and n2 never lost n3 for %v: %s", frozenFor, view)
	}
	t.Logf("n1 and n2 have not heard from n3 for %v, %v after the freeze", frozenFor, time.Since(frozen).Round(time.Millisecond))
	if os.Getenv(frozenRoutesEnv) != "" {
		// The longer freeze: n1 and n2 close their routes to n3 (their
		// writes to it time out), so that at the thaw n3 has no route and
		// its peers' interest is gone until the routes are made again.
		if !testwait.Within(3*time.Minute, func() bool {
			view = ""
			for i := range 2 {
				st, err := c.status(i)
				if err != nil || slices.Contains(st.Routes, "n3") {
					view = fmt.Sprintf("%s still routes to n3 (%v)", c.name(i), err)
					return false
				}
			}
			return true
		}) {
			t.Fatalf("%s: %s", frozenRoutesEnv, view)
		}
		t.Logf("n1 and n2 closed their routes to n3 %v after the freeze", time.Since(frozen).Round(time.Millisecond))
	}
	l.waitAcked(200, "while n3 is frozen", time.Minute)
	c.signal(2, syscall.SIGCONT)
	thawed := time.Now()
	c.waitHealthy(90 * time.Second)
	t.Logf("n3 resumed and caught up in %v", time.Since(thawed).Round(time.Millisecond))
	l.goHome(2)
	l.waitAcked(200, "after n3 resumed", time.Minute)
	l.finish("SIGSTOP of n3")
}

// TestClusterFaultIsolated cuts n3's routes with iptables while its
// clients stay connected to it: it must stop acknowledging QoS 1 and 2
// (its writes cannot reach a JetStream quorum: PUBACK/PUBREC 0x80) and
// refuse new sessions (no claim without a quorum) rather than carry on
// alone, while n1 and n2 go on; a retained message it refuses must not
// win over one n1 acknowledged meanwhile. Healed, it acknowledges again,
// every node has n1's retained message and nothing acknowledged anywhere
// is lost.
func TestClusterFaultIsolated(t *testing.T) {
	c := newFaultCluster(t)
	l := newFaultLoad(t, c, "iso")
	// The clients on n3 stay there: the point is what n3 tells them.
	// Retained publishers on n1 and n3 (crash/ret/<seq mod 8>).
	ret1, ret3 := newCrashPub("iso-ret-n1", 1, true), newCrashPub("iso-ret-n3", 1, true)
	for i, p := range []*crashPub{ret1, ret3} {
		p.roaming = true
		if _, err := p.connect(c.mqtt[2*i], true); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.halt)
	}
	l.start()
	l.waitAcked(200, "before the isolation", time.Minute)
	heal := c.isolate(2)
	cut := time.Now()
	var onN3 []*crashPub
	firstAfter := map[*crashPub]int{}
	for k, p := range l.pubs {
		if l.pubHome[k] == 2 {
			onN3 = append(onN3, p)
			state, _, _, _ := p.snapshot()
			firstAfter[p] = len(state)
		}
	}
	// n3 stops acknowledging: each of its publishers has a message refused.
	var refusedBy string
	if !testwait.Within(90*time.Second, func() bool {
		for _, p := range onN3 {
			state, _, _, _ := p.snapshot()
			if !slices.Contains(state[firstAfter[p]:], byte(msgRefused)) {
				refusedBy = p.name
				return false
			}
		}
		return true
	}) {
		t.Fatalf("%s had nothing refused within 90s of n3's isolation", refusedBy)
	}
	t.Logf("n3 isolated; its publishers had a message refused within %v", time.Since(cut).Round(time.Millisecond))
	// A new session cannot be claimed on n3.
	conn, ack, err := dialCrash(c.mqtt[2], persistentConnect("iso-newcomer", true), func(*crashConn, packet.FixedHeader, []byte) error { return nil })
	if err == nil {
		conn.close(true)
		t.Fatal("isolated n3 accepted a new session")
	}
	if ack == nil || ack.ReasonCode != packet.ServerUnavailable {
		t.Fatalf("isolated n3 refused a new session with %v, want CONNACK %s", err, packet.ServerUnavailable)
	}
	// n1 and n2 go on: their publishers' messages are acknowledged.
	var others []*crashPub
	for _, p := range l.pubs {
		if _, ok := firstAfter[p]; !ok {
			others = append(others, p)
		}
	}
	base := map[*crashPub]int{}
	for _, p := range others {
		base[p] = acked(p)
	}
	testwait.Within(time.Minute, func() bool {
		for _, p := range others {
			if acked(p)-base[p] < 100 {
				return false
			}
		}
		return true
	})
	for _, p := range others {
		if n := acked(p) - base[p]; n < 100 {
			t.Errorf("%s (on the majority side): %d acknowledged while n3 was isolated, want 100", p.name, n)
		}
	}
	// n1 retains iso-ret-n1:8 on crash/ret/0 (seqs 0-8 over the eight
	// topics), then n3 is asked to retain iso-ret-n3:0 there: refused.
	ret1.run(9)
	if err := ret1.settled(time.Minute); err != nil {
		t.Fatal(err)
	}
	if st, _, _, _ := ret1.snapshot(); st[8] != msgComplete {
		t.Fatalf("n1 refused the retained message iso-ret-n1:8 while n3 was isolated")
	}
	ret3.run(1)
	if err := ret3.settled(time.Minute); err != nil {
		t.Fatal(err)
	}
	if st, _, _, _ := ret3.snapshot(); st[0] != msgRefused {
		t.Errorf("isolated n3 acknowledged the retained message iso-ret-n3:0")
	}
	// Acknowledgements flow again from the first rule heal removes.
	healing := time.Now()
	heal()
	healed := time.Now()
	// Nothing published on n3 after the cut was acknowledged while it was
	// cut off.
	for _, p := range onN3 {
		state, _, _, _ := p.snapshot()
		ackAt := p.acks()
		n, refused := 0, 0
		for seq := firstAfter[p]; seq < len(state); seq++ {
			if !ackAt[seq].IsZero() && ackAt[seq].Before(healing) {
				n++
			}
			if state[seq] == msgRefused {
				refused++
			}
		}
		t.Logf("%s on isolated n3: %d published after the cut, %d refused, %d acknowledged before the heal", p.name, len(state)-firstAfter[p], refused, n)
		if n > 0 {
			t.Errorf("%s: %d messages published on n3 after it was cut off were acknowledged before it was healed", p.name, n)
		}
	}
	// Healed, n3 acknowledges again.
	inFlight := map[*crashPub]int{} // seqs below: published before the heal
	for _, p := range onN3 {
		inFlight[p] = len(p.acks())
	}
	for _, p := range onN3 {
		from := len(p.acks())
		if !testwait.Within(90*time.Second, func() bool {
			for _, at := range p.acks()[from:] {
				if !at.IsZero() {
					return true
				}
			}
			return false
		}) {
			t.Fatalf("%s: nothing acknowledged on n3 within 90s of the heal", p.name)
		}
	}
	t.Logf("n3 acknowledges again %v after the heal (healed at %s)", time.Since(healed).Round(time.Millisecond), healed.UTC().Format("15:04:05.000"))
	// How: the fate of what was in flight at the heal (a window of 32
	// waiting for n3's writes), and the first acknowledgement of a
	// message published after it.
	for _, p := range onN3 {
		state, _, _, _ := p.snapshot()
		ackAt, endAt := p.acks(), p.ends()
		var acked, refused, open int
		var lastEnd, firstAck, firstNew time.Duration = -1, -1, -1
		for seq := range ackAt {
			if seq < inFlight[p] && state[seq] != msgSent && !endAt[seq].Before(healed) {
				if state[seq] == msgRefused {
					refused++
				} else {
					acked++
				}
				lastEnd = max(lastEnd, endAt[seq].Sub(healed))
			}
			if seq < inFlight[p] && state[seq] == msgSent {
				open++
			}
			if ackAt[seq].After(healed) {
				a := ackAt[seq].Sub(healed)
				if firstAck < 0 || a < firstAck {
					firstAck = a
				}
				if seq >= inFlight[p] && (firstNew < 0 || a < firstNew) {
					firstNew = a
				}
			}
		}
		t.Logf("%s after the heal: of those in flight at the heal %d acknowledged, %d refused, %d still open (the last ended %v after the heal); first acknowledgement %v, first of a message published after the heal %v",
			p.name, acked, refused, open, lastEnd.Round(time.Millisecond), firstAck.Round(time.Millisecond), firstNew.Round(time.Millisecond))
	}
	c.waitHealthy(90 * time.Second)
	for i := range 3 {
		var got []int
		var err error
		// A node applies the retained bucket before it serves a
		// SUBSCRIBE's retained messages; n3 may still refuse the reader's
		// session while it rejoins.
		testwait.Within(30*time.Second, func() bool {
			got, err = readRetained(c.mqtt[i])
			return err == nil
		})
		if err != nil {
			t.Fatalf("reading the retained messages on %s: %v", c.name(i), err)
		}
		if got[0] != 8 {
			t.Errorf("%s retains seq %d on crash/ret/0 after the heal, want n1's 8 (n3's refused one is 0)", c.name(i), got[0])
		}
	}
	l.waitAcked(100, "after the heal", time.Minute)
	l.finish("isolation of n3")
}
