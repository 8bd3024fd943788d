// Package otel is the dataflow destination that turns messages into
// OpenTelemetry metrics and logs and exports them to a collector over OTLP.
//
// A message's payload is Azure IoT Operations' OpenTelemetry shape,
// {"metrics": [{name, type, value, ...}], "logs": [{value, level, ...}]},
// usually written by the flow's map rules. A batch of messages becomes one
// metrics export and one logs export; Send returns nil only when the
// collector accepted both.
package otel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	"github.com/edgeport/edgeport/internal/otlp"
)

// Destination exports to one collector.
type Destination struct {
	client   *otlp.Client
	batching stage.Batching
	resource map[string]string
	scope    stage.Template
	now      func() time.Time
}

var _ stage.Destination = (*Destination)(nil)

// Options are what the destination needs besides the endpoint.
type Options struct {
	// Dataflow names the flow (the resource attribute edgeport.dataflow).
	Dataflow string
	Env      stage.Env
}

// Target resolves an endpoint's host and protocol into the OTLP client's
// protocol and endpoint (otlp.Resolve).
func Target(s *config.OTelEndpointSettings) (protocol, endpoint, serverName string, err error) {
	return otlp.Resolve(s.Host, s.Protocol, s.TLS.Enabled())
}

// New builds the destination. dataDestination names the instrumentation
// scope of what the flow sends (${inputTopic} substitutions allowed).
func New(s *config.OTelEndpointSettings, d *config.DataflowDestination, o Options) (*Destination, error) {
	proto, endpoint, serverName, err := Target(s)
	if err != nil {
		return nil, fmt.Errorf("host %q: %w", s.Host, err)
	}
	var cert *config.SecretRef
	a := s.Authentication
	if a.Method == config.AuthX509Certificate {
		cert = a.X509CertificateSettings
	}
	tlsConf, err := o.Env.TLS(s.TLS, cert, serverName)
	if err != nil {
		return nil, err
	}
	headers := map[string]string{}
	for k, v := range s.Headers {
		headers[k] = v
	}
	if a.Method == config.AuthAccessToken {
		tok, err := o.Env.Secret(a.AccessTokenSettings.SecretRef, "token")
		if err != nil {
			return nil, err
		}
		headers["Authorization"] = "Bearer " + tok
	}
	client, err := otlp.NewClient(otlp.Options{
		Protocol: proto, Endpoint: endpoint, Headers: headers, TLS: tlsConf,
		Timeout: time.Duration(*s.TimeoutSeconds) * time.Second,
	})
	if err != nil {
		return nil, err
	}
	dest := &Destination{
		client:   client,
		resource: map[string]string{"service.name": "edgeport", "edgeport.dataflow": o.Dataflow},
		now:      time.Now,
	}
	if dest.scope, err = stage.ParseTemplate(d.DataDestination); err != nil {
		return nil, err
	}
	dest.batching = stage.BatchingOf(s.Batching)
	return dest, nil
}

// Batching implements stage.Batcher.
func (d *Destination) Batching() stage.Batching { return d.batching }

// Send converts the batch and exports it. A message that does not fit the
// shape is rejected permanently (the flow then sends the others one by one
// and dead-letters it). The collector's refusals follow the OTLP
// specification: retryable ones (unavailable, 429, 502-504, a lost
// connection) are retried by the flow; others, and a partial success that
// rejected data points, reject the batch permanently, so the flow resends
// it message by message and dead-letters what the collector refuses
// (accepted messages may arrive twice: at least once).
func (d *Destination) Send(ctx context.Context, msgs []*stage.Message) error {
	now := d.now()
	groups := map[string]*batch{}
	var order []string
	for _, m := range msgs {
		scope, err := d.scope.Expand(m.SourceTopic)
		if err != nil {
			return stage.Permanent(err)
		}
		b, ok := groups[scope]
		if !ok {
			b = newBatch(d.resource, scope)
			groups[scope] = b
			order = append(order, scope)
		}
		at := m.Received
		if at.IsZero() {
			at = now
		}
		if err := b.add(m.Payload, at); err != nil {
			return stage.Permanent(fmt.Errorf("message from %s: %w", m.SourceTopic, err))
		}
	}
	// One export per signal: merge the scopes into one request each.
	var all *batch
	for _, s := range order {
		b := groups[s]
		if all == nil {
			all = b
			continue
		}
		b.metrics.ResourceMetrics().At(0).ScopeMetrics().MoveAndAppendTo(all.metrics.ResourceMetrics().At(0).ScopeMetrics())
		b.logs.ResourceLogs().At(0).ScopeLogs().MoveAndAppendTo(all.logs.ResourceLogs().At(0).ScopeLogs())
		all.nm += b.nm
		all.nl += b.nl
	}
	if all == nil {
		return nil
	}
	if all.nm > 0 {
		if err := d.client.ExportMetrics(ctx, all.metrics); err != nil {
			return classify(err)
		}
	}
	if all.nl > 0 {
		if err := d.client.ExportLogs(ctx, all.logs); err != nil {
			return classify(err)
		}
	}
	return nil
}

func classify(err error) error {
	if errors.Is(err, otlp.ErrRejected) {
		return stage.Permanent(err)
	}
	return err
}

// Close releases the connection.
func (d *Destination) Close(context.Context) error { return d.client.Close() }
