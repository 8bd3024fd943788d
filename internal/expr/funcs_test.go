package expr

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// eval compiles src as the expression of a one-rule mapping whose inputs
// are $1..$n and evaluates it once.
func eval(t *testing.T, src string, inputs ...any) (any, error) {
	t.Helper()
	p, err := newCompiler(&regexCache{}).compile(src, len(inputs))
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	return newRunner().run(p, inputs)
}

// functionCases holds an example of every function and operator.
var functionCases = []struct {
	src    string
	inputs []any
	want   any
}{
	// The examples of the function tables in Azure IoT Operations' docs.
	{"min(2, 3, 1)", nil, int64(1)},
	{"max(2, 3, 1)", nil, int64(3)},
	{"min($1)", []any{[]any{2.34, 12.3, 32.4}}, 2.34},
	{"max($1)", []any{[]any{2.34, 12.3, 32.4}}, 32.4},
	{"if($1 > 10, 'High', 'Low')", []any{int64(11)}, "High"},
	{"if($1 > 10, 'High', 'Low')", []any{int64(10)}, "Low"},
	{`len("Azure")`, nil, int64(5)},
	{"len(1, 2, 3)", nil, int64(3)},
	{"len($1)", []any{[]any{1, 2}}, int64(2)},
	{"floor(2.9)", nil, 2.0},
	{"round(2.5)", nil, 3.0},
	{"round(-2.5)", nil, -3.0},
	{"ceil(2.1)", nil, 3.0},
	{"floor(7)", nil, int64(7)},
	{"scale($1, 0, 10, 0, 100)", []any{int64(5)}, 50.0},
	{"scale(4, 0, 20, 32, 212)", nil, 68.0},
	{"cToF(100)", nil, 212.0},
	{"fToC(212)", nil, 100.0},
	{"psiToBar(100)", nil, 6.89476},
	{"barToPsi(6.89476)", nil, 100.0},
	{"inToCm(10)", nil, 25.4},
	{"cmToIn(25.4)", nil, 10.0},
	{"ftToM(10)", nil, 3.048},
	{"mToFt(3.048)", nil, 10.0},
	{"lbToKg(10)", nil, 4.53592},
	{"kgToLb(4.53592)", nil, 10.0},
	{"galToL(10)", nil, 37.8541},
	{"lToGal(37.8541)", nil, 10.0},
	{"round_n(3.14159, 2)", nil, 3.14},
	{"round_n(2.675, 2)", nil, 2.67}, // 2.675 is 2.67499999... in binary
	{"round_n(7, 3)", nil, int64(7)},
	{"math::abs(-3)", nil, int64(3)},
	{"abs(-2.5)", nil, 2.5},
	{"math::sqrt(16)", nil, 4.0},
	{"math::cbrt(27)", nil, 3.0},
	{"math::ln(1)", nil, 0.0},
	{"math::log2(8)", nil, 3.0},
	{"math::log10(1000)", nil, 3.0},
	{"math::log(81, 3)", nil, 4.0},
	{"math::exp(0)", nil, 1.0},
	{"math::exp2(10)", nil, 1024.0},
	{"math::pow(2, 10)", nil, 1024.0},
	{"math::cos(0)", nil, 1.0},
	{"math::sin(0)", nil, 0.0},
	{"math::tan(0)", nil, 0.0},
	{"math::acos(1)", nil, 0.0},
	{"math::asin(1)", nil, math.Pi / 2},
	{"math::atan(1)", nil, math.Pi / 4},
	{"math::atan2(1, 1)", nil, math.Pi / 4},
	{"math::hypot(3, 4)", nil, 5.0},
	{`str::to_lowercase("MiXeD")`, nil, "mixed"},
	{`str::to_uppercase("MiXeD")`, nil, "MIXED"},
	{`str::trim("  x y  ")`, nil, "x y"},
	{"str::from(42)", nil, "42"},
	{"str::from(2.5)", nil, "2.5"},
	{"str::from(true)", nil, "true"},
	{`str::substring("température", 2, 6)`, nil, "mpér"},
	{`str::substring("abc", 1, 99)`, nil, "bc"},
	{`str::regex_matches("line-3", "^line-[0-9]+$")`, nil, true},
	{`str::regex_replace("a1b22", "[0-9]+", "#")`, nil, "a#b#"},
	{`contains(("a", "b"), "b")`, nil, true},
	{`contains($1, 3)`, []any{[]any{1.0, 2.0, 3.0}}, true},
	{`contains("oven-12", "en-1")`, nil, true},
	{`contains_any((1, 2), (5, 2))`, nil, true},
	{`contains_any((1, 2), (5, 6))`, nil, false},
	{"typeof(1)", nil, "int"},
	{"typeof(1.5)", nil, "float"},
	{`typeof("s")`, nil, "string"},
	{"typeof(true)", nil, "boolean"},
	{"typeof((1, 2))", nil, "tuple"},
	{"typeof(())", nil, "empty"},
	{"typeof($1)", []any{nil}, "empty"},

	// Operators.
	{"7 / 2", nil, int64(3)},
	{"7 / 2.0", nil, 3.5},
	{"7 % 3", nil, int64(1)},
	{"7.5 % 2", nil, 1.5},
	{"2 ^ 10", nil, int64(1024)},
	{"3 ^ 5", nil, int64(243)},
	{"(-2) ^ 63", nil, int64(-9223372036854775808)},
	{"2 ^ 63", nil, 9223372036854775808.0},
	{"0 ^ 777777777", nil, int64(0)},
	{"(-1) ^ 777777777", nil, int64(-1)},
	{"7 ^ 0", nil, int64(1)},
	{"2 ^ -1", nil, 0.5},
	{"2 ^ 3 ^ 2", nil, int64(512)},
	{"-2 ^ 2", nil, int64(-4)},
	{"1 + 2 * 3", nil, int64(7)},
	{"(1 + 2) * 3", nil, int64(9)},
	{`"n=" + 5`, nil, "n=5"},
	{`5 + "x"`, nil, "5x"},
	{"1 == 1.0", nil, true},
	{`"a" < "b"`, nil, true},
	{"!true", nil, false},
	{"!($1 > 2)", []any{int64(1)}, true},
	{"true && false || true", nil, true},
	{"$1 ?? 7", []any{nil}, int64(7)},
	{"$1 ?? 7", []any{int64(3)}, int64(3)},
	{"9223372036854775807 + 1", nil, 9223372036854775808.0},
	{"(1, 2) == (1, 2)", nil, true},

	// The missing value.
	{"$1 == ()", []any{nil}, true},
	{"$1 != ()", []any{int64(0)}, true},
	{"$1 + 1", []any{nil}, nil},
	{"$1 > 1", []any{nil}, nil},
	{"cToF($1)", []any{nil}, nil},
	{"$1 > 1 && false", []any{nil}, false},
	{"$1 > 1 || true", []any{nil}, true},
	{"$1 > 1 && true", []any{nil}, nil},
	{"min($1, 4, 2)", []any{nil}, int64(2)},
	{"if($1, 1, 2)", []any{nil}, int64(2)},
}

