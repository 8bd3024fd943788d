package cluster

import (
	"errors"
	"fmt"
	"strings"
)

// The MQTT topic ↔ NATS subject mapping (docs/cluster.md, "Subjects").
//
// A topic becomes a subject of one prefix token and one token per level:
//
//	a/b        → mqtt.a.b
//	$SYS/x     → mqtt$.$SYS.x      (topics starting with '$' get their own prefix)
//	a//b       → mqtt.a.%.b        (an empty level is the token "%")
//	/a/        → mqtt.%.a.%
//	v1.2/x y   → mqtt.v1%2E2.x%20y
//
// Inside a level, the bytes NATS treats specially ('.', '*', '>', space,
// control characters and DEL) and '%' itself are written %XX (two
// upper-case hex digits). A token is never empty, and never "*" or ">",
// so a topic's subject has no wildcards; "%" alone cannot come from an
// escaped level, so it is free to stand for the empty level. The mapping is
// a bijection between valid topic names and the subjects it produces
// (FuzzTopicRoundTrip).
//
// Filters map the same way, with '+' onto '*' and a last '#' onto '>'.
// MQTT's '#' also matches its parent level ("a/#" matches "a"), NATS's '>'
// needs at least one more token, so a filter ending in "/#" maps to two
// subjects: "a/#" → mqtt.a.> and mqtt.a. Filters whose first level is a
// wildcard get the "mqtt" prefix only, so they never match '$' topics, as
// MQTT requires (FuzzFilterMatchAgrees checks the whole mapping against
// MQTT's matching with nats-server's own matcher).
const (
	subjectPrefix       = "mqtt"
	subjectPrefixDollar = "mqtt$"
	emptyLevel          = "%"
)

// needsEscape reports the bytes a level cannot carry as they are.
func needsEscape(c byte) bool {
	return c <= ' ' || c == 0x7f || c == '.' || c == '*' || c == '>' || c == '%'
}

const hexDigits = "0123456789ABCDEF"

// appendLevel appends level as one subject token.
func appendLevel(dst []byte, level string) []byte {
	if level == "" {
		return append(dst, emptyLevel...)
	}
	for i := 0; i < len(level); i++ {
		c := level[i]
		if needsEscape(c) {
			dst = append(dst, '%', hexDigits[c>>4], hexDigits[c&0xf])
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

// AppendSubject appends the subject of topic name to dst.
func AppendSubject(dst []byte, name string) []byte {
	if strings.HasPrefix(name, "$") {
		dst = append(dst, subjectPrefixDollar...)
	} else {
		dst = append(dst, subjectPrefix...)
	}
	for {
		dst = append(dst, '.')
		i := strings.IndexByte(name, '/')
		if i < 0 {
			return appendLevel(dst, name)
		}
		dst = appendLevel(dst, name[:i])
		name = name[i+1:]
	}
}

// Subject is the NATS subject of topic name.
func Subject(name string) string { return string(AppendSubject(nil, name)) }

// FilterSubjects returns the subjects whose union matches exactly the
// topics filter matches (one, or two for a filter ending in "/#").
// filter must be a valid MQTT filter, not a shared one.
func FilterSubjects(filter string) []string {
	dollar := strings.HasPrefix(filter, "$")
	var b []byte
	if dollar {
		b = append(b, subjectPrefixDollar...)
	} else {
		b = append(b, subjectPrefix...)
	}
	rest := filter
	for {
		i := strings.IndexByte(rest, '/')
		level := rest
		if i >= 0 {
			level = rest[:i]
		}
		switch level {
		case "#":
			if rest == filter {
				return []string{string(b) + ".>"} // "#": every topic of the prefix
			}
			return []string{string(b) + ".>", string(b)}
		case "+":
			b = append(b, ".*"...)
		default:
			b = append(b, '.')
			b = appendLevel(b, level)
		}
		if i < 0 {
			return []string{string(b)}
		}
		rest = rest[i+1:]
	}
}

// ErrNotTopicSubject is returned for a subject the mapping does not produce.
var ErrNotTopicSubject = errors.New("not an MQTT topic subject")

// Topic is the topic name of a subject made by Subject.
func Topic(subject string) (string, error) {
	var rest string
	var dollar bool
	switch {
	case strings.HasPrefix(subject, subjectPrefixDollar+"."):
		rest, dollar = subject[len(subjectPrefixDollar)+1:], true
	case strings.HasPrefix(subject, subjectPrefix+"."):
		rest = subject[len(subjectPrefix)+1:]
	default:
		return "", fmt.Errorf("%w: %q has no mqtt prefix", ErrNotTopicSubject, subject)
	}
	var b strings.Builder
	b.Grow(len(rest))
	first := true
	for {
		i := strings.IndexByte(rest, '.')
		tok := rest
		if i >= 0 {
			tok = rest[:i]
		}
		if !first {
			b.WriteByte('/')
		}
		if err := unescapeLevel(&b, tok); err != nil {
			return "", fmt.Errorf("%w: %q: %w", ErrNotTopicSubject, subject, err)
		}
		if first && dollar != (b.Len() > 0 && b.String()[0] == '$') {
			return "", fmt.Errorf("%w: %q: prefix and first level disagree about '$'", ErrNotTopicSubject, subject)
		}
		first = false
		if i < 0 {
			return b.String(), nil
		}
		rest = rest[i+1:]
	}
}

func unescapeLevel(b *strings.Builder, tok string) error { return unescape(b, tok, false) }

// unescape undoes appendLevel; slash allows '/' (a queue name's filter).
func unescape(b *strings.Builder, tok string, slash bool) error {
	switch tok {
	case emptyLevel:
		return nil
	case "", "*", ">":
		return fmt.Errorf("token %q", tok)
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c == '%' {
			if i+2 >= len(tok) {
				return fmt.Errorf("truncated escape in %q", tok)
			}
			hi, lo := unhex(tok[i+1]), unhex(tok[i+2])
			if hi < 0 || lo < 0 {
				return fmt.Errorf("bad escape in %q", tok)
			}
			c = byte(hi<<4 | lo)
			if !needsEscape(c) {
				return fmt.Errorf("needless escape in %q", tok)
			}
			i += 2
		} else if needsEscape(c) {
			return fmt.Errorf("unescaped %q in %q", c, tok)
		}
		if c == '/' && !slash {
			return fmt.Errorf("'/' in %q", tok)
		}
		b.WriteByte(c)
	}
	return nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// QueueName is the NATS queue group of shared subscription group on
// filter: one per (group, filter) pair across the cluster, as MQTT's
// shared subscriptions are. A share name has no '/', so the first '/'
// separates the two unambiguously; whitespace and '.' are escaped.
func QueueName(group, filter string) string {
	b := appendLevel(nil, group)
	b = append(b, '/')
	b = appendLevel(b, filter)
	return string(b)
}
