package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testlog"
)

// TestRefusedClientsLoggedOncePerMinute: a refused CONNECT is logged at
// info with the listener, client, address and reason; the same refusal
// from the same address again within the minute is not, another reason is.
func TestRefusedClientsLoggedOncePerMinute(t *testing.T) {
	var logs testlog.Buffer
	b, err := New(Options{SysInterval: -1}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	b.Start(context.Background())
	t.Cleanup(func() { _ = b.Stop(context.Background()) })
	refused := func(cp *packet.Connect, want packet.ReasonCode) {
		t.Helper()
		conn, peer := net.Pipe()
		go b.ServeConn(peer, "edge")
		c := newRawClient(t, conn, packet.V5)
		if ack := c.connect(cp); ack.ReasonCode != want {
			t.Fatalf("CONNACK %s, want %s", ack.ReasonCode, want)
		}
		c.expectClosed()
	}
	for range 3 {
		refused(connV5(InternalClientIDPrefix+"x"), packet.ClientIdentifierNotValid)
	}
	refused(&packet.Connect{ClientID: "w", CleanStart: true, Will: &packet.Will{Topic: "$will", Payload: []byte("x")}}, packet.TopicNameInvalid)
	out := logs.String()
	if n := strings.Count(out, `msg="refused a client"`); n != 2 {
		t.Fatalf("%d refusal lines for 3 identical refusals and 1 other, want 2:\n%s", n, out)
	}
	for _, want := range []string{`level=INFO msg="refused a client" listener=edge client=$edgeport/x remote=pipe`,
		fmt.Sprintf("reason=%q", packet.ClientIdentifierNotValid.String()), fmt.Sprintf("reason=%q", packet.TopicNameInvalid.String())} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if n := b.refusals.Suppressed(packet.ClientIdentifierNotValid.String() + " edge pipe"); n != 2 {
		t.Errorf("%d suppressed identical refusals, want 2", n)
	}
}
