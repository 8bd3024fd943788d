package auth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/edgeport/edgeport/internal/broker"
)

// subst is a {principal.…} token of a rule: it stands for one value of the
// principal, which always matches literally. Rules are written by the
// operator; values come from clients, so a value is never read as pattern
// syntax: a client ID such as "+", "#", "*" or "a/b" matches only itself,
// and a rule can only get narrower for it, never wider.
type subst struct {
	kind byte   // substClientID, substUsername or substAttribute
	attr string // the attribute name
}

const (
	substClientID = iota + 1
	substUsername
	substAttribute
)

// value returns the principal's value for s; ok is false when it has none
// (no user name, no such attribute), which makes the rule match nothing.
func (s subst) value(p *broker.Principal) (string, bool) {
	var v string
	switch s.kind {
	case substClientID:
		v = p.ClientID
	case substUsername:
		v = p.Username
	case substAttribute:
		v = p.Attributes[s.attr]
	}
	return v, v != ""
}

// parseSubst parses the inside of {…}.
func parseSubst(tok string) (subst, error) {
	switch {
	case tok == "principal.clientId":
		return subst{kind: substClientID}, nil
	case tok == "principal.username":
		return subst{kind: substUsername}, nil
	case strings.HasPrefix(tok, "principal.attributes.") && len(tok) > len("principal.attributes."):
		return subst{kind: substAttribute, attr: tok[len("principal.attributes."):]}, nil
	}
	return subst{}, fmt.Errorf("unknown substitution {%s} (use {principal.clientId}, {principal.username} or {principal.attributes.NAME})", tok)
}

// Topic pattern levels.
const (
	levelLiteral = iota
	levelPlus
	levelHash
	levelSubst
)

type level struct {
	kind int
	text string // levelLiteral
	sub  subst  // levelSubst
}

// topicPattern is a rule's topic filter, compiled: MQTT wildcards, and
// substitutions each filling a whole level.
type topicPattern struct {
	levels []level
	src    string
}

func compileTopic(src string) (topicPattern, error) {
	tp := topicPattern{src: src}
	parts := strings.Split(src, "/")
	for i, l := range parts {
		switch {
		case l == "+":
			tp.levels = append(tp.levels, level{kind: levelPlus})
		case l == "#":
			if i != len(parts)-1 {
				return tp, fmt.Errorf("topic %q: # must be the last level", src)
			}
			tp.levels = append(tp.levels, level{kind: levelHash})
		case strings.HasPrefix(l, "{") && strings.HasSuffix(l, "}"):
			s, err := parseSubst(l[1 : len(l)-1])
			if err != nil {
				return tp, fmt.Errorf("topic %q: %w", src, err)
			}
			tp.levels = append(tp.levels, level{kind: levelSubst, sub: s})
		case strings.ContainsAny(l, "+#{}"):
			return tp, fmt.Errorf("topic %q: wildcards and substitutions must fill a whole level", src)
		default:
			tp.levels = append(tp.levels, level{kind: levelLiteral, text: l})
		}
	}
	return tp, nil
}

// matchName reports whether the topic name is one the pattern allows for p.
// It walks the name in place: no allocation per check.
func (tp *topicPattern) matchName(p *broker.Principal, name string) bool {
	rest, done := name, false
	for i := range tp.levels {
		l := &tp.levels[i]
		if l.kind == levelHash {
			// # also matches the parent level (a/# allows a), but a
			// leading wildcard never matches topics beginning with $
			// (MQTT-4.7.2-1), in rules as in subscriptions.
			return i > 0 || !strings.HasPrefix(name, "$")
		}
		if done {
			return false // the name has fewer levels
		}
		lev, more := nextLevel(&rest)
		done = !more
		if !l.accepts(p, lev, i) {
			return false
		}
	}
	return done
}

// accepts reports whether the level at position i of the pattern accepts
// the (literal) level lev.
func (l *level) accepts(p *broker.Principal, lev string, i int) bool {
	switch l.kind {
	case levelPlus:
		return i > 0 || !strings.HasPrefix(lev, "$")
	case levelLiteral:
		return lev == l.text
	case levelSubst:
		v, ok := l.sub.value(p)
		return ok && lev == v
	}
	return false
}

// nextLevel cuts the first level off *rest; more reports whether another
// level follows (possibly empty, as in "a/").
func nextLevel(rest *string) (lev string, more bool) {
	if i := strings.IndexByte(*rest, '/'); i >= 0 {
		lev, *rest = (*rest)[:i], (*rest)[i+1:]
		return lev, true
	}
	lev, *rest = *rest, ""
	return lev, false
}

// covers reports whether every topic the SUBSCRIBE filter could match is
// one the pattern allows p: filter ⊆ pattern. A wildcard level of the
// filter is covered only by the same wildcard (or a # above it) in the
// pattern, never by a literal or a substitution.
func (tp *topicPattern) covers(p *broker.Principal, filter string) bool {
	rest, done := filter, false
	for i := range tp.levels {
		l := &tp.levels[i]
		if l.kind == levelHash {
			return i > 0 || !strings.HasPrefix(filter, "$")
		}
		if done {
			return false
		}
		lev, more := nextLevel(&rest)
		done = !more
		switch lev {
		case "#":
			return false // it also matches the parent level and deeper ones
		case "+":
			if l.kind != levelPlus {
				return false
			}
		default:
			if !l.accepts(p, lev, i) {
				return false
			}
		}
	}
	return done
}

