package config

import (
	"fmt"
	"slices"
	"strings"
)

// Selector matches labels, as Kubernetes label selectors do:
// "app=x,tier!=db,env in (a,b),!legacy,owner".
type Selector struct {
	reqs []requirement
}

type requirement struct {
	key    string
	op     string // =, !=, in, notin, exists, !exists
	values []string
}

// ParseSelector parses a comma-separated list of requirements; an empty
// string selects everything.
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	for _, part := range splitTopLevel(s) {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		r, err := parseRequirement(part)
		if err != nil {
			return Selector{}, fmt.Errorf("label selector %q: %w", s, err)
		}
		sel.reqs = append(sel.reqs, r)
	}
	return sel, nil
}

// splitTopLevel splits at commas outside parentheses.
func splitTopLevel(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

func parseRequirement(p string) (requirement, error) {
	if k, ok := strings.CutPrefix(p, "!"); ok {
		return checkReq(requirement{key: strings.TrimSpace(k), op: "!exists"})
	}
	for _, op := range []string{"!=", "==", "="} {
		if k, v, ok := strings.Cut(p, op); ok {
			if op == "==" {
				op = "="
			}
			return checkReq(requirement{key: strings.TrimSpace(k), op: op, values: []string{strings.TrimSpace(v)}})
		}
	}
	for _, op := range []string{" notin ", " in "} {
		if k, v, ok := strings.Cut(p, op); ok {
			v = strings.TrimSpace(v)
			if !strings.HasPrefix(v, "(") || !strings.HasSuffix(v, ")") {
				return requirement{}, fmt.Errorf("%q: values must be in parentheses", p)
			}
			var vals []string
			for _, x := range strings.Split(v[1:len(v)-1], ",") {
				vals = append(vals, strings.TrimSpace(x))
			}
			return checkReq(requirement{key: strings.TrimSpace(k), op: strings.TrimSpace(op), values: vals})
		}
	}
	return checkReq(requirement{key: p, op: "exists"})
}

func checkReq(r requirement) (requirement, error) {
	if r.key == "" || strings.ContainsAny(r.key, " ()=!,") {
		return r, fmt.Errorf("invalid label key %q", r.key)
	}
	for _, v := range r.values {
		if !labelValueRE.MatchString(v) {
			return r, fmt.Errorf("invalid label value %q", v)
		}
	}
	return r, nil
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		v, has := labels[r.key]
		var ok bool
		switch r.op {
		case "=":
			ok = has && v == r.values[0]
		case "!=":
			ok = !has || v != r.values[0]
		case "in":
			ok = has && slices.Contains(r.values, v)
		case "notin":
			ok = !has || !slices.Contains(r.values, v)
		case "exists":
			ok = has
		case "!exists":
			ok = !has
		}
		if !ok {
			return false
		}
	}
	return true
}

// Empty reports whether the selector selects everything.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }
