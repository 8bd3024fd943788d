// Package modbus is the Modbus TCP connector: it polls registers of Microsoft.Modbus
// device endpoints per dataset, with merged reads, change detection, heartbeat and throttle.
package modbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/simonvetter/modbus"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector"
)

// Connector serves Microsoft.Modbus endpoints.
type Connector struct {
	m   *metrics
	now func() time.Time

	mu     sync.Mutex        // guards routes
	routes map[string]*route // asset name → the run serving its writes
}

var _ connector.Connector = (*Connector)(nil)

// New returns the connector, registering its metrics with reg.
func New(reg prometheus.Registerer) *Connector {
	return &Connector{m: newMetrics(reg), now: time.Now, routes: map[string]*route{}}
}

// EndpointType implements connector.Connector.
func (c *Connector) EndpointType() string { return config.EndpointTypeModbus }

// dataset is one dataset as the poller runs it.
type dataset struct {
	ds       *connector.Dataset
	points   []config.ModbusPoint
	blocks   []*block
	interval time.Duration
	changes  *changes
	pointErr []bool // a transport error is shown on the point
}

// Run implements connector.Connector: it polls each dataset on its own
// goroutine at its samplingInterval; the device's connections serialise
// the requests.
func (c *Connector) Run(ctx context.Context, ep *connector.Endpoint) error {
	var errs config.Errors
	hostport, cfg := config.ParseModbusEndpoint(ep.Spec, "spec.endpoints.inbound."+ep.Name, &errs)
	if len(errs) > 0 {
		return fmt.Errorf("invalid endpoint: %s", strings.Join(errs.Strings(), "; "))
	}
	dev, err := newDevice(ep, hostport, cfg, c.m, c.now)
	if err != nil {
		return err
	}
	defer dev.close()
	var sets []*dataset
	for _, a := range ep.Assets {
		var mine []*dataset
		for i, ds := range a.Datasets {
			d, err := prepare(a.Spec, i, ds, cfg)
			if err != nil {
				ds.SetError(err)
				continue
			}
			mine = append(mine, d)
		}
		sets = append(sets, mine...)
		defer c.register(a.Name, routeFor(dev, mine))()
	}
	// The state stays what the previous run left (a restart after an asset
	// changed is no reconnect); the first poll, made at once, updates it.
	if len(sets) == 0 {
		c.watch(ctx, dev)
		return nil
	}
	var wg sync.WaitGroup
	for _, d := range sets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.pollLoop(ctx, dev, d)
		}()
	}
	wg.Wait()
	return nil
}

// watch keeps checking that a device without datasets is reachable, so
// its status says whether it is.
func (c *Connector) watch(ctx context.Context, dev *device) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		err := dev.do(ctx, uint8(*dev.cfg.UnitID), func(*modbus.ModbusClient) error { return nil })
		if err == nil {
			dev.succeeded()
		} else if ctx.Err() == nil {
			dev.ep.CountError(kindOf(err))
			dev.failed(err, 10*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// prepare resolves a dataset's points, configuration and reads.
func prepare(spec *config.AssetSpec, i int, ds *connector.Dataset, ecfg config.ModbusEndpointConfiguration) (*dataset, error) {
	var errs config.Errors
	dcfg := config.ParseModbusDataset(spec, i, &errs)
	points := make([]config.ModbusPoint, len(ds.DataPoints))
	for j := range ds.DataPoints {
		points[j], _ = config.ParseModbusPoint(&ds.DataPoints[j], fmt.Sprintf("spec.datasets[%d].dataPoints[%d]", i, j), &errs)
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs.Strings(), "; "))
	}
	unit := *ecfg.UnitID
	if dcfg.UnitID != nil {
		unit = *dcfg.UnitID
	}
	return &dataset{
		ds: ds, points: points,
		blocks:   plan(points, uint8(unit), *ecfg.MaxRegistersPerRead, *ecfg.MaxGap),
		interval: time.Duration(*dcfg.SamplingInterval) * time.Millisecond,
		changes:  newChanges(points, *dcfg.KeyFrameCount, time.Duration(*dcfg.PublishingInterval)*time.Millisecond),
		pointErr: make([]bool, len(points)),
	}, nil
}

func (c *Connector) pollLoop(ctx context.Context, dev *device, d *dataset) {
	registerSchema(ctx, dev.ep, d)
	t := time.NewTicker(d.interval)
	defer t.Stop()
	for {
		c.poll(ctx, dev, d)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A poll slower than the interval makes the ticker drop ticks:
			// polls never pile up behind a slow device.
		}
	}
}

