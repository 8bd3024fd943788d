package expr_test

import (
	"encoding/json"
	"fmt"

	"github.com/edgeport/edgeport/internal/expr"
)

// The dataflow engine compiles a transformation once, when the Dataflow
// is applied, and calls Apply for every message.
func Example() {
	m, err := expr.Compile(expr.Spec{
		Filter: []expr.FilterRule{{Inputs: []string{"temperature"}, Expression: "$1 <= -50"}},
		Map: []expr.MapRule{
			{Inputs: []string{"*"}, Output: "*"},
			{Inputs: []string{"temperature"}, Output: "temperatureF", Expression: "round_n(cToF($1), 1)"},
			{Inputs: []string{"$metadata.topic"}, Output: "$metadata.user_property.source"},
		},
	}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	payload, _ := expr.DecodeJSON([]byte(`{"temperature": 21.5, "line": 3}`))
	out, keep, err := m.Apply(expr.Message{Payload: payload, Topic: "plant/line3"})
	if err != nil || !keep {
		fmt.Println(keep, err)
		return
	}
	b, _ := json.Marshal(out.Payload)
	fmt.Println(string(b), out.UserProperties)

	_, err = expr.Compile(expr.Spec{Map: []expr.MapRule{{Inputs: []string{"t"}, Output: "f", Expression: "1 + ctof($1)"}}}, nil)
	fmt.Println(err)
	// Output:
	// {"line":3,"temperatureF":70.7} [{source plant/line3}]
	// map[0].expression: 5: unknown function "ctof" (did you mean "cToF"?)
}
