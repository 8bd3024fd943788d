package opcua

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/connector"
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

// Commands serves write and call requests over MQTT on the connectors'
// shared internal client (internal/mqtt/client). A request is acknowledged
// once its response is published.
type Commands struct {
	conn   *Connector
	client *mqttclient.Client
	log    *slog.Logger
	// AuthorizeResponse, when set, says whether the requester (the client
	// ID the broker vouches for in $edgeport.origin) may subscribe to the
	// response topic it named; when not, the request is refused without a
	// response, so that nobody can make the connector publish where they
	// could not read. Set it before Start.
	AuthorizeResponse func(origin, topic string) bool

	stopped atomic.Bool    // set by Stop: no new requests
	wg      sync.WaitGroup // request workers
	sem     chan struct{}  // bounds concurrent requests
}

// maxConcurrentCommands bounds the requests in flight; more wait in the
// client's receive path, which is the broker's flow control.
const maxConcurrentCommands = 16

// NewCommands returns the command server of a connector on cl, the
// connectors' internal client.
func NewCommands(c *Connector, cl *mqttclient.Client, log *slog.Logger) *Commands {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Commands{conn: c, client: cl, log: log, sem: make(chan struct{}, maxConcurrentCommands)}
}

var commandFilters = []string{CommandTopicPrefix + "/+/write", CommandTopicPrefix + "/+/call"}

// Start subscribes to the command topics (see connector.SubscribeCommands).
func (m *Commands) Start(ctx context.Context) error {
	subs := make([]packet.Subscription, len(commandFilters))
	for i, f := range commandFilters {
		subs[i] = packet.Subscription{Filter: f, QoS: 1}
	}
	return connector.SubscribeCommands(ctx, m.client,
		mqttclient.Subscription{Filters: subs, Handler: m.receive, ManualAck: true}, "opc ua commands", m.log)
}

// Stop unsubscribes and waits for the requests in flight.
func (m *Commands) Stop(ctx context.Context) error {
	m.stopped.Store(true)
	connector.UnsubscribeCommands(ctx, m.client, "opc ua commands", m.log, commandFilters...)
	done := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *Commands) receive(ctx context.Context, p *mqttclient.Message) {
	if m.stopped.Load() {
		return // not acknowledged: redelivered to whoever serves next
	}
	if p.ResponseTopic == "" {
		m.log.Warn("opc ua command without a response topic ignored", "topic", p.Topic)
		p.Ack()
		return
	}
	if m.AuthorizeResponse != nil {
		origin, _ := p.UserValue(broker.OriginProperty)
		if !m.AuthorizeResponse(origin, p.ResponseTopic) {
			m.log.Warn("opc ua command refused: the requester may not subscribe to its response topic",
				"topic", p.Topic, "client", origin, "responseTopic", p.ResponseTopic)
			p.Ack()
			return
		}
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
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
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
