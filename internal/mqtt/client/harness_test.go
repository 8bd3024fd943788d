package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testpki"
	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/edgeport/edgeport/internal/testwait"
)

func testLogger() *slog.Logger {
	if os.Getenv("EDGEPORT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testBroker is an Edgeport broker reachable in-process and over TCP.
type testBroker struct {
	b    *broker.Broker
	addr string // TCP, listener "test"
}

// inProcess returns a fresh in-process dialer for one client.
func (tb *testBroker) inProcess() *InProcess {
	return NewInProcess(func(c net.Conn) { tb.b.ServeConn(c, broker.InternalListener) })
}

func startBroker(t testing.TB, opts broker.Options) *testBroker {
	t.Helper()
	if opts.SysInterval == 0 {
		opts.SysInterval = -1
	}
	b, err := broker.New(opts, testLogger())
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Start(ctx)
	ln := testserve.Loopback(t, func(c net.Conn) { b.ServeConn(c, "test") })
	t.Cleanup(func() {
		ln.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := b.Stop(sctx); err != nil {
			t.Errorf("broker shutdown: %v", err)
		}
		cancel()
		ln.Wait()
	})
	return &testBroker{b: b, addr: ln.Addr()}
}

// connect makes a client with opts and connects it; it is stopped when
// the test ends.
func connect(t testing.TB, opts Options) *Client {
	t.Helper()
	c := newClient(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("Connect %s: %v", opts.ClientID, err)
	}
	return c
}

func newClient(t testing.TB, opts Options) *Client {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = 10 * time.Millisecond
		opts.MaxBackoff = 100 * time.Millisecond
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close %s: %v", opts.ClientID, err)
		}
	})
	return c
}

// noLeaks fails the test when goroutines of this package outlive it.
// Register it first, so that it runs after every other cleanup.
func noLeaks(t *testing.T) {
	t.Cleanup(func() {
		var left string
		if !testwait.Within(5*time.Second, func() bool { left = clientGoroutines(); return left == "" }) {
			t.Errorf("goroutines left running:\n%s", left)
		}
	})
}

// clientGoroutines returns the stacks of goroutines running this package's
// non-test code.
func clientGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "internal/mqtt/client.(*") && !strings.Contains(g, "_test.go") &&
			!strings.Contains(g, "testing.tRunner") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// inbox collects received messages for a test.
type inbox struct {
	ch chan *Message
}

func newInbox() *inbox { return &inbox{ch: make(chan *Message, 1000)} }

func (in *inbox) handler(_ context.Context, m *Message) { in.ch <- m }

func (in *inbox) next(t testing.TB) *Message {
	t.Helper()
	select {
	case m := <-in.ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
		return nil
	}
}

// none asserts that nothing arrived, after a round trip through c proved
// that everything sent before it has been delivered.
func (in *inbox) none(t testing.TB, c *Client, probeTopic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	marker := newInbox()
	if err := c.Subscribe(ctx, Subscription{Filters: filters(probeTopic, 1), Handler: marker.handler}); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, &Message{Topic: probeTopic, QoS: 1, Payload: []byte("marker")}); err != nil {
		t.Fatal(err)
	}
	marker.next(t)
	select {
	case m := <-in.ch:
		t.Fatalf("unexpected message on %s: %q", m.Topic, m.Payload)
	default:
	}
}

func filters(f string, qos byte) []packet.Subscription {
	return []packet.Subscription{{Filter: f, QoS: qos}}
}

const mosquittoPath = "/usr/sbin/mosquitto"

// mosquittoBroker is a real mosquitto with a TCP, a WebSocket and a TLS
// listener on free loopback ports.
type mosquittoBroker struct {
	tcp, ws, tls string
	ca           *x509.CertPool
	clientCert   tls.Certificate
}

// startMosquitto runs Debian's mosquitto (installed by scripts/test.sh)
// for the test. extra is appended to the TCP listener's configuration.
func startMosquitto(t *testing.T, extra string) *mosquittoBroker {
	t.Helper()
	if _, err := os.Stat(mosquittoPath); err != nil {
		t.Fatalf("mosquitto is not installed at %s: run ./scripts/test.sh, which installs it (apt-get install -y mosquitto)", mosquittoPath)
	}
	dir := t.TempDir()
	pki := writePKI(t, dir)
	ports := freePorts(t, 3)
	conf := fmt.Sprintf(`per_listener_settings false
user root
%s
listener %d 127.0.0.1
listener %d 127.0.0.1
protocol websockets
listener %d 127.0.0.1
cafile %s
certfile %s
keyfile %s
require_certificate false
`, extra, ports[0], ports[1], ports[2], pki.caFile, pki.certFile, pki.keyFile)
	if !strings.Contains(extra, "allow_anonymous") {
		conf = "allow_anonymous true\n" + conf
	}
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(mosquittoPath, "-c", path)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting mosquitto: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	m := &mosquittoBroker{
		tcp: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		ws:  fmt.Sprintf("127.0.0.1:%d", ports[1]),
		tls: fmt.Sprintf("127.0.0.1:%d", ports[2]),
		ca:  pki.pool, clientCert: pki.client,
	}
	for _, addr := range []string{m.tcp, m.ws, m.tls} {
		testwait.For(t, "mosquitto listening on "+addr, func() bool {
			select {
			case <-exited:
				t.Fatalf("mosquitto exited: %s", out.String())
			default:
			}
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return false
			}
			c.Close()
			return true
		})
	}
	return m
}

func freePorts(t *testing.T, n int) []int {
	ports := make([]int, n)
	for i := range ports {
		ports[i] = testserve.FreePort(t, "127.0.0.1")
	}
	return ports
}

type testPKI struct {
	caFile, certFile, keyFile string
	pool                      *x509.CertPool
	client                    tls.Certificate
}

// writePKI makes a CA and a server certificate for 127.0.0.1.
func writePKI(t *testing.T, dir string) testPKI {
	t.Helper()
	ca := testpki.NewCA(t, pkix.Name{CommonName: "test CA"})
	leaf := ca.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	p := testPKI{
		caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem"),
		pool: ca.Pool(), client: leaf.TLS(),
	}
	testpki.WriteFile(t, p.caFile, ca.CertPEM())
	testpki.WriteFile(t, p.certFile, leaf.CertPEM())
	testpki.WriteFile(t, p.keyFile, leaf.KeyPEM())
	return p
}

// isTimeout reports a deadline error.
func isTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)
}
