package expr

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/optimizer"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// Our parser owns the syntax (Azure IoT Operations' $1, ^, (), tuples,
// math::sqrt) and the error positions; expr-lang owns the bytecode and
// the VM. The parsed tree is lowered to an expr-lang AST in which every
// operator is a call to one of our functions, because the language's
// semantics differ from expr-lang's own operators (integer division,
// string concatenation with +, the missing value propagating).

// opFuncs maps our operators to the functions that implement them, and
// opIDs to the names they are registered under.
var opFuncs = map[string]func(...any) (any, error){
	"+": opAdd, "-": opSub, "*": opMul, "/": opDiv, "%": opMod, "^": opPow,
	"==": opEq, "!=": opNe, "<": opLt, "<=": opLe, ">": opGt, ">=": opGe,
}

var opIDs = map[string]string{
	"+": "op_add", "-": "op_sub", "*": "op_mul", "/": "op_div", "%": "op_mod", "^": "op_pow",
	"==": "op_eq", "!=": "op_ne", "<": "op_lt", "<=": "op_le", ">": "op_gt", ">=": "op_ge",
}

// boolType declares a function as returning bool so that expr-lang's
// checker accepts it as the condition of a conditional node.
var boolType = new(func(any) bool)

// compiler turns expression text into programs. One is made per Compile
// call; its function table closes over that Mapping's regexp cache.
type exprCompiler struct {
	lib   map[string]fn
	names []string
	opts  []expr.Option
}

func newCompiler(rc *regexCache) *exprCompiler {
	c := &exprCompiler{lib: library(rc)}
	c.names = functionNames(c.lib)
	c.opts = []expr.Option{expr.DisableAllBuiltins()}
	for op, id := range opIDs {
		c.opts = append(c.opts, expr.Function(id, opFuncs[op]))
	}
	c.opts = append(c.opts,
		expr.Function("op_neg", opNeg),
		expr.Function("op_not", opNot),
		expr.Function("op_and", opAnd),
		expr.Function("op_or", opOr),
		expr.Function("op_isfalse", opIsFalse, boolType),
		expr.Function("op_istrue", opIsTrue, boolType),
		expr.Function("op_ismissing", opIsMissing, boolType),
		expr.Function("op_cond", opCond, boolType),
	)
	for name, f := range c.lib {
		c.opts = append(c.opts, expr.Function(funcID(name), f.call))
	}
	return c
}

func funcID(name string) string { return "f_" + strings.ReplaceAll(name, "::", "__") }

// varNames are the environment keys of $1..$n.
var varNames = func() []string {
	v := make([]string, maxInputs)
	for i := range v {
		v[i] = "_" + strconv.Itoa(i+1)
	}
	return v
}()

// maxInputs bounds the inputs of one rule.
const maxInputs = 64

// program is one compiled expression.
type program struct {
	prog *vm.Program
	src  string
}

// compile parses src for a rule with n inputs and compiles it.
func (c *exprCompiler) compile(src string, n int) (*program, error) {
	tree, err := parse(src)
	if err != nil {
		return nil, err
	}
	root, err := c.lower(tree, n)
	if err != nil {
		return nil, err
	}
	env := make(map[string]any, n)
	for i := range n {
		env[varNames[i]] = nil
	}
	cfg := conf.CreateNew()
	for _, o := range append(c.opts, expr.Env(env)) {
		o(cfg)
	}
	for name := range cfg.Disabled {
		delete(cfg.Builtins, name)
	}
	cfg.Check()
	t := &parser.Tree{Node: root, Source: file.NewSource(src)}
	if _, err := checker.Check(t, cfg); err != nil {
		return nil, fmt.Errorf("checking %q: %w", src, err) // a bug in lower, not in the user's text
	}
	if err := optimizer.Optimize(&t.Node, cfg); err != nil {
		return nil, fmt.Errorf("optimizing %q: %w", src, err)
	}
	p, err := compiler.Compile(t, cfg)
	if err != nil {
		return nil, fmt.Errorf("compiling %q: %w", src, err)
	}
	return &program{prog: p, src: src}, nil
}

func call(id string, args ...ast.Node) ast.Node {
	return &ast.CallNode{Callee: &ast.IdentifierNode{Value: id}, Arguments: args}
}

func cond(c, a, b ast.Node) ast.Node {
	return &ast.ConditionalNode{Ternary: true, Cond: c, Exp1: a, Exp2: b}
}

