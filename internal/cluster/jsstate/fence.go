package jsstate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Fencing: a node that claimed or adopted a client's session writes the
// session's fence, edgeport.sessions.<shard>.<key> (the claim's token,
// 8 bytes big-endian), before it reads the session's records; and the
// owner's first-phase write of an inbound QoS 2 PUBLISH (Received)
// expects the fence it wrote to be the last one (JetStream's
// Nats-Expected-Last-Subject-Sequence with
// Nats-Expected-Last-Subject-Sequence-Subject). A node that lost the
// session while it was frozen or stopping (its writes still on their way)
// cannot store an identifier after the new owner read the records: the
// write fails, its commit fails and the publish is refused there, and the
// new owner, which did not see it, is the only one to route the message.
// The fence is not under <key>.>, so ending a session leaves it (a
// purge would let an old expectation of "no fence" pass again).
//
// A fence is written only over an older claim's (compare-and-set on the
// subject's last sequence, after reading its token): a node whose claim
// was overtaken never fences out the newer owner.

// errFenced is a claim older than the session's fence: another node
// claimed the session since.
var errFenced = errors.New("a newer claim fenced the session")

// fenceSubject is the subject of clientID's fence.
func (s *Store) fenceSubject(clientID string) string {
	return "edgeport.sessions." + strconv.Itoa(s.shard(clientID)) + "." + clientKey(clientID)
}

// fenceRec is the fence this node wrote for a session it holds.
type fenceRec struct{ token, seq uint64 }

// fence writes clientID's fence for claim token, unless a claim at least
// as new wrote it (errFenced when newer), and remembers it for Received.
func (s *Store) fence(ctx context.Context, clientID string, token uint64) error {
	subject := s.fenceSubject(clientID)
	st := s.streams[s.shard(clientID)]
	for {
		var last, tok uint64
		m, err := st.GetLastMsgForSubject(ctx, subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			if err := retryable(ctx, err); err != nil {
				return fmt.Errorf("reading the fence of %q: %w", clientID, err)
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
			return fmt.Errorf("fencing the session of %q: %w", clientID, errFenced)
		case tok == token && last != 0:
			s.noteFence(clientID, token, last)
			return nil
		}
		msg := nats.NewMsg(subject)
		msg.Data = binary.BigEndian.AppendUint64(nil, token)
		ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(last))
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
			s.noteFence(clientID, token, ack.Sequence)
			return nil
		case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence:
			continue // another claim fenced meanwhile: read it
		default:
			if err := retryable(ctx, err); err != nil {
				return fmt.Errorf("fencing the session of %q: %w", clientID, err)
			}
		}
	}
}

// noteFence remembers the fence of clientID's session this node wrote.
func (s *Store) noteFence(clientID string, token, seq uint64) {
	s.fenceMu.Lock()
	defer s.fenceMu.Unlock()
	if f, ok := s.fences[clientID]; !ok || f.token <= token {
		s.fences[clientID] = fenceRec{token, seq}
	}
}

// fenced sets on msg, a first-phase write of clientID's session, the
// expectation that this node's fence is the session's last: a node that
// never fenced the session expects none.
func (s *Store) fenced(msg *nats.Msg, clientID string) {
	s.fenceMu.Lock()
	f := s.fences[clientID]
	s.fenceMu.Unlock()
	msg.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, s.fenceSubject(clientID))
	msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(f.seq, 10))
}
