package jsstate

import (
	"context"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/store"
	"github.com/edgeport/edgeport/internal/testwait"
)

// TestEntryPutAndDeletedInOneTxn: an entry put for the first time
// (PutEntryOnce) and deleted in the same transaction — a routed delivery
// acknowledged while its transaction was parked (broker/parked.go) — is
// not written at all, and the rest of the transaction is kept; an entry
// that may be in the stream already (PutEntry: a later write of it) is
// still deleted with a tombstone.
func TestEntryPutAndDeletedInOneTxn(t *testing.T) {
	s := &Store{opts: Options{Shards: 3}}
	id := broker.MessageID{1, 2, 3}
	msg := &store.Message{Topic: "data/x", Payload: []byte("m0"), QoS: 1}

	tx := &txn{s: s}
	tx.PutEntryOnce("dev", &store.Entry{Seq: 7, Msg: *msg, QoS: 1, Routed: id}, func(bool) {})
	tx.tombstone(s.sessionSubject("dev", "r."+routedToken(id)))
	tx.DeleteEntry("dev", 7)
	if got := subjects(tx); len(got) != 1 || !strings.HasSuffix(got[0], ".r."+routedToken(id)) {
		t.Fatalf("writes %q, want only the routed delivery's deletion", got)
	}

	tx = &txn{s: s}
	tx.PutEntry("dev", &store.Entry{Seq: 8, Msg: *msg, QoS: 1, PacketID: 3})
	tx.DeleteEntry("dev", 8)
	if got := subjects(tx); len(got) != 2 || len(tx.ops[1].msg.Data) != 0 || !tx.ops[1].ttl {
		t.Fatalf("writes %q, want the entry and its tombstone", got)
	}
}

func subjects(t *txn) []string {
	var out []string
	for _, o := range t.ops {
		out = append(out, o.msg.Subject)
	}
	return out
}

// TestRoutedQoS1Parked: QoS 1 deliveries node2 made from routed
// deliveries and its subscriber has not acknowledged are written as the
// session's entries (once their transactions stop waiting for the
// PUBACK) and their routed records deleted; acknowledged, the entries go
// too. A second batch is left unacknowledged and node2 killed at once,
// before or after its entries were written: node3 delivers every message
// again, in order.
func TestRoutedQoS1Parked(t *testing.T) {
	nodes := testCluster(t)
	sub, _ := dialWith(t, nodes[1].addr, persistent("dev", true), true)
	sub.subscribe(t, "data/#")
	nodes[1].sync(t)
	syncIndex(t, nodes[0])
	pub := dial(t, nodes[0].addr, &paho.Connect{ClientID: "pub", CleanStart: true})

	const n = 10
	publishN(t, pub, "data/x", "m", n, 1)
	var got []*paho.Publish
	for range n {
		got = append(got, sub.next(t))
	}
	testwait.For(t, "the unacknowledged deliveries stored as entries, their routed records deleted", func() bool {
		e, r := sessionRecords(t, nodes[1], "dev")
		return e == n && r == 0
	})
	for _, p := range got {
		if err := sub.Ack(p); err != nil {
			t.Fatal(err)
		}
	}
	testwait.For(t, "the acknowledged entries deleted", func() bool {
		e, _ := sessionRecords(t, nodes[1], "dev")
		return e == 0
	})

	publishN(t, pub, "data/x", "k", n, 1)
	for range n {
		sub.next(t)
	}
	nodes[1].kill(t)
	back, ack := redial(t, nodes[2].addr, persistent("dev", false))
	if !ack.SessionPresent {
		t.Fatal("CONNACK on node3: session not present")
	}
	expectInOrder(t, back, "k", n)
	t.Logf("%d unacknowledged deliveries written as entries and deleted once acknowledged; %d more, node2 killed, all delivered again on node3 in order", n, n)
}

// sessionRecords counts clientID's entries and routed deliveries in its
// shard's stream (tombstones left out).
func sessionRecords(t testing.TB, nd *node, clientID string) (entries, routed int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	st := nd.st.streams[nd.st.shard(clientID)]
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(nd.st.sessionSubject(clientID, ">")))
	if err != nil {
		t.Fatal(err)
	}
	for subj := range info.State.Subjects {
		m, err := st.GetLastMsgForSubject(ctx, subj)
		if err != nil || len(m.Data) == 0 {
			continue // expired meanwhile, or a tombstone
		}
		switch {
		case strings.Contains(subj, ".e."):
			entries++
		case strings.Contains(subj, ".r."):
			routed++
		}
	}
	return entries, routed
}