func TestFunctions(t *testing.T) {
	for _, tt := range functionCases {
		got, err := eval(t, tt.src, tt.inputs...)
		if err != nil {
			t.Errorf("%s: %v", tt.src, err)
			continue
		}
		if !sameJSON(got, tt.want) || typeName(norm(got)) != typeName(tt.want) {
			t.Errorf("%s = %#v (%s), want %#v (%s)", tt.src, got, typeName(norm(got)), tt.want, typeName(tt.want))
		}
	}
}

func TestFunctionErrors(t *testing.T) {
	tests := []struct {
		src    string
		inputs []any
		want   string
	}{
		{"1 / 0", nil, "division by zero"},
		{"1.0 / 0", nil, "division by zero"},
		{"5 % 0", nil, "modulo by zero"},
		{"$1 * 2", []any{"x"}, "operator * got string, want a number"},
		{"$1 < 2", []any{"x"}, "cannot compare string with int"},
		{"cToF($1)", []any{"hot"}, "argument got string, want a number"},
		{"if($1, 1, 2)", []any{int64(1)}, "if got int, want a boolean condition"},
		{"$1 && true", []any{"x"}, "operator && got string, want a boolean"},
		{"round_n(1.5, $1)", []any{int64(20)}, "round_n: decimals must be an integer from 0 to 15, got 20"},
		{"scale(1, 2, 2, 0, 1)", nil, "scale: the source range is empty"},
		{"str::trim(1)", nil, "str::trim got int, want a string"},
		{"str::regex_matches($1, $2)", []any{"a", "("}, "error parsing regexp"},
	}
	for _, tt := range tests {
		_, err := eval(t, tt.src, tt.inputs...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.src, err, tt.want)
		}
	}
	if _, err := eval(t, "$1 - 1", "x"); !errors.Is(err, errType) {
		t.Errorf("a type mismatch is not errType: %v", err)
	}
}

// TestEveryFunctionIsTested keeps functionCases complete: a function
// added to the library without an example there fails here.
func TestEveryFunctionIsTested(t *testing.T) {
	for name := range library(&regexCache{}) {
		found := false
		for _, tt := range functionCases {
			if strings.Contains(tt.src, name+"(") {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("function %s has no case in functionCases", name)
		}
	}
}
