package expr

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

// staticDatasets serves datasets from memory, as JSON Lines text. The
// state-store side (loading keys, KEYNOTIFY refresh) belongs to the
// dataflow engine and is tested there against the real state store.
type staticDatasets map[string][]any

func (s staticDatasets) Records(key string) []any { return s[key] }

func jsonLines(t testing.TB, text string) []any {
	t.Helper()
	recs, err := ParseJSONLines([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func doc(t testing.TB, s string) any {
	t.Helper()
	v, err := DecodeJSON([]byte(s))
	if err != nil {
		t.Fatalf("test input %q: %v", s, err)
	}
	return v
}

// sameJSON compares two documents, numbers by value within 1e-9 so that
// 0.1+0.2 style float noise does not matter but any real difference does.
func sameJSON(a, b any) bool {
	a, b = norm(a), norm(b)
	if x, ok := num(a); ok {
		y, ok := num(b)
		return ok && math.Abs(x-y) <= 1e-9*math.Max(1, math.Abs(x))
	}
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !sameJSON(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameJSON(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

type step struct {
	in      string         // payload
	topic   string         // defaults to "plant/line1/telemetry"
	props   []UserProperty // input user properties
	want    string         // expected payload; "" when dropped
	dropped bool
	topicW  string         // expected output topic, when checked
	propsW  []UserProperty // expected output user properties, when checked
}

// aioExamples are the examples of Azure IoT Operations' dataflow
// documentation (concept-dataflow-mapping, concept-dataflow-conversions,
// concept-dataflow-enrich, howto-dataflow-filter and the expressions
// reference): the documented input, rules and output. Where the
// documentation rounds a result (0.545 printed as 0.54), the exact value
// is expected here.
var aioExamples = []struct {
	name     string
	spec     Spec
	datasets map[string]string // key → JSON Lines
	steps    []step
}{
	{
		name: "mapping/employee record",
		spec: Spec{
			Datasets: []DatasetRule{{Key: "position", Inputs: []string{"$source.Position", "$context.Position"}, Expression: "$1 == $2"}},
			Map: []MapRule{
				{Inputs: []string{"Name"}, Output: "Employee.Name"},
				{Inputs: []string{"Birth Date"}, Output: "Employee.Date of Birth"},
				{Inputs: []string{"Start Date"}, Output: "Employment.Start Date"},
				{Inputs: []string{"Position", "Office"}, Output: "Employment.Position", Expression: `$1 + ", " + $2`},
				{Inputs: []string{"$context(position).BaseSalary"}, Output: "Employment.Base Salary"},
			},
		},
		datasets: map[string]string{"position": `{"Position": "Analyst", "BaseSalary": 78000, "WorkingHours": "Regular"}`},
		steps: []step{{
			in:   `{"Name": "Grace Owens", "Place of birth": "London, TX", "Birth Date": "19840202", "Start Date": "20180812", "Position": "Analyst", "Office": "Kent, WA"}`,
			want: `{"Employee": {"Name": "Grace Owens", "Date of Birth": "19840202"}, "Employment": {"Start Date": "20180812", "Position": "Analyst, Kent, WA", "Base Salary": 78000}}`,
		}},
	},
	{
		name: "mapping/flatten with wildcards",
		spec: Spec{Map: []MapRule{
			{Inputs: []string{"ColorProperties.*"}, Output: "*"},
			{Inputs: []string{"TextureProperties.*"}, Output: "*"},
		}},
		steps: []step{{
			in:   `{"ColorProperties": {"Hue": "blue", "Saturation": "90%", "Brightness": "50%", "Opacity": "0.8"}, "TextureProperties": {"type": "fabric", "SurfaceFeel": "soft", "SurfaceAppearance": "matte", "Pattern": "knitted"}}`,
			want: `{"Hue": "blue", "Saturation": "90%", "Brightness": "50%", "Opacity": "0.8", "type": "fabric", "SurfaceFeel": "soft", "SurfaceAppearance": "matte", "Pattern": "knitted"}`,
		}},
	},
	{
		name: "mapping/copy everything",
		spec: Spec{Map: []MapRule{{Inputs: []string{"*"}, Output: "*"}}},
		steps: []step{{
			in:   `{"a": 1, "b": {"c": "x", "d": [1, 2]}, "e": null}`,
			want: `{"a": 1, "b": {"c": "x", "d": [1, 2]}, "e": null}`,
		}},
	},
	{
		name: "mapping/multi-input wildcards",
		spec: Spec{Map: []MapRule{{Inputs: []string{"*.Max", "*.Min"}, Output: "ColorProperties.*", Expression: "($1 + $2) / 2"}}},
		steps: []step{{
			in:   `{"Saturation": {"Max": 0.42, "Min": 0.67}, "Brightness": {"Max": 0.78, "Min": 0.93}, "Opacity": {"Max": 0.88, "Min": 0.91}}`,
			want: `{"ColorProperties": {"Saturation": 0.545, "Brightness": 0.855, "Opacity": 0.895}}`,
		}},
	},
	{
		name: "mapping/multi-input wildcards build a tuple",
		spec: Spec{Map: []MapRule{{Inputs: []string{"*.Max", "*.Min", "*.Mid.Avg", "*.Mid.Mean"}, Output: "ColorProperties.*", Expression: "($1, $2, $3, $4)"}}},
		steps: []step{{
			in:   `{"Saturation": {"Max": 0.42, "Min": 0.67, "Mid": {"Avg": 0.51, "Mean": 0.56}}, "Brightness": {"Max": 0.78, "Min": 0.93, "Mid": {"Avg": 0.81, "Mean": 0.82}}, "Opacity": {"Max": 0.88, "Min": 0.91, "Mid": {"Avg": 0.89, "Mean": 0.89}}}`,
			want: `{"ColorProperties": {"Saturation": [0.42, 0.67, 0.51, 0.56], "Brightness": [0.78, 0.93, 0.81, 0.82], "Opacity": [0.88, 0.91, 0.89, 0.89]}}`,
		}},
	},
	{
		name: "mapping/multi-input wildcards skip what does not resolve",
		spec: Spec{Map: []MapRule{{Inputs: []string{"*.Max", "*.Min", "*.Avg", "*.Mean"}, Output: "ColorProperties.*", Expression: "($1, $2, $3, $4)"}}},
		steps: []step{{
			in:   `{"Saturation": {"Max": 0.42, "Min": 0.67, "Mid": {"Avg": 0.51, "Mean": 0.56}}}`,
			want: `{}`,
		}},
	},
	{
		name: "mapping/second rule",
		spec: Spec{Map: []MapRule{
			{Inputs: []string{"*.Max", "*.Min"}, Output: "ColorProperties.*.Avg", Expression: "($1 + $2) / 2"},
			{Inputs: []string{"*.Max", "*.Min"}, Output: "ColorProperties.*.Diff", Expression: "abs($1 - $2)"},
		}},
		steps: []step{{
			in:   `{"Saturation": {"Max": 0.42, "Min": 0.67}, "Brightness": {"Max": 0.78, "Min": 0.93}, "Opacity": {"Max": 0.88, "Min": 0.91}}`,
			want: `{"ColorProperties": {"Saturation": {"Avg": 0.545, "Diff": 0.25}, "Brightness": {"Avg": 0.855, "Diff": 0.15}, "Opacity": {"Avg": 0.895, "Diff": 0.03}}}`,
		}},
	},
	{
		name: "mapping/specialization with an empty output removes a field",
		spec: Spec{Map: []MapRule{
			{Inputs: []string{"*.Max", "*.Min"}, Output: "ColorProperties.*", Expression: "($1 + $2) / 2"},
			{Inputs: []string{"Opacity.Max", "Opacity.Min"}, Output: ""},
		}},
		steps: []step{{
			in:   `{"Saturation": {"Max": 0.42, "Min": 0.67}, "Brightness": {"Max": 0.78, "Min": 0.93}, "Opacity": {"Max": 0.88, "Min": 0.91}}`,
			want: `{"ColorProperties": {"Saturation": 0.545, "Brightness": 0.855}}`,
		}},
	},
	{
		name: "expressions/specialization overrides a wildcard for one field",
		spec: Spec{Map: []MapRule{
			{Inputs: []string{"*.Max", "*.Min"}, Output: "Averaged.*", Expression: "($1 + $2) / 2"},
			{Inputs: []string{"Pressure.Max", "Pressure.Min"}, Output: "Averaged.PressureAdj", Expression: "($1 + $2 + 1.0) / 2"},
		}},
		steps: []step{{
			in:   `{"Temperature": {"Max": 85.3, "Min": 62.1}, "Pressure": {"Max": 15.2, "Min": 14.1}}`,
			want: `{"Averaged": {"Temperature": 73.7, "PressureAdj": 15.15}}`,
		}},
	},
	{
		name: "expressions/a later wildcard rule is a second rule, not a specialization",
		spec: Spec{Map: []MapRule{
			{Inputs: []string{"Pressure.Max", "Pressure.Min"}, Output: "Averaged.PressureAdj", Expression: "($1 + $2 + 1.0) / 2"},
			{Inputs: []string{"*.Max", "*.Min"}, Output: "Averaged.*", Expression: "($1 + $2) / 2"},
		}},
		steps: []step{{
			in:   `{"Temperature": {"Max": 85.3, "Min": 62.1}, "Pressure": {"Max": 15.2, "Min": 14.1}}`,
			want: `{"Averaged": {"Temperature": 73.7, "Pressure": 14.65, "PressureAdj": 15.15}}`,
		}},
	},
	{
		name: "expressions/multiple rules on the same inputs",
		spec: Spec{Map: []MapRule{
			{Inputs: []string{"*.Max", "*.Min"}, Output: "Stats.*.Avg", Expression: "($1 + $2) / 2"},
			{Inputs: []string{"*.Max", "*.Min"}, Output: "Stats.*.Range", Expression: "$1 - $2"},
		}},
		steps: []step{{
			in:   `{"Temperature": {"Max": 85.3, "Min": 62.1}, "Pressure": {"Max": 15.2, "Min": 14.1}}`,
			want: `{"Stats": {"Temperature": {"Avg": 73.7, "Range": 23.2}, "Pressure": {"Avg": 14.65, "Range": 1.1}}}`,
		}},
	},
	{
		name: "expressions/flatten and restructure",
		spec: Spec{Map: []MapRule{
			{Inputs: []string{"Sensors.*"}, Output: "*"},
			{Inputs: []string{"Metadata.*"}, Output: "Telemetry.*"},
		}},
		steps: []step{{
			in:   `{"Sensors": {"Temperature": 72.5, "Pressure": 14.7}, "Metadata": {"LineId": "Line-3", "Shift": "A"}}`,
			want: `{"Temperature": 72.5, "Pressure": 14.7, "Telemetry": {"LineId": "Line-3", "Shift": "A"}}`,
		}},
	},
	{
		name: "mapping/wildcards in contextualization datasets",
		spec: Spec{
			Datasets: []DatasetRule{{Key: "position", Inputs: []string{"$source.Position", "$context.Position"}, Expression: "$1 == $2"}},
			Map:      []MapRule{{Inputs: []string{"$context(position).*"}, Output: "Employment.*"}},
		},
		datasets: map[string]string{"position": `{"Position": "Analyst", "BaseSalary": 70000, "WorkingHours": "Regular"}`},
		steps: []step{{
			in:   `{"Position": "Analyst"}`,
			want: `{"Employment": {"Position": "Analyst", "BaseSalary": 70000, "WorkingHours": "Regular"}}`,
		}},
	},
	{
		name: "mapping/last known value",
		spec: Spec{Map: []MapRule{{Inputs: []string{"Temperature ? $last"}, Output: "Thermostat.Temperature"}}},
		steps: []step{
			{in: `{"Temperature": 21.5}`, want: `{"Thermostat": {"Temperature": 21.5}}`},
			{in: `{"Humidity": 40}`, want: `{"Thermostat": {"Temperature": 21.5}}`},
			{in: `{"Temperature": 22}`, want: `{"Thermostat": {"Temperature": 22}}`},
		},
	},
	{
		name: "mapping/quoted segments",
		spec: Spec{Map: []MapRule{
			{Inputs: []string{`Payload."Tag.10".Value`}, Output: "tag10"},
			{Inputs: []string{`Payload."Tag.10".Measurements."Vibration.$12".Value`}, Output: `"out.vib"`},
			{Inputs: []string{`Person.Date of Birth`}, Output: "dob"},
		}},
		steps: []step{{
			in:   `{"Payload": {"Tag.10": {"Value": 7, "Measurements": {"Vibration.$12": {"Value": 0.3}}}}, "Person": {"Date of Birth": "1984"}}`,
			want: `{"tag10": 7, "out.vib": 0.3, "dob": "1984"}`,
		}},
	},
	{
		name: "mapping/metadata: topic into the payload and into a user property",
		spec: Spec{Map: []MapRule{
			{Inputs: []string{"$metadata.topic"}, Output: "origin_topic"},
			{Inputs: []string{"$metadata.topic"}, Output: "$metadata.user_property.origin_topic"},
			{Inputs: []string{"$metadata.user_property.priority"}, Output: "priority"},
			{Inputs: []string{"level"}, Output: "$metadata.user_property.level"},
		}},
		steps: []step{{
			in: `{"level": 3}`, topic: "factory/oven1", props: []UserProperty{{"priority", "high"}},
			want:   `{"origin_topic": "factory/oven1", "priority": "high"}`,
			topicW: "factory/oven1",
			propsW: []UserProperty{{"priority", "high"}, {"origin_topic", "factory/oven1"}, {"level", "3"}},
		}},
	},
	{
		name: "conversions/min of an array and an array of values",
		spec: Spec{Map: []MapRule{
			{Inputs: []string{"Measurements"}, Output: "Measurement", Expression: "min($1)"},
			{Inputs: []string{"minimum", "maximum", "average", "mean"}, Output: "stats", Expression: "($1, $2, $3, $4)"},
		}},
		steps: []step{{
			in:   `{"Measurements": [2.34, 12.3, 32.4], "minimum": 1, "maximum": 9, "average": 4.5, "mean": 5}`,
			want: `{"Measurement": 2.34, "stats": [1, 9, 4.5, 5]}`,
		}},
	},
	{
		name: "conversions/missing value falls back to the dataset",
		spec: Spec{
			Datasets: []DatasetRule{{Key: "position", Inputs: []string{"$source.Position", "$context.Position"}, Expression: "$1 == $2"}},
			Map: []MapRule{
				{Inputs: []string{"Position"}, Output: "Position"},
				{Inputs: []string{"BaseSalary", "$context(position).BaseSalary"}, Output: "BaseSalary", Expression: "if($1 == (), $2, $1)"},
			},
		},
		datasets: map[string]string{"position": `{"Position": "Analyst", "BaseSalary": 70000, "WorkingHours": "Regular"}`},
		steps: []step{
			{in: `{"Position": "Analyst", "BaseSalary": 75000}`, want: `{"Position": "Analyst", "BaseSalary": 75000}`},
			{in: `{"Position": "Analyst"}`, want: `{"Position": "Analyst", "BaseSalary": 70000}`},
			{in: `{"Position": "Analyst", "BaseSalary": null}`, want: `{"Position": "Analyst", "BaseSalary": 70000}`},
		},
	},
	{
		name: "enrich/first matching record of a JSON Lines dataset, under an alias",
		spec: Spec{
			Datasets: []DatasetRule{{Key: "datasets.parag10.rule42 as position", Inputs: []string{"$source.Position", "$context.Position"}, Expression: "$1 == $2"}},
			Map: []MapRule{
				{Inputs: []string{"Position"}, Output: "Position"},
				{Inputs: []string{"$context(position).WorkingHours"}, Output: "WorkingHours"},
				{Inputs: []string{"BaseSalary", "$context(position).BaseSalary"}, Output: "BaseSalary", Expression: "if($1 == (), $2, $1)"},
			},
		},
		datasets: map[string]string{"datasets.parag10.rule42": `{ "Position": "Analyst", "BaseSalary": 70000, "WorkingHours": "Regular" }
{ "Position": "Receptionist", "BaseSalary": 43000, "WorkingHours": "Regular" }
{ "Position": "Receptionist", "BaseSalary": 1, "WorkingHours": "Never" }`},
		steps: []step{
			{in: `{"Position": "Receptionist"}`, want: `{"Position": "Receptionist", "WorkingHours": "Regular", "BaseSalary": 43000}`},
			{in: `{"Position": "Analyst", "BaseSalary": 80000}`, want: `{"Position": "Analyst", "WorkingHours": "Regular", "BaseSalary": 80000}`},
			{in: `{"Position": "Janitor"}`, want: `{"Position": "Janitor"}`},
		},
	},
	{
		name: "enrich/two datasets used together",
		spec: Spec{
			Datasets: []DatasetRule{
				{Key: "position", Inputs: []string{"$source.Position", "$context.Position"}, Expression: "$1 == $2"},
				{Key: "permissions", Inputs: []string{"$source.Position", "$context.Position"}, Expression: "$1 == $2"},
			},
			Map: []MapRule{
				{Inputs: []string{"$context(position).WorkingHours"}, Output: "WorkingHours"},
				{Inputs: []string{"$context(permissions).NightShift"}, Output: "NightShift"},
			},
		},
		datasets: map[string]string{
			"position":    `{"Position": "Analyst", "WorkingHours": "Regular"}`,
			"permissions": `{"Position": "Analyst", "NightShift": false}`,
		},
		steps: []step{{in: `{"Position": "Analyst"}`, want: `{"WorkingHours": "Regular", "NightShift": false}`}},
	},
	{
		name: "filter/threshold drops the message when true",
		spec: Spec{Filter: []FilterRule{{Inputs: []string{"temperature"}, Expression: "$1 <= 20"}}},
		steps: []step{
			{in: `{"temperature": 15}`, dropped: true},
			{in: `{"temperature": 20}`, dropped: true},
			{in: `{"temperature": 25}`, want: `{"temperature": 25}`},
		},
	},
	{
		name: "filter/last known value",
		spec: Spec{Filter: []FilterRule{{Inputs: []string{"$source.temperature ? $last"}, Expression: "$1 <= 20"}}},
		steps: []step{
			{in: `{"temperature": 15}`, dropped: true},
			{in: `{"humidity": 50}`, dropped: true},
			{in: `{"temperature": 30}`, want: `{"temperature": 30}`},
			{in: `{"humidity": 51}`, want: `{"humidity": 51}`},
		},
	},
	{
		name: "filter/two inputs",
		spec: Spec{Filter: []FilterRule{{Inputs: []string{"temperature.Value", "humidity.Value"}, Expression: "$1 * $2 >= 100000"}}},
		steps: []step{
			{in: `{"temperature": {"Value": 1000}, "humidity": {"Value": 100}}`, dropped: true},
			{in: `{"temperature": {"Value": 999}, "humidity": {"Value": 100}}`, want: `{"temperature": {"Value": 999}, "humidity": {"Value": 100}}`},
		},
	},
	{
		name: "filter/enriched limit",
		spec: Spec{
			Datasets: []DatasetRule{{Key: "device_limits", Inputs: []string{"$source.deviceId", "$context(device_limits).deviceId"}, Expression: "$1 == $2"}},
			Filter:   []FilterRule{{Inputs: []string{"temperature", "$context(device_limits).maxTemperature"}, Expression: "$1 <= $2"}},
		},
		datasets: map[string]string{"device_limits": `{"deviceId": "oven1", "maxTemperature": 200}
{"deviceId": "oven2", "maxTemperature": 100}`},
		steps: []step{
			{in: `{"deviceId": "oven2", "temperature": 90}`, dropped: true},
			{in: `{"deviceId": "oven2", "temperature": 150}`, want: `{"deviceId": "oven2", "temperature": 150}`},
			{in: `{"deviceId": "oven1", "temperature": 150}`, dropped: true},
		},
	},
	{
		name: "filter/rules are OR-ed",
		spec: Spec{Filter: []FilterRule{
			{Inputs: []string{"temperature"}, Expression: "$1 <= 20", Description: "Drop low temperatures"},
			{Inputs: []string{"humidity"}, Expression: "$1 >= 80", Description: "Drop high humidity readings"},
		}},
		steps: []step{
			{in: `{"temperature": 10, "humidity": 50}`, dropped: true},
			{in: `{"temperature": 30, "humidity": 90}`, dropped: true},
			{in: `{"temperature": 30, "humidity": 50}`, want: `{"temperature": 30, "humidity": 50}`},
		},
	},
	{
		name: "create-dataflow/filter then map with quoted and metadata inputs",
		spec: Spec{
			Filter: []FilterRule{{Inputs: []string{"temperature.Value", `"Tag 10".Value`}, Expression: "$1 * $2 < 100000"}},
			Map: []MapRule{
				{Inputs: []string{"*"}, Output: "*"},
				{Inputs: []string{"temperature.Value"}, Output: "TemperatureF", Expression: "cToF($1)"},
				{Inputs: []string{`"Tag 10".Value`}, Output: "$metadata.user_property.Tag10"},
			},
		},
		steps: []step{
			{in: `{"temperature": {"Value": 10}, "Tag 10": {"Value": 5}}`, dropped: true},
			{
				in:     `{"temperature": {"Value": 1000, "Unit": "C"}, "Tag 10": {"Value": 200}}`,
				want:   `{"temperature": {"Unit": "C"}, "TemperatureF": 1832}`,
				propsW: []UserProperty{{"Tag10", "200"}},
			},
		},
	},
	{
		name: "create-dataflow/compute and enrich from an asset dataset",
		spec: Spec{
			Datasets: []DatasetRule{{Key: "assetDataset", Inputs: []string{"$source.assetId", "$context.assetId"}, Expression: "$1 == $2"}},
			Map: []MapRule{
				{Inputs: []string{"temperature"}, Output: "temperatureCelsius", Expression: "($1 - 32) * 5/9"},
				{Inputs: []string{"$context(assetDataset).location"}, Output: "location"},
				{Inputs: []string{"$metadata.user_properties.site"}, Output: "site"},
			},
		},
		datasets: map[string]string{"assetDataset": `{"assetId": "thermostat-1", "location": "Building 4"}`},
		steps: []step{
			{in: `{"assetId": "thermostat-1", "temperature": 98.6}`, props: []UserProperty{{"site", "graz"}}, want: `{"temperatureCelsius": 37, "location": "Building 4", "site": "graz"}`},
			// Integer operands divide as integers, as AIO documents: 180*5/9.
			{in: `{"assetId": "thermostat-2", "temperature": 212}`, want: `{"temperatureCelsius": 100}`},
		},
	},
	{
		name: "expressions/positional variables and operators",
		spec: Spec{Map: []MapRule{
			{Inputs: []string{"Position", "Office"}, Output: "a", Expression: `$1 + ", " + $2`},
			{Inputs: []string{"temperature"}, Output: "b", Expression: "cToF($1)"},
			{Inputs: []string{"temperature", "humidity"}, Output: "c", Expression: "$1 * $2 < 100000"},
			{Inputs: []string{"x"}, Output: "d", Expression: "$1 * 2 ^ 3"},
			{Inputs: []string{"x"}, Output: "e", Expression: "($1 * 2) ^ 3"},
			{Inputs: []string{"x"}, Output: "f", Expression: "-$1 * 2"},
			{Inputs: []string{"x", "y"}, Output: "g", Expression: "$1 > 100 && $2 > 200"},
			{Inputs: []string{"x"}, Output: "h", Expression: "$1 / 2"},
			{Inputs: []string{"x"}, Output: "i", Expression: "$1 / 2.0"},
		}},
		steps: []step{{
			in:   `{"Position": "Analyst", "Office": "Kent, WA", "temperature": 100, "humidity": 50, "x": 5, "y": 300}`,
			want: `{"a": "Analyst, Kent, WA", "b": 212, "c": true, "d": 40, "e": 1000, "f": -10, "g": false, "h": 2, "i": 2.5}`,
		}},
	},
}

func TestAIOExamples(t *testing.T) {
	for _, ex := range aioExamples {
		t.Run(ex.name, func(t *testing.T) {
			var ds staticDatasets
			if ex.datasets != nil {
				ds = staticDatasets{}
				for k, v := range ex.datasets {
					ds[k] = jsonLines(t, v)
				}
			}
			var lookup Datasets
			if ds != nil {
				lookup = ds
			}
			m, err := Compile(ex.spec, lookup)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range ex.steps {
				topic := s.topic
				if topic == "" {
					topic = "plant/line1/telemetry"
				}
				in := Message{Payload: doc(t, s.in), Topic: topic, UserProperties: s.props}
				before := show(in.Payload)
				out, keep, err := m.Apply(in)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if after := show(in.Payload); after != before {
					t.Fatalf("step %d: the input was modified: %s became %s", i, before, after)
				}
				if keep == s.dropped {
					t.Fatalf("step %d: keep = %v, want %v", i, keep, !s.dropped)
				}
				if !keep {
					continue
				}
				if want := doc(t, s.want); !sameJSON(out.Payload, want) {
					t.Errorf("step %d:\n got %s\nwant %s", i, show(out.Payload), show(want))
				}
				if s.topicW != "" && out.Topic != s.topicW {
					t.Errorf("step %d: topic %q, want %q", i, out.Topic, s.topicW)
				}
				if s.propsW != nil && !reflect.DeepEqual(out.UserProperties, s.propsW) {
					t.Errorf("step %d: user properties %v, want %v", i, out.UserProperties, s.propsW)
				}
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		spec Spec
		want string
	}{
		{Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "a"}, {Inputs: []string{"b"}, Output: "b"}, {Inputs: []string{"c"}, Output: "c"}, {Inputs: []string{"t"}, Output: "f", Expression: "1 + ctof($1)"}}}, `map[3].expression: 5: unknown function "ctof" (did you mean "cToF"?)`},
		{Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "b", Expression: "$2 + 1"}}}, "map[0].expression: 1: $2 refers to input 2, but the rule has 1 input"},
		{Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "b", Expression: "$1 +"}}}, "map[0].expression: 5: unexpected end of expression"},
		{Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "b", Expression: "cToF($1, 2)"}}}, "map[0].expression: 1: cToF takes 1 argument, got 2"},
		{Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "b", Expression: "if($1, 2)"}}}, "map[0].expression: 1: if takes 3 arguments (condition, then, else), got 2"},
		{Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "b", Expression: `"abc`}}}, "map[0].expression: 1: unterminated string"},
		{Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "b", Expression: "round_n($1, 16)"}}}, "map[0].expression: 13: round_n: decimals must be an integer from 0 to 15"},
		{Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "b", Expression: `str::regex_matches($1, "(")`}}}, "map[0].expression: 24: str::regex_matches: error parsing regexp: missing closing ): `(`"},
		{Spec{Map: []MapRule{{Inputs: []string{"a", "b"}, Output: "c"}}}, "map[0].expression: an expression is required to combine several inputs"},
		{Spec{Map: []MapRule{{Inputs: []string{"*.a.*"}, Output: "*"}}}, "map[0].inputs[0]: 5: only one * is allowed in a path"},
		{Spec{Map: []MapRule{{Inputs: []string{"a.b*"}, Output: "c"}}}, `map[0].inputs[0]: 3: a wildcard must be a whole segment, not "b*" (quote the segment if * is part of the name)`},
		{Spec{Map: []MapRule{{Inputs: []string{"a.*"}, Output: "c"}}}, "map[0].output: inputs[0] has a wildcard, so the output needs one to place each match"},
		{Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "c.*"}}}, "map[0].output: the output has a wildcard but no input does"},
		{Spec{Map: []MapRule{{Inputs: []string{`a."b`}, Output: "c"}}}, "map[0].inputs[0]: 3: unterminated quoted segment"},
		{Spec{Map: []MapRule{{Inputs: []string{"a..b"}, Output: "c"}}}, "map[0].inputs[0]: 3: empty path segment"},
		{Spec{Map: []MapRule{{Inputs: []string{"$context(nope).x"}, Output: "c"}}}, `map[0].inputs[0]: unknown dataset "nope" (no datasets are declared)`},
		{Spec{Map: []MapRule{{Inputs: []string{"$metadata.qos"}, Output: "c"}}}, `map[0].inputs[0]: 11: unknown metadata field "qos" (known: topic, user_property.<key>, header.<key>, system_property.content_type)`},
		{Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "$context(x).y"}}}, "map[0].output: a dataset cannot be written"},
		{Spec{Map: []MapRule{{Output: "c"}}}, "map[0].inputs: a map rule needs at least one input"},
		{Spec{Filter: []FilterRule{{Inputs: []string{"a"}}}}, "filter[0].expression: a filter rule needs an expression; the message is dropped when it is true"},
		{Spec{Filter: []FilterRule{{Inputs: []string{"*"}, Expression: "true"}}}, "filter[0].inputs[0]: filters take no wildcards"},
		{Spec{Datasets: []DatasetRule{{Key: " as x"}}}, "datasets[0].key: a dataset needs the state-store key it is read from"},
	}
	for _, tt := range tests {
		_, err := Compile(tt.spec, nil)
		if err == nil {
			t.Errorf("%+v: compiled, want %q", tt.spec, tt.want)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("%+v:\n got %q\nwant %q", tt.spec, err.Error(), tt.want)
		}
	}
	// Every problem is reported, not only the first.
	_, err := Compile(Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "b", Expression: "x("}, {Inputs: []string{"a.."}, Output: "b"}}}, nil)
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 {
		t.Fatalf("got %v, want two errors", err)
	}
	if errs[0].Field != "map[0].expression" || errs[0].Pos != 3 || !strings.Contains(errs[0].Msg, "unexpected end") {
		t.Errorf("first error %+v", errs[0])
	}
}
