// Package topic handles MQTT topic names and filters: validation, matching,
// the concurrent subscription trie and the retained-message index.
package topic

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Sentinel errors; every validation error wraps exactly one of the first two,
// and limit violations additionally wrap ErrLimitExceeded so the broker can
// pick a different reason code for them.
var (
	ErrInvalidName   = errors.New("invalid topic name")
	ErrInvalidFilter = errors.New("invalid topic filter")
	ErrLimitExceeded = errors.New("topic limit exceeded")
)

// MaxLength is the protocol limit for names and filters: they travel as
// UTF-8 strings with a two-byte length prefix.
const MaxLength = 65535

// SharePrefix starts a shared subscription filter: $share/{group}/{filter}.
const SharePrefix = "$share/"

// ValidName reports whether name may be used as a PUBLISH topic name.
func ValidName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > MaxLength {
		return fmt.Errorf("%w: length %d exceeds %d bytes", ErrInvalidName, len(name), MaxLength)
	}
	multibyte := false
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '+' || c == '#':
			return fmt.Errorf("%w: wildcard %q at byte %d", ErrInvalidName, c, i)
		case c == 0:
			return fmt.Errorf("%w: U+0000 at byte %d", ErrInvalidName, i)
		case c >= utf8.RuneSelf:
			multibyte = true
		}
	}
	// utf8.ValidString also rejects encoded surrogates, which MQTT forbids.
	if multibyte && !utf8.ValidString(name) {
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidName)
	}
	return nil
}

// ValidFilter reports whether filter may be used in SUBSCRIBE or UNSUBSCRIBE.
// It does not interpret $share; use ParseShared for that.
func ValidFilter(filter string) error {
	if filter == "" {
		return fmt.Errorf("%w: empty", ErrInvalidFilter)
	}
	if len(filter) > MaxLength {
		return fmt.Errorf("%w: length %d exceeds %d bytes", ErrInvalidFilter, len(filter), MaxLength)
	}
	multibyte := false
	for i := 0; i < len(filter); i++ {
		switch c := filter[i]; {
		case c == '+':
			if (i > 0 && filter[i-1] != '/') || (i+1 < len(filter) && filter[i+1] != '/') {
				return fmt.Errorf("%w: '+' at byte %d does not occupy a whole level", ErrInvalidFilter, i)
			}
		case c == '#':
			if i > 0 && filter[i-1] != '/' {
				return fmt.Errorf("%w: '#' at byte %d does not occupy a whole level", ErrInvalidFilter, i)
			}
			if i+1 != len(filter) {
				return fmt.Errorf("%w: '#' at byte %d is not the last level", ErrInvalidFilter, i)
			}
		case c == 0:
			return fmt.Errorf("%w: U+0000 at byte %d", ErrInvalidFilter, i)
		case c >= utf8.RuneSelf:
			multibyte = true
		}
	}
	if multibyte && !utf8.ValidString(filter) {
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidFilter)
	}
	return nil
}

// Limits are optional, configurable restrictions on top of the protocol
// rules; a zero field means unlimited.
type Limits struct {
	MaxLength int // bytes
	MaxLevels int // levels; "a/b" has two, "/" has two
}

// CheckName validates name (as ValidName) and then applies the limits.
func (l Limits) CheckName(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	return l.check(name, ErrInvalidName)
}

// CheckFilter validates filter (as ValidFilter) and then applies the limits.
// For shared subscriptions pass the inner filter returned by ParseShared.
func (l Limits) CheckFilter(filter string) error {
	if err := ValidFilter(filter); err != nil {
		return err
	}
	return l.check(filter, ErrInvalidFilter)
}

func (l Limits) check(s string, kind error) error {
	if l.MaxLength > 0 && len(s) > l.MaxLength {
		return fmt.Errorf("%w: %w: length %d exceeds %d bytes", kind, ErrLimitExceeded, len(s), l.MaxLength)
	}
	if l.MaxLevels > 0 {
		// Counting separators only up to the limit keeps this cheap for
		// pathological inputs.
		levels := 1
		for i := 0; i < len(s); i++ {
			if s[i] == '/' {
				levels++
				if levels > l.MaxLevels {
					return fmt.Errorf("%w: %w: more than %d levels", kind, ErrLimitExceeded, l.MaxLevels)
				}
			}
		}
	}
	return nil
}

// ParseShared splits a $share/{group}/{filter} subscription. For any other
// filter it returns ("", filter, false, ValidFilter(filter)), so one call
// validates every kind of filter. shared reports whether the $share prefix
// was present even when err is non-nil, letting the broker choose between
// "invalid filter" and "shared subscriptions not supported".
func ParseShared(filter string) (group, inner string, shared bool, err error) {
	rest, ok := strings.CutPrefix(filter, SharePrefix)
	if !ok {
		return "", filter, false, ValidFilter(filter)
	}
	slash := strings.IndexByte(rest, '/')
	if slash < 0 {
		return "", "", true, fmt.Errorf("%w: shared subscription %q has no filter after the group", ErrInvalidFilter, filter)
	}
	group, inner = rest[:slash], rest[slash+1:]
	if group == "" {
		return "", "", true, fmt.Errorf("%w: shared subscription with empty group name", ErrInvalidFilter)
	}
	if i := strings.IndexAny(group, "+#\x00"); i >= 0 {
		return "", "", true, fmt.Errorf("%w: shared subscription group contains %q", ErrInvalidFilter, group[i])
	}
	if !utf8.ValidString(group) {
		return "", "", true, fmt.Errorf("%w: shared subscription group is not valid UTF-8", ErrInvalidFilter)
	}
	if err := ValidFilter(inner); err != nil {
		return "", "", true, fmt.Errorf("shared subscription %q: %w", group, err)
	}
	return group, inner, true, nil
}
