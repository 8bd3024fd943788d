package connector

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/statestore"
)

// ClientPublisher publishes through the internal MQTT client, so connector
// messages take the broker's own path (authorization of the internal
// listener, persistence, limits) like any client's.
type ClientPublisher struct {
	Client *client.Client
}

// Publish implements Publisher: it returns once the broker acknowledged a
// QoS 1 message (or a QoS 0 message was written).
func (p ClientPublisher) Publish(ctx context.Context, m *Message) error {
	return p.Client.Publish(ctx, &client.Message{
		Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain,
		ContentType: m.ContentType, MessageExpiry: m.MessageExpiry, PayloadFormat: m.PayloadFormat, User: m.User,
	})
}

// StateStoreClient sets state store keys with the state store's MQTT
// protocol (a RESP3 SET on its invoke topic, stamped with a hybrid logical
// clock), through the internal MQTT client.
type StateStoreClient struct {
	Client *client.Client
	// Node names this writer in the timestamps (default
	// "edgeport-connector").
	Node    string
	Timeout time.Duration // per request; default 10s

	mu   sync.Mutex // guards last
	last statestore.HLC
}

// Set implements StateStore.
func (s *StateStoreClient) Set(ctx context.Context, key string, value []byte) error {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := s.Client.Request(ctx, &client.Message{
		Topic:   statestore.InvokeTopic,
		QoS:     1,
		Payload: respCommand("SET", key, string(value)),
		User:    []packet.UserProperty{{Key: "__ts", Value: s.next().String()}},
	})
	if err != nil {
		return fmt.Errorf("state store SET %q: %w", key, err)
	}
	if string(resp.Payload) != "+OK\r\n" {
		return fmt.Errorf("state store SET %q: %w: %q", key, errStateStore, resp.Payload)
	}
	return nil
}

var errStateStore = errors.New("refused")

// next returns a timestamp later than every earlier one.
func (s *StateStoreClient) next() statestore.HLC {
	node := s.Node
	if node == "" {
		node = "edgeport-connector"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UnixMilli()
	if now > s.last.Wall {
		s.last = statestore.HLC{Wall: now, Node: node}
	} else {
		s.last.Counter++
	}
	return s.last
}

// respCommand encodes a RESP3 array of bulk strings.
func respCommand(args ...string) []byte {
	b := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, "\r\n"...)
		b = append(b, a...)
		b = append(b, "\r\n"...)
	}
	return b
}
