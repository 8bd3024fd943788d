// Package kafka is the dataflow source and destination for Kafka, on
// franz-go: records in and out with batching, compression, acks, partition
// strategies, SASL and TLS; consumer groups commit only what the flow has
// acknowledged.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
)

// common returns the connection options of an endpoint.
func common(s *config.KafkaEndpointSettings, env stage.Env) ([]kgo.Opt, error) {
	hosts := strings.Split(s.Host, ",")
	for i := range hosts {
		hosts[i] = strings.TrimSpace(hosts[i])
	}
	opts := []kgo.Opt{kgo.SeedBrokers(hosts...)}
	a := s.Authentication
	var cert *config.SecretRef
	if a != nil && a.Method == config.AuthX509Certificate {
		cert = a.X509CertificateSettings
	}
	host, _, _ := net.SplitHostPort(hosts[0])
	tc, err := env.TLS(s.TLS, cert, host)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if a != nil && a.Method == config.AuthSasl {
		user, err := env.Secret(a.SaslSettings.SecretRef, "username")
		if err != nil {
			return nil, err
		}
		pass, err := env.Secret(a.SaslSettings.SecretRef, "password")
		if err != nil {
			return nil, err
		}
		var m sasl.Mechanism
		switch a.SaslSettings.SaslType {
		case config.SaslPlain:
			m = plain.Auth{User: user, Pass: pass}.AsMechanism()
		case config.SaslScramSha256:
			m = scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
		case config.SaslScramSha512:
			m = scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// Destination produces records.
type Destination struct {
	cl        *kgo.Client
	topic     stage.Template
	strategy  string
	keyProp   string
	copyProps bool
	batching  stage.Batching
}

var _ stage.Destination = (*Destination)(nil)

// NewDestination connects a producer for the endpoint; records go to the
// topic d.DataDestination.
func NewDestination(s *config.KafkaEndpointSettings, d *config.DataflowDestination, env stage.Env) (*Destination, error) {
	opts, err := common(s, env)
	if err != nil {
		return nil, err
	}
	tpl, err := stage.ParseTemplate(d.DataDestination)
	if err != nil {
		return nil, err
	}
	b := s.Batching
	latency := time.Duration(*b.LatencyMs) * time.Millisecond
	if b.Mode == "Disabled" {
		latency = 0
	}
	// The flow retries a batch Kafka did not take and accepts duplicates
	// (at least once), so a Send must be able to end when its context
	// does, rather than wait for the producer's own retries.
	opts = append(opts, kgo.AllowIdempotentProduceCancellation(), kgo.RecordDeliveryTimeout(30*time.Second),
		kgo.AllowAutoTopicCreation(), kgo.ProducerLinger(latency), kgo.ProducerBatchMaxBytes(int32(min(*b.MaxBytes, 1<<28))))
	switch s.KafkaAcks {
	case "Zero":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	case "One":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	default:
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	}
	switch s.Compression {
	case "Gzip":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.GzipCompression()))
	case "Snappy":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	case "Lz4":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	default:
		opts = append(opts, kgo.ProducerBatchCompression(kgo.NoCompression()))
	}
	if s.PartitionStrategy == "Static" {
		opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	} else {
		// Records with a key go to the key's partition; others stick to
		// a partition per batch.
		opts = append(opts, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	maxMsgs := *b.MaxMessages
	if b.Mode == "Disabled" {
		maxMsgs = 1
	}
	return &Destination{
		cl: cl, topic: tpl, strategy: s.PartitionStrategy, keyProp: s.PartitionKeyProperty,
		copyProps: s.CopyMqttProperties != "Disabled",
		batching:  stage.Batching{MaxMessages: maxMsgs, MaxBytes: *b.MaxBytes, Latency: latency},
	}, nil
}

// Batching implements stage.Batcher.
func (d *Destination) Batching() stage.Batching { return d.batching }

// Send produces the batch and waits until every record is acknowledged
// with the configured acks.
func (d *Destination) Send(ctx context.Context, batch []*stage.Message) error {
	recs := make([]*kgo.Record, 0, len(batch))
	for _, m := range batch {
		topic, err := d.topic.Expand(m.SourceTopic)
		if err != nil {
			return err
		}
		r := &kgo.Record{Topic: topic, Value: m.Payload, Key: m.Key}
		switch d.strategy {
		case "Topic":
			r.Key = []byte(m.SourceTopic)
		case "Property":
			if v, ok := m.Property(d.keyProp); ok {
				r.Key = []byte(v)
			}
		case "Static":
			r.Partition = 0
		}
		if d.copyProps {
			r.Headers = headers(m)
		}
		recs = append(recs, r)
	}
	if err := d.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return classify(err)
	}
	return nil
}

// headers carries the MQTT properties as Kafka headers.
func headers(m *stage.Message) []kgo.RecordHeader {
	var h []kgo.RecordHeader
	for _, p := range m.UserProperties {
		h = append(h, kgo.RecordHeader{Key: p.Key, Value: []byte(p.Value)})
	}
	if m.ContentType != "" {
		h = append(h, kgo.RecordHeader{Key: "mqtt-content-type", Value: []byte(m.ContentType)})
	}
	if m.SourceTopic != "" {
		h = append(h, kgo.RecordHeader{Key: "mqtt-topic", Value: []byte(m.SourceTopic)})
	}
	if m.ResponseTopic != "" {
		h = append(h, kgo.RecordHeader{Key: "mqtt-response-topic", Value: []byte(m.ResponseTopic)})
	}
	if len(m.CorrelationData) > 0 {
		h = append(h, kgo.RecordHeader{Key: "mqtt-correlation-data", Value: m.CorrelationData})
	}
	return h
}

// classify marks the errors that retrying cannot cure.
func classify(err error) error {
	for _, perm := range []error{kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidTopicException,
		kerr.TopicAuthorizationFailed, kerr.InvalidRecord, kerr.CorruptMessage} {
		if errors.Is(err, perm) {
			return stage.Permanent(err)
		}
	}
	return err
}

// Close flushes and disconnects.
func (d *Destination) Close(ctx context.Context) error {
	err := d.cl.Flush(ctx)
	d.cl.Close()
	return err
}

// Source consumes topics in a consumer group and commits the offset of a
// record only once the flow acknowledged it (and every record before it in
// its partition).
type Source struct {
	cl *kgo.Client
}

var _ stage.Source = (*Source)(nil)

// NewSource joins the consumer group s.ConsumerGroupID (default: the flow
// name) on topics.
func NewSource(s *config.KafkaEndpointSettings, topics []string, group string, env stage.Env) (*Source, error) {
	opts, err := common(s, env)
	if err != nil {
		return nil, err
	}
	if s.ConsumerGroupID != "" {
		group = s.ConsumerGroupID
	}
	opts = append(opts,
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Marked offsets only: a record is marked when the flow acked it.
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(time.Second),
		kgo.BlockRebalanceOnPoll(),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return &Source{cl: cl}, nil
}

// Run polls records and delivers them; it commits the marked offsets and
// leaves the group when ctx ends.
func (s *Source) Run(ctx context.Context, deliver func(context.Context, stage.Delivery) error) error {
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		s.cl.AllowRebalance() // a poll that ended with ctx may hold the rebalance
		_ = s.cl.CommitMarkedOffsets(cctx)
		s.cl.Close() // leaves the group
	}()
	for {
		fs := s.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if fs.IsClientClosed() {
			return errors.New("kafka client closed")
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				ferr = fmt.Errorf("fetching %s/%d: %w", t, p, err)
			}
		})
		err := func() error {
			defer s.cl.AllowRebalance()
			for it := fs.RecordIter(); !it.Done(); {
				r := it.Next()
				m := &stage.Message{Topic: r.Topic, SourceTopic: r.Topic, Payload: r.Value, Key: r.Key, QoS: 1, Received: time.Now()}
				for _, h := range r.Headers {
					m.UserProperties = append(m.UserProperties, stage.UserProperty{Key: h.Key, Value: string(h.Value)})
				}
				if err := deliver(ctx, stage.Delivery{Msg: m, Ack: func() { s.cl.MarkCommitRecords(r) }}); err != nil {
					return err
				}
			}
			return nil
		}()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if ferr != nil {
			return ferr
		}
	}
}
