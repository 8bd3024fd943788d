//go:build linux

package broker

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/edgeport/edgeport/internal/testwait"
)

// startBrokerAsync is startBroker serving connections the way the
// listeners do (ServeConnAsync), so that idle ones park. ended counts the
// connections whose end was reported.
func startBrokerAsync(t *testing.T) (addr string, b *Broker, ended *atomic.Int64) {
	t.Helper()
	b, err := New(Options{SysInterval: -1}, testLogger())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Start(ctx)
	ended = new(atomic.Int64)
	ln := testserve.Loopback(t, func(conn net.Conn) { b.ServeConnAsync(conn, "test", func() { ended.Add(1) }) })
	t.Cleanup(func() {
		ln.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := b.Stop(sctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
		cancel()
		ln.Wait()
	})
	return ln.Addr(), b, ended
}

func waitParked(t *testing.T, b *Broker, n int) {
	t.Helper()
	testwait.For(t, "parked connections", func() bool { return b.park.count() == n })
}

// TestParkedConnectionServes: an idle connection parks (its reader
// goroutine ends) and still gets deliveries, answers pings, and parks
// again after; a peer closing a parked connection ends its session with
// its will.
func TestParkedConnectionServes(t *testing.T) {
	addr, b, ended := startBrokerAsync(t)
	sub, _ := connectRaw(t, addr, packet.V5, connV5("sub"))
	sub.subscribe(1, 1, "park/t", "park/will")
	waitParked(t, b, 1)

	pub, _ := connectRaw(t, addr, packet.V5, connV5("pub"))
	pub.send(&packet.Publish{Topic: "park/t", QoS: 1, PacketID: 7, Payload: []byte("to a parked reader")})
	pub.expectAck(packet.PUBACK, 7, packet.Success)
	p := sub.expectPublish("park/t", "to a parked reader")
	sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: p.PacketID}) // wakes sub's reader
	sub.ping()
	waitParked(t, b, 2)
	sub.ping() // wakes it again
	waitParked(t, b, 2)

	will := connV5("will")
	will.Will = &packet.Will{Topic: "park/will", Payload: []byte("gone"), QoS: 1}
	w, _ := connectRaw(t, addr, packet.V5, will)
	waitParked(t, b, 3)
	w.conn.Close()
	sub.expectPublish("park/will", "gone")
	testwait.For(t, "the closed connection's end", func() bool { return ended.Load() == 1 })
}

// TestParkedConnectionEndedByServer: a takeover reaches a parked
// connection (DISCONNECT 0x8E, then the close), and so does the keep-alive
// timeout, which parking neither loses nor extends.
func TestParkedConnectionEndedByServer(t *testing.T) {
	addr, b, ended := startBrokerAsync(t)
	old, _ := connectRaw(t, addr, packet.V5, connV5("taken"))
	waitParked(t, b, 1)
	connectRaw(t, addr, packet.V5, connV5("taken"))
	old.expectDisconnect(packet.SessionTakenOver)
	waitParked(t, b, 1) // the new one

	ka := connV5("keepalive")
	ka.KeepAlive = 1 // the broker allows 1.5 s of silence
	c, _ := connectRaw(t, addr, packet.V5, ka)
	start := time.Now()
	waitParked(t, b, 2)
	c.expectDisconnect(packet.KeepAliveTimeout)
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Fatalf("keep-alive timeout after %v, before 1.5 × keep-alive", took)
	}
	testwait.For(t, "both ends reported", func() bool { return ended.Load() == 2 })
}

// TestStopWithParkedConnections: Stop reaches parked connections (MQTT 5
// clients read 0x8B) and reports every end.
func TestStopWithParkedConnections(t *testing.T) {
	addr, b, ended := startBrokerAsync(t)
	a, _ := connectRaw(t, addr, packet.V5, connV5("a"))
	c, _ := connectRaw(t, addr, packet.V5, connV5("c"))
	waitParked(t, b, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	a.expectDisconnect(packet.ServerShuttingDown)
	c.expectDisconnect(packet.ServerShuttingDown)
	if n := ended.Load(); n != 2 {
		t.Fatalf("%d ends reported after Stop, want 2", n)
	}
}

// TestPacketsAcrossWrites: the broker frames a client's packets the same
// whatever writes carry them: CONNECT, SUBSCRIBE and PINGREQ in one write,
// or one byte per write, before the connection parks and after (its reader
// goroutine gone, the socket on epoll, a new reader started by the first
// byte). A SUBSCRIBE right after CONNECT that the broker closed as
// malformed ("truncated topic filter") was a client interleaving two
// packets on the wire (see internal/auth's watchConn), not this.
func TestPacketsAcrossWrites(t *testing.T) {
	addr, b, _ := startBrokerAsync(t)
	sub := func(id uint16) *packet.Subscribe {
		return &packet.Subscribe{PacketID: id, Subscriptions: []packet.Subscription{{Filter: "plant/line1/#", QoS: 1}}}
	}
	for i, split := range []bool{false, true} {
		c := dialRaw(t, addr, packet.V5)
		write := func(ps ...packet.Packet) {
			var buf []byte
			for _, p := range ps {
				buf = p.Append(buf, packet.V5)
			}
			if !split {
				c.write(buf)
				return
			}
			for j := range buf {
				c.write(buf[j : j+1])
			}
		}
		expect := func(id uint16) {
			t.Helper()
			if a := rawRecv[packet.SubAck](c); a.PacketID != id || len(a.ReasonCodes) != 1 || a.ReasonCodes[0] != 1 {
				t.Fatalf("split %v: SUBACK %+v, want id %d granting QoS 1", split, a, id)
			}
			rawRecv[packet.PingResp](c)
		}
		write(connV5(fmt.Sprintf("writes-%d", i)), sub(1), &packet.PingReq{})
		if a := rawRecv[packet.ConnAck](c); a.ReasonCode != packet.Success {
			t.Fatalf("split %v: CONNACK %v", split, a.ReasonCode)
		}
		expect(1)
		waitParked(t, b, i+1)
		write(sub(2), &packet.PingReq{})
		expect(2)
	}
}
