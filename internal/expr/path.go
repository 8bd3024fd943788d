package expr

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// source says where a path reads from or writes to.
type source uint8

const (
	srcPayload     source = iota // the message body (or $source. in datasets and filters)
	srcTopic                     // $metadata.topic
	srcUserProp                  // $metadata.user_property.<key> (and $metadata.header.<key>)
	srcContentType               // $metadata.system_property.content_type
	srcContext                   // $context(alias).<path>, or $context.<path> in a dataset rule
)

// path is a parsed field reference: `Payload."Tag.10".Value`,
// `$metadata.user_property.priority`, `$context(position).BaseSalary`,
// optionally followed by `? $last` and `?? <default>` (inputs only).
type path struct {
	text   string
	src    source
	alias  string // srcContext: the dataset alias; "" for the bare $context. of dataset rules
	ds     int    // srcContext with an alias: the dataset's index, set by Compile
	segs   []string
	wild   int  // index of the * segment, -1 when there is none
	last   bool // ? $last
	hasDef bool // ?? <default>
	def    any
}

var (
	defaultRe = regexp.MustCompile(`^(.*?)\s*\?\?\s*(-?[0-9][0-9.eE+-]*|-?\.[0-9][0-9eE+-]*|true|false|null|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*$`)
	lastRe    = regexp.MustCompile(`(?i)^(.*?)\s*\?\s*\$last\s*$`)
)

// parsePath parses a field path. Positions in errors are 1-based offsets
// in text.
func parsePath(text string) (*path, error) {
	p := &path{text: text, wild: -1}
	s := text
	if m := defaultRe.FindStringSubmatch(s); m != nil {
		v, err := parseLiteral(m[2])
		if err != nil {
			return nil, &SyntaxError{Pos: len(m[1]) + 1, Msg: fmt.Sprintf("bad default value %s: %v", m[2], err)}
		}
		p.hasDef, p.def, s = true, v, m[1]
	}
	if m := lastRe.FindStringSubmatch(s); m != nil {
		p.last, s = true, m[1]
	}
	// Leading and trailing blanks are YAML noise, not part of a field name.
	off := len(s) - len(strings.TrimLeft(s, " \t"))
	s = strings.TrimRight(s[off:], " \t")
	if s == "" {
		return nil, &SyntaxError{Msg: "empty path"}
	}
	rest, restOff := s, off
	switch {
	case strings.HasPrefix(s, "$metadata."):
		rest, restOff = s[len("$metadata."):], off+len("$metadata.")
		segs, wild, err := splitPath(rest, restOff)
		if err != nil {
			return nil, err
		}
		switch {
		case len(segs) == 1 && segs[0] == "topic" && wild < 0:
			p.src = srcTopic
		case len(segs) == 2 && (segs[0] == "user_property" || segs[0] == "user_properties" || segs[0] == "header") && wild != 0:
			p.src, p.segs, p.wild = srcUserProp, segs[1:], wild-1
			if wild < 0 {
				p.wild = -1
			}
		case len(segs) == 2 && segs[0] == "system_property" && segs[1] == "content_type":
			p.src = srcContentType
		default:
			return nil, &SyntaxError{Pos: restOff + 1, Msg: fmt.Sprintf("unknown metadata field %q (known: topic, user_property.<key>, header.<key>, system_property.content_type)", rest)}
		}
		return p, nil
	case strings.HasPrefix(s, "$context("):
		end := strings.IndexByte(s, ')')
		if end < 0 {
			return nil, &SyntaxError{Pos: off + 1, Msg: "unclosed $context(: write $context(alias).field"}
		}
		p.src, p.alias = srcContext, strings.TrimSpace(s[len("$context("):end])
		if p.alias == "" {
			return nil, &SyntaxError{Pos: off + 10, Msg: "empty dataset name in $context()"}
		}
		rest, restOff = s[end+1:], off+end+1
		if rest == "" {
			return p, nil // the whole record
		}
		if rest[0] != '.' {
			return nil, &SyntaxError{Pos: restOff + 1, Msg: "expected \".\" after $context(" + p.alias + ")"}
		}
		rest, restOff = rest[1:], restOff+1
	case strings.HasPrefix(s, "$context."):
		p.src = srcContext
		rest, restOff = s[len("$context."):], off+len("$context.")
	case strings.HasPrefix(s, "$source."):
		rest, restOff = s[len("$source."):], off+len("$source.")
	case strings.HasPrefix(s, "$"):
		name := s
		if i := strings.IndexAny(s, ".("); i > 0 {
			name = s[:i]
		}
		return nil, &SyntaxError{Pos: off + 1, Msg: fmt.Sprintf("unknown reference %q (known: $metadata, $context, $source)", name)}
	}
	segs, wild, err := splitPath(rest, restOff)
	if err != nil {
		return nil, err
	}
	p.segs, p.wild = segs, wild
	return p, nil
}

