// Package mqtt is the dataflow source and destination for MQTT brokers:
// Edgeport's own, in-process through the internal client, or a remote one
// over TCP, TLS or WebSocket. A source's persistent session is the flow's
// outage buffer: messages are acknowledged only once the flow is done
// with them.
package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Endpoint is where a stage connects: the local broker (Local set) or a
// remote one.
type Endpoint struct {
	Settings *config.MqttEndpointSettings
	// Local dials Edgeport's broker in-process; used when Settings has no
	// host.
	Local client.Dialer
	Env   stage.Env
	Log   *slog.Logger
}

// options returns the client options for id, with the endpoint's dialer
// and credentials.
func (e Endpoint) options(id string) (client.Options, error) {
	s := e.Settings
	o := client.Options{
		ClientID:  id,
		KeepAlive: time.Duration(*s.KeepAliveSeconds) * time.Second,
		Logger:    e.Log,
	}
	if *s.KeepAliveSeconds == 0 {
		o.KeepAlive = -1
	}
	if s.Local() {
		if e.Local == nil {
			return o, errors.New("no local broker")
		}
		o.Dialer = e.Local
		return o, nil
	}
	a := s.Authentication
	var cert *config.SecretRef
	if a.Method == config.AuthX509Certificate {
		cert = a.X509CertificateSettings
	}
	host, _, _ := net.SplitHostPort(s.Host)
	tc, err := e.Env.TLS(s.TLS, cert, host)
	if err != nil {
		return o, err
	}
	if s.Protocol == config.ProtocolWebSockets {
		scheme := "ws://"
		if tc != nil {
			scheme = "wss://"
		}
		o.Dialer = client.WebSocket(scheme+s.Host+"/mqtt", tc)
	} else {
		o.Dialer = client.TCP(s.Host, tc)
	}
	if a.Method == config.AuthUsernamePassword {
		ref := a.UsernamePasswordSettings.SecretRef
		if o.Username, err = e.Env.Secret(ref, "username"); err != nil {
			return o, err
		}
		pass, err := e.Env.Secret(ref, "password")
		if err != nil {
			return o, err
		}
		o.Password = []byte(pass)
	}
	return o, nil
}

// SourceOptions configure a Source.
type SourceOptions struct {
	Endpoint
	ClientID string
	Filters  []string
	// SharedGroup, when set, subscribes as $share/<group>/<filter> so that
	// the flow's instances share the messages.
	SharedGroup string
	// SessionExpiry of the persistent session; for the local broker it is
	// as long as the broker allows, so the buffer outlives any outage.
	SessionExpiry time.Duration
	// Window is how many unacknowledged messages the broker may send
	// (Receive Maximum): the flow's in-flight messages.
	Window int
	// Unsubscribe names filters of an earlier version of the flow that
	// the session no longer needs.
	Unsubscribe []string
}

// Source subscribes with QoS 1 in a persistent session and acknowledges
// each message only when the flow acknowledges it.
type Source struct {
	o          SourceOptions
	subscribed chan struct{} // closed by Run once the broker granted the subscription
}

var (
	_ stage.Source     = (*Source)(nil)
	_ stage.Subscriber = (*Source)(nil)
)

// NewSource returns a source; it connects in Run. Run is called once.
func NewSource(o SourceOptions) *Source { return &Source{o: o, subscribed: make(chan struct{})} }

// Subscribed implements stage.Subscriber: closed once the broker answered
// Run's SUBSCRIBE, from when every message published to the filters is
// delivered.
func (s *Source) Subscribed() <-chan struct{} { return s.subscribed }

