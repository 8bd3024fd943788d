package dataflow

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
	"github.com/edgeport/edgeport/internal/expr"
)

// mapping applies a compiled expr.Mapping to JSON messages.
type mapping struct {
	m *expr.Mapping
}

// DatasetSource serves $context(alias): records by state-store key, loaded
// (and kept fresh) by Watch.
type DatasetSource interface {
	expr.Datasets
	Watch(ctx context.Context, keys []string) error
}

// CompileMapping returns a TransformCompiler over the mapping language;
// datasets (nil: flows with datasets fail) serves $context(alias). The
// flow's dataset keys are loaded before the flow starts.
func CompileMapping(datasets DatasetSource) TransformCompiler {
	return func(_ string, t *config.DataflowTransformation) (Transform, error) {
		var ds expr.Datasets
		if datasets != nil {
			ds = datasets
		}
		m, err := expr.Compile(t.ExprSpec(), ds)
		if err != nil {
			return nil, err
		}
		if keys := m.DatasetKeys(); len(keys) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := datasets.Watch(ctx, keys); err != nil {
				return nil, err
			}
		}
		return &mapping{m: m}, nil
	}
}

// Apply decodes the payload as JSON, filters and maps it, and encodes the
// result; a payload that is not JSON cannot be mapped (dead-lettered).
func (t *mapping) Apply(m *stage.Message) (*stage.Message, bool, error) {
	payload, err := expr.DecodeJSON(m.Payload)
	if err != nil {
		return nil, false, fmt.Errorf("payload is not JSON: %w", err)
	}
	in := expr.Message{Payload: payload, Topic: m.Topic, ContentType: m.ContentType}
	for _, p := range m.UserProperties {
		in.UserProperties = append(in.UserProperties, expr.UserProperty{Key: p.Key, Value: p.Value})
	}
	out, keep, err := t.m.Apply(in)
	if err != nil || !keep {
		return nil, keep, err
	}
	res := *m
	if res.Payload, err = json.Marshal(out.Payload); err != nil {
		return nil, false, fmt.Errorf("encoding the output: %w", err)
	}
	res.Topic, res.ContentType = out.Topic, out.ContentType
	res.UserProperties = res.UserProperties[:0:0]
	for _, p := range out.UserProperties {
		res.UserProperties = append(res.UserProperties, stage.UserProperty{Key: p.Key, Value: p.Value})
	}
	return &res, true, nil
}
