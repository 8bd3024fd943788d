package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// FieldError is one problem with one field of a resource.
type FieldError struct {
	Path string // e.g. spec.ports[1].port; empty for the document as a whole
	Msg  string
	Line int // 1-based line in the source document, 0 when unknown
}

func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errors collects every problem found in a document, in the order found.
type Errors []FieldError

// Add records a problem at path.
func (e *Errors) Add(path, format string, args ...any) {
	*e = append(*e, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (e *Errors) addAt(path string, line int, format string, args ...any) {
	*e = append(*e, FieldError{Path: path, Msg: fmt.Sprintf(format, args...), Line: line})
}

// Strings returns each error as "path: message".
func (e Errors) Strings() []string {
	out := make([]string, len(e))
	for i, fe := range e {
		out[i] = fe.Error()
	}
	return out
}

// covers reports whether a problem was already recorded at path or at a
// field above it, so validation does not repeat what decoding reported.
func (e Errors) covers(path string) bool { return e.paths().covers(path) }

type pathSet map[string]bool

func (e Errors) paths() pathSet {
	ps := make(pathSet, len(e))
	for _, fe := range e {
		ps[fe.Path] = true
	}
	return ps
}

func (ps pathSet) covers(path string) bool {
	if ps[path] {
		return true
	}
	for i := range len(path) {
		if (path[i] == '.' || path[i] == '[') && ps[path[:i]] {
			return true
		}
	}
	return false
}

// maxErrors bounds the errors reported for one document: past that, more
// of them help nobody and cost the server time.
const maxErrors = 100

func (e Errors) truncate() Errors {
	if len(e) <= maxErrors {
		return e
	}
	n := len(e) - maxErrors
	return append(e[:maxErrors:maxErrors], FieldError{Msg: fmt.Sprintf("and %d more errors", n)})
}

// ValidationError says that a resource is invalid and lists every reason.
type ValidationError struct {
	Kind, Name string // as far as they could be read
	Errs       Errors
}

func (e *ValidationError) Error() string {
	return e.Summary() + ": " + strings.Join(e.Errs.Strings(), "; ")
}

// Summary names what is invalid without listing why, for messages that
// list the field errors separately.
func (e *ValidationError) Summary() string {
	what := "resource"
	switch {
	case e.Kind != "" && e.Name != "":
		what = fmt.Sprintf("%s %q", e.Kind, e.Name)
	case e.Kind != "":
		what = e.Kind
	}
	return what + " is invalid"
}

// Details returns the field errors of err when it is (or wraps) a
// ValidationError, for error responses that list them one by one.
func Details(err error) []string {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return ve.Errs.Strings()
	}
	return nil
}

// field and index build field paths.
func field(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// key addresses a map entry; keys that are not plain identifiers are
// bracketed so that the path stays unambiguous (metadata.labels[app.io/x]).
func key(path, k string) string {
	plain := k != ""
	for _, r := range k {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			plain = false
			break
		}
	}
	if plain {
		return field(path, k)
	}
	return path + "[" + k + "]"
}