// splitPath splits a dotted path into segments. A segment that starts
// with a double quote runs to the next double quote, so it may contain
// dots; a quote anywhere else is part of the name. A lone * is the
// wildcard; at most one is allowed.
func splitPath(s string, off int) (segs []string, wild int, err error) {
	wild = -1
	i := 0
	for {
		start := i
		var seg string
		if i < len(s) && s[i] == '"' {
			j := strings.IndexByte(s[i+1:], '"')
			if j < 0 {
				return nil, 0, &SyntaxError{Pos: off + i + 1, Msg: "unterminated quoted segment"}
			}
			seg = s[i+1 : i+1+j]
			i += j + 2
			if i < len(s) && s[i] != '.' {
				return nil, 0, &SyntaxError{Pos: off + i + 1, Msg: "expected \".\" after a quoted segment"}
			}
		} else {
			j := strings.IndexByte(s[i:], '.')
			if j < 0 {
				j = len(s) - i
			}
			seg = s[i : i+j]
			i += j
			if seg == "" {
				return nil, 0, &SyntaxError{Pos: off + start + 1, Msg: "empty path segment"}
			}
			if seg == "*" {
				if wild >= 0 {
					return nil, 0, &SyntaxError{Pos: off + start + 1, Msg: "only one * is allowed in a path"}
				}
				wild = len(segs)
			} else if strings.Contains(seg, "*") {
				return nil, 0, &SyntaxError{Pos: off + start + 1, Msg: fmt.Sprintf("a wildcard must be a whole segment, not %q (quote the segment if * is part of the name)", seg)}
			}
		}
		segs = append(segs, seg)
		if i >= len(s) {
			return segs, wild, nil
		}
		i++ // the dot
		if i >= len(s) {
			return nil, 0, &SyntaxError{Pos: off + i, Msg: "path ends with \".\""}
		}
	}
}

// parseLiteral parses a default value: a number, true, false, null or a
// quoted string.
func parseLiteral(s string) (any, error) {
	switch s {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "null":
		return nil, nil
	}
	if s[0] == '"' || s[0] == '\'' {
		toks, err := lex(s)
		if err != nil {
			return nil, err
		}
		if len(toks) != 2 || toks[0].kind != tStr {
			return nil, fmt.Errorf("not a single string")
		}
		return toks[0].val, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, fmt.Errorf("not a number")
	}
	return f, nil
}

// String renders the path back in its canonical, quoted form.
func (p *path) String() string {
	var b strings.Builder
	switch p.src {
	case srcTopic:
		return "$metadata.topic"
	case srcContentType:
		return "$metadata.system_property.content_type"
	case srcUserProp:
		b.WriteString("$metadata.user_property")
	case srcContext:
		if p.alias != "" {
			b.WriteString("$context(" + p.alias + ")")
		} else {
			b.WriteString("$context")
		}
	}
	for i, s := range p.segs {
		if i > 0 || b.Len() > 0 {
			b.WriteByte('.')
		}
		if i == p.wild || !needsQuotes(s) {
			b.WriteString(s)
		} else {
			b.WriteString(`"` + s + `"`)
		}
	}
	return b.String()
}

// needsQuotes reports whether a segment must be quoted to read back as
// itself. (A segment containing a double quote cannot be quoted; it only
// reads back when the quote is not its first character and it has no dot.)
func needsQuotes(s string) bool {
	return s == "" || s == "*" || s[0] == '"' || strings.ContainsAny(s, ".?$*") || strings.TrimSpace(s) != s
}

// appendKey appends an identity of the field p reads (with the wildcard
// replaced by cap) that two rules reading the same field share. Rule
// suffixes (? $last, ?? default) are not part of it.
func (p *path) appendKey(b []byte, cap []string) []byte {
	b = append(b, byte('0'+p.src))
	b = append(b, p.alias...)
	for i, s := range p.segs {
		if i == p.wild {
			for _, c := range cap {
				b = append(b, 0x1f)
				b = append(b, c...)
			}
			continue
		}
		b = append(b, 0x1f)
		b = append(b, s...)
	}
	return b
}

// joinKeys makes the identity of a rule's inputs: a set, so sorted.
func joinKeys(parts []string) string {
	sort.Strings(parts)
	return strings.Join(parts, "\x1e")
}
