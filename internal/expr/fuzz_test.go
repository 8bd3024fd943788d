package expr

import (
	"errors"
	"reflect"
	"testing"
)

// FuzzExpression: any text either fails to compile with a positioned
// error inside the text, or compiles and evaluates without panicking.
func FuzzExpression(f *testing.F) {
	for _, tt := range functionCases {
		f.Add(tt.src)
	}
	for _, s := range []string{"", "(", "$0", "$99999999999", `"\`, "1e", "a::", "((((1))))", "-", "!!!!true", "()", "(1,)", "1 ?? ?? 2", "'x' + $1"} {
		f.Add(s)
	}
	c := newCompiler(&regexCache{})
	r := newRunner()
	f.Fuzz(func(t *testing.T, src string) {
		p, err := c.compile(src, 3)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("%q: error is not a SyntaxError: %v", src, err)
			}
			if se.Pos < 0 || se.Pos > len(src)+1 {
				t.Fatalf("%q: position %d outside the text", src, se.Pos)
			}
			return
		}
		for _, in := range [][]any{{int64(3), 2.5, "x"}, {nil, nil, nil}, {[]any{1.0, "a"}, true, int64(-1)}} {
			_, _ = r.run(p, in) // must not panic; errors are fine
		}
	})
}

// FuzzPath: a path that parses renders back to text that parses to the
// same path.
func FuzzPath(f *testing.F) {
	for _, s := range []string{
		"a.b.c", `Payload."Tag.10".Value`, `Payload.He said: "No. It is done"`, "*.Max", "$metadata.topic",
		"$metadata.user_property.\"weird key\"", "$context(position).BaseSalary", "$context(a).*", "temperature ? $last",
		"temperature ? $last ?? 0", `status ?? "unknown"`, "a..b", `"unterminated`, "$unknown.x", "a.*.b.*",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parsePath(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("%q: error is not a SyntaxError: %v", s, err)
			}
			return
		}
		if p.src == srcPayload && len(p.segs) == 0 {
			t.Fatalf("%q: parsed to an empty payload path", s)
		}
		for _, seg := range p.segs {
			if containsQuote(seg) {
				return // a quote inside a quoted segment has no rendering
			}
		}
		q, err := parsePath(p.String())
		if err != nil {
			t.Fatalf("%q renders as %q, which does not parse: %v", s, p.String(), err)
		}
		if q.src != p.src || q.alias != p.alias || q.wild != p.wild || !reflect.DeepEqual(q.segs, p.segs) {
			t.Fatalf("%q renders as %q, which parses differently: %+v vs %+v", s, p.String(), q, p)
		}
	})
}

func containsQuote(s string) bool {
	for i := range len(s) {
		if s[i] == '"' {
			return true
		}
	}
	return false
}

// FuzzApply runs a mapping with wildcards, a filter and a specialization
// over arbitrary JSON: it must not panic, and must not modify its input.
func FuzzApply(f *testing.F) {
	for _, s := range []string{
		`{"a": {"Max": 1, "Min": 2}, "b": {"Max": 3.5, "Min": "x"}}`,
		`{"t": 21, "x": [1, {"y": 2}], "z": null}`,
		`[1, 2]`, `"s"`, `{}`, `{"Opacity": {"Max": 1, "Min": 1}}`,
	} {
		f.Add([]byte(s))
	}
	m, err := Compile(Spec{
		Filter: []FilterRule{{Inputs: []string{"t ? $last"}, Expression: "$1 > 1000"}},
		Map: []MapRule{
			{Inputs: []string{"*"}, Output: "copy.*"},
			{Inputs: []string{"*.Max", "*.Min"}, Output: "avg.*", Expression: "($1 + $2) / 2"},
			{Inputs: []string{"Opacity.Max", "Opacity.Min"}, Output: ""},
			{Inputs: []string{"t"}, Output: "$metadata.user_property.t"},
		},
	}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := DecodeJSON(data)
		if err != nil {
			return
		}
		before := show(v)
		_, _, _ = m.Apply(Message{Payload: v, Topic: "t"})
		if show(v) != before {
			t.Fatalf("input modified: %s became %s", before, show(v))
		}
	})
}
