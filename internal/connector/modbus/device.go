package modbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"time"

	"github.com/simonvetter/modbus"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector"
)

// device is one Modbus TCP endpoint: a pool of Concurrency connections
// (one by default, so the device's requests are serialised) and its
// health.
type device struct {
	ep    *connector.Endpoint
	cfg   config.ModbusEndpointConfiguration
	conns chan *conn // the idle connections; a request holds one
	m     *metrics
	now   func() time.Time

	mu       sync.Mutex // guards the health fields below
	failures int        // consecutive failed polls
	degraded bool
	backoff  time.Duration
	nextTry  time.Time
	answered bool // the device answered at least once
}

type conn struct {
	c    *modbus.ModbusClient
	open bool
}

func newDevice(ep *connector.Endpoint, hostport string, cfg config.ModbusEndpointConfiguration, m *metrics, now func() time.Time) (*device, error) {
	d := &device{ep: ep, cfg: cfg, m: m, now: now, conns: make(chan *conn, *cfg.Concurrency)}
	for range *cfg.Concurrency {
		c, err := modbus.NewClient(&modbus.ClientConfiguration{
			URL:     "tcp://" + hostport,
			Timeout: time.Duration(*cfg.RequestTimeout) * time.Millisecond,
			Logger:  log.New(io.Discard, "", 0), // errors are returned and reported by the driver
		})
		if err != nil {
			return nil, fmt.Errorf("modbus client for %s: %w", hostport, err)
		}
		d.conns <- &conn{c: c}
	}
	return d, nil
}

// close closes every connection; no request may be running.
func (d *device) close() {
	for range cap(d.conns) {
		c := <-d.conns
		if c.open {
			_ = c.c.Close()
		}
	}
}

// do runs one request on an idle connection, opening it first when needed.
// A transport error closes the connection, so the next request reconnects;
// an exception from the device leaves it open.
func (d *device) do(ctx context.Context, unit uint8, fn func(c *modbus.ModbusClient) error) error {
	var c *conn
	select {
	case c = <-d.conns:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { d.conns <- c }()
	if !c.open {
		if err := c.c.Open(); err != nil {
			return &transportError{kind: "connect", err: err}
		}
		c.open = true
	}
	if err := c.c.SetUnitId(unit); err != nil {
		return err
	}
	start := time.Now()
	err := fn(c.c)
	d.m.latency.WithLabelValues(d.ep.Device, d.ep.Name).Observe(time.Since(start).Seconds())
	if err == nil {
		return nil
	}
	if _, ok := exception(err); ok {
		return err
	}
	_ = c.c.Close()
	c.open = false
	kind := "io"
	if errors.Is(err, modbus.ErrRequestTimedOut) || os.IsTimeout(err) {
		kind = "timeout"
	}
	return &transportError{kind: kind, err: err}
}

// transportError: the device did not answer (connect, timeout, I/O).
type transportError struct {
	kind string
	err  error
}

func (e *transportError) Error() string { return e.kind + ": " + e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// allow says whether a poll may run now: always while healthy; while
// degraded, one probe per backoff interval.
func (d *device) allow(now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.degraded {
		return true
	}
	if now.Before(d.nextTry) {
		return false
	}
	d.nextTry = now.Add(d.backoff)
	return true
}

// succeeded records that the device answered.
func (d *device) succeeded() {
	d.mu.Lock()
	recovered := d.degraded
	first := !d.answered
	d.failures, d.degraded, d.backoff, d.answered = 0, false, 0, true
	d.mu.Unlock()
	if recovered {
		d.ep.Log.Info("modbus device recovered")
		d.m.degraded.WithLabelValues(d.ep.Device, d.ep.Name).Set(0)
	}
	if recovered || first || d.ep.State() != connector.StateConnected {
		d.ep.SetState(connector.StateConnected, nil)
	}
}

// failed records a poll the device did not answer; after DegradedAfter in
// a row the device is degraded and probed with exponential backoff.
func (d *device) failed(err error, interval time.Duration) {
	now := d.now()
	d.mu.Lock()
	d.failures++
	degrade := !d.degraded && d.failures >= *d.cfg.DegradedAfter
	if degrade {
		d.degraded = true
		d.backoff = interval
	}
	if d.degraded {
		d.backoff = min(2*d.backoff, time.Duration(*d.cfg.MaxBackoff)*time.Millisecond)
		d.nextTry = now.Add(d.backoff)
	}
	failures, degraded, answered := d.failures, d.degraded, d.answered
	d.mu.Unlock()
	switch {
	case degrade:
		d.ep.Log.Warn("modbus device degraded: polling with backoff", "failures", failures, "err", err)
		d.m.degraded.WithLabelValues(d.ep.Device, d.ep.Name).Set(1)
		d.ep.SetState(connector.StateDegraded, err)
	case degraded:
		d.ep.SetState(connector.StateDegraded, err)
	case answered:
		d.ep.SetState(d.ep.State(), err)
	default:
		d.ep.SetState(connector.StateConnecting, err)
	}
}

// Modbus exception codes and the names Edgeport reports them by.
var exceptions = []struct {
	err  error
	code uint8
	name string
}{
	{modbus.ErrIllegalFunction, 1, "IllegalFunction"},
	{modbus.ErrIllegalDataAddress, 2, "IllegalDataAddress"},
	{modbus.ErrIllegalDataValue, 3, "IllegalDataValue"},
	{modbus.ErrServerDeviceFailure, 4, "ServerDeviceFailure"},
	{modbus.ErrAcknowledge, 5, "Acknowledge"},
	{modbus.ErrServerDeviceBusy, 6, "ServerDeviceBusy"},
	{modbus.ErrMemoryParityError, 8, "MemoryParityError"},
	{modbus.ErrGWPathUnavailable, 10, "GatewayPathUnavailable"},
	{modbus.ErrGWTargetFailedToRespond, 11, "GatewayTargetDeviceFailedToRespond"},
}

// exception returns the status of a Modbus exception answer: Symbol is the
// exception's name, Code 0x80000000 (bad) plus the exception code.
func exception(err error) (connector.StatusCode, bool) {
	for _, e := range exceptions {
		if errors.Is(err, e.err) {
			return connector.StatusCode{Code: 0x80000000 | uint32(e.code), Symbol: e.name}, true
		}
	}
	return connector.StatusCode{}, false
}
