package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// commandSubscribeWait bounds how long a command server's start waits for
// its subscription: beyond it (or at the client's first refused connection)
// the server starts anyway and the client subscribes when it connects, so a
// broker that refuses internal clients does not keep Edgeport from starting.
const commandSubscribeWait = 5 * time.Second

// SubscribeCommands makes a command server's subscription at its start;
// what names the server in the log and errors (e.g. "modbus writes").
func SubscribeCommands(ctx context.Context, cl *client.Client, sub client.Subscription, what string, log *slog.Logger) error {
	err := cl.SubscribeWithin(ctx, sub, commandSubscribeWait)
	switch {
	case errors.Is(err, client.ErrSubscribePending):
		log.Warn(what+" unavailable until the connectors' client connects", "err", err)
	case err != nil:
		return fmt.Errorf("%s: subscribing: %w", what, err)
	}
	return nil
}

// UnsubscribeCommands ends a command server's subscription at its stop,
// briefly: the shared client may be disconnected, and it stops after the
// command servers anyway.
func UnsubscribeCommands(ctx context.Context, cl *client.Client, what string, log *slog.Logger, filters ...string) {
	uctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := cl.Unsubscribe(uctx, filters...); err != nil {
		log.Debug(what+": unsubscribing", "err", err)
	}
}
