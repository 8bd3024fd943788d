// Package e2e runs the built edgeport binary against real third-party MQTT
// clients (mosquitto, Eclipse Paho for Python and Go, MQTT.js).
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// edgeportBin is the binary TestMain builds; it is written once, before any
// test runs, and only read afterwards.
var edgeportBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	// The commands read these; a machine or CI job that sets them for its
	// own use must not change what the tests see (a test that needs one
	// passes it to the command).
	for _, k := range []string{"EDGEPORT_SERVER", "EDGEPORT_TOKEN", "EDGEPORT_MQTT"} {
		_ = os.Unsetenv(k)
	}
	dir, err := os.MkdirTemp("", "edgeport-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, "edgeport")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/edgeport")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building edgeport: %v\n%s", err, out)
		return 1
	}
	edgeportBin = bin
	return m.Run()
}

// repoRoot finds the module root through the go tool, falling back to the
// package's place in the tree.
func repoRoot() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if mod := strings.TrimSpace(string(out)); err == nil && mod != "" && mod != os.DevNull {
		return filepath.Dir(mod), nil
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		return "", fmt.Errorf("locating the repository root: %w", err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("locating the repository root: %w", err)
	}
	return root, nil
}

// requirePeer fails the test when a third-party program is missing: the
// suite's point is running against real clients, so their absence is an
// error of the environment, never a reason to pass.
func requirePeer(t *testing.T, program, installs string) string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err != nil {
		t.Fatalf("%s not found (%v): run ./scripts/test.sh, which installs %s", program, err, installs)
	}
	return path
}

// lines collects a process's output and lets tests wait for a line.
type lines struct {
	mu      sync.Mutex
	partial []byte
	all     []string
	changed chan struct{} // closed and replaced whenever a line arrives
	closed  bool          // the writer is done: no more lines will come
}

func newLines() *lines { return &lines{changed: make(chan struct{})} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.all = append(l.all, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

// finish marks the end of output, flushing an unterminated last line.
func (l *lines) finish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.all = append(l.all, string(l.partial))
		l.partial = nil
	}
	l.closed = true
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *lines) snapshot() ([]string, chan struct{}, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all, l.changed, l.closed
}

func (l *lines) String() string {
	all, _, _ := l.snapshot()
	return strings.Join(all, "\n")
}

// waitFor returns the first line satisfying match, waiting until timeout.
func (l *lines) waitFor(timeout time.Duration, match func(string) bool) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		all, changed, closed := l.snapshot()
		for ; seen < len(all); seen++ {
			if match(all[seen]) {
				return all[seen], nil
			}
		}
		if closed {
			return "", errors.New("output ended")
		}
		select {
		case <-changed:
		case <-deadline.C:
			return "", fmt.Errorf("no matching line within %v", timeout)
		}
	}
}

// proc is a running third-party program whose stdout is collected by line.
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    *lines
	stderr *lines
	done   chan struct{}
	err    error // exit status, valid once done is closed
}

// startProc runs a program for at most limit; the test's cleanup kills it
// if it is still running.
func startProc(t *testing.T, limit time.Duration, dir, name string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.WaitDelay = 2 * time.Second
	p := &proc{name: filepath.Base(name), cmd: cmd, out: newLines(), stderr: newLines(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		p.out.finish()
		p.stderr.finish()
		cancel()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s %s\nstdout:\n%s\nstderr:\n%s", p.name, strings.Join(args, " "), p.out, p.stderr)
		}
	})
	return p
}

// waitLine waits for a stdout line satisfying match.
func (p *proc) waitLine(t *testing.T, timeout time.Duration, what string, match func(string) bool) string {
	t.Helper()
	line, err := p.out.waitFor(timeout, match)
	if err != nil {
		t.Fatalf("%s: waiting for %s: %v\nstdout:\n%s\nstderr:\n%s", p.name, what, err, p.out, p.stderr)
	}
	return line
}

// wait waits for the program to exit and returns its stdout lines; a
// non-zero exit fails the test.
func (p *proc) wait(t *testing.T, timeout time.Duration) []string {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not exit within %v\nstdout:\n%s\nstderr:\n%s", p.name, timeout, p.out, p.stderr)
	}
	if p.err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", p.name, p.err, p.out, p.stderr)
	}
	all, _, _ := p.out.snapshot()
	return all
}

// runProc runs a program to completion and returns its stdout lines.
func runProc(t *testing.T, timeout time.Duration, dir, name string, args ...string) []string {
	t.Helper()
	return startProc(t, timeout, dir, name, args...).wait(t, timeout)
}

// edgeport is a running edgeport serve process.
type edgeport struct {
	cmd   *exec.Cmd
	logs  *lines
	addrs map[string]string // listener name → host:port
	done  chan struct{}
	err   error // exit status, valid once done is closed

	stopOnce sync.Once
	stopErr  error
}

// listeningRE matches the log line naming a bound listener.
var listeningRE = regexp.MustCompile(`msg=listening .*\blistener=(\S+) .*\baddr=(\S+)`)

const stopTimeout = 10 * time.Second

