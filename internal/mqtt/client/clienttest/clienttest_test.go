package clienttest

import (
	"context"
	"log/slog"
	"net"
	"testing"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/testserve"
)

// A client Connect returns is connected to a real broker: a message it
// publishes with QoS 1 is acknowledged.
func TestConnect(t *testing.T) {
	b, err := broker.New(broker.Options{SysInterval: -1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Start(ctx)
	ln := testserve.Loopback(t, func(conn net.Conn) { b.ServeConn(conn, "test") })
	t.Cleanup(func() {
		ln.Close()
		_ = b.Stop(context.Background())
		cancel()
		ln.Wait()
	})
	c := Connect(t, client.Options{Dialer: client.TCP(ln.Addr(), nil), ClientID: "clienttest", NoReconnect: true})
	if err := c.Publish(context.Background(), &client.Message{Topic: "a/b", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
}