// Run connects, subscribes and delivers until ctx ends. A message that
// arrives for a subscription of an earlier run before this run subscribed
// (a resumed session) is delivered too, and acknowledged only when the flow
// is done with it.
func (s *Source) Run(ctx context.Context, deliver func(context.Context, stage.Delivery) error) error {
	opts, err := s.o.options(s.o.ClientID)
	if err != nil {
		return err
	}
	opts.SessionExpiry = s.o.SessionExpiry
	opts.ReceiveMaximum = uint16(min(max(s.o.Window, 1), 65535))
	handle := func(hctx context.Context, m *client.Message, wait bool) {
		sm := toStage(m)
		var done chan struct{}
		ack := m.Ack
		if wait {
			// The client acknowledges default-handler messages when the
			// handler returns: return only when the flow is done.
			done = make(chan struct{})
			var once sync.Once
			ack = func() { once.Do(func() { close(done) }) }
		}
		if err := deliver(hctx, stage.Delivery{Msg: sm, Ack: ack}); err != nil {
			return // stopping: the broker redelivers
		}
		if wait {
			select {
			case <-done:
			case <-hctx.Done():
			}
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts.DefaultHandler = func(hctx context.Context, m *client.Message) {
		// hctx ends when the client stops; runCtx when the flow does.
		hctx, stop := context.WithCancel(hctx)
		defer stop()
		go func() {
			select {
			case <-runCtx.Done():
				stop()
			case <-hctx.Done():
			}
		}()
		handle(hctx, m, true)
	}
	cl, err := client.New(opts)
	if err != nil {
		return err
	}
	if err := cl.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer scancel()
		_ = cl.Stop(sctx)
	}()
	subs := make([]packet.Subscription, 0, len(s.o.Filters))
	for _, f := range s.o.Filters {
		if s.o.SharedGroup != "" {
			f = "$share/" + s.o.SharedGroup + "/" + f
		}
		subs = append(subs, packet.Subscription{Filter: f, QoS: 1})
	}
	err = cl.Subscribe(ctx, client.Subscription{
		Filters:   subs,
		ManualAck: true,
		Handler:   func(hctx context.Context, m *client.Message) { handle(hctx, m, false) },
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("subscribing to %s: %w", strings.Join(s.o.Filters, ", "), err)
	}
	close(s.subscribed)
	if len(s.o.Unsubscribe) > 0 {
		old := make([]string, len(s.o.Unsubscribe))
		for i, f := range s.o.Unsubscribe {
			if s.o.SharedGroup != "" {
				f = "$share/" + s.o.SharedGroup + "/" + f
			}
			old[i] = f
		}
		if err := cl.Unsubscribe(ctx, old...); err != nil && ctx.Err() == nil {
			s.o.Log.Warn("unsubscribing a changed flow's old filters", "err", err)
		}
	}
	<-ctx.Done()
	return nil
}

// Forget discards the persistent session of clientID: a deleted flow's
// buffer.
func Forget(ctx context.Context, e Endpoint, clientID string) error {
	opts, err := e.options(clientID)
	if err != nil {
		return err
	}
	opts.CleanStart = true
	opts.SessionExpiry = 0
	opts.NoReconnect = true
	cl, err := client.New(opts)
	if err != nil {
		return err
	}
	if err := cl.Connect(ctx); err != nil {
		return err
	}
	return cl.Stop(ctx)
}

// toStage converts a received message.
func toStage(m *client.Message) *stage.Message {
	now := time.Now()
	sm := &stage.Message{
		Topic: m.Topic, SourceTopic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain,
		ContentType: m.ContentType, ResponseTopic: m.ResponseTopic, CorrelationData: m.CorrelationData,
		PayloadFormat: m.PayloadFormat, Received: now,
	}
	if m.MessageExpiry > 0 {
		sm.Expiry = now.Add(time.Duration(m.MessageExpiry) * time.Second)
	}
	for _, u := range m.User {
		if u.Key == "$edgeport.origin" {
			continue // the broker's note for internal clients, not the publisher's
		}
		sm.UserProperties = append(sm.UserProperties, stage.UserProperty{Key: u.Key, Value: u.Value})
	}
	return sm
}

// DestinationOptions configure a Destination.
type DestinationOptions struct {
	Endpoint
	ClientID string
	Topic    string // dataDestination, with ${inputTopic} substitutions
}

// Destination publishes each message and waits for the broker's
// acknowledgement (QoS 1).
type Destination struct {
	cl     *client.Client
	topic  stage.Template
	qos    byte
	retain bool
	window int
}

var _ stage.Destination = (*Destination)(nil)

// NewDestination starts a publishing client.
func NewDestination(ctx context.Context, o DestinationOptions) (*Destination, error) {
	tpl, err := stage.ParseTemplate(o.Topic)
	if err != nil {
		return nil, err
	}
	opts, err := o.options(o.ClientID)
	if err != nil {
		return nil, err
	}
	cl, err := client.New(opts)
	if err != nil {
		return nil, err
	}
	if err := cl.Start(ctx); err != nil {
		return nil, err
	}
	return &Destination{
		cl: cl, topic: tpl, qos: byte(*o.Settings.Qos), retain: o.Settings.Retain == "Keep",
		window: *o.Settings.MaxInflightMessages,
	}, nil
}

// Batching implements stage.Batcher: a batch is published with up to the
// endpoint's in-flight limit outstanding.
func (d *Destination) Batching() stage.Batching {
	return stage.Batching{MaxMessages: d.window, Latency: 0}
}

// Send publishes the batch, in order, and waits for every acknowledgement.
func (d *Destination) Send(ctx context.Context, batch []*stage.Message) error {
	type result struct {
		code packet.ReasonCode
		err  error
	}
	results := make(chan result, len(batch))
	for _, m := range batch {
		topic, err := d.topic.Expand(m.SourceTopic)
		if err != nil {
			return err
		}
		cm := &client.Message{
			Topic: topic, Payload: m.Payload, QoS: d.qos, Retain: d.retain && m.Retain,
			ContentType: m.ContentType, ResponseTopic: m.ResponseTopic, CorrelationData: m.CorrelationData,
			PayloadFormat: m.PayloadFormat,
		}
		if !m.Expiry.IsZero() {
			left := time.Until(m.Expiry)
			if left < time.Second {
				left = time.Second
			}
			cm.MessageExpiry = uint32(left / time.Second)
		}
		for _, p := range m.UserProperties {
			cm.User = append(cm.User, packet.UserProperty{Key: p.Key, Value: p.Value})
		}
		d.cl.PublishAsync(cm, func(code packet.ReasonCode, err error) { results <- result{code, err} })
	}
	var first error
	for range batch {
		select {
		case r := <-results:
			if r.err != nil && first == nil {
				first = classify(r.err)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return first
}

// classify marks refusals that retrying cannot cure.
func classify(err error) error {
	var re *client.ReasonError
	if errors.As(err, &re) {
		switch re.Code {
		case packet.TopicNameInvalid, packet.PayloadFormatInvalid, packet.PacketTooLarge, packet.NotAuthorized:
			return stage.Permanent(err)
		}
	}
	if errors.Is(err, client.ErrPacketTooLarge) {
		return stage.Permanent(err)
	}
	return err
}

// Close disconnects after what is queued is written.
func (d *Destination) Close(ctx context.Context) error { return d.cl.Stop(ctx) }
