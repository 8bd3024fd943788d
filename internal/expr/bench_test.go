package expr

import (
	"testing"
)

// The benchmarks measure Apply on a decoded document, the part of a
// dataflow's per-message cost that this package owns (JSON decoding and
// encoding are the engine's). Figures are in BENCHMARKS.md.

const benchPayload = `{"deviceId": "oven2", "temperature": {"Value": 182.5, "Unit": "C"}, "pressure": {"Value": 14.2, "Unit": "psi"},
"humidity": {"Value": 41}, "line": "line-3", "shift": "A", "status": "running", "seq": 123456}`

func benchMapping(b *testing.B, spec Spec, ds Datasets) {
	m, err := Compile(spec, ds)
	if err != nil {
		b.Fatal(err)
	}
	in := Message{Payload: doc(b, benchPayload), Topic: "plant/line3/oven2", UserProperties: []UserProperty{{"site", "graz"}}}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := m.Apply(in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkFilter: one filter rule, message kept, map passes through.
func BenchmarkFilter(b *testing.B) {
	benchMapping(b, Spec{Filter: []FilterRule{{Inputs: []string{"temperature.Value"}, Expression: "$1 <= 20"}}}, nil)
}

// BenchmarkMapTypical: a filter and six map rules with expressions,
// conversions and metadata, the shape of the plant example in
// docs/dataflows.md.
func BenchmarkMapTypical(b *testing.B) {
	benchMapping(b, Spec{
		Filter: []FilterRule{{Inputs: []string{"temperature.Value"}, Expression: "$1 <= 20"}},
		Map: []MapRule{
			{Inputs: []string{"deviceId"}, Output: "device"},
			{Inputs: []string{"temperature.Value"}, Output: "temperatureF", Expression: "round_n(cToF($1), 1)"},
			{Inputs: []string{"pressure.Value"}, Output: "pressureBar", Expression: "psiToBar($1)"},
			{Inputs: []string{"humidity.Value"}, Output: "humidityHigh", Expression: "$1 > 60"},
			{Inputs: []string{"line", "shift"}, Output: "where", Expression: `$1 + "/" + $2`},
			{Inputs: []string{"$metadata.topic"}, Output: "$metadata.user_property.origin_topic"},
		},
	}, nil)
}

// BenchmarkMapWildcard: copy everything, then one specialization.
func BenchmarkMapWildcard(b *testing.B) {
	benchMapping(b, Spec{Map: []MapRule{
		{Inputs: []string{"*"}, Output: "*"},
		{Inputs: []string{"temperature.Value"}, Output: "temperature.Value", Expression: "cToF($1)"},
	}}, nil)
}

// BenchmarkEnrich: a dataset of 100 records, matched on a field.
func BenchmarkEnrich(b *testing.B) {
	var recs []any
	for i := range 100 {
		recs = append(recs, map[string]any{"deviceId": "oven" + itoa(i), "maxTemperature": int64(100 + i)})
	}
	benchMapping(b, Spec{
		Datasets: []DatasetRule{{Key: "limits", Inputs: []string{"$source.deviceId", "$context.deviceId"}, Expression: "$1 == $2"}},
		Map: []MapRule{
			{Inputs: []string{"temperature.Value", "$context(limits).maxTemperature"}, Output: "overLimit", Expression: "$1 > $2"},
		},
	}, staticDatasets{"limits": recs})
}

func itoa(i int) string { return string(rune('0'+i/10)) + string(rune('0'+i%10)) }

// BenchmarkDecodeJSON is the yardstick: decoding the same message with
// encoding/json, which every dataflow does anyway. On a shared machine
// the ratio of the benchmarks above to this one is steadier than their
// nanoseconds.
func BenchmarkDecodeJSON(b *testing.B) {
	data := []byte(benchPayload)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := DecodeJSON(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
