package jsstate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Fencing: a node that claimed or adopted a client's session writes the
// session's fence, edgeport.sessions.<shard>.<key> (the claim's token,
// 8 bytes big-endian), before it reads the session's records. Before it
// routes an inbound QoS 2 PUBLISH whose identifier it stored (phase 2,
// broker/phased.go), the owner writes its fence again, expecting its own
// to be the last (Nats-Expected-Last-Subject-Sequence; Fence): the write
// fails once another node has fenced the session. So a node that lost a
// publisher's session while frozen or stopping, whose first-phase write
// landed after the new owner read the records, does not route the
// message: the new owner, which did not see the identifier, routes the
// client's resend, and nobody else does. The check is a write, not a
// read, because JetStream orders it with the new owner's fence through
// its Raft log: a node that thaws and still believes it leads a stream
// cannot answer it from a stale state.
//
// The fence is not under <key>.>, so ending a session leaves it. It is
// written only over an older claim's (compare-and-set on the subject's
// last sequence, after reading its token): a node whose claim was
// overtaken never fences out the newer owner. Only the session's owner
// writes it, one check at a time (JetStream refuses a write expecting a
// subject's sequence while another such write of the subject is in
// flight), so a publisher's checks are batched (phasePipe).

// errFenced is a claim older than the session's fence: another node
// claimed the session since.
var errFenced = broker.ErrFenced

// fenceSubject is the subject of clientID's fence.
func (s *Store) fenceSubject(clientID string) string {
	return "edgeport.sessions." + strconv.Itoa(s.shard(clientID)) + "." + clientKey(clientID)
}

// fenceRec is the fence this node wrote for a session it holds.
type fenceRec struct{ token, seq uint64 }

// fence writes clientID's fence for claim token, unless a claim at least
// as new wrote it (errFenced when newer), and remembers it for Received.
// It returns the fence's stream sequence: a read of the session's records
// made after it covers the stream at least that far (readRecords).
func (s *Store) fence(ctx context.Context, clientID string, token uint64) (uint64, error) {
	subject := s.fenceSubject(clientID)
	st := s.streams[s.shard(clientID)]
	for {
		var last, tok uint64
		m, err := st.GetLastMsgForSubject(ctx, subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			if err := retryable(ctx, err); err != nil {
				return 0, fmt.Errorf("reading the fence of %q: %w", clientID, err)
			}
			continue
		default:
			last = m.Sequence
			if len(m.Data) == 8 {
				tok = binary.BigEndian.Uint64(m.Data)
			}
		}
		switch {
		case tok > token:
			return 0, fmt.Errorf("fencing the session of %q: %w", clientID, errFenced)
		case tok == token && last != 0:
			s.noteFence(clientID, token, last)
			return last, nil
		}
		msg := nats.NewMsg(subject)
		msg.Data = binary.BigEndian.AppendUint64(nil, token)
		ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(last))
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
			s.noteFence(clientID, token, ack.Sequence)
			return ack.Sequence, nil
		case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence:
			continue // another claim fenced meanwhile: read it
		default:
			if err := retryable(ctx, err); err != nil {
				return 0, fmt.Errorf("fencing the session of %q: %w", clientID, err)
			}
		}
	}
}

// jsWrongLastSequenceConstant is JetStream's answer to a write expecting
// a subject's last sequence while another write of that subject is being
// stored (JSStreamWrongLastSequenceConstantErr).
const jsWrongLastSequenceConstant = 10164

// noteFence remembers the fence of clientID's session this node wrote.
func (s *Store) noteFence(clientID string, token, seq uint64) {
	s.fenceMu.Lock()
	defer s.fenceMu.Unlock()
	if f, ok := s.fences[clientID]; !ok || f.token <= token {
		s.fences[clientID] = fenceRec{token, seq}
	}
}

// Fence implements broker.RemoteSessions: it writes clientID's fence
// again, expecting this node's to be the last, and fails when another
// node fenced the session since (it claimed or adopted it).
//
// A check this node gave up on may have landed all the same: a write held
// in a route's socket while the node was cut off is delivered when the
// partition heals, long after its request timed out. The fence's last
// sequence is then that write's, not the one this node remembers, and
// every later check would fail as if another node had fenced the session:
// every QoS 2 PUBLISH of a client that stayed connected refused, for good.
// So a check refused for its expected sequence reads the fence: when it
// still carries this node's claim (a newer claim writes its own, larger,
// token), the check is written again expecting that sequence; the write,
// ordered by the stream's Raft log with any other node's fence, is what
// proves the session still held here.
func (s *Store) Fence(ctx context.Context, clientID string) error {
	s.fenceMu.Lock()
	f := s.fences[clientID]
	s.fenceMu.Unlock()
	subject := s.fenceSubject(clientID)
	msg := nats.NewMsg(subject)
	msg.Data = binary.BigEndian.AppendUint64(nil, f.token)
	for reread := 0; ; {
		ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(f.seq))
		if err == nil {
			s.noteFence(clientID, f.token, ack.Sequence)
			return nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jsWrongLastSequenceConstant) {
			// Another node's fence, or this node's own: a check given up
			// on that landed late (a partition's heal), or one made
			// meanwhile (a publisher's phase 2 and its check after a
			// pause, broker/pause.go). A fence of this claim later than
			// f is checked again from there; only a write decides.
			if reread == maxFenceRereads {
				return fmt.Errorf("the session of %q: %w", clientID, errFenced)
			}
			reread++
			m, rerr := s.streams[s.shard(clientID)].GetLastMsgForSubject(ctx, subject)
			switch {
			case rerr == nil && len(m.Data) == 8 && binary.BigEndian.Uint64(m.Data) == f.token:
				if m.Sequence > f.seq {
					s.log.Info("a later check of this node's own fence landed first: checking again", "client", clientID, "seq", m.Sequence, "expected", f.seq)
					f.seq = m.Sequence
					continue
				}
				// Read from a replica behind the write that beat this
				// one: a moment, then again.
				select {
				case <-ctx.Done():
					return fmt.Errorf("checking the fence of %q: %w", clientID, ctx.Err())
				case <-time.After(20 * time.Millisecond):
				}
				continue
			case rerr != nil && !errors.Is(rerr, jetstream.ErrMsgNotFound):
				return fmt.Errorf("reading the fence of %q: %w", clientID, rerr)
			}
			return fmt.Errorf("the session of %q: %w", clientID, errFenced)
		}
		if err := retryable(ctx, err); err != nil {
			return fmt.Errorf("checking the fence of %q: %w", clientID, err)
		}
	}
}

// maxFenceRereads bounds how often one Fence reads the fence after a
// refused check (each read that finds this node's claim is followed by a
// write): one late write per check is what a partition leaves behind,
// and a few this node's checks made at the same time.
const maxFenceRereads = 16
