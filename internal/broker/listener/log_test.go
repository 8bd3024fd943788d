package listener

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/testlog"
	"github.com/edgeport/edgeport/internal/testwait"
)

// TestRefusalsAndStatsLogged: connections refused for the same reason from
// the same address are logged at info once a minute, and the stop line
// carries the counters as fields, not a printed Go struct.
func TestRefusalsAndStatsLogged(t *testing.T) {
	var logs testlog.Buffer
	l, err := New(Config{Name: "limited", Addr: "127.0.0.1:0", Protocol: ProtocolTCP, MaxConnections: 1}, echoHandler(),
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	first := dialStream(t, l, nil)
	testwait.For(t, "first connection", func() bool { return l.Stats().Open == 1 })
	for i := range 3 {
		conn, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(testTimeout))
		if _, err := conn.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("over-limit connection not closed")
		}
		conn.Close()
		testwait.For(t, "the rejection counted", func() bool { return l.Stats().Rejected == uint64(i+1) })
	}
	first.Close()
	testwait.For(t, "the first handler to return", func() bool { return l.Stats().Open == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := l.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if n := strings.Count(out, `msg="refused a connection" listener=limited reason=listener_limit remote=127.0.0.1:`); n != 1 {
		t.Fatalf("%d refusal lines for 3 refusals from one address, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, `msg=stopped listener=limited stats.accepted=1 stats.rejected=3 stats.open=0 stats.rejected_listener_limit=3`) {
		t.Fatalf("stop line without the counters as fields:\n%s", out)
	}
}
