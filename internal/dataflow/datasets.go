package dataflow

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/expr"
	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/statestore"
)

// datasetsClientID is the state store client of the flows' datasets.
const datasetsClientID = "$edgeport/dataflow-datasets"

// notifyPrefix starts the state store's notification topics:
// {prefix}{HEX(clientID)}/command/notify/{HEX(key)}.
const notifyPrefix = "clients/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/"

// StateStoreDatasets serves $context(alias) from the state store: each key
// holds JSON Lines records, read with GET when a flow first needs it and
// read again whenever a KEYNOTIFY notification says it changed. Records
// answers from memory, so a message never waits for the state store. It
// talks to the state store as any client would, over the internal MQTT
// client.
type StateStoreDatasets struct {
	serve func(net.Conn) // in-process connection to the broker
	log   *slog.Logger

	mu      sync.Mutex // guards cl, records, errs and watched
	cl      *client.Client
	records map[string][]any
	errs    map[string]error
	watched map[string]bool
	closed  bool
	wg      sync.WaitGroup // refreshes started by notifications
}

// NewStateStoreDatasets returns a dataset source; it connects on first use.
func NewStateStoreDatasets(serve func(net.Conn), log *slog.Logger) *StateStoreDatasets {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &StateStoreDatasets{serve: serve, log: log, records: map[string][]any{}, errs: map[string]error{}, watched: map[string]bool{}}
}

var _ expr.Datasets = (*StateStoreDatasets)(nil)

// Records implements expr.Datasets.
func (s *StateStoreDatasets) Records(key string) []any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.records[key]
}

// Watch loads keys (registering for their change notifications) before
// returning, so that the first message already sees the records.
func (s *StateStoreDatasets) Watch(ctx context.Context, keys []string) error {
	cl, err := s.client(ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		s.mu.Lock()
		known := s.watched[k]
		s.mu.Unlock()
		if known {
			continue
		}
		if _, err := s.call(ctx, cl, "KEYNOTIFY", k); err != nil {
			return fmt.Errorf("dataset %q: KEYNOTIFY: %w", k, err)
		}
		s.mu.Lock()
		s.watched[k] = true
		s.mu.Unlock()
		if err := s.refresh(ctx, cl, k); err != nil {
			return err
		}
	}
	return nil
}

func (s *StateStoreDatasets) client(ctx context.Context) (*client.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("datasets closed")
	}
	if s.cl != nil {
		return s.cl, nil
	}
	cl, err := client.New(client.Options{
		Dialer: client.NewInProcess(s.serve), ClientID: datasetsClientID, CleanStart: true, Logger: s.log,
		// A new session after a reconnection forgets the KEYNOTIFY
		// registrations: make them again.
		OnConnect: func(ack client.ConnAck) {
			if !ack.SessionPresent {
				s.wg.Add(1)
				go func() { // OnConnect must not block on the client (or s.mu)
					defer s.wg.Done()
					s.rewatch()
				}()
			}
		},
	})
	if err != nil {
		return nil, err
	}
	if err := cl.Connect(ctx); err != nil {
		return nil, fmt.Errorf("connecting to the state store: %w", err)
	}
	topic := notifyPrefix + strings.ToUpper(hex.EncodeToString([]byte(datasetsClientID))) + "/command/notify/+"
	err = cl.Subscribe(ctx, client.Subscription{Filters: []packet.Subscription{{Filter: topic, QoS: 1}},
		Handler: func(_ context.Context, m *client.Message) {
			i := strings.LastIndexByte(m.Topic, '/')
			k, err := hex.DecodeString(m.Topic[i+1:])
			if err != nil {
				return
			}
			s.refreshAsync(string(k))
		}})
	if err != nil {
		_ = cl.Close()
		return nil, fmt.Errorf("subscribing to state store notifications: %w", err)
	}
	s.cl = cl
	return cl, nil
}

// rewatch registers every watched key again after a reconnection that lost
// the session.
func (s *StateStoreDatasets) rewatch() {
	s.mu.Lock()
	keys := make([]string, 0, len(s.watched))
	for k := range s.watched {
		keys = append(keys, k)
	}
	clear(s.watched)
	cl := s.cl
	s.mu.Unlock()
	if cl == nil || len(keys) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Watch(ctx, keys); err != nil {
		s.log.Warn("watching datasets again after reconnecting", "err", err)
	}
}

func (s *StateStoreDatasets) refreshAsync(key string) {
	s.mu.Lock()
	cl, closed := s.cl, s.closed
	if !closed {
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if closed || cl == nil {
		return
	}
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.refresh(ctx, cl, key); err != nil {
			s.log.Warn("refreshing a dataset", "key", key, "err", err)
		}
	}()
}

// refresh reads key and parses its JSON Lines records.
func (s *StateStoreDatasets) refresh(ctx context.Context, cl *client.Client, key string) error {
	v, err := s.call(ctx, cl, "GET", key)
	if err != nil {
		return fmt.Errorf("dataset %q: GET: %w", key, err)
	}
	var recs []any
	if v != nil {
		if recs, err = expr.ParseJSONLines(v); err != nil {
			s.mu.Lock()
			s.errs[key] = err
			s.mu.Unlock()
			return fmt.Errorf("dataset %q: %w", key, err)
		}
	}
	s.mu.Lock()
	s.records[key] = recs
	delete(s.errs, key)
	s.mu.Unlock()
	return nil
}

// call sends one RESP3 command and returns a bulk string reply (nil for a
// null reply or a simple string).
func (s *StateStoreDatasets) call(ctx context.Context, cl *client.Client, args ...string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b.WriteString("$" + strconv.Itoa(len(a)) + "\r\n" + a + "\r\n")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cl.Request(ctx, &client.Message{
		Topic: statestore.InvokeTopic, QoS: 1, Payload: b.Bytes(),
		User: []packet.UserProperty{
			{Key: "__ts", Value: statestore.HLC{Wall: time.Now().UnixMilli(), Node: datasetsClientID}.String()},
			{Key: "__protVer", Value: "1.0"},
		},
	})
	if err != nil {
		return nil, err
	}
	if st, ok := resp.UserValue("__stat"); ok && st != "200" {
		msg, _ := resp.UserValue("__stMsg")
		return nil, fmt.Errorf("state store status %s: %s", st, msg)
	}
	return parseReply(resp.Payload)
}

// parseReply reads a RESP3 reply: bulk string, null, simple string or
// error.
func parseReply(p []byte) ([]byte, error) {
	if len(p) == 0 {
		return nil, errors.New("empty reply")
	}
	line, rest, _ := bytes.Cut(p, []byte("\r\n"))
	switch p[0] {
	case '$':
		n, err := strconv.Atoi(string(line[1:]))
		if err != nil {
			return nil, fmt.Errorf("bad reply %q", line)
		}
		if n < 0 {
			return nil, nil
		}
		if len(rest) < n {
			return nil, errors.New("short reply")
		}
		return rest[:n], nil
	case '_', '+', ':':
		return nil, nil
	case '-':
		return nil, errors.New(string(line[1:]))
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}

// Close disconnects.
func (s *StateStoreDatasets) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	cl := s.cl
	s.mu.Unlock()
	var err error
	if cl != nil {
		err = cl.Stop(ctx)
	}
	s.wg.Wait()
	return err
}
