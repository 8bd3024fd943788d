package modbus

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/simonvetter/modbus"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector"
	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// CommandTopicPrefix starts the write topics: a write to a data point of
// an asset is an MQTT 5 request (response topic, correlation data) on
// <prefix>/<asset>/write. The broker authorises the requester's publish
// like any other, so a BrokerAuthorization rule on these topics decides who
// may write to which asset.
const CommandTopicPrefix = "edgeport/modbus"

// WriteRequest is the payload of a write request: the data point
// ("dataset/point", or "point" when the name is unique in the asset) and
// the value, a number (scale and offset undone before writing), true or
// false, or a string.
type WriteRequest struct {
	DataPoint string `json:"dataPoint"`
	Value     any    `json:"value"`
}

// WriteResponse is the payload of the response; the user property
// "status" says "ok" or "error" as well. Value is what the device holds
// after the write, read back and decoded as the data point is.
type WriteResponse struct {
	Status string `json:"status"`
	Value  any    `json:"value,omitempty"`
	Error  string `json:"error,omitempty"`
}

// route is how writes reach one asset: its device run and its points.
type route struct {
	dev    *device
	points map[string]*writePoint // "dataset/point", and "point" when unique
}

type writePoint struct {
	name string
	unit uint8
	p    config.ModbusPoint
}

// register makes an asset's points writable through the run's device
// until the returned function is called.
func (c *Connector) register(asset string, r *route) (unregister func()) {
	c.mu.Lock()
	c.routes[asset] = r
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		if c.routes[asset] == r {
			delete(c.routes, asset)
		}
		c.mu.Unlock()
	}
}

func (c *Connector) routeOf(asset string) *route {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.routes[asset]
}

// Commands serves write requests through an internal MQTT client.
type Commands struct {
	conn   *Connector
	client *client.Client
	log    *slog.Logger
	// AuthorizeResponse, when set, says whether the requester (the client
	// ID the broker vouches for in $edgeport.origin) may subscribe to the
	// response topic it named; when not, the write is refused without a
	// response. Set it before Start.
	AuthorizeResponse func(origin, topic string) bool

	wg      sync.WaitGroup // writes in progress
	stopped atomic.Bool    // set by Stop: no new writes
}

// NewCommands returns the write server of the connector on cl.
func NewCommands(c *Connector, cl *client.Client, log *slog.Logger) *Commands {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Commands{conn: c, client: cl, log: log}
}

// Start subscribes to the write topics (see connector.SubscribeCommands).
func (m *Commands) Start(ctx context.Context) error {
	return connector.SubscribeCommands(ctx, m.client, client.Subscription{
		Filters: []packet.Subscription{{Filter: CommandTopicPrefix + "/+/write", QoS: 1}},
		Handler: m.handle,
	}, "modbus writes", m.log)
}

// Stop unsubscribes and waits for writes in progress; requests arriving
// after Stop are not served.
func (m *Commands) Stop(ctx context.Context) error {
	m.stopped.Store(true)
	connector.UnsubscribeCommands(ctx, m.client, "modbus writes", m.log, CommandTopicPrefix+"/+/write")
	m.wg.Wait()
	return nil
}

// handle runs on the client's delivery goroutine; a write holds it for at
// most two requests to the device, which serialises writes.
func (m *Commands) handle(ctx context.Context, msg *client.Message) {
	m.wg.Add(1)
	defer m.wg.Done()
	if m.stopped.Load() {
		return
	}
	if msg.ResponseTopic == "" {
		m.log.Warn("modbus write without a response topic ignored", "topic", msg.Topic)
		return
	}
	if m.AuthorizeResponse != nil {
		origin, _ := msg.UserValue(broker.OriginProperty)
		if !m.AuthorizeResponse(origin, msg.ResponseTopic) {
			m.log.Warn("modbus write refused: the requester may not subscribe to its response topic",
				"topic", msg.Topic, "client", origin, "responseTopic", msg.ResponseTopic)
			return
		}
	}
	asset := strings.TrimSuffix(strings.TrimPrefix(msg.Topic, CommandTopicPrefix+"/"), "/write")
	resp := m.write(ctx, asset, msg.Payload)
	payload, _ := json.Marshal(resp)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := m.client.Respond(rctx, msg, &client.Message{
		Payload: payload, ContentType: "application/json",
		User: []packet.UserProperty{{Key: "status", Value: resp.Status}},
	})
	if err != nil {
		m.log.Warn("modbus write: responding", "asset", asset, "err", err)
	}
}