func (c *exprCompiler) lower(n *node, inputs int) (ast.Node, error) {
	args := make([]ast.Node, len(n.args))
	for i, a := range n.args {
		x, err := c.lower(a, inputs)
		if err != nil {
			return nil, err
		}
		args[i] = x
	}
	switch n.kind {
	case nConst:
		return &ast.ConstantNode{Value: n.val}, nil
	case nEmpty:
		return &ast.NilNode{}, nil
	case nVar:
		if n.idx > inputs {
			return nil, &SyntaxError{Pos: n.pos, Msg: fmt.Sprintf("$%d refers to input %d, but the rule has %d %s", n.idx, n.idx, inputs, plural(inputs, "input", "inputs"))}
		}
		return &ast.IdentifierNode{Value: varNames[n.idx-1]}, nil
	case nTuple:
		return &ast.ArrayNode{Nodes: args}, nil
	case nUnary:
		if n.op == "-" {
			if k, ok := args[0].(*ast.ConstantNode); ok {
				if v, err := opNeg(k.Value); err == nil {
					return &ast.ConstantNode{Value: v}, nil
				}
			}
			return call("op_neg", args...), nil
		}
		return call("op_not", args...), nil
	case nBinary:
		switch n.op {
		case "&&":
			return cond(call("op_isfalse", args[0]), &ast.ConstantNode{Value: false}, call("op_and", args...)), nil
		case "||":
			return cond(call("op_istrue", args[0]), &ast.ConstantNode{Value: true}, call("op_or", args...)), nil
		case "??":
			return cond(call("op_ismissing", args[0]), args[1], args[0]), nil
		}
		return call(opIDs[n.op], args...), nil
	case nCall:
		if n.name == "if" {
			if len(args) != 3 {
				return nil, &SyntaxError{Pos: n.pos, Msg: fmt.Sprintf("if takes 3 arguments (condition, then, else), got %d", len(args))}
			}
			return cond(call("op_cond", args[0]), args[1], args[2]), nil
		}
		f, ok := c.lib[n.name]
		if !ok {
			msg := fmt.Sprintf("unknown function %q", n.name)
			if s := similar(n.name, c.names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			return nil, &SyntaxError{Pos: n.pos, Msg: msg}
		}
		if len(args) < f.min || f.max >= 0 && len(args) > f.max {
			return nil, &SyntaxError{Pos: n.pos, Msg: fmt.Sprintf("%s takes %s, got %d", n.name, arity(f), len(args))}
		}
		if n.name == "round_n" {
			if k, ok := args[1].(*ast.ConstantNode); ok {
				if d, ok := k.Value.(int64); !ok || d < 0 || d > 15 {
					return nil, &SyntaxError{Pos: n.args[1].pos, Msg: "round_n: decimals must be an integer from 0 to 15"}
				}
			}
		}
		if strings.HasPrefix(n.name, "str::regex_") {
			if k, ok := args[1].(*ast.ConstantNode); ok {
				if p, ok := k.Value.(string); ok {
					if _, err := c.regexCheck(p); err != nil {
						return nil, &SyntaxError{Pos: n.args[1].pos, Msg: fmt.Sprintf("%s: %v", n.name, err)}
					}
				}
			}
		}
		return call(funcID(n.name), args...), nil
	}
	return nil, fmt.Errorf("unknown node kind %d", n.kind)
}

func (c *exprCompiler) regexCheck(p string) (any, error) {
	rc := &regexCache{}
	return rc.get(p)
}

func arity(f fn) string {
	switch {
	case f.max < 0:
		return fmt.Sprintf("at least %d %s", f.min, plural(f.min, "argument", "arguments"))
	case f.min == f.max:
		return fmt.Sprintf("%d %s", f.min, plural(f.min, "argument", "arguments"))
	}
	return fmt.Sprintf("%d to %d arguments", f.min, f.max)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// runner is a reusable VM with its environment, pooled per Mapping.
type runner struct {
	vm  vm.VM
	env map[string]any
}

func newRunner() *runner { return &runner{env: make(map[string]any, 8)} }

// run evaluates p with vals as $1..$n and returns the error a function
// reported, without expr-lang's source excerpt (the caller names the
// rule).
func (r *runner) run(p *program, vals []any) (any, error) {
	for i, v := range vals {
		r.env[varNames[i]] = norm(v)
	}
	out, err := r.vm.Run(p.prog, r.env)
	for i := range vals {
		r.env[varNames[i]] = nil // do not keep messages alive from the pool
	}
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			if inner := fe.Unwrap(); inner != nil {
				err = inner
			} else {
				err = errors.New(fe.Message)
			}
		}
		return nil, err
	}
	return out, nil
}
