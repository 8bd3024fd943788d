package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/edgeport/edgeport/internal/config"
)

// SchemaRegistry registers the schema of what a dataset publishes and
// returns the reference its messages carry (CloudEvents dataschema,
// aio-sr://<namespace>/<name>:<version>). In Edgeport it is the schema
// registry API over MQTT (schemaregistry.Client), as Azure IoT Operations'
// connectors call it.
type SchemaRegistry interface {
	Register(ctx context.Context, format, content string) (ref string, err error)
}

// ErrNoSchemaRegistry says the manager was built without a registry.
var ErrNoSchemaRegistry = errors.New("no schema registry")

// PointSchema is one data point of a dataset's message schema: its name
// and the JSON Schema of its Value (as the constructors below make).
type PointSchema struct {
	Name  string
	Value map[string]any
}

// DatasetSchema returns the JSON Schema (draft-07) of the messages
// EncodePayload writes for these points:
//
//	{"<point>": {"SourceTimestamp": "<RFC 3339>", "Value": <value>, "StatusCode": {"Code", "Symbol"}}}
//
// Every point is optional (a delta frame carries the points that changed)
// and no other key is allowed; a point's Value may be null (a sample that
// is not good carries a StatusCode and no value). The text is canonical
// (encoding/json sorts keys), so the same points give the same content
// and therefore the same content hash, the name the registry stores it
// under.
func DatasetSchema(points []PointSchema) string {
	props := make(map[string]any, len(points))
	for _, p := range points {
		props[p.Name] = map[string]any{
			"type":                 "object",
			"required":             []string{"SourceTimestamp", "Value"},
			"additionalProperties": false,
			"properties": map[string]any{
				"SourceTimestamp": map[string]any{"type": "string", "format": "date-time"},
				"Value":           nullable(p.Value),
				"StatusCode": map[string]any{
					"type":     "object",
					"required": []string{"Code", "Symbol"},
					"properties": map[string]any{
						"Code":   IntegerValue(0, math.MaxUint32),
						"Symbol": StringValue(),
					},
				},
			},
		}
	}
	b, _ := json.Marshal(map[string]any{ // only maps, strings and numbers: cannot fail
		"$schema":              "http://json-schema.org/draft-07/schema#",
		"type":                 "object",
		"additionalProperties": false,
		"properties":           props,
	})
	return string(b)
}

// nullable lets a value schema accept null too.
func nullable(v map[string]any) map[string]any {
	if len(v) == 0 {
		return map[string]any{} // anything, null included
	}
	out := make(map[string]any, len(v))
	for k, x := range v {
		out[k] = x
	}
	switch t := v["type"].(type) {
	case string:
		out["type"] = []string{t, "null"}
		return out
	}
	if alts, ok := v["anyOf"].([]any); ok {
		out["anyOf"] = append(append([]any(nil), alts...), map[string]any{"type": "null"})
		return out
	}
	return map[string]any{"anyOf": []any{v, map[string]any{"type": "null"}}}
}

// IntegerValue is an integer within [min, max] (bounds written exactly,
// as the 64-bit ones do not fit a float64).
func IntegerValue[T int64 | uint64 | int](min, max T) map[string]any {
	return map[string]any{"type": "integer", "minimum": json.Number(fmtInt(min)), "maximum": json.Number(fmtInt(max))}
}

func fmtInt[T int64 | uint64 | int](v T) string {
	if v < 0 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatUint(uint64(v), 10)
}

// NumberValue is a floating-point value: a JSON number, or the text the
// encoder writes for NaN and the infinities (JSON has no such numbers).
func NumberValue() map[string]any {
	return map[string]any{"anyOf": []any{
		map[string]any{"type": "number"},
		map[string]any{"enum": []string{"NaN", "Infinity", "-Infinity"}},
	}}
}

// BooleanValue is true or false.
func BooleanValue() map[string]any { return map[string]any{"type": "boolean"} }

// StringValue is text.
func StringValue() map[string]any { return map[string]any{"type": "string"} }

// DateTimeValue is an RFC 3339 time.
func DateTimeValue() map[string]any { return map[string]any{"type": "string", "format": "date-time"} }

// BytesValue is a byte string, base64-encoded.
func BytesValue() map[string]any {
	return map[string]any{"type": "string", "contentEncoding": "base64"}
}

// ArrayValue is an array of items (any value when items is nil).
func ArrayValue(items map[string]any) map[string]any {
	if items == nil {
		return map[string]any{"type": "array"}
	}
	return map[string]any{"type": "array", "items": items}
}

// AnyValue is any JSON value: a type the connector cannot describe.
func AnyValue() map[string]any { return map[string]any{} }

// RegisterSchema registers content (a draft-07 JSON Schema, as
// DatasetSchema makes) as the schema of the dataset's messages and, from
// then on, sets its reference as the dataschema of every message the
// dataset publishes; the dataset's status shows it. Unlike the other
// methods it waits for the registry (a request over MQTT, bounded by ctx
// and the registry client's timeout): drivers call it after connecting
// and before reading. Registering the content registered last returns
// the same reference without asking again.
//
// A registry that is not answering yet (Edgeport starting) is asked again
// three times, after half a second, one and two seconds.
func (d *Dataset) RegisterSchema(ctx context.Context, content string) (string, error) {
	reg := d.ep.reg
	if reg == nil {
		return "", ErrNoSchemaRegistry
	}
	hash := config.SchemaContentHash(content)
	if ref := d.st.registered(hash); ref != "" {
		return ref, nil
	}
	var ref string
	var err error
	for attempt, wait := 0, 500*time.Millisecond; ; attempt, wait = attempt+1, 2*wait {
		if ref, err = reg.Register(ctx, config.SchemaFormatJSONDraft07, content); err == nil || attempt == 3 || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	if err != nil {
		d.ep.CountError("schema_registry")
		return "", fmt.Errorf("registering the schema of dataset %s/%s: %w", d.Asset.Name, d.Name, err)
	}
	d.st.setSchema(hash, ref)
	return ref, nil
}