func (m *Commands) write(ctx context.Context, asset string, payload []byte) WriteResponse {
	fail := func(format string, args ...any) WriteResponse {
		return WriteResponse{Status: "error", Error: fmt.Sprintf(format, args...)}
	}
	var req WriteRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		return fail("the request must be JSON {\"dataPoint\": ..., \"value\": ...}: %v", err)
	}
	r := m.conn.routeOf(asset)
	if r == nil {
		return fail("asset %q is not served by the Modbus connector (unknown, disabled, or its device is not running)", asset)
	}
	wp := r.points[req.DataPoint]
	switch {
	case wp == nil:
		return fail("asset %q has no data point %q (name it dataset/point)", asset, req.DataPoint)
	case !wp.p.Writable:
		return fail("data point %q is not writable (set dataPointConfiguration.writable: true)", req.DataPoint)
	}
	res := "ok"
	defer func() { m.conn.m.writes.WithLabelValues(r.dev.ep.Device, r.dev.ep.Name, res).Inc() }()
	regs, err := encode(&wp.p, req.Value)
	if err != nil {
		res = "refused"
		return fail("data point %q: %v", req.DataPoint, err)
	}
	p := wp.p
	err = r.dev.do(ctx, wp.unit, func(mc *modbus.ModbusClient) error {
		switch {
		case p.Table == config.ModbusCoil:
			return mc.WriteCoil(uint16(p.Address), regs[0] != 0)
		case len(regs) == 1:
			return mc.WriteRegister(uint16(p.Address), regs[0])
		default:
			return mc.WriteRegisters(uint16(p.Address), regs)
		}
	})
	if err != nil {
		res = "failed"
		return fail("writing %s: %s", req.DataPoint, describe(err))
	}
	var back any
	err = r.dev.do(ctx, wp.unit, func(mc *modbus.ModbusClient) error {
		if p.Table == config.ModbusCoil {
			bits, err := mc.ReadCoils(uint16(p.Address), 1)
			if err == nil {
				back = bits[0]
			}
			return err
		}
		got, err := mc.ReadRegisters(uint16(p.Address), uint16(p.Count), modbus.HOLDING_REGISTER)
		if err == nil {
			back, err = decode(&p, got)
		}
		return err
	})
	if err != nil {
		res = "failed"
		return fail("written, but reading %s back failed: %s", req.DataPoint, describe(err))
	}
	return WriteResponse{Status: "ok", Value: back}
}

// describe names a Modbus exception, or says what else went wrong.
func describe(err error) string {
	if st, ok := exception(err); ok {
		return "the device answered " + st.Symbol
	}
	return err.Error()
}

// routeFor builds the write route of an asset's prepared datasets.
func routeFor(dev *device, sets []*dataset) *route {
	r := &route{dev: dev, points: map[string]*writePoint{}}
	count := map[string]int{}
	for _, d := range sets {
		for i := range d.points {
			count[d.ds.DataPoints[i].Name]++
		}
	}
	for _, d := range sets {
		for i := range d.points {
			name := d.ds.DataPoints[i].Name
			wp := &writePoint{name: name, unit: d.blocks[0].unit, p: d.points[i]}
			r.points[d.ds.Name+"/"+name] = wp
			if count[name] == 1 {
				r.points[name] = wp
			}
		}
	}
	return r
}