// startEdgeport runs `edgeport serve` on ephemeral ports with a private data
// directory, waits until it has logged that it started and registers a
// cleanup that stops it with SIGTERM and fails the test on a non-zero exit.
func startEdgeport(t *testing.T, extraArgs ...string) *edgeport {
	t.Helper()
	args := []string{"serve",
		"--mqtt-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--log-level", "debug"}
	// Flags given later win, so extraArgs override the defaults above.
	args = append(args, extraArgs...)
	return launchEdgeport(t, args, 15*time.Second, func(e *edgeport) {
		if err := e.stop(); err != nil {
			t.Errorf("edgeport did not stop cleanly: %v", err)
		}
	})
}

// launchEdgeport runs edgeport with args, registers a cleanup that ends it
// with end (and logs its tail when the test failed), waits up to
// startWithin for it to log that it started and notes its listeners.
func launchEdgeport(t *testing.T, args []string, startWithin time.Duration, end func(*edgeport)) *edgeport {
	t.Helper()
	return launchEdgeportWith(t, args, startWithin, end, nil)
}

// launchEdgeportWith is launchEdgeport with a hook that adjusts the
// command before it starts (the process's credentials, for one).
func launchEdgeportWith(t *testing.T, args []string, startWithin time.Duration, end func(*edgeport), setup func(*exec.Cmd)) *edgeport {
	t.Helper()
	e := &edgeport{cmd: exec.Command(edgeportBin, args...), logs: newLines(), done: make(chan struct{})}
	if setup != nil {
		setup(e.cmd)
	}
	e.cmd.Stdout = io.Discard
	e.cmd.Stderr = e.logs
	e.cmd.WaitDelay = 2 * time.Second
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("starting edgeport: %v", err)
	}
	go func() {
		e.err = e.cmd.Wait()
		e.logs.finish()
		close(e.done)
	}()
	t.Cleanup(func() {
		end(e)
		if t.Failed() {
			t.Logf("edgeport log (pid %d):\n%s", e.cmd.Process.Pid, tail(e.logs.String(), 64<<10))
		}
		keepLog(t, e)
	})
	if _, err := e.logs.waitFor(startWithin, func(l string) bool {
		return strings.Contains(l, `msg="edgeport started"`)
	}); err != nil {
		t.Fatalf("edgeport did not start: %v\n%s", err, e.logs)
	}
	e.addrs = make(map[string]string)
	all, _, _ := e.logs.snapshot()
	for _, l := range all {
		if m := listeningRE.FindStringSubmatch(l); m != nil {
			e.addrs[m[1]] = m[2]
		}
	}
	return e
}

// addr returns the address of a listener ("mqtt", "ws" or "http").
func (e *edgeport) addr(t *testing.T, name string) string {
	t.Helper()
	a, ok := e.addrs[name]
	if !ok {
		t.Fatalf("edgeport logged no %s listener (have %v)", name, e.addrs)
	}
	return a
}

// port returns the port of a listener, for clients that take host and port apart.
func (e *edgeport) port(t *testing.T, name string) string {
	t.Helper()
	a := e.addr(t, name)
	return a[strings.LastIndexByte(a, ':')+1:]
}

// stop sends SIGTERM and waits for the exit, killing the process after
// stopTimeout. It returns an error unless the process exited with status 0.
func (e *edgeport) stop() error {
	e.stopOnce.Do(func() {
		select {
		case <-e.done:
			e.stopErr = fmt.Errorf("exited before it was stopped: %v", e.err)
			return
		default:
		}
		if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			e.stopErr = fmt.Errorf("sending SIGTERM: %w", err)
		}
		select {
		case <-e.done:
			if e.err != nil {
				e.stopErr = errors.Join(e.stopErr, fmt.Errorf("exit after SIGTERM: %w", e.err))
			}
		case <-time.After(stopTimeout):
			_ = e.cmd.Process.Kill()
			<-e.done
			e.stopErr = errors.Join(e.stopErr, fmt.Errorf("still running %v after SIGTERM; killed", stopTimeout))
		}
	})
	return e.stopErr
}

// keepLogsEnv names a directory to which every edgeport process's whole
// log is written when it ends, failed test or not, as
// <test>-<pid>.log: the fault scenarios' evidence when they pass but
// report something not held yet.
const keepLogsEnv = "EDGEPORT_E2E_KEEP_LOGS"

// logLevelEnv overrides the --log-level (info) the edgeport processes the
// crash and fault tests start run with: debug, to trace a fault scenario.
const logLevelEnv = "EDGEPORT_E2E_LOG_LEVEL"

func keepLog(t *testing.T, e *edgeport) {
	dir := os.Getenv(keepLogsEnv)
	if dir == "" {
		return
	}
	name := filepath.Join(dir, fmt.Sprintf("%s-%d.log", strings.ReplaceAll(t.Name(), "/", "_"), e.cmd.Process.Pid))
	err := os.MkdirAll(dir, 0o755)
	if err == nil {
		err = os.WriteFile(name, []byte(e.logs.String()), 0o644)
	}
	if err != nil {
		t.Logf("%s: keeping the log of pid %d: %v", keepLogsEnv, e.cmd.Process.Pid, err)
		return
	}
	t.Logf("edgeport log (pid %d) kept in %s", e.cmd.Process.Pid, name)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
