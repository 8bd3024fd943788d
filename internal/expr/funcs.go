package expr

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// fn is one function of the library.
type fn struct {
	min, max int // argument count; max < 0 means any number
	call     func(args ...any) (any, error)
}

// library returns the function table. The regexp cache belongs to one
// compiled Mapping, so nothing is shared between mappings.
func library(rc *regexCache) map[string]fn {
	unit := func(f func(float64) float64) fn {
		return fn{min: 1, max: 1, call: numeric1(f)}
	}
	m := map[string]fn{
		"min":          {min: 1, max: -1, call: func(a ...any) (any, error) { return extreme("min", a, -1) }},
		"max":          {min: 1, max: -1, call: func(a ...any) (any, error) { return extreme("max", a, 1) }},
		"len":          {min: 1, max: -1, call: fnLen},
		"floor":        {min: 1, max: 1, call: rounding(math.Floor)},
		"ceil":         {min: 1, max: 1, call: rounding(math.Ceil)},
		"round":        {min: 1, max: 1, call: rounding(math.Round)},
		"scale":        {min: 5, max: 5, call: fnScale},
		"round_n":      {min: 2, max: 2, call: fnRoundN},
		"abs":          {min: 1, max: 1, call: fnAbs},
		"contains":     {min: 2, max: 2, call: fnContains},
		"contains_any": {min: 2, max: 2, call: fnContainsAny},
		"typeof":       {min: 1, max: 1, call: func(a ...any) (any, error) { return typeName(norm(a[0])), nil }},

		"cToF":     unit(func(c float64) float64 { return c*9/5 + 32 }),
		"fToC":     unit(func(f float64) float64 { return (f - 32) * 5 / 9 }),
		"psiToBar": unit(func(p float64) float64 { return p * 0.0689476 }),
		"barToPsi": unit(func(b float64) float64 { return b / 0.0689476 }),
		"inToCm":   unit(func(i float64) float64 { return i * 2.54 }),
		"cmToIn":   unit(func(c float64) float64 { return c / 2.54 }),
		"ftToM":    unit(func(f float64) float64 { return f * 0.3048 }),
		"mToFt":    unit(func(m float64) float64 { return m / 0.3048 }),
		"lbToKg":   unit(func(l float64) float64 { return l * 0.453592 }),
		"kgToLb":   unit(func(k float64) float64 { return k / 0.453592 }),
		"galToL":   unit(func(g float64) float64 { return g * 3.78541 }),
		"lToGal":   unit(func(l float64) float64 { return l / 3.78541 }),

		"math::abs":   {min: 1, max: 1, call: fnAbs},
		"math::sqrt":  unit(math.Sqrt),
		"math::cbrt":  unit(math.Cbrt),
		"math::ln":    unit(math.Log),
		"math::log2":  unit(math.Log2),
		"math::log10": unit(math.Log10),
		"math::log":   {min: 2, max: 2, call: numeric2(func(x, b float64) float64 { return math.Log(x) / math.Log(b) })},
		"math::exp":   unit(math.Exp),
		"math::exp2":  unit(math.Exp2),
		"math::pow":   {min: 2, max: 2, call: numeric2(math.Pow)},
		"math::cos":   unit(math.Cos),
		"math::sin":   unit(math.Sin),
		"math::tan":   unit(math.Tan),
		"math::acos":  unit(math.Acos),
		"math::asin":  unit(math.Asin),
		"math::atan":  unit(math.Atan),
		"math::atan2": {min: 2, max: 2, call: numeric2(math.Atan2)},
		"math::hypot": {min: 2, max: 2, call: numeric2(math.Hypot)},

		"str::to_lowercase": {min: 1, max: 1, call: string1("str::to_lowercase", strings.ToLower)},
		"str::to_uppercase": {min: 1, max: 1, call: string1("str::to_uppercase", strings.ToUpper)},
		"str::trim":         {min: 1, max: 1, call: string1("str::trim", strings.TrimSpace)},
		"str::from":         {min: 1, max: 1, call: fnFrom},
		"str::substring":    {min: 3, max: 3, call: fnSubstring},
		"str::regex_matches": {min: 2, max: 2, call: func(a ...any) (any, error) {
			s, re, err := regexArgs(rc, "str::regex_matches", a)
			if s == nil || err != nil {
				return nil, err
			}
			return re.MatchString(*s), nil
		}},
		"str::regex_replace": {min: 3, max: 3, call: func(a ...any) (any, error) {
			s, re, err := regexArgs(rc, "str::regex_replace", a)
			if s == nil || err != nil {
				return nil, err
			}
			r, ok := norm(a[2]).(string)
			if !ok {
				return nil, typeErr("str::regex_replace replacement", a[2], "a string")
			}
			return re.ReplaceAllString(*s, r), nil
		}},
	}
	return m
}

