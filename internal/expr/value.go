package expr

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Values inside an expression are int64, float64, string, bool, []any
// (a tuple) or nil (the missing value, written () — JSON null is missing
// too). Objects may be passed through but take part in no operator.

// norm converts a decoded document value to the expression's types: a
// json.Number becomes int64 when it is integral and fits, float64
// otherwise, so that integer arithmetic stays integral as Azure IoT
// Operations specifies (5 / 2 is 2).
func norm(v any) any {
	switch x := v.(type) {
	case int64, float64, string, bool, nil:
		return v
	case json.Number:
		if !strings.ContainsAny(string(x), ".eE") {
			if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
				return n
			}
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return string(x)
		}
		return f
	case int:
		return int64(x)
	case int32:
		return int64(x)
	case uint32:
		return int64(x)
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x)
		}
		return float64(x)
	case float32:
		return float64(x)
	case []any:
		return x
	}
	return v
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "empty"
	case int64:
		return "int"
	case float64:
		return "float"
	case string:
		return "string"
	case bool:
		return "boolean"
	case []any:
		return "tuple"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// errType is returned when an operator or function gets a value of the
// wrong type; Apply reports it with the rule's field path.
var errType = errors.New("type mismatch")

func typeErr(what string, v any, want string) error {
	return fmt.Errorf("%w: %s got %s, want %s", errType, what, typeName(v), want)
}

// num returns v as a float64 and whether v is a number.
func num(v any) (float64, bool) {
	switch x := v.(type) {
	case int64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

func toString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case []any:
		var b strings.Builder
		b.WriteByte('(')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(toString(norm(e)))
		}
		b.WriteByte(')')
		return b.String()
	}
	if b, err := json.Marshal(v); err == nil {
		return string(b)
	}
	return fmt.Sprint(v)
}

// arith applies an arithmetic operator with integer results for integer
// operands (falling back to float on overflow) and float otherwise.
func arith(op byte, a, b any) (any, error) {
	a, b = norm(a), norm(b)
	if a == nil || b == nil {
		return nil, nil
	}
	if op == '+' {
		_, as := a.(string)
		_, bs := b.(string)
		if as || bs {
			return toString(a) + toString(b), nil
		}
	}
	ai, aInt := a.(int64)
	bi, bInt := b.(int64)
	if aInt && bInt {
		switch op {
		case '+':
			if r := ai + bi; (r > ai) == (bi > 0) {
				return r, nil
			}
		case '-':
			if r := ai - bi; (r < ai) == (bi > 0) {
				return r, nil
			}
		case '*':
			if ai == 0 || bi == 0 {
				return int64(0), nil
			}
			if r := ai * bi; r/bi == ai && !(ai == -1 && bi == math.MinInt64) && !(bi == -1 && ai == math.MinInt64) {
				return r, nil
			}
		case '/':
			if bi == 0 {
				return nil, errors.New("division by zero")
			}
			if !(ai == math.MinInt64 && bi == -1) {
				return ai / bi, nil
			}
		case '%':
			if bi == 0 {
				return nil, errors.New("modulo by zero")
			}
			if bi == -1 {
				return int64(0), nil
			}
			return ai % bi, nil
		case '^':
			if bi >= 0 {
				if r, ok := ipow(ai, bi); ok {
					return r, nil
				}
			}
		}
	}
	x, ok := num(a)
	if !ok {
		return nil, typeErr("operator "+string(op), a, "a number")
	}
	y, ok := num(b)
	if !ok {
		return nil, typeErr("operator "+string(op), b, "a number")
	}
	switch op {
	case '+':
		return x + y, nil
	case '-':
		return x - y, nil
	case '*':
		return x * y, nil
	case '/':
		if y == 0 {
			return nil, errors.New("division by zero")
		}
		return x / y, nil
	case '%':
		if y == 0 {
			return nil, errors.New("modulo by zero")
		}
		return math.Mod(x, y), nil
	case '^':
		return math.Pow(x, y), nil
	}
	return nil, fmt.Errorf("unknown operator %c", op)
}

// ipow raises b to e >= 0 by squaring; ok is false on overflow.
func ipow(b, e int64) (int64, bool) {
	switch b {
	case 0:
		if e == 0 {
			return 1, true
		}
		return 0, true
	case 1:
		return 1, true
	case -1:
		if e%2 == 0 {
			return 1, true
		}
		return -1, true
	}
	r := int64(1)
	for e > 0 {
		if e&1 == 1 {
			n := r * b
			if n/b != r {
				return 0, false
			}
			r = n
		}
		e >>= 1
		if e > 0 {
			n := b * b
			if n/b != b {
				return 0, false
			}
			b = n
		}
	}
	return r, true
}

