package expr

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The expression grammar, lowest precedence first:
//
//	expr    = or { "??" or }
//	or      = and { "||" and }
//	and     = eq { "&&" eq }
//	eq      = cmp { ("==" | "!=") cmp }
//	cmp     = add { ("<" | "<=" | ">" | ">=") add }
//	add     = mul { ("+" | "-") mul }
//	mul     = unary { ("*" | "/" | "%") unary }
//	unary   = ("-" | "!") unary | pow
//	pow     = primary [ "^" unary ]          (right associative)
//	primary = number | string | "true" | "false" | "$" digits
//	        | name "(" [ expr { "," expr } ] ")"
//	        | "(" ")" | "(" expr ")" | "(" expr "," expr { "," expr } ")"
//
// Exponentiation binds tighter than negation, so -2^2 is -4, as Azure IoT
// Operations documents. Names may carry a namespace: math::sqrt, str::trim.

type nodeKind uint8

const (
	nConst  nodeKind = iota // val holds int64, float64, string or bool
	nEmpty                  // () — the missing value
	nVar                    // $n; idx is n
	nCall                   // name(args)
	nUnary                  // op args[0]
	nBinary                 // args[0] op args[1]
	nTuple                  // (a, b, ...)
)

type node struct {
	kind nodeKind
	pos  int // 1-based byte offset in the expression, for errors
	op   string
	name string
	idx  int
	val  any
	args []*node
}

// SyntaxError is a problem at a position of an expression or path.
type SyntaxError struct {
	Pos int // 1-based byte offset; 0 when the problem is the text as a whole
	Msg string
}

func (e *SyntaxError) Error() string {
	if e.Pos == 0 {
		return e.Msg
	}
	return strconv.Itoa(e.Pos) + ": " + e.Msg
}

type tokKind uint8

const (
	tEOF tokKind = iota
	tNum
	tStr
	tName
	tVar
	tOp
)

type token struct {
	kind tokKind
	pos  int // 1-based
	text string
	val  any
}

type lexer struct {
	src  string
	i    int
	toks []token
}

// maxExprLen bounds an expression: a longer one is a mistake, and the bound
// keeps the recursive-descent parser's depth finite.
const maxExprLen = 64 << 10

// maxDepth bounds nesting so that hostile input cannot exhaust the stack.
const maxDepth = 200

func lex(src string) ([]token, error) {
	if len(src) > maxExprLen {
		return nil, &SyntaxError{Msg: fmt.Sprintf("expression is %d bytes, longer than the %d allowed", len(src), maxExprLen)}
	}
	l := &lexer{src: src}
	for {
		for l.i < len(src) && isSpace(src[l.i]) {
			l.i++
		}
		if l.i >= len(src) {
			l.toks = append(l.toks, token{kind: tEOF, pos: l.i + 1})
			return l.toks, nil
		}
		start := l.i
		c := src[l.i]
		switch {
		case c >= '0' && c <= '9' || c == '.' && l.i+1 < len(src) && isDigit(src[l.i+1]):
			if err := l.number(); err != nil {
				return nil, err
			}
		case c == '"' || c == '\'':
			if err := l.str(c); err != nil {
				return nil, err
			}
		case c == '$':
			l.i++
			for l.i < len(src) && isDigit(src[l.i]) {
				l.i++
			}
			if l.i == start+1 {
				return nil, &SyntaxError{Pos: start + 1, Msg: "expected an input number after $ (inputs are $1, $2, ...)"}
			}
			n, err := strconv.Atoi(src[start+1 : l.i])
			if err != nil || n < 1 || n > 1000 {
				return nil, &SyntaxError{Pos: start + 1, Msg: fmt.Sprintf("input reference %s is out of range", src[start:l.i])}
			}
			l.toks = append(l.toks, token{kind: tVar, pos: start + 1, text: src[start:l.i], val: n})
		case isNameStart(c):
			l.name()
		default:
			if op := l.op(); op == "" {
				r, _ := utf8.DecodeRuneInString(src[l.i:])
				return nil, &SyntaxError{Pos: start + 1, Msg: fmt.Sprintf("unexpected character %q", r)}
			}
		}
	}
}