// functionNames lists the library for error messages, sorted.
func functionNames(lib map[string]fn) []string {
	names := make([]string, 0, len(lib)+1)
	for n := range lib {
		names = append(names, n)
	}
	names = append(names, "if")
	sort.Strings(names)
	return names
}

func numeric1(f func(float64) float64) func(a ...any) (any, error) {
	return func(a ...any) (any, error) {
		v := norm(a[0])
		if v == nil {
			return nil, nil
		}
		x, ok := num(v)
		if !ok {
			return nil, typeErr("argument", v, "a number")
		}
		return f(x), nil
	}
}

func numeric2(f func(float64, float64) float64) func(a ...any) (any, error) {
	return func(a ...any) (any, error) {
		v, w := norm(a[0]), norm(a[1])
		if v == nil || w == nil {
			return nil, nil
		}
		x, ok := num(v)
		if !ok {
			return nil, typeErr("first argument", v, "a number")
		}
		y, ok := num(w)
		if !ok {
			return nil, typeErr("second argument", w, "a number")
		}
		return f(x, y), nil
	}
}

// rounding keeps integers as they are and rounds floats.
func rounding(f func(float64) float64) func(a ...any) (any, error) {
	return func(a ...any) (any, error) {
		switch x := norm(a[0]).(type) {
		case nil:
			return nil, nil
		case int64:
			return x, nil
		case float64:
			return f(x), nil
		default:
			return nil, typeErr("argument", x, "a number")
		}
	}
}

func fnAbs(a ...any) (any, error) {
	switch x := norm(a[0]).(type) {
	case nil:
		return nil, nil
	case int64:
		if x < 0 {
			return opNeg(x)
		}
		return x, nil
	case float64:
		return math.Abs(x), nil
	default:
		return nil, typeErr("argument", x, "a number")
	}
}

// extreme is min (sign -1) or max (sign 1) over the arguments, or over
// the elements of a single tuple argument. Missing values are skipped.
func extreme(name string, args []any, sign int) (any, error) {
	if len(args) == 1 {
		if t, ok := args[0].([]any); ok {
			args = t
		}
	}
	var best any
	for _, v := range args {
		v = norm(v)
		if v == nil {
			continue
		}
		if best == nil {
			if _, isNum := num(v); !isNum {
				if _, isStr := v.(string); !isStr {
					return nil, typeErr(name, v, "numbers or strings")
				}
			}
			best = v
			continue
		}
		c, _, err := compare(v, best)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if c*sign > 0 {
			best = v
		}
	}
	return best, nil
}

func fnLen(a ...any) (any, error) {
	if len(a) > 1 {
		return int64(len(a)), nil
	}
	switch x := norm(a[0]).(type) {
	case nil:
		return nil, nil
	case string:
		return int64(utf8.RuneCountInString(x)), nil
	case []any:
		return int64(len(x)), nil
	case map[string]any:
		return int64(len(x)), nil
	default:
		return nil, typeErr("len", x, "a string or a tuple")
	}
}

func fnScale(a ...any) (any, error) {
	var f [5]float64
	for i := range a {
		v := norm(a[i])
		if v == nil {
			return nil, nil
		}
		x, ok := num(v)
		if !ok {
			return nil, typeErr(fmt.Sprintf("scale argument %d", i+1), v, "a number")
		}
		f[i] = x
	}
	if f[2] == f[1] {
		return nil, errors.New("scale: the source range is empty")
	}
	return f[3] + (f[0]-f[1])*(f[4]-f[3])/(f[2]-f[1]), nil
}

