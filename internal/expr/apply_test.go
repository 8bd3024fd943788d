package expr

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func mustCompile(t *testing.T, spec Spec, ds Datasets) *Mapping {
	t.Helper()
	m, err := Compile(spec, ds)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDefaultsAndLast(t *testing.T) {
	m := mustCompile(t, Spec{Map: []MapRule{
		{Inputs: []string{"status ?? \"unknown\""}, Output: "status"},
		{Inputs: []string{"t ? $last ?? 0"}, Output: "t"},
		{Inputs: []string{"n ?? 1.5"}, Output: "n", Expression: "$1 * 2"},
		{Inputs: []string{"flag ?? true"}, Output: "flag"},
	}}, nil)
	for i, tt := range []struct{ in, want string }{
		{`{}`, `{"flag":true,"n":3,"status":"unknown","t":0}`},
		{`{"t": 5, "status": "ok", "n": 2, "flag": false}`, `{"flag":false,"n":4,"status":"ok","t":5}`},
		{`{"t": null}`, `{"flag":true,"n":3,"status":"unknown","t":5}`},
	} {
		out, _, err := m.Apply(Message{Payload: doc(t, tt.in)})
		if err != nil {
			t.Fatal(err)
		}
		if got := show(out.Payload); got != tt.want {
			t.Errorf("step %d: got %s, want %s", i, got, tt.want)
		}
	}
}

func TestMetadataOutputs(t *testing.T) {
	m := mustCompile(t, Spec{Map: []MapRule{
		{Inputs: []string{"*"}, Output: "*"},
		{Inputs: []string{"$metadata.user_property.*"}, Output: "props.*"},
		{Inputs: []string{"site"}, Output: "$metadata.topic", Expression: `"plants/" + $1`},
		{Inputs: []string{"$metadata.system_property.content_type"}, Output: "ct"},
		{Inputs: []string{"x"}, Output: "$metadata.system_property.content_type", Expression: `"application/json"`},
		{Inputs: []string{"$metadata.user_property.drop"}, Output: "$metadata.user_property.drop", Expression: "()"},
		{Inputs: []string{"$metadata.header.prio"}, Output: "$metadata.user_property.prio", Expression: "$1 + \"!\""},
	}}, nil)
	in := Message{
		Payload: doc(t, `{"site": "graz", "x": 1}`), Topic: "in/topic", ContentType: "text/plain",
		UserProperties: []UserProperty{{"drop", "me"}, {"prio", "high"}, {"keep", "k"}},
	}
	out, _, err := m.Apply(in)
	if err != nil {
		t.Fatal(err)
	}
	// The rules reading site, x, drop and prio by name specialize the
	// wildcard rules, so those fields are not copied by the wildcards.
	if want := `{"ct":"text/plain","props":{"keep":"k"}}`; show(out.Payload) != want {
		t.Errorf("payload %s, want %s", show(out.Payload), want)
	}
	if out.Topic != "plants/graz" || out.ContentType != "application/json" {
		t.Errorf("topic %q content type %q", out.Topic, out.ContentType)
	}
	if want := []UserProperty{{"keep", "k"}, {"prio", "high!"}}; !reflect.DeepEqual(out.UserProperties, want) {
		t.Errorf("user properties %v, want %v", out.UserProperties, want)
	}
	if !reflect.DeepEqual(in.UserProperties, []UserProperty{{"drop", "me"}, {"prio", "high"}, {"keep", "k"}}) {
		t.Errorf("the input's user properties changed: %v", in.UserProperties)
	}
}

func TestMissingResultRemovesField(t *testing.T) {
	m := mustCompile(t, Spec{Map: []MapRule{
		{Inputs: []string{"*"}, Output: "*"},
		{Inputs: []string{"a"}, Output: "b", Expression: "if($1 > 0, $1, ())"},
		{Inputs: []string{"nothere"}, Output: "c"},
	}}, nil)
	for _, tt := range []struct{ in, want string }{
		{`{"a": 1, "b": 7, "c": 8}`, `{"b":1,"c":8}`},
		{`{"a": -1, "b": 7}`, `{}`},
	} {
		out, _, err := m.Apply(Message{Payload: doc(t, tt.in)})
		if err != nil {
			t.Fatal(err)
		}
		if got := show(out.Payload); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestNoMapPassesThrough(t *testing.T) {
	m := mustCompile(t, Spec{}, nil)
	in := Message{Payload: doc(t, `{"a": [1, {"b": 2}]}`), Topic: "t", UserProperties: []UserProperty{{"k", "v"}}}
	out, keep, err := m.Apply(in)
	if err != nil || !keep || !reflect.DeepEqual(out, in) {
		t.Fatalf("got %+v %v %v", out, keep, err)
	}
}

func TestObjectCopiesAreIndependent(t *testing.T) {
	m := mustCompile(t, Spec{Map: []MapRule{
		{Inputs: []string{"cfg"}, Output: "copy"},
		{Inputs: []string{"x"}, Output: "copy.extra"},
	}}, nil)
	in := Message{Payload: doc(t, `{"cfg": {"a": 1}, "x": 2}`)}
	out, _, err := m.Apply(in)
	if err != nil {
		t.Fatal(err)
	}
	if show(out.Payload) != `{"copy":{"a":1,"extra":2}}` || show(in.Payload) != `{"cfg":{"a":1},"x":2}` {
		t.Fatalf("out %s, in %s", show(out.Payload), show(in.Payload))
	}
}

func TestApplyErrors(t *testing.T) {
	tests := []struct {
		spec Spec
		in   string
		want string
	}{
		{Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "b", Expression: "$1 / 1"}}}, `{"a": 1}`, ""},
		{Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "b"}, {Inputs: []string{"a"}, Output: "c", Expression: "$1 / 0"}}}, `{"a": 1}`, "evaluating map[1].expression: division by zero"},
		{Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "c", Expression: "cToF($1)"}}}, `{"a": "hot"}`, "evaluating map[0].expression: type mismatch: argument got string, want a number"},
		{Spec{Map: []MapRule{{Inputs: []string{"a"}, Output: "c", Expression: "math::sqrt($1)"}}}, `{"a": -1}`, "evaluating map[0].expression: the result is NaN, which JSON cannot carry"},
		{Spec{
			Datasets: []DatasetRule{{Key: "d", Inputs: []string{"$source.a", "$context.k"}, Expression: "$1 < $2"}},
			Map:      []MapRule{{Inputs: []string{"$context(d).*"}, Output: "*"}},
		}, `{"a": 1}`, "evaluating datasets[0].expression: type mismatch: cannot compare int with string"},
		{Spec{Filter: []FilterRule{{Inputs: []string{"a"}, Expression: "$1 + 1"}}}, `{"a": 1}`, "evaluating filter[0].expression: the result is int, want a boolean"},
		{Spec{Filter: []FilterRule{{Inputs: []string{"a"}, Expression: `$1 > "x"`}}}, `{"a": 1}`, "evaluating filter[0].expression: type mismatch: cannot compare int with string"},
	}
	for _, tt := range tests {
		m := mustCompile(t, tt.spec, staticDatasets{"d": []any{map[string]any{"k": "x"}}})
		_, keep, err := m.Apply(Message{Payload: doc(t, tt.in)})
		if tt.want == "" {
			if err != nil || !keep {
				t.Errorf("%+v: %v", tt.spec, err)
			}
			continue
		}
		if err == nil || err.Error() != tt.want || !errors.Is(err, ErrEval) || keep {
			t.Errorf("%+v: keep %v, error %v, want %q wrapping ErrEval", tt.spec, keep, err, tt.want)
		}
	}
}