// glob is a compiled match pattern for client IDs, user names and state
// store keys: literal text, * (any run of characters), and, for keys, ?
// (one character), [...] classes and \ escapes; substitutions match their
// value literally.
type glob struct {
	toks []gtok
	src  string
}

type gtok struct {
	kind  int // gLiteral, gStar, gOne, gClass, gSubst
	text  string
	class []classRange
	neg   bool
	sub   subst
}

type classRange struct{ lo, hi byte }

const (
	gLiteral = iota
	gStar
	gOne
	gClass
	gSubst
)

var errBraces = errors.New("{ and } are reserved for {principal.…} substitutions")

// compileGlob compiles src; full enables ?, [...] and \ (state store key
// patterns), subst enables {principal.…} tokens.
func compileGlob(src string, full, allowSubst bool) (glob, error) {
	g := glob{src: src}
	var lit []byte
	flush := func() {
		if len(lit) > 0 {
			g.toks = append(g.toks, gtok{kind: gLiteral, text: string(lit)})
			lit = lit[:0]
		}
	}
	for i := 0; i < len(src); i++ {
		ch := src[i]
		switch {
		case ch == '*':
			flush()
			if n := len(g.toks); n == 0 || g.toks[n-1].kind != gStar {
				g.toks = append(g.toks, gtok{kind: gStar})
			}
		case ch == '?' && full:
			flush()
			g.toks = append(g.toks, gtok{kind: gOne})
		case ch == '\\' && full:
			if i+1 == len(src) {
				return g, fmt.Errorf("pattern %q ends with \\", src)
			}
			i++
			lit = append(lit, src[i])
		case ch == '[' && full:
			flush()
			t, n, err := parseClass(src[i:])
			if err != nil {
				return g, fmt.Errorf("pattern %q: %w", src, err)
			}
			g.toks = append(g.toks, t)
			i += n - 1
		case ch == '{':
			if !allowSubst {
				return g, fmt.Errorf("pattern %q: %w", src, errBraces)
			}
			end := strings.IndexByte(src[i:], '}')
			if end < 0 {
				return g, fmt.Errorf("pattern %q: unclosed {", src)
			}
			s, err := parseSubst(src[i+1 : i+end])
			if err != nil {
				return g, fmt.Errorf("pattern %q: %w", src, err)
			}
			flush()
			g.toks = append(g.toks, gtok{kind: gSubst, sub: s})
			i += end
		case ch == '}':
			if allowSubst {
				return g, fmt.Errorf("pattern %q: %w", src, errBraces)
			}
			lit = append(lit, ch)
		default:
			lit = append(lit, ch)
		}
	}
	flush()
	return g, nil
}

// parseClass parses a [...] class at the start of s and returns its length.
func parseClass(s string) (gtok, int, error) {
	t := gtok{kind: gClass}
	i := 1
	if i < len(s) && (s[i] == '!' || s[i] == '^') {
		t.neg = true
		i++
	}
	first := true
	for i < len(s) {
		ch := s[i]
		if ch == ']' && !first {
			return t, i + 1, nil
		}
		first = false
		if ch == '\\' && i+1 < len(s) {
			i++
			ch = s[i]
		}
		lo, hi := ch, ch
		if i+2 < len(s) && s[i+1] == '-' && s[i+2] != ']' {
			hi = s[i+2]
			i += 2
		}
		if hi < lo {
			return t, 0, fmt.Errorf("class range %c-%c is reversed", lo, hi)
		}
		t.class = append(t.class, classRange{lo, hi})
		i++
	}
	return t, 0, errors.New("unclosed [")
}

func (t *gtok) inClass(ch byte) bool {
	in := false
	for _, r := range t.class {
		if ch >= r.lo && ch <= r.hi {
			in = true
			break
		}
	}
	return in != t.neg
}

// match reports whether s matches the pattern for p. Stars backtrack to
// the last star only, which is linear in practice and never exponential.
func (g *glob) match(p *broker.Principal, s string) bool {
	ti, si := 0, 0
	starT, starS := -1, 0
	for {
		if ti < len(g.toks) {
			t := &g.toks[ti]
			switch t.kind {
			case gStar:
				starT, starS = ti, si
				ti++
				continue
			case gLiteral:
				if strings.HasPrefix(s[si:], t.text) {
					ti++
					si += len(t.text)
					continue
				}
			case gSubst:
				v, ok := t.sub.value(p)
				if !ok {
					return false // no value: the pattern matches nothing
				}
				if strings.HasPrefix(s[si:], v) {
					ti++
					si += len(v)
					continue
				}
			case gOne:
				if si < len(s) {
					ti++
					si++
					continue
				}
			case gClass:
				if si < len(s) && t.inClass(s[si]) {
					ti++
					si++
					continue
				}
			}
		} else if si == len(s) {
			return true
		}
		// Mismatch: let the last star take one more character.
		if starT < 0 || starS >= len(s) {
			return false
		}
		starS++
		ti, si = starT+1, starS
	}
}
