package topic

import (
	"errors"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string // substring of the error; "" for valid
	}{
		{"a", ""},
		{"/", ""},
		{"//", ""},
		{"a/b/c", ""},
		{"$SYS/broker", ""},
		{"données/température", ""},
		{"with space", ""},
		{strings.Repeat("x", MaxLength), ""},
		{"", "empty"},
		{strings.Repeat("x", MaxLength+1), "exceeds"},
		{"a/+", "wildcard"},
		{"a/#", "wildcard"},
		{"a+b", "wildcard"},
		{"+", "wildcard"},
		{"a\x00b", "U+0000"},
		{"a\xffb", "UTF-8"},
		{"\xed\xa0\x80", "UTF-8"}, // encoded surrogate U+D800
	}
	for _, tt := range tests {
		err := ValidName(tt.name)
		checkErr(t, "ValidName", tt.name, err, tt.wantErr, ErrInvalidName)
	}
}

func TestValidFilter(t *testing.T) {
	tests := []struct {
		filter  string
		wantErr string
	}{
		{"a", ""},
		{"#", ""},
		{"+", ""},
		{"/", ""},
		{"+/+", ""},
		{"/+", ""},
		{"a/#", ""},
		{"a/+/b", ""},
		{"+/#", ""},
		{"a//#", ""},
		{"$SYS/#", ""},
		{"$share/g/a", ""}, // syntactically a plain filter
		{"données/+", ""},
		{strings.Repeat("x", MaxLength), ""},
		{"", "empty"},
		{strings.Repeat("x", MaxLength+1), "exceeds"},
		{"a#", "whole level"},
		{"a/b#", "whole level"},
		{"#/a", "last level"},
		{"a/#/b", "last level"},
		{"##", "last level"},
		{"a+", "whole level"},
		{"+a", "whole level"},
		{"a/+b/c", "whole level"},
		{"++", "whole level"},
		{"a\x00", "U+0000"},
		{"a/\xc3", "UTF-8"},
	}
	for _, tt := range tests {
		err := ValidFilter(tt.filter)
		checkErr(t, "ValidFilter", tt.filter, err, tt.wantErr, ErrInvalidFilter)
	}
}

func checkErr(t *testing.T, fn, arg string, err error, wantErr string, kind error) {
	t.Helper()
	if len(arg) > 40 {
		arg = arg[:40] + "..."
	}
	switch {
	case wantErr == "" && err != nil:
		t.Errorf("%s(%q) = %v, want nil", fn, arg, err)
	case wantErr != "" && err == nil:
		t.Errorf("%s(%q) = nil, want error containing %q", fn, arg, wantErr)
	case wantErr != "" && !errors.Is(err, kind):
		t.Errorf("%s(%q) = %v, does not wrap %v", fn, arg, err, kind)
	case wantErr != "" && !strings.Contains(err.Error(), wantErr):
		t.Errorf("%s(%q) = %v, want it to mention %q", fn, arg, err, wantErr)
	}
}

func TestLimits(t *testing.T) {
	l := Limits{MaxLength: 10, MaxLevels: 3}
	tests := []struct {
		s          string
		filter     bool
		wantErr    string
		wantLimits bool
	}{
		{"a/b/c", false, "", false},
		{"a/b/c", true, "", false},
		{"0123456789", false, "", false},
		{"0123456789a", false, "exceeds 10", true},
		{"a/b/c/d", false, "more than 3 levels", true},
		{"+/+/#", true, "", false},
		{"+/+/+/#", true, "more than 3 levels", true},
		{"///", true, "more than 3 levels", true},
		{"a/+", false, "wildcard", false}, // protocol check comes first
		{"a+", true, "whole level", false},
	}
	for _, tt := range tests {
		var err error
		kind := ErrInvalidName
		if tt.filter {
			err, kind = l.CheckFilter(tt.s), ErrInvalidFilter
		} else {
			err = l.CheckName(tt.s)
		}
		checkErr(t, "Check", tt.s, err, tt.wantErr, kind)
		if got := errors.Is(err, ErrLimitExceeded); got != tt.wantLimits {
			t.Errorf("Check(%q): errors.Is(ErrLimitExceeded) = %v, want %v", tt.s, got, tt.wantLimits)
		}
	}
	var unlimited Limits
	if err := unlimited.CheckFilter(strings.Repeat("a/", 1000) + "#"); err != nil {
		t.Errorf("zero Limits rejected a valid filter: %v", err)
	}
}

func TestParseShared(t *testing.T) {
	tests := []struct {
		filter  string
		group   string
		inner   string
		shared  bool
		wantErr string
	}{
		{"a/b", "", "a/b", false, ""},
		{"#", "", "#", false, ""},
		{"$share", "", "$share", false, ""},
		{"$sharex/g/a", "", "$sharex/g/a", false, ""},
		{"$share/g/a/b", "g", "a/b", true, ""},
		{"$share/g/#", "g", "#", true, ""},
		{"$share/g/+/x", "g", "+/x", true, ""},
		{"$share/g//", "g", "/", true, ""},
		{"$share/groupé/a", "groupé", "a", true, ""},
		{"$share/g/$share/h/a", "g", "$share/h/a", true, ""},
		{"$share/grp", "", "", true, "no filter"},
		{"$share/", "", "", true, "no filter"},
		{"$share//a", "", "", true, "empty group"},
		{"$share/g/", "", "", true, "empty"},
		{"$share/g+/a", "", "", true, "group contains"},
		{"$share/#/a", "", "", true, "group contains"},
		{"$share/g/a#", "", "", true, "whole level"},
		{"$share/\xff/a", "", "", true, "UTF-8"},
		{"a/#/b", "", "a/#/b", false, "last level"},
		{"", "", "", false, "empty"},
	}
	for _, tt := range tests {
		group, inner, shared, err := ParseShared(tt.filter)
		checkErr(t, "ParseShared", tt.filter, err, tt.wantErr, ErrInvalidFilter)
		if shared != tt.shared {
			t.Errorf("ParseShared(%q) shared = %v, want %v", tt.filter, shared, tt.shared)
		}
		if err == nil && (group != tt.group || inner != tt.inner) {
			t.Errorf("ParseShared(%q) = %q, %q; want %q, %q", tt.filter, group, inner, tt.group, tt.inner)
		}
	}
}
