package broker

import "time"

// Parked deliveries (cluster mode). A QoS 1 delivery made from a routed
// delivery (DeliverRouted) is durable already: its routed record stays in
// the session's stream until the transaction that stores the delivery as
// an entry of the session deletes it. So that transaction need not go to
// the store at once. It is parked on the session for routedAckWait; a
// PUBACK that comes meanwhile deletes the entry inside it (dropPending),
// and the store, seeing the entry put and deleted in one transaction
// (broker.Txn's contract allows it to drop both), writes only the routed
// record's deletion: one write per delivery instead of three (the entry,
// the record's deletion, the entry's deletion).
//
// What keeps the guarantees:
//   - Nothing acknowledged is lost: until the parked transaction is
//     written the routed record holds the message; a node that dies with
//     deliveries parked leaves the records, and whoever adopts the
//     session delivers them (QoS 1: again, which at least once allows).
//   - Order: parked transactions are submitted, in their order, before
//     any other write of the session's deliveries or records (another
//     delivery, the session's record, a handover, its end), so the
//     session's writes reach the store in the order they were made, as
//     without parking; an adopter reading the stream after a crash finds
//     a prefix of them (and the parked ones' routed records, which come
//     after the queue, as their deliveries did).
//   - A barrier (Settle) or a handover waits for nothing parked: a
//     handover submits them first, the broker's Stop too.

// routedAckWait is how long a QoS 1 delivery made from a routed delivery
// waits for its PUBACK before its entry is written. A client on a healthy
// network acknowledges within milliseconds; longer only delays the entry
// of a delivery still unacknowledged, which its routed record covers.
const routedAckWait = 250 * time.Millisecond

// parkLocked parks tx, which stores a delivery made from a routed
// delivery, on s (see above). s.mu is held.
func (b *Broker) parkLocked(s *session, tx *txnCtx) {
	s.parked = append(s.parked, tx)
	if s.parkTimer != nil {
		return
	}
	s.parkTimer = b.clk.AfterFunc(routedAckWait, func() {
		b.inBackground(func() {
			s.mu.Lock()
			b.unparkLocked(s)
			s.mu.Unlock()
			b.flush()
		})
	})
}

// unparkLocked submits s's parked transactions, in their order; the
// caller flushes once it holds no broker lock. s.mu is held.
func (b *Broker) unparkLocked(s *session) {
	if s.parkTimer != nil {
		s.parkTimer.Stop()
		s.parkTimer = nil
	}
	for i, tx := range s.parked {
		b.submit(tx, nil)
		s.parked[i] = nil
	}
	s.parked = s.parked[:0]
}