func (l *lexer) number() error {
	start := l.i
	src := l.src
	isFloat := false
	for l.i < len(src) && isDigit(src[l.i]) {
		l.i++
	}
	if l.i < len(src) && src[l.i] == '.' {
		isFloat = true
		l.i++
		for l.i < len(src) && isDigit(src[l.i]) {
			l.i++
		}
	}
	if l.i < len(src) && (src[l.i] == 'e' || src[l.i] == 'E') {
		j := l.i + 1
		if j < len(src) && (src[j] == '+' || src[j] == '-') {
			j++
		}
		if j < len(src) && isDigit(src[j]) {
			isFloat = true
			l.i = j
			for l.i < len(src) && isDigit(src[l.i]) {
				l.i++
			}
		}
	}
	text := src[start:l.i]
	if l.i < len(src) && isNameStart(src[l.i]) {
		return &SyntaxError{Pos: start + 1, Msg: fmt.Sprintf("malformed number %q", text+string(src[l.i]))}
	}
	if !isFloat {
		if n, err := strconv.ParseInt(text, 10, 64); err == nil {
			l.toks = append(l.toks, token{kind: tNum, pos: start + 1, text: text, val: n})
			return nil
		}
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return &SyntaxError{Pos: start + 1, Msg: fmt.Sprintf("malformed number %q", text)}
	}
	l.toks = append(l.toks, token{kind: tNum, pos: start + 1, text: text, val: f})
	return nil
}

func (l *lexer) str(q byte) error {
	start := l.i
	l.i++
	var b strings.Builder
	for {
		if l.i >= len(l.src) {
			return &SyntaxError{Pos: start + 1, Msg: "unterminated string"}
		}
		c := l.src[l.i]
		switch {
		case c == q:
			l.i++
			l.toks = append(l.toks, token{kind: tStr, pos: start + 1, text: l.src[start:l.i], val: b.String()})
			return nil
		case c == '\\':
			if l.i+1 >= len(l.src) {
				return &SyntaxError{Pos: start + 1, Msg: "unterminated string"}
			}
			e := l.src[l.i+1]
			switch e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case '\\', '"', '\'':
				b.WriteByte(e)
			default:
				return &SyntaxError{Pos: l.i + 1, Msg: fmt.Sprintf("unknown escape \\%c in string", e)}
			}
			l.i += 2
		default:
			b.WriteByte(c)
			l.i++
		}
	}
}

func (l *lexer) name() {
	start := l.i
	for {
		for l.i < len(l.src) && isNamePart(l.src[l.i]) {
			l.i++
		}
		// A namespace separator joins two names: math::sqrt.
		if l.i+2 < len(l.src) && l.src[l.i] == ':' && l.src[l.i+1] == ':' && isNameStart(l.src[l.i+2]) {
			l.i += 2
			continue
		}
		break
	}
	l.toks = append(l.toks, token{kind: tName, pos: start + 1, text: l.src[start:l.i]})
}

var ops2 = []string{"??", "||", "&&", "==", "!=", "<=", ">="}

func (l *lexer) op() string {
	rest := l.src[l.i:]
	for _, o := range ops2 {
		if strings.HasPrefix(rest, o) {
			l.toks = append(l.toks, token{kind: tOp, pos: l.i + 1, text: o})
			l.i += 2
			return o
		}
	}
	switch rest[0] {
	case '+', '-', '*', '/', '%', '^', '!', '<', '>', '(', ')', ',':
		o := rest[:1]
		l.toks = append(l.toks, token{kind: tOp, pos: l.i + 1, text: o})
		l.i++
		return o
	}
	return ""
}

func isSpace(c byte) bool     { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
func isDigit(c byte) bool     { return c >= '0' && c <= '9' }
func isNameStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isNamePart(c byte) bool  { return isNameStart(c) || isDigit(c) }

type exprParser struct {
	toks  []token
	p     int
	depth int
}

// parse turns an expression into a tree. It checks syntax only; names and
// arities are checked by the compiler, which knows the function table.
func parse(src string) (*node, error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &exprParser{toks: toks}
	if p.peek().kind == tEOF {
		return nil, &SyntaxError{Pos: 1, Msg: "empty expression"}
	}
	n, err := p.expr()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		return nil, &SyntaxError{Pos: t.pos, Msg: fmt.Sprintf("unexpected %s", describe(t))}
	}
	return n, nil
}

func describe(t token) string {
	switch t.kind {
	case tEOF:
		return "end of expression"
	case tOp:
		return fmt.Sprintf("%q", t.text)
	default:
		return t.text
	}
}

func (p *exprParser) peek() token { return p.toks[p.p] }
func (p *exprParser) next() token { t := p.toks[p.p]; p.p++; return t }

func (p *exprParser) isOp(ops ...string) (token, bool) {
	t := p.peek()
	if t.kind != tOp {
		return t, false
	}
	for _, o := range ops {
		if t.text == o {
			return t, true
		}
	}
	return t, false
}

