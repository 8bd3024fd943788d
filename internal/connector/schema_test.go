package connector

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/config"
)

// TestDatasetSchemaDescribesEncodedPayloads compiles the schema of a
// dataset with one point of each kind and checks it against what
// EncodePayload writes: key and delta frames, a bad sample (null value
// with a status code), NaN and the 64-bit bounds are accepted; a value of
// the wrong type, out of range, an unknown point or a missing timestamp
// are refused at the right place.
func TestDatasetSchemaDescribesEncodedPayloads(t *testing.T) {
	content := DatasetSchema([]PointSchema{
		{Name: "count", Value: IntegerValue(math.MinInt32, math.MaxInt32)},
		{Name: "big", Value: IntegerValue[uint64](0, math.MaxUint64)},
		{Name: "temp", Value: NumberValue()},
		{Name: "on", Value: BooleanValue()},
		{Name: "name", Value: StringValue()},
		{Name: "at", Value: DateTimeValue()},
		{Name: "raw", Value: BytesValue()},
		{Name: "hist", Value: ArrayValue(NumberValue())},
		{Name: "blob", Value: AnyValue()},
	})
	one := func() string {
		return DatasetSchema([]PointSchema{{Name: "count", Value: IntegerValue(math.MinInt32, math.MaxInt32)}})
	}
	if a, b := one(), one(); a != b || a == content {
		t.Fatal("the same points must give the same text, other points another")
	}
	c, err := config.CompileSchemaContent(config.SchemaFormatJSONDraft07, content)
	if err != nil {
		t.Fatalf("%v\n%s", err, content)
	}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	enc := func(ss ...Sample) []byte {
		for i := range ss {
			ss[i].SourceTimestamp = ts
		}
		b, err := EncodePayload(nil, ss)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, ok := range [][]byte{
		enc(Sample{Name: "count", Value: int32(-5)}, Sample{Name: "big", Value: uint64(math.MaxUint64)},
			Sample{Name: "temp", Value: 21.5}, Sample{Name: "on", Value: true}, Sample{Name: "name", Value: "x"},
			Sample{Name: "at", Value: ts.Format(time.RFC3339Nano)}, Sample{Name: "raw", Value: "AAE="},
			Sample{Name: "hist", Value: []any{1.5, "NaN"}}, Sample{Name: "blob", Value: map[string]any{"a": 1}}),
		enc(Sample{Name: "temp", Value: math.NaN()}),
		enc(Sample{Name: "count", Status: &StatusCode{Code: 0x80340000, Symbol: "BadNodeIdUnknown"}}),
		[]byte(`{}`),
	} {
		if err := c.ValidateMessage(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, tc := range []struct {
		payload   []byte
		path, key string
	}{
		{enc(Sample{Name: "count", Value: "seven"}), "/count/Value", "type"},
		{enc(Sample{Name: "count", Value: int64(math.MaxInt32) + 1}), "/count/Value", "maximum"},
		{enc(Sample{Name: "temp", Value: "warm"}), "/temp/Value", ""},
		{enc(Sample{Name: "other", Value: 1}), "/", "additionalProperties"},
		{[]byte(`{"count": {"Value": 1}}`), "/count", "required"},
		{[]byte(`{"count": {"SourceTimestamp": "yesterday", "Value": 1}}`), "/count/SourceTimestamp", "format"},
	} {
		err := c.ValidateMessage(tc.payload)
		var me *config.MessageError
		if !errors.As(err, &me) || orRoot(me.InstancePath) != tc.path || (tc.key != "" && me.Keyword != tc.key) {
			t.Errorf("%s: got %v (%+v), want %s %s", tc.payload, err, me, tc.path, tc.key)
		}
	}
}

func orRoot(p string) string {
	if p == "" {
		return "/"
	}
	return p
}
