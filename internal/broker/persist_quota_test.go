// Quota behaviour of the durable broker: a store at its quota recovers
// once consumers have drained it (without a restart), and a message refused
// with 0x97 reaches nobody, so the publisher's retry is not a duplicate.

package broker

import (
	"strconv"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
	"github.com/edgeport/edgeport/internal/testwait"
)

// fillToQuota starts a durable broker whose store has room for about
// headroom more bytes, gives client ID sub a persistent offline session on
// topic, and publishes 1 KiB QoS 1 messages into it until three in a row are
// refused with 0x97. It returns the broker, the still-connected publisher,
// the quota and the accepted messages' numbers (each payload starts with
// its number and a space).
//
// The quota is soft (store.Options.QuotaBytes): the growth of a WAL that
// was not recycled is only counted once the memtable is flushed, so with
// the default 4 MiB memtable anything from about a hundred to a few
// thousand messages is accepted.
func fillToQuota(t *testing.T, sub, topic string, headroom int64) (*durableBroker, *rawClient, int64, []int) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	quota := st.Usage() + headroom
	st.Close()
	d := startDurableBrokerWith(t, Options{MaxQueuedMessages: -1}, dir, store.Options{QuotaBytes: quota})
	s, _ := connectRaw(t, d.addr, packet.V5, connPersist(sub, true, 3600))
	s.subscribe(1, 1, topic)
	s.leave()
	pub, _ := connectRaw(t, d.addr, packet.V5, connV5(sub+"-pub"))
	payload := make([]byte, 1024)
	var accepted []int
	for i, refused := 0, 0; refused < 3; i++ {
		copy(payload, strconv.Itoa(i)+" ")
		pub.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: topic, Payload: payload})
		if a := rawRecv[packet.Ack](pub); a.ReasonCode == packet.Success {
			accepted = append(accepted, i)
		} else {
			refused++
		}
	}
	return d, pub, quota, accepted
}

func TestPersistQuotaRecoversWithoutRestart(t *testing.T) {
	d, pub, quota, accepted := fillToQuota(t, "qr-sub", "qr/t", 256<<10)
	sub, _ := connectRaw(t, d.addr, packet.V5, connPersist("qr-sub", false, 3600))
	sub.collect(len(accepted)) // acknowledges, so the entries are deleted
	sub.ping()
	payload := make([]byte, 1024)
	// Each poll is a publish; the store re-measures its usage by itself.
	if !testwait.Within(testwait.Timeout, func() bool {
		pub.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: "qr/t", Payload: payload})
		return rawRecv[packet.Ack](pub).ReasonCode == packet.Success
	}) {
		t.Fatalf("store still full %v after its queue was consumed: usage %d KiB, quota %d KiB", testwait.Timeout, d.st.Usage()>>10, quota>>10)
	}
}

// A PUBLISH refused with 0x97 must reach nobody, or the publisher's retry
// is a duplicate (for QoS 2, exactly once broken). Besides the up-front
// refusal while Store.Full(), the message whose own commit hits the quota
// was already routed: its deliveries carry the failed txnCtx and are dropped
// from the queue and from resumed inflight windows instead of being sent.
func TestPersistQuotaRefusedNotDelivered(t *testing.T) {
	for range 20 { // the race is narrow: refusal at commit rather than up front
		d, _, _, accepted := fillToQuota(t, "qn-sub", "qn/t", 128<<10)
		sub, _ := connectRaw(t, d.addr, packet.V5, connPersist("qn-sub", false, 3600))
		// The subscriber acknowledges as it goes: more messages may have
		// been accepted than fit in one inflight window (1024).
		want := make(map[string]bool, len(accepted))
		for _, i := range accepted {
			want[strconv.Itoa(i)] = true
		}
		for len(want) > 0 {
			p := sub.next()
			m, ok := p.Pkt.(*packet.Publish)
			if !ok {
				t.Fatalf("got %s with %d of %d accepted messages not delivered", p, len(want), len(accepted))
			}
			sub.send(&packet.Ack{Type: packet.PUBACK, PacketID: m.PacketID})
			n, _, _ := strings.Cut(string(m.Payload), " ")
			if !want[n] {
				t.Fatalf("delivered message %s: refused with 0x97, or delivered twice (%d accepted)", n, len(accepted))
			}
			delete(want, n)
		}
		sub.ping() // nothing more: no refused message follows
		d.stop()
	}
}

// TestPersistFullQoS0: while the store is full, a retained QoS 0 message
// (which would be written) is dropped and counted, and a plain QoS 0
// message, which needs no disk, still reaches the subscribers online
// (issue 10, item 4).
func TestPersistFullQoS0(t *testing.T) {
	d, pub, _, _ := fillToQuota(t, "q0-sub", "q0/t", 128<<10)
	online, _ := connectRaw(t, d.addr, packet.V5, connV5("q0-online"))
	online.subscribe(1, 0, "q0/live/#")
	dropped := d.b.stats.dropped[dropQuota].Load()
	pub.send(&packet.Publish{Topic: "q0/live/retained", Retain: true, Payload: []byte("would be written")})
	pub.send(&packet.Publish{Topic: "q0/live/plain", Payload: []byte("still delivered")})
	online.expectPublish("q0/live/plain", "still delivered")
	if _, ok := d.b.retained.Get("q0/live/retained"); ok {
		t.Fatal("a retained QoS 0 message was kept while the store is full")
	}
	if got := d.b.stats.dropped[dropQuota].Load() - dropped; got != 1 {
		t.Fatalf("%d quota drops counted, want 1 (the retained QoS 0 message)", got)
	}
}
