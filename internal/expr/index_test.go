package expr

import (
	"fmt"
	"testing"
)

// TestDatasetIndexMatchesScan: the hash index used for `$1 == $2`
// datasets finds the same record as evaluating the expression on every
// record, which is what `$2 == $1 && true` (a shape the index does not
// recognise) does.
func TestDatasetIndexMatchesScan(t *testing.T) {
	datasets := []string{
		`{"id": "a", "v": 1}
{"id": "b", "v": 2}
{"id": "a", "v": 3}`,
		`{"id": 1, "v": "int"}
{"id": 2.5, "v": "float"}
{"id": true, "v": "bool"}
{"id": "1", "v": "string"}`,
		`{"id": "a", "v": 1}
{"v": "no id"}
{"id": null, "v": "null id"}
{"id": "b", "v": 2}`,
		`{"id": [1, 2], "v": "tuple"}
{"id": "b", "v": 2}`,
	}
	messages := []string{`{"id": "a"}`, `{"id": "b"}`, `{"id": 1}`, `{"id": 1.0}`, `{"id": 2.5}`, `{"id": true}`,
		`{"id": "1"}`, `{}`, `{"id": null}`, `{"id": [1, 2]}`, `{"id": "zzz"}`}
	for di, text := range datasets {
		ds := staticDatasets{"d": jsonLines(t, text)}
		compile := func(expr string) *Mapping {
			m, err := Compile(Spec{
				Datasets: []DatasetRule{{Key: "d", Inputs: []string{"$source.id", "$context.id"}, Expression: expr}},
				Map:      []MapRule{{Inputs: []string{"$context(d).v"}, Output: "v"}},
			}, ds)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		indexed, scanned := compile("$1 == $2"), compile("$2 == $1 && true")
		if indexed.datasets[0].eqMsg != 0 || scanned.datasets[0].eqMsg != -1 {
			t.Fatal("the index is not used where the test expects it")
		}
		for _, msg := range messages {
			in := Message{Payload: doc(t, msg)}
			a, _, err1 := indexed.Apply(in)
			b, _, err2 := scanned.Apply(in)
			if fmt.Sprint(err1) != fmt.Sprint(err2) || show(a.Payload) != show(b.Payload) {
				t.Errorf("dataset %d, message %s: indexed %s (%v), scanned %s (%v)", di, msg, show(a.Payload), err1, show(b.Payload), err2)
			}
		}
	}
}

// TestDatasetRefresh: a new version of a dataset (a new slice from the
// lookup) is used from the next message on.
func TestDatasetRefresh(t *testing.T) {
	ds := staticDatasets{"limits": jsonLines(t, `{"id": "oven", "max": 100}`)}
	m, err := Compile(Spec{
		Datasets: []DatasetRule{{Key: "limits", Inputs: []string{"$source.id", "$context.id"}, Expression: "$1 == $2"}},
		Map:      []MapRule{{Inputs: []string{"$context(limits).max"}, Output: "max"}},
	}, ds)
	if err != nil {
		t.Fatal(err)
	}
	in := Message{Payload: doc(t, `{"id": "oven"}`)}
	if out, _, _ := m.Apply(in); show(out.Payload) != `{"max":100}` {
		t.Fatalf("got %s", show(out.Payload))
	}
	ds["limits"] = jsonLines(t, `{"id": "oven", "max": 120}`)
	if out, _, _ := m.Apply(in); show(out.Payload) != `{"max":120}` {
		t.Fatalf("after refresh got %s", show(out.Payload))
	}
	delete(ds, "limits")
	if out, _, _ := m.Apply(in); show(out.Payload) != `{}` {
		t.Fatalf("after delete got %s", show(out.Payload))
	}
}
