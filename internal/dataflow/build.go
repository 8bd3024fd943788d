package dataflow

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/file"
	httpdest "github.com/edgeport/edgeport/internal/dataflow/http"
	"github.com/edgeport/edgeport/internal/dataflow/kafka"
	"github.com/edgeport/edgeport/internal/dataflow/otel"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
)

// MQTTFactory makes the MQTT stages (local broker or remote); it is
// separate because it needs the internal MQTT client and the broker.
type MQTTFactory interface {
	Source(ctx context.Context, p *Plan, ep *config.MqttEndpointSettings, instance int) (stage.Source, error)
	Destination(ctx context.Context, p *Plan, ep *config.MqttEndpointSettings, d *config.DataflowDestination) (stage.Destination, error)
	Forget(ctx context.Context, p *Plan) error
}

// TransformCompiler compiles a flow's built-in transformation (the
// mapping language).
type TransformCompiler func(name string, t *config.DataflowTransformation) (Transform, error)

// StageBuilder is the engine's Builder: it makes every endpoint type's
// stages.
type StageBuilder struct {
	Env     stage.Env
	MQTT    MQTTFactory       // nil: MQTT endpoints are unavailable
	Compile TransformCompiler // nil: flows with filter or map rules fail
}

var _ Builder = (*StageBuilder)(nil)

// Source implements Builder.
func (b *StageBuilder) Source(ctx context.Context, p *Plan, instance int) (stage.Source, error) {
	src := p.Spec.Source()
	ep := p.Source
	if src.AssetRef != "" && ep.EndpointType != config.EndpointMqtt {
		return nil, fmt.Errorf("assetRef %q needs an Mqtt source endpoint (the broker the asset's connector publishes to), not %s", src.AssetRef, ep.EndpointType)
	}
	switch ep.EndpointType {
	case config.EndpointMqtt:
		if b.MQTT == nil {
			return nil, errors.New("MQTT endpoints are unavailable")
		}
		return b.MQTT.Source(ctx, p, ep.MqttSettings, instance)
	case config.EndpointKafka:
		return kafka.NewSource(ep.KafkaSettings, src.DataSources, "edgeport-dataflow-"+p.Name, b.Env)
	}
	return nil, fmt.Errorf("endpoint type %s cannot be a source (Mqtt or Kafka)", ep.EndpointType)
}

// Destination implements Builder.
func (b *StageBuilder) Destination(ctx context.Context, p *Plan, ep *config.DataflowEndpointSpec, d *config.DataflowDestination) (stage.Destination, error) {
	format := config.FormatJSON
	if t := p.Spec.Transformation(); t != nil && d == p.Spec.Destination() {
		// The dead-letter destination gets the messages as they came.
		format = t.SerializationFormat
	}
	columnar := format == config.FormatParquet || format == config.FormatDelta
	if columnar && ep.EndpointType != config.EndpointLocalStorage {
		return nil, fmt.Errorf("serializationFormat %s needs a LocalStorage destination (got %s)", format, ep.EndpointType)
	}
	switch ep.EndpointType {
	case config.EndpointMqtt:
		if b.MQTT == nil {
			return nil, errors.New("MQTT endpoints are unavailable")
		}
		return b.MQTT.Destination(ctx, p, ep.MqttSettings, d)
	case config.EndpointKafka:
		return kafka.NewDestination(ep.KafkaSettings, d, b.Env)
	case config.EndpointHttp:
		return httpdest.New(ep.HttpSettings, d, b.Env)
	case config.EndpointOpenTelemetry:
		return otel.New(ep.OpenTelemetrySettings, d, otel.Options{Dataflow: p.Name, Env: b.Env})
	case config.EndpointLocalStorage:
		dir := ep.LocalStorageSettings.Path
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(b.Env.DataDir, dir)
		}
		var fields []config.SchemaField
		if s := p.OutputSchema; s != nil && columnar {
			var err error
			if fields, err = s.Compiled().Fields(); err != nil {
				return nil, fmt.Errorf("schema %s cannot define %s columns: %w", s.Ref, format, err)
			}
		}
		return file.New(file.Options{
			Dir:      filepath.Join(dir, d.DataDestination),
			Format:   format,
			Fields:   fields,
			MaxBytes: *ep.LocalStorageSettings.Rotation.MaxBytes,
			MaxAge:   secondsDur(*ep.LocalStorageSettings.Rotation.MaxAgeSeconds),
			Prefix:   p.Name,
		})
	}
	return nil, fmt.Errorf("endpoint type %s is not built yet as a destination", ep.EndpointType)
}

// Transform implements Builder.
func (b *StageBuilder) Transform(p *Plan) (Transform, error) {
	t := p.Spec.Transformation()
	if t == nil || (len(t.Filter) == 0 && len(t.Map) == 0 && len(t.Datasets) == 0) {
		return nil, nil
	}
	if b.Compile == nil {
		return nil, errors.New("the mapping language is unavailable in this build")
	}
	return b.Compile(p.Name, t)
}

// Forget implements Builder.
func (b *StageBuilder) Forget(ctx context.Context, p *Plan) error {
	if b.MQTT != nil && localMQTT(p.Source) {
		return b.MQTT.Forget(ctx, p)
	}
	return nil
}

func secondsDur(s int) time.Duration { return time.Duration(s) * time.Second }
