package store

import "fmt"

// The record encodings, for backends that keep the broker's records
// elsewhere than in Pebble (cluster mode keeps them in NATS JetStream).
// They are the same versioned, length-checked encodings as on disk.

// AppendMessage appends the encoding of m to b.
func AppendMessage(b []byte, m *Message) []byte { return appendMessage(b, m) }

// DecodeMessage decodes a record made by AppendMessage; the result may
// alias b.
func DecodeMessage(b []byte) (*Message, error) {
	m := new(Message)
	if err := decodeMessage(b, m, nil); err != nil {
		return nil, fmt.Errorf("%w: message record: %w", ErrCorrupt, err)
	}
	return m, nil
}

// AppendEntry appends the encoding of e to b (its Seq is not encoded).
func AppendEntry(b []byte, e *Entry) []byte { return appendEntry(b, e) }

// DecodeEntry decodes a record made by AppendEntry and gives it seq; the
// result may alias b.
func DecodeEntry(b []byte, seq uint64) (*Entry, error) {
	e := new(Entry)
	if err := decodeEntry(b, e, nil); err != nil {
		return nil, fmt.Errorf("%w: entry record: %w", ErrCorrupt, err)
	}
	e.Seq = seq
	return e, nil
}

// AppendSession appends the encoding of s to b (its ClientID is not
// encoded).
func AppendSession(b []byte, s *Session) []byte { return appendSession(b, s) }

// DecodeSession decodes a record made by AppendSession and gives it
// clientID; the result may alias b.
func DecodeSession(b []byte, clientID string) (*Session, error) {
	s := new(Session)
	if err := decodeSession(b, s, nil); err != nil {
		return nil, fmt.Errorf("%w: session record: %w", ErrCorrupt, err)
	}
	s.ClientID = clientID
	return s, nil
}