// equal compares values: numbers by value across int and float, tuples
// element by element, the missing value only to itself.
func equal(a, b any) bool {
	a, b = norm(a), norm(b)
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if x, ok := num(a); ok {
		if y, ok := num(b); ok {
			ai, aInt := a.(int64)
			bi, bInt := b.(int64)
			if aInt && bInt {
				return ai == bi
			}
			return x == y
		}
		return false
	}
	switch x := a.(type) {
	case string:
		y, ok := b.(string)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equal(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return false
}

// compare orders two numbers or two strings; ok is false when either is
// missing.
func compare(a, b any) (c int, ok bool, err error) {
	a, b = norm(a), norm(b)
	if a == nil || b == nil {
		return 0, false, nil
	}
	ai, aInt := a.(int64)
	bi, bInt := b.(int64)
	if aInt && bInt {
		switch {
		case ai < bi:
			return -1, true, nil
		case ai > bi:
			return 1, true, nil
		}
		return 0, true, nil
	}
	if x, xok := num(a); xok {
		y, yok := num(b)
		if !yok {
			return 0, false, fmt.Errorf("%w: cannot compare %s with %s", errType, typeName(a), typeName(b))
		}
		switch {
		case x < y:
			return -1, true, nil
		case x > y:
			return 1, true, nil
		}
		return 0, true, nil
	}
	if x, xok := a.(string); xok {
		if y, yok := b.(string); yok {
			return strings.Compare(x, y), true, nil
		}
	}
	return 0, false, fmt.Errorf("%w: cannot compare %s with %s", errType, typeName(a), typeName(b))
}

// ---- operators, as called by compiled programs ----

func opAdd(a ...any) (any, error) { return arith('+', a[0], a[1]) }
func opSub(a ...any) (any, error) { return arith('-', a[0], a[1]) }
func opMul(a ...any) (any, error) { return arith('*', a[0], a[1]) }
func opDiv(a ...any) (any, error) { return arith('/', a[0], a[1]) }
func opMod(a ...any) (any, error) { return arith('%', a[0], a[1]) }
func opPow(a ...any) (any, error) { return arith('^', a[0], a[1]) }

func opNeg(a ...any) (any, error) {
	switch x := norm(a[0]).(type) {
	case nil:
		return nil, nil
	case int64:
		if x == math.MinInt64 {
			return -float64(x), nil
		}
		return -x, nil
	case float64:
		return -x, nil
	default:
		return nil, typeErr("negation", x, "a number")
	}
}

func opNot(a ...any) (any, error) {
	switch x := a[0].(type) {
	case nil:
		return nil, nil
	case bool:
		return !x, nil
	default:
		return nil, typeErr("operator !", x, "a boolean")
	}
}

func opEq(a ...any) (any, error) { return equal(a[0], a[1]), nil }
func opNe(a ...any) (any, error) { return !equal(a[0], a[1]), nil }

func cmpOp(test func(int) bool) func(a ...any) (any, error) {
	return func(a ...any) (any, error) {
		c, ok, err := compare(a[0], a[1])
		if err != nil || !ok {
			return nil, err
		}
		return test(c), nil
	}
}

var (
	opLt = cmpOp(func(c int) bool { return c < 0 })
	opLe = cmpOp(func(c int) bool { return c <= 0 })
	opGt = cmpOp(func(c int) bool { return c > 0 })
	opGe = cmpOp(func(c int) bool { return c >= 0 })
)

func boolArg(op string, v any) (b, missing bool, err error) {
	switch x := v.(type) {
	case nil:
		return false, true, nil
	case bool:
		return x, false, nil
	}
	return false, false, typeErr("operator "+op, v, "a boolean")
}

// opIsFalse and opIsTrue decide the short cut of && and ||: the program
// evaluates the right operand only when the left does not settle it.
func opIsFalse(a ...any) (any, error) {
	b, missing, err := boolArg("&&", a[0])
	return err == nil && !missing && !b, err
}

func opIsTrue(a ...any) (any, error) {
	b, missing, err := boolArg("||", a[0])
	return err == nil && !missing && b, err
}

// opAnd is reached when the left operand is true or missing; missing
// stays missing unless the right operand is false.
func opAnd(a ...any) (any, error) {
	_, lm, _ := boolArg("&&", a[0])
	r, rm, err := boolArg("&&", a[1])
	switch {
	case err != nil:
		return nil, err
	case !rm && !r:
		return false, nil
	case lm || rm:
		return nil, nil
	}
	return true, nil
}

// opOr is reached when the left operand is false or missing.
func opOr(a ...any) (any, error) {
	_, lm, _ := boolArg("||", a[0])
	r, rm, err := boolArg("||", a[1])
	switch {
	case err != nil:
		return nil, err
	case !rm && r:
		return true, nil
	case lm || rm:
		return nil, nil
	}
	return false, nil
}

func opIsMissing(a ...any) (any, error) { return a[0] == nil, nil }

// opCond is the condition of if(): true only for true; the missing value
// counts as false; anything else is an error.
func opCond(a ...any) (any, error) {
	switch x := a[0].(type) {
	case nil:
		return false, nil
	case bool:
		return x, nil
	}
	return false, typeErr("if", a[0], "a boolean condition")
}
