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

	"github.com/eclipse/paho.golang/paho"
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
// MQTT 5 client of the broker.
//
// It uses the Paho MQTT 5 client over a net.Pipe into the broker's internal
// listener until Edgeport's own internal client is on main; the contract
// (topics, payloads, correlation) does not depend on it.
type Commands struct {
	conn  *Connector
	serve func(net.Conn)
	log   *slog.Logger

	client  *paho.Client
	pipe    net.Conn // our end of the connection to the broker
	cancel  context.CancelFunc
	wg      sync.WaitGroup // request workers
	serveWG sync.WaitGroup // the broker's side of the pipe
	sem     chan struct{}  // bounds concurrent requests
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

// Start connects and subscribes to the command topics.
func (m *Commands) Start(ctx context.Context) error {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel = cancel
	client, server := net.Pipe()
	m.pipe = client
	m.serveWG.Add(1)
	go func() {
		defer m.serveWG.Done()
		m.serve(server)
	}()
	m.client = paho.NewClient(paho.ClientConfig{
		Conn: client,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				m.receive(rctx, pr.Packet)
				return true, nil
			},
		},
	})
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if _, err := m.client.Connect(cctx, &paho.Connect{ClientID: "$edgeport/connector/opcua", CleanStart: true, KeepAlive: 0}); err != nil {
		client.Close()
		m.serveWG.Wait()
		// A broker that refuses every CONNECT (limits no CONNECT fits)
		// must not keep Edgeport from starting: writes and calls are then
		// unavailable, and the log says so.
		m.log.Error("opc ua commands unavailable: connecting to the broker failed", "err", err)
		cancel()
		m.cancel = nil
		return nil
	}
	if _, err := m.client.Subscribe(cctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: CommandTopicPrefix + "/+/write", QoS: 1},
		{Topic: CommandTopicPrefix + "/+/call", QoS: 1},
	}}); err != nil {
		return fmt.Errorf("opc ua commands: subscribing: %w", err)
	}
	return nil
}

// Stop disconnects and waits for the requests in flight.
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
		return ctx.Err()
	}
	// The broker may have closed the pipe already (it stops after us in
	// the app, but a test may stop it first): a failed DISCONNECT loses
	// nothing.
	if err := m.client.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		m.log.Debug("opc ua commands: disconnecting", "err", err)
	}
	m.pipe.Close()
	m.serveWG.Wait()
	return nil
}

func (m *Commands) receive(ctx context.Context, p *paho.Publish) {
	if p.Properties == nil || p.Properties.ResponseTopic == "" {
		m.log.Warn("opc ua command without a response topic ignored", "topic", p.Topic)
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

func (m *Commands) respond(ctx context.Context, req *paho.Publish, resp CommandResponse) {
	body, _ := json.Marshal(resp)
	props := &paho.PublishProperties{CorrelationData: req.Properties.CorrelationData, ContentType: "application/json"}
	props.User.Add("status", resp.Status)
	if _, err := m.client.Publish(ctx, &paho.Publish{Topic: req.Properties.ResponseTopic, QoS: 1, Payload: body, Properties: props}); err != nil {
		m.log.Warn("opc ua command response not published", "topic", req.Properties.ResponseTopic, "err", err)
	}
}
