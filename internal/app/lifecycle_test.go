package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgeport/edgeport/internal/lifecycle"
	"github.com/edgeport/edgeport/internal/store"
	"github.com/edgeport/edgeport/internal/testserve"
)

var errInjected = errors.New("injected failure")

// freePort is a loopback port for a listener the test configures by number.
func freePort(t *testing.T) int { return testserve.FreePort(t, "127.0.0.1") }

// fullConfig is an App with every component: a real store, both built-in
// listeners, a BrokerListener resource (the reconciler binds it), the
// self-test probe and the HTTP endpoint, all on fixed loopback ports so
// that a test can check they are free again.
func fullConfig(t *testing.T) (Config, []int) {
	t.Helper()
	ports := []int{freePort(t), freePort(t), freePort(t), freePort(t)}
	confDir := t.TempDir()
	doc := listenerYAML("extra", fmt.Sprintf("{port: %d, address: 127.0.0.1}", ports[3]))
	if err := os.WriteFile(filepath.Join(confDir, "extra.yaml"), []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return Config{
		MQTTAddr:         "127.0.0.1:" + strconv.Itoa(ports[0]),
		WSAddr:           "127.0.0.1:" + strconv.Itoa(ports[1]),
		HTTPAddr:         "127.0.0.1:" + strconv.Itoa(ports[2]),
		DataDir:          t.TempDir(),
		ConfigDir:        confDir,
		SelfTestInterval: time.Hour,
		Store:            store.Options{Sync: store.SyncNone},
	}, ports
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("reading /proc/self/fd: %v", err)
	}
	return len(ents)
}

// assertNothingOpen checks that the ports can be bound again, that the
// store's directory can be opened (Pebble's lock is released), that no
// file descriptor and no goroutine is left over.
func assertNothingOpen(t *testing.T, cfg Config, ports []int, fds int, goroutines goleak.Option) {
	t.Helper()
	for _, p := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Errorf("port %d still bound: %v", p, err)
			continue
		}
		ln.Close()
	}
	l := &dirLock{dir: cfg.DataDir}
	if err := l.Start(context.Background()); err != nil {
		t.Errorf("data dir lock left held: %v", err)
	} else if err := l.Stop(context.Background()); err != nil {
		t.Error(err)
	}
	st, err := store.Open(filepath.Join(cfg.DataDir, "store"), store.Options{})
	if err != nil {
		t.Errorf("store left open (locked): %v", err)
	} else if err := st.Close(); err != nil {
		t.Error(err)
	}
	if err := goleak.Find(goroutines); err != nil {
		t.Errorf("goroutines left running: %v", err)
	}
	// Closed sockets and files leave the table at once; poll briefly for
	// the runtime's own bookkeeping.
	deadline := time.Now().Add(wait)
	for openFDs(t) > fds && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if n := openFDs(t); n > fds {
		t.Errorf("%d file descriptors open, %d before", n, fds)
	}
}

// TestStartFailureLeavesNothing starts a full App with each component of
// its group failing in turn, and then with real failures (ports taken, a
// locked store), and proves that nothing is left open: files (the store's
// lock and descriptors), ports, goroutines.
func TestStartFailureLeavesNothing(t *testing.T) {
	// A first full start and stop: the runtime's lazily created descriptors
	// (the network poller) exist from here on, and the happy path must
	// leave nothing either.
	cfg, ports := fullConfig(t)
	goroutines := goleak.IgnoreCurrent()
	a, err := New(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	names := a.group.Names()
	if err := a.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	fds := openFDs(t)
	assertNothingOpen(t, cfg, ports, fds, goroutines)
	for _, want := range []string{"store", "resources", "broker", "statestore", "listener mqtt", "listener ws", "reconciler", "connectors", "selftest", "http"} {
		if !strings.Contains(strings.Join(names, ","), want) {
			t.Fatalf("group %q lacks %s", names, want)
		}
	}

	for _, name := range names {
		t.Run("injected/"+name, func(t *testing.T) {
			a, err := New(cfg, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			a.group.Replace(name, func(lifecycle.Component) lifecycle.Component {
				return lifecycle.Hook{OnStart: func(context.Context) error { return errInjected }}
			})
			err = a.Start(t.Context())
			if !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "starting "+name) {
				t.Fatalf("Start: %v", err)
			}
			assertNothingOpen(t, cfg, ports, fds, goroutines)
		})
	}

	real := []struct {
		name  string
		block func(t *testing.T) func()
		want  string
	}{
		{"store locked", func(t *testing.T) func() {
			st, err := store.Open(filepath.Join(cfg.DataDir, "store"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return func() { _ = st.Close() }
		}, "starting store"},
		{"data dir locked", func(t *testing.T) func() {
			// As another edgeport holds it: flock locks belong to the
			// open file, so a second open in this process conflicts too.
			l := &dirLock{dir: cfg.DataDir}
			if err := l.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			return func() { _ = l.Stop(context.Background()) }
		}, fmt.Sprintf("data directory %s is in use by another edgeport (pid %d)", cfg.DataDir, os.Getpid())},
		{"mqtt port taken", takePort(cfg.MQTTAddr), "starting listener mqtt: --mqtt-addr " + cfg.MQTTAddr +
			": address already in use; choose another with --mqtt-addr, or turn the listener off with --mqtt-addr off"},
		{"ws port taken", takePort(cfg.WSAddr), "starting listener ws: --ws-addr " + cfg.WSAddr + ": address already in use; choose another with --ws-addr"},
		{"http port taken", takePort(cfg.HTTPAddr), "starting http: --http-addr " + cfg.HTTPAddr + ": address already in use; choose another with --http-addr"},
	}
	for _, r := range real {
		t.Run("real/"+r.name, func(t *testing.T) {
			release := r.block(t)
			a, err := New(cfg, quietLog())
			if err != nil {
				release()
				t.Fatal(err)
			}
			err = a.Start(t.Context())
			release()
			if err == nil || !strings.Contains(err.Error(), r.want) {
				t.Fatalf("Start: %v, want an error %q", err, r.want)
			}
			assertNothingOpen(t, cfg, ports, fds, goroutines)
		})
	}
}

func takePort(addr string) func(t *testing.T) func() {
	return func(t *testing.T) func() {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return func() { ln.Close() }
	}
}
