package portal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/statestore"
)

// StateKey is one state store key as the state store page shows it.
type StateKey struct {
	Key     string `json:"key"`
	Value   []byte `json:"value"` // base64 in JSON
	Version string `json:"version"`
}

// maxStateKeys bounds one listing.
const maxStateKeys = 200

// stateClient speaks the state store protocol over the portal's
// in-process MQTT client, as any client would: writes take the state
// store's one ordered path and notify KEYNOTIFY watchers.
type stateClient struct {
	cl *client.Client
}

func (s stateClient) call(ctx context.Context, args ...[]byte) ([]byte, string, error) {
	var payload []byte
	payload = fmt.Appendf(payload, "*%d\r\n", len(args))
	for _, a := range args {
		payload = fmt.Appendf(payload, "$%d\r\n", len(a))
		payload = append(payload, a...)
		payload = append(payload, '\r', '\n')
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id := s.cl.ClientID()
	resp, err := s.cl.Request(ctx, &client.Message{
		Topic: statestore.InvokeTopic, QoS: 1, Payload: payload,
		User: []packet.UserProperty{
			{Key: "__ts", Value: statestore.HLC{Wall: time.Now().UnixMilli(), Node: id}.String()},
			{Key: "__invId", Value: id},
			{Key: "__srcId", Value: id},
			{Key: "__protVer", Value: "1.0"},
		},
	})
	if err != nil {
		return nil, "", fmt.Errorf("state store: %w", err)
	}
	if st, _ := resp.UserValue("__stat"); st != "200" {
		msg, _ := resp.UserValue("__stMsg")
		return nil, "", fmt.Errorf("the state store refused the request: status %s: %s", st, msg)
	}
	if e, ok := bytes.CutPrefix(resp.Payload, []byte("-ERR ")); ok {
		return nil, "", fmt.Errorf("state store: %s", bytes.TrimSuffix(e, []byte("\r\n")))
	}
	ts, _ := resp.UserValue("__ts")
	return resp.Payload, ts, nil
}

// list returns up to maxStateKeys keys beginning with prefix, after
// cursor, with their values and versions, and the next cursor ("" at the end).
func (s stateClient) list(ctx context.Context, prefix, cursor string) ([]StateKey, string, error) {
	res, _, err := s.call(ctx, []byte(statestore.KeysCommand), []byte(prefix), []byte(cursor), []byte(strconv.Itoa(maxStateKeys)))
	if err != nil {
		return nil, "", err
	}
	keys, next, ok := statestore.ParseKeys(res)
	if !ok {
		return nil, "", fmt.Errorf("state store: unexpected answer to %s: %q", statestore.KeysCommand, res)
	}
	out := make([]StateKey, 0, len(keys))
	for _, k := range keys {
		v, ver, err := s.get(ctx, k)
		if errors.Is(err, errNoKey) {
			continue // deleted between the listing and the read
		}
		if err != nil {
			return nil, "", err
		}
		out = append(out, StateKey{Key: string(k), Value: v, Version: ver})
	}
	return out, string(next), nil
}

var errNoKey = errors.New("no such key")

func (s stateClient) get(ctx context.Context, key []byte) ([]byte, string, error) {
	res, ver, err := s.call(ctx, []byte("GET"), key)
	if err != nil {
		return nil, "", err
	}
	v, rest, ok := statestore.ReadBulk(res)
	if !ok || len(rest) != 0 {
		return nil, "", fmt.Errorf("state store: unexpected answer to GET: %q", res)
	}
	if v == nil {
		return nil, "", errNoKey
	}
	return v, ver, nil
}

func (s stateClient) set(ctx context.Context, key, value []byte) (string, error) {
	_, ver, err := s.call(ctx, []byte("SET"), key, value)
	return ver, err
}

func (s stateClient) del(ctx context.Context, key []byte) error {
	_, _, err := s.call(ctx, []byte("DEL"), key)
	return err
}
