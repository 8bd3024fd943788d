package broker

import (
	"context"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/testserve"
)

// testLogger logs broker debug output when EDGEPORT_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("EDGEPORT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startBroker runs a broker on a real TCP socket on 127.0.0.1:0 and returns
// its address; everything stops when the test ends.
func startBroker(t testing.TB, opts Options) (string, *Broker) {
	t.Helper()
	if opts.SysInterval == 0 {
		opts.SysInterval = -1
	}
	b, err := New(opts, testLogger())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Start(ctx)
	ln := testserve.Loopback(t, func(conn net.Conn) { b.ServeConn(conn, "test") })
	t.Cleanup(func() {
		ln.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := b.Stop(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		cancel()
		ln.Wait()
	})
	return ln.Addr(), b
}