// TestConcurrentApply runs one mapping from many goroutines, as a
// dataflow with several workers does; with -race it checks the pools and
// the last-value slots.
func TestConcurrentApply(t *testing.T) {
	m := mustCompile(t, Spec{
		Filter: []FilterRule{{Inputs: []string{"t ? $last"}, Expression: "$1 < 0"}},
		Map: []MapRule{
			{Inputs: []string{"*"}, Output: "*"},
			{Inputs: []string{"t ? $last"}, Output: "f", Expression: "round_n(cToF($1), 2)"},
			{Inputs: []string{"id"}, Output: "", Expression: ""},
		},
	}, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				id := fmt.Sprintf("%d-%d", g, i)
				out, keep, err := m.Apply(Message{Payload: doc(t, fmt.Sprintf(`{"id": %q, "t": %d, "v": {"w": %d}}`, id, i, i))})
				if err != nil || !keep {
					errs <- fmt.Errorf("%s: keep %v, %v", id, keep, err)
					return
				}
				p := out.Payload.(map[string]any)
				want, _ := fnRoundN(float64(i)*9/5+32, int64(2))
				if _, has := p["id"]; has || !sameJSON(p["f"], want) {
					errs <- fmt.Errorf("%s: %s", id, show(p))
					return
				}
				if !strings.Contains(show(p), fmt.Sprintf(`"w":%d`, i)) {
					errs <- fmt.Errorf("%s: lost v.w: %s", id, show(p))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestJSONLines(t *testing.T) {
	recs, err := ParseJSONLines([]byte("{\"a\": 1}\n\n  {\"a\": 2.5}\r\n"))
	if err != nil || show(recs) != `[{"a":1},{"a":2.5}]` {
		t.Fatalf("got %s, %v", show(recs), err)
	}
	if _, err := ParseJSONLines([]byte("{\"a\": 1}\n{\"a\": \n")); err == nil || !strings.HasPrefix(err.Error(), "line 2: ") {
		t.Fatalf("error %v, want one naming line 2", err)
	}
	if _, err := DecodeJSON([]byte(`{"a": 1} {"b": 2}`)); err == nil {
		t.Fatal("two documents decoded as one")
	}
}