func (p *exprParser) expect(op string) (token, error) {
	t := p.peek()
	if t.kind != tOp || t.text != op {
		return t, &SyntaxError{Pos: t.pos, Msg: fmt.Sprintf("expected %q, found %s", op, describe(t))}
	}
	p.p++
	return t, nil
}

func (p *exprParser) expr() (*node, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxDepth {
		return nil, &SyntaxError{Pos: p.peek().pos, Msg: "expression nests too deeply"}
	}
	return p.binary(0)
}

// levels lists the binary operators from lowest to highest precedence.
var levels = [][]string{
	{"??"},
	{"||"},
	{"&&"},
	{"==", "!="},
	{"<", "<=", ">", ">="},
	{"+", "-"},
	{"*", "/", "%"},
}

func (p *exprParser) binary(level int) (*node, error) {
	if level == len(levels) {
		return p.unary()
	}
	left, err := p.binary(level + 1)
	if err != nil {
		return nil, err
	}
	for {
		t, ok := p.isOp(levels[level]...)
		if !ok {
			return left, nil
		}
		p.p++
		right, err := p.binary(level + 1)
		if err != nil {
			return nil, err
		}
		left = &node{kind: nBinary, pos: t.pos, op: t.text, args: []*node{left, right}}
	}
}

func (p *exprParser) unary() (*node, error) {
	if t, ok := p.isOp("-", "!"); ok {
		p.p++
		p.depth++
		defer func() { p.depth-- }()
		if p.depth > maxDepth {
			return nil, &SyntaxError{Pos: t.pos, Msg: "expression nests too deeply"}
		}
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &node{kind: nUnary, pos: t.pos, op: t.text, args: []*node{x}}, nil
	}
	return p.pow()
}

func (p *exprParser) pow() (*node, error) {
	base, err := p.primary()
	if err != nil {
		return nil, err
	}
	if t, ok := p.isOp("^"); ok {
		p.p++
		exp, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &node{kind: nBinary, pos: t.pos, op: "^", args: []*node{base, exp}}, nil
	}
	return base, nil
}

func (p *exprParser) primary() (*node, error) {
	t := p.next()
	switch t.kind {
	case tNum, tStr:
		return &node{kind: nConst, pos: t.pos, val: t.val}, nil
	case tVar:
		return &node{kind: nVar, pos: t.pos, idx: t.val.(int)}, nil
	case tName:
		switch t.text {
		case "true":
			return &node{kind: nConst, pos: t.pos, val: true}, nil
		case "false":
			return &node{kind: nConst, pos: t.pos, val: false}, nil
		}
		if _, err := p.expect("("); err != nil {
			if p.peek().kind == tEOF || !isOpenParen(p.peek()) {
				return nil, &SyntaxError{Pos: t.pos, Msg: fmt.Sprintf("unknown name %q (inputs are written $1, $2, ...; strings are quoted)", t.text)}
			}
			return nil, err
		}
		args, err := p.list()
		if err != nil {
			return nil, err
		}
		return &node{kind: nCall, pos: t.pos, name: t.text, args: args}, nil
	case tOp:
		if t.text == "(" {
			args, err := p.list()
			if err != nil {
				return nil, err
			}
			switch len(args) {
			case 0:
				return &node{kind: nEmpty, pos: t.pos}, nil
			case 1:
				return args[0], nil
			}
			return &node{kind: nTuple, pos: t.pos, args: args}, nil
		}
	}
	return nil, &SyntaxError{Pos: t.pos, Msg: fmt.Sprintf("unexpected %s", describe(t))}
}

func isOpenParen(t token) bool { return t.kind == tOp && t.text == "(" }

// list parses "a, b, c)" after an opening parenthesis.
func (p *exprParser) list() ([]*node, error) {
	if _, ok := p.isOp(")"); ok {
		p.p++
		return nil, nil
	}
	var args []*node
	for {
		a, err := p.expr()
		if err != nil {
			return nil, err
		}
		args = append(args, a)
		t := p.next()
		if t.kind == tOp && t.text == ")" {
			return args, nil
		}
		if t.kind != tOp || t.text != "," {
			return nil, &SyntaxError{Pos: t.pos, Msg: fmt.Sprintf("expected \",\" or \")\", found %s", describe(t))}
		}
	}
}

// similar returns the known name closest to s when it differs only in
// case, so that "ctof" suggests "cToF".
func similar(s string, known []string) string {
	for _, k := range known {
		if strings.EqualFold(k, s) {
			return k
		}
	}
	return ""
}
