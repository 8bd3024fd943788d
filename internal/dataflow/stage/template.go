package stage

import (
	"fmt"
	"strconv"
	"strings"
)

// Template is a dataDestination with ${inputTopic} (the source topic) and
// ${inputTopic.N} (its Nth level, from 1) substituted per message.
type Template struct {
	parts []tplPart
	fixed bool
}

type tplPart struct {
	lit   string
	level int // 0: literal; -1: the whole topic; n: level n
}

// ParseTemplate parses a dataDestination.
func ParseTemplate(s string) (Template, error) {
	var t Template
	for rest := s; rest != ""; {
		i := strings.Index(rest, "${")
		if i < 0 {
			t.parts = append(t.parts, tplPart{lit: rest})
			break
		}
		if i > 0 {
			t.parts = append(t.parts, tplPart{lit: rest[:i]})
		}
		end := strings.IndexByte(rest[i:], '}')
		if end < 0 {
			return Template{}, fmt.Errorf("unterminated ${ in %q", s)
		}
		v := rest[i+2 : i+end]
		switch {
		case v == "inputTopic":
			t.parts = append(t.parts, tplPart{level: -1})
		case strings.HasPrefix(v, "inputTopic."):
			n, err := strconv.Atoi(strings.TrimPrefix(v, "inputTopic."))
			if err != nil || n < 1 {
				return Template{}, fmt.Errorf("${%s}: the level must be a number from 1", v)
			}
			t.parts = append(t.parts, tplPart{level: n})
		default:
			return Template{}, fmt.Errorf("unknown variable ${%s}", v)
		}
		rest = rest[i+end+1:]
	}
	t.fixed = true
	for _, p := range t.parts {
		if p.level != 0 {
			t.fixed = false
		}
	}
	return t, nil
}

// Fixed reports whether the template has no variables.
func (t Template) Fixed() bool { return t.fixed }

// Expand substitutes topic into the template. A level the topic does not
// have is an error (permanent: the message cannot be routed).
func (t Template) Expand(topic string) (string, error) {
	if t.fixed && len(t.parts) == 1 {
		return t.parts[0].lit, nil
	}
	var b strings.Builder
	var levels []string
	for _, p := range t.parts {
		switch {
		case p.level == 0:
			b.WriteString(p.lit)
		case p.level < 0:
			b.WriteString(topic)
		default:
			if levels == nil {
				levels = strings.Split(topic, "/")
			}
			if p.level > len(levels) {
				return "", Permanentf("${inputTopic.%d}: topic %q has %d levels", p.level, topic, len(levels))
			}
			b.WriteString(levels[p.level-1])
		}
	}
	return b.String(), nil
}

// Empty reports whether the template is the empty string.
func (t Template) Empty() bool { return len(t.parts) == 0 }
