package opcua

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	mqttclient "github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// CommandTopicPrefix starts every command topic. A write to an asset's node
// is requested on <prefix>/<asset>/write, a method call on
// <prefix>/<asset>/call, as MQTT 5 requests (response topic and correlation
// data). The broker authorises the requester's publish like any other, so
// a BrokerAuthorization rule on these topics decides who may command which
// asset.
const CommandTopicPrefix = "edgeport/opcua"

// WriteRequest is the payload of a write request: a data point of the asset
// ("point" or "dataset/point") or, for a node no data point names, its node
// id; value is converted to the node's data type.
type WriteRequest struct {
	DataPoint string `json:"dataPoint,omitempty"`
	NodeID    string `json:"nodeId,omitempty"`
	Value     any    `json:"value"`
}

// CallRequest is the payload of a method call request.
type CallRequest struct {
	ObjectID  string `json:"objectId"`
	MethodID  string `json:"methodId"`
	Arguments []any  `json:"arguments,omitempty"`
}

// CommandResponse is the payload of every response. The user property
// "status" is "ok" or "error" as well, for clients that route on it.
type CommandResponse struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// Outputs are a call's output arguments.
	Outputs []any `json:"outputs,omitempty"`
}

// Commands serves write and call requests over MQTT through an in-process
// client of the broker (internal/mqtt/client). A request is acknowledged
// once its response is published.
type Commands struct {
	conn  *Connector
	serve func(net.Conn)
	log   *slog.Logger

	client *mqttclient.Client
	cancel context.CancelFunc
	wg     sync.WaitGroup // request workers and the subscriber
	sem    chan struct{}  // bounds concurrent requests
}

// maxConcurrentCommands bounds the requests in flight; more wait in the
// client's receive path, which is the broker's flow control.
const maxConcurrentCommands = 16

// NewCommands returns the command server of a connector. serve runs the
// broker's side of a connection (b.ServeConn(c, broker.InternalListener))
// until it closes.
func NewCommands(c *Connector, serve func(net.Conn), log *slog.Logger) *Commands {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Commands{conn: c, serve: serve, log: log, sem: make(chan struct{}, maxConcurrentCommands)}
}

// Start starts the client, which connects in the background (a broker
// that refuses internal clients does not stop Edgeport), and subscribes to
// the command topics as soon as it can.
func (m *Commands) Start(ctx context.Context) error {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	refused := make(chan error, 1)
	c, err := mqttclient.New(mqttclient.Options{
		Dialer:     mqttclient.NewInProcess(m.serve),
		ClientID:   "$edgeport/connector/opcua",
		CleanStart: true,
		Logger:     m.log,
		OnConnectError: func(err error) {
			select {
			case refused <- err:
			default:
			}
		},
	})
	if err != nil {
		cancel()
		return fmt.Errorf("opc ua commands: %w", err)
	}
	if err := c.Start(ctx); err != nil {
		cancel()
		return fmt.Errorf("opc ua commands: %w", err)
	}
	m.client, m.cancel = c, cancel
	subscribed := make(chan error, 1)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		subscribed <- c.Subscribe(rctx, mqttclient.Subscription{
			Filters: []packet.Subscription{
				{Filter: CommandTopicPrefix + "/+/write", QoS: 1},
				{Filter: CommandTopicPrefix + "/+/call", QoS: 1},
			},
			Handler:   m.receive,
			ManualAck: true,
		})
	}()
	// Return subscribed when the broker lets us within a moment, so that
	// a request right after Start is served; otherwise keep trying.
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case err := <-subscribed:
		if err != nil {
			m.log.Warn("opc ua commands: subscribing", "err", err)
		}
	case err := <-refused:
		// Do not hold up the rest of Edgeport for a broker that refuses us.
		m.log.Error("opc ua commands unavailable until the broker accepts their client; still trying", "err", err)
	case <-t.C:
		m.log.Warn("opc ua commands: not subscribed yet; still trying")
	}
	return nil
}

// Stop waits for the requests in flight, then disconnects.
func (m *Commands) Stop(ctx context.Context) error {
	if m.cancel == nil {
		return nil
	}
	m.cancel()
	m.cancel = nil
	done := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		_ = m.client.Stop(ctx)
		return ctx.Err()
	}
	return m.client.Stop(ctx)
}

func (m *Commands) receive(ctx context.Context, p *mqttclient.Message) {
	if p.ResponseTopic == "" {
		m.log.Warn("opc ua command without a response topic ignored", "topic", p.Topic)
		p.Ack()
		return
	}
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer func() { <-m.sem }()
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		resp := m.handle(rctx, p.Topic, p.Payload)
		m.respond(rctx, p, resp)
		p.Ack()
	}()
}

func (m *Commands) handle(ctx context.Context, topic string, payload []byte) CommandResponse {
	rest, ok := strings.CutPrefix(topic, CommandTopicPrefix+"/")
	asset, verb, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		return fail(fmt.Errorf("topic %q is not %s/<asset>/write or call", topic, CommandTopicPrefix))
	}
	m.conn.mu.Lock()
	ref := m.conn.assets[asset]
	m.conn.mu.Unlock()
	if ref == nil {
		return fail(fmt.Errorf("asset %q is not read through a running OPC UA endpoint", asset))
	}
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	switch verb {
	case "write":
		var req WriteRequest
		if err := dec.Decode(&req); err != nil {
			return fail(fmt.Errorf("write request: %w", err))
		}
		node := req.NodeID
		if req.DataPoint != "" {
			if node = ref.points[req.DataPoint]; node == "" {
				return fail(fmt.Errorf("write request: asset %s has no data point %q", asset, req.DataPoint))
			}
		}
		if node == "" {
			return fail(errors.New("write request: give dataPoint or nodeId"))
		}
		if req.Value == nil {
			return fail(errors.New("write request: value is required"))
		}
		if err := ref.session.Write(ctx, node, req.Value); err != nil {
			return fail(err)
		}
		return CommandResponse{Status: "ok"}
	case "call":
		var req CallRequest
		if err := dec.Decode(&req); err != nil {
			return fail(fmt.Errorf("call request: %w", err))
		}
		if req.ObjectID == "" || req.MethodID == "" {
			return fail(errors.New("call request: objectId and methodId are required"))
		}
		out, err := ref.session.Call(ctx, req.ObjectID, req.MethodID, req.Arguments)
		if err != nil {
			return fail(err)
		}
		return CommandResponse{Status: "ok", Outputs: out}
	}
	return fail(fmt.Errorf("unknown command %q (write or call)", verb))
}

func fail(err error) CommandResponse { return CommandResponse{Status: "error", Error: err.Error()} }

func (m *Commands) respond(ctx context.Context, req *mqttclient.Message, resp CommandResponse) {
	body, _ := json.Marshal(resp)
	err := m.client.Respond(ctx, req, &mqttclient.Message{QoS: 1, Payload: body, ContentType: "application/json",
		User: []packet.UserProperty{{Key: "status", Value: resp.Status}}})
	if err != nil {
		m.log.Warn("opc ua command response not published", "topic", req.ResponseTopic, "err", err)
	}
}
