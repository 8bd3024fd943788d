package kafka

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
)

// startKafka runs a kfake cluster (franz-go's in-process Kafka) on a free
// port of 127.0.0.1.
func startKafka(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.DefaultNumPartitions(3),
		kfake.AllowAutoTopicCreation(), kfake.ListenFn(localListen)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func settings(t *testing.T, host string, mut func(*config.KafkaEndpointSettings)) *config.KafkaEndpointSettings {
	t.Helper()
	spec := &config.DataflowEndpointSpec{EndpointType: config.EndpointKafka, KafkaSettings: &config.KafkaEndpointSettings{Host: host}}
	if mut != nil {
		mut(spec.KafkaSettings)
	}
	obj := &config.Object{APIVersion: config.APIVersion, Kind: "DataflowEndpoint", Metadata: config.Metadata{Name: "k"}, Spec: spec}
	if err := config.Builtin().Check(obj); err != nil {
		t.Fatal(err)
	}
	return spec.KafkaSettings
}

// consumeAll reads n records of topic from the start.
func consumeAll(t *testing.T, host, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(host), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("got %d of %d records from %s", len(out), n, topic)
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

func TestDestinationProducesWithKeysAndHeaders(t *testing.T) {
	c := startKafka(t)
	host := c.ListenAddrs()[0]
	d, err := NewDestination(settings(t, host, func(s *config.KafkaEndpointSettings) {
		s.PartitionStrategy = "Topic"
		s.Compression = "Lz4"
	}), &config.DataflowDestination{EndpointRef: "k", DataDestination: "plant-${inputTopic.2}"}, stage.Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	var batch []*stage.Message
	for i := range 30 {
		line := "line" + strconv.Itoa(i%3)
		batch = append(batch, &stage.Message{
			SourceTopic: "plant/" + "a/" + line, Payload: []byte(strconv.Itoa(i)), ContentType: "application/json",
			UserProperties: []stage.UserProperty{{Key: "site", Value: "s1"}},
		})
	}
	if err := d.Send(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	recs := consumeAll(t, host, "plant-a", 30)
	byKey := map[string][]int{}
	partOf := map[string]int32{}
	for _, r := range recs {
		v, _ := strconv.Atoi(string(r.Value))
		k := string(r.Key)
		byKey[k] = append(byKey[k], v)
		if p, ok := partOf[k]; ok && p != r.Partition {
			t.Fatalf("key %s in partitions %d and %d", k, p, r.Partition)
		}
		partOf[k] = r.Partition
		h := map[string]string{}
		for _, x := range r.Headers {
			h[x.Key] = string(x.Value)
		}
		if h["site"] != "s1" || h["mqtt-content-type"] != "application/json" || h["mqtt-topic"] != k {
			t.Fatalf("headers %v of record with key %s", h, k)
		}
	}
	if len(byKey) != 3 {
		t.Fatalf("keys %v, want the three source topics", byKey)
	}
	for k, vs := range byKey {
		for i := 1; i < len(vs); i++ {
			if vs[i] < vs[i-1] {
				t.Fatalf("key %s out of order: %v", k, vs)
			}
		}
	}
}

func TestDestinationRetriesWhileKafkaRefuses(t *testing.T) {
	c := startKafka(t)
	host := c.ListenAddrs()[0]
	d, err := NewDestination(settings(t, host, nil), &config.DataflowDestination{EndpointRef: "k", DataDestination: "out"}, stage.Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	// Kafka refuses every produce request: Send fails without delivering.
	c.ControlKey(0, func(kmsgReq kmsgRequest) (kmsgResponse, error, bool) {
		c.KeepControl()
		return nil, errors.New("outage"), true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err = d.Send(ctx, []*stage.Message{{SourceTopic: "a", Payload: []byte("x")}})
	cancel()
	if err == nil {
		t.Fatal("Send succeeded while Kafka refused produce requests")
	}
	if errors.Is(err, stage.ErrPermanent) {
		t.Fatalf("an outage is not permanent: %v", err)
	}
}

func TestSourceCommitsOnlyAcknowledged(t *testing.T) {
	c := startKafka(t, kfake.SeedTopics(1, "in"))
	host := c.ListenAddrs()[0]
	prod, err := kgo.NewClient(kgo.SeedBrokers(host))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for i := range 10 {
		if err := prod.ProduceSync(context.Background(), &kgo.Record{Topic: "in", Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	s := settings(t, host, nil)
	// First run: acknowledge the first 4 only.
	run := func(ackFirst int, want int) []string {
		src, err := NewSource(s, []string{"in"}, "flow", stage.Env{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var got []string
		err = src.Run(ctx, func(_ context.Context, d stage.Delivery) error {
			got = append(got, string(d.Msg.Payload))
			if len(got) <= ackFirst {
				d.Ack()
			}
			if len(got) == want {
				cancel()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := run(4, 10); len(got) != 10 || got[0] != "0" {
		t.Fatalf("first run got %v", got)
	}
	got := run(100, 6)
	if got[0] != "4" || got[5] != "9" {
		t.Fatalf("second run got %v, want 4..9: unacknowledged records come again", got)
	}
}

type (
	kmsgRequest  = kmsg.Request
	kmsgResponse = kmsg.Response
)

func localListen(network, _ string) (net.Listener, error) { return net.Listen(network, "127.0.0.1:0") }
