package dataflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/mqtt"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	"github.com/edgeport/edgeport/internal/mqtt/client"
)

// localSessionExpiry keeps a local flow's session, its outage buffer, as
// long as the broker allows: the buffer must outlive any outage.
const localSessionExpiry = 0xFFFFFFFF * time.Second

// MQTTStages is the MQTTFactory of the engine: local endpoints through the
// in-process dialer, remote ones over the network.
type MQTTStages struct {
	// Local serves an in-process connection to the broker (under its
	// internal listener); nil: no local broker. Each client gets its own
	// dialer, since stopping a client waits for its dialer's connections.
	Local func(net.Conn)
	Env   stage.Env
	Log   *slog.Logger
	seq   atomic.Uint64 // distinguishes destination client IDs
}

var _ MQTTFactory = (*MQTTStages)(nil)

func (m *MQTTStages) endpoint(ep *config.MqttEndpointSettings) mqtt.Endpoint {
	log := m.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := mqtt.Endpoint{Settings: ep, Env: m.Env, Log: log}
	if m.Local != nil {
		e.Local = client.NewInProcess(m.Local)
	}
	return e
}

// sourceID is the client ID of instance i of a flow's source.
func sourceID(p *Plan, ep *config.MqttEndpointSettings, i int) string {
	if ep.Local() {
		return p.ClientID(ClientIDPrefix, i)
	}
	id := ep.ClientIDPrefix + "edgeport-dataflow-" + p.Name
	if p.Instances > 1 {
		id += "-" + strconv.Itoa(i)
	}
	return id
}

// Source implements MQTTFactory.
func (m *MQTTStages) Source(_ context.Context, p *Plan, ep *config.MqttEndpointSettings, instance int) (stage.Source, error) {
	if ep.Local() && m.Local == nil {
		return nil, errors.New("no local broker")
	}
	expiry := localSessionExpiry
	if !ep.Local() {
		expiry = time.Duration(*ep.SessionExpirySeconds) * time.Second
	}
	return mqtt.NewSource(mqtt.SourceOptions{
		Endpoint: m.endpoint(ep), ClientID: sourceID(p, ep, instance), Filters: p.SourceFilters(),
		SharedGroup: p.sharedGroup(), SessionExpiry: expiry, Window: *ep.MaxInflightMessages,
		Unsubscribe: p.PrevFilters,
	}), nil
}

// Destination implements MQTTFactory.
func (m *MQTTStages) Destination(ctx context.Context, p *Plan, ep *config.MqttEndpointSettings, d *config.DataflowDestination) (stage.Destination, error) {
	id := fmt.Sprintf("$edgeport/dataflow-out/%s/%d", p.Name, m.seq.Add(1))
	if !ep.Local() {
		id = fmt.Sprintf("%sedgeport-dataflow-%s-out-%d", ep.ClientIDPrefix, p.Name, m.seq.Load())
	}
	return mqtt.NewDestination(ctx, mqtt.DestinationOptions{Endpoint: m.endpoint(ep), ClientID: id, Topic: d.DataDestination})
}

// Forget implements MQTTFactory: the deleted flow's sessions go.
func (m *MQTTStages) Forget(ctx context.Context, p *Plan) error {
	var errs []error
	for i := range p.Instances {
		errs = append(errs, mqtt.Forget(ctx, m.endpoint(p.Source.MqttSettings), sourceID(p, p.Source.MqttSettings, i)))
	}
	return errors.Join(errs...)
}