// poll reads a dataset once and publishes what changed.
func (c *Connector) poll(ctx context.Context, dev *device, d *dataset) {
	ep := dev.ep
	if !dev.allow(c.now()) {
		c.m.polls.WithLabelValues(ep.Device, ep.Name, pollSkipped).Inc()
		return
	}
	samples := make([]*connector.Sample, len(d.points))
	answered := false
	for _, b := range d.blocks {
		err := c.readBlock(ctx, dev, d, b, samples)
		if ctx.Err() != nil {
			return
		}
		var te *transportError
		if errors.As(err, &te) {
			ep.CountError(te.kind)
			c.m.polls.WithLabelValues(ep.Device, ep.Name, pollFailed).Inc()
			for i := range d.points {
				d.pointErr[i] = true
				d.ds.SetPointError(d.ds.DataPoints[i].Name, fmt.Errorf("device not answering: %w", err))
			}
			dev.failed(err, d.interval)
			return
		}
		answered = true
	}
	if answered {
		dev.succeeded()
	}
	c.m.polls.WithLabelValues(ep.Device, ep.Name, pollOK).Inc()
	for i, s := range samples {
		switch {
		case s == nil:
		case s.Status != nil:
			// Shown even when the sample is not published again (the
			// same exception as last time).
			d.pointErr[i] = true
			d.ds.SetPointError(s.Name, errors.New(s.Status.Symbol))
		case d.pointErr[i]:
			d.pointErr[i] = false
			d.ds.SetPointError(s.Name, nil)
		}
	}
	if f := d.changes.observe(c.now(), samples); f != nil {
		d.ds.Publish(*f)
	}
}

// readBlock reads one merged block (or, once split, its points one by
// one) into samples. It returns a *transportError when the device did not
// answer; exceptions become bad samples of the points concerned.
func (c *Connector) readBlock(ctx context.Context, dev *device, d *dataset, b *block, samples []*connector.Sample) error {
	if b.split || len(b.points) == 1 {
		for _, i := range b.points {
			p := &d.points[i]
			one := &block{unit: b.unit, table: p.Table, start: p.Address, count: p.Count, points: []int{i}}
			if err := c.read(ctx, dev, d, one, samples); err != nil {
				if st, ok := exception(err); ok {
					samples[i] = badSample(d, i, st, dev.now())
					dev.ep.CountError(st.Symbol)
					continue
				}
				return err
			}
		}
		return nil
	}
	err := c.read(ctx, dev, d, b, samples)
	if _, ok := exception(err); ok {
		// One address in the span may be refused (a hole in the
		// register map): read the points on their own from now on.
		b.split = true
		return c.readBlock(ctx, dev, d, b, samples)
	}
	return err
}

// read sends one read request and decodes its points.
func (c *Connector) read(ctx context.Context, dev *device, d *dataset, b *block, samples []*connector.Sample) error {
	var regs []uint16
	var bits []bool
	c.m.requests.WithLabelValues(dev.ep.Device, dev.ep.Name, b.table).Inc()
	err := dev.do(ctx, b.unit, func(mc *modbus.ModbusClient) (err error) {
		switch b.table {
		case config.ModbusCoil:
			bits, err = mc.ReadCoils(uint16(b.start), uint16(b.count))
		case config.ModbusDiscreteInput:
			bits, err = mc.ReadDiscreteInputs(uint16(b.start), uint16(b.count))
		case config.ModbusHolding:
			regs, err = mc.ReadRegisters(uint16(b.start), uint16(b.count), modbus.HOLDING_REGISTER)
		default:
			regs, err = mc.ReadRegisters(uint16(b.start), uint16(b.count), modbus.INPUT_REGISTER)
		}
		return err
	})
	if err != nil {
		return err
	}
	now := dev.now()
	for _, i := range b.points {
		p := &d.points[i]
		off := p.Address - b.start
		var v any
		if bits != nil {
			v = bits[off]
		} else {
			var derr error
			if v, derr = decode(p, regs[off:off+p.Count]); derr != nil {
				d.ds.SetPointError(d.ds.DataPoints[i].Name, derr)
				continue
			}
		}
		samples[i] = &connector.Sample{Name: d.ds.DataPoints[i].Name, Value: v, SourceTimestamp: now}
	}
	return nil
}

func badSample(d *dataset, i int, st connector.StatusCode, now time.Time) *connector.Sample {
	return &connector.Sample{Name: d.ds.DataPoints[i].Name, SourceTimestamp: now, Status: &st}
}

func kindOf(err error) string {
	var te *transportError
	if errors.As(err, &te) {
		return te.kind
	}
	if st, ok := exception(err); ok {
		return st.Symbol
	}
	return "other"
}