func fnRoundN(a ...any) (any, error) {
	v, d := norm(a[0]), norm(a[1])
	if v == nil {
		return nil, nil
	}
	n, ok := d.(int64)
	if !ok || n < 0 || n > 15 {
		return nil, fmt.Errorf("round_n: decimals must be an integer from 0 to 15, got %s", toString(d))
	}
	switch x := v.(type) {
	case int64:
		return x, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return x, nil
		}
		// Formatting rounds the exact binary value correctly, which
		// multiplying by 10^n and rounding does not.
		r, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', int(n), 64), 64)
		return r, nil
	}
	return nil, typeErr("round_n", v, "a number")
}

func fnContains(a ...any) (any, error) {
	switch t := norm(a[0]).(type) {
	case nil:
		return nil, nil
	case []any:
		for _, e := range t {
			if equal(e, a[1]) {
				return true, nil
			}
		}
		return false, nil
	case string:
		s, ok := norm(a[1]).(string)
		if !ok {
			return nil, typeErr("contains on a string", a[1], "a string")
		}
		return strings.Contains(t, s), nil
	default:
		return nil, typeErr("contains", t, "a tuple or a string")
	}
}

func fnContainsAny(a ...any) (any, error) {
	cands, ok := norm(a[1]).([]any)
	if !ok {
		cands = []any{a[1]}
	}
	for _, c := range cands {
		r, err := fnContains(a[0], c)
		if err != nil || r == nil {
			return r, err
		}
		if r.(bool) {
			return true, nil
		}
	}
	return false, nil
}

func string1(name string, f func(string) string) func(a ...any) (any, error) {
	return func(a ...any) (any, error) {
		switch x := norm(a[0]).(type) {
		case nil:
			return nil, nil
		case string:
			return f(x), nil
		default:
			return nil, typeErr(name, x, "a string")
		}
	}
}

func fnFrom(a ...any) (any, error) {
	v := norm(a[0])
	if v == nil {
		return nil, nil
	}
	return toString(v), nil
}

// fnSubstring takes the characters from start up to but not including
// end, counted in characters, not bytes; indices are clamped to the
// string.
func fnSubstring(a ...any) (any, error) {
	v := norm(a[0])
	if v == nil {
		return nil, nil
	}
	s, ok := v.(string)
	if !ok {
		return nil, typeErr("str::substring", v, "a string")
	}
	start, ok1 := norm(a[1]).(int64)
	end, ok2 := norm(a[2]).(int64)
	if !ok1 || !ok2 {
		return nil, errors.New("str::substring: start and end must be integers")
	}
	r := []rune(s)
	start = max(0, min(start, int64(len(r))))
	end = max(start, min(end, int64(len(r))))
	return string(r[start:end]), nil
}

// regexCache holds compiled patterns so that a pattern is compiled once.
type regexCache struct {
	mu sync.Mutex // guards m
	m  map[string]*regexp.Regexp
}

// maxCachedRegexps bounds the cache when patterns come from messages.
const maxCachedRegexps = 256

func (c *regexCache) get(p string) (*regexp.Regexp, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if re, ok := c.m[p]; ok {
		return re, nil
	}
	re, err := regexp.Compile(p)
	if err != nil {
		return nil, err
	}
	if c.m == nil || len(c.m) >= maxCachedRegexps {
		c.m = make(map[string]*regexp.Regexp)
	}
	c.m[p] = re
	return re, nil
}

func regexArgs(rc *regexCache, name string, a []any) (*string, *regexp.Regexp, error) {
	v := norm(a[0])
	if v == nil {
		return nil, nil, nil
	}
	s, ok := v.(string)
	if !ok {
		return nil, nil, typeErr(name, v, "a string")
	}
	p, ok := norm(a[1]).(string)
	if !ok {
		return nil, nil, typeErr(name+" pattern", a[1], "a string")
	}
	re, err := rc.get(p)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return &s, re, nil
}
