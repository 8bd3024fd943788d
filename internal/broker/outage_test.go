package broker

import (
	"net"
	"strconv"
	"testing"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// A dataflow's session ($edgeport/dataflow/...) is its outage buffer: it
// keeps every message while offline, past MaxQueuedMessages, where an
// ordinary persistent session keeps only that many.
func TestOutageBufferIgnoresQueueLength(t *testing.T) {
	d := startDurableBroker(t, Options{MaxQueuedMessages: 10}, t.TempDir())
	const flowID = OutageBufferPrefix + "plant"
	dialPipe := func(id string, clean bool) *rawClient {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			d.b.ServeConn(server, InternalListener)
		}()
		c := newRawClient(t, client, packet.V5)
		t.Cleanup(func() { client.Close(); <-done })
		if ack := c.connect(connPersist(id, clean, 3600)); ack.ReasonCode != packet.Success {
			t.Fatalf("CONNACK %v", ack.ReasonCode)
		}
		return c
	}
	flow := dialPipe(flowID, true)
	flow.subscribe(1, 1, "ob/#")
	flow.leave()
	plain, _ := connectRaw(t, d.addr, packet.V5, connPersist("plain", true, 3600))
	plain.subscribe(1, 1, "ob/#")
	plain.leave()

	pub, _ := connectRaw(t, d.addr, packet.V5, connV5("ob-pub"))
	const n = 50
	for i := range n {
		publishAcked(pub, &packet.Publish{QoS: 1, PacketID: 1, Topic: "ob/t", Payload: []byte(strconv.Itoa(i))})
	}
	if msgs, _, ok := d.b.SessionBacklog(flowID); !ok || msgs != n {
		t.Fatalf("flow backlog %d (session %v), want %d", msgs, ok, n)
	}
	if msgs, _, _ := d.b.SessionBacklog("plain"); msgs != 10 {
		t.Fatalf("plain session backlog %d, want the queue length 10", msgs)
	}
	flow = dialPipe(flowID, false)
	got := flow.collect(n)
	for i, p := range got {
		if string(p.Payload) != strconv.Itoa(i) {
			t.Fatalf("message %d is %q: order or content lost", i, p.Payload)
		}
	}
}
