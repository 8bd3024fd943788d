package config

import (
	"reflect"
	"testing"
)

func TestFieldName(t *testing.T) {
	type fields struct {
		Plain    int
		Tagged   int `json:"tagged,omitempty"`
		OnlyOpts int `json:",omitempty"`
		Skipped  int `json:"-"`
		hidden   int
	}
	_ = fields{}.hidden
	want := map[string]string{"Plain": "Plain", "Tagged": "tagged", "OnlyOpts": "OnlyOpts"}
	typ := reflect.TypeOf(fields{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, ok := FieldName(f)
		if w, in := want[f.Name]; name != w || ok != in {
			t.Errorf("FieldName(%s) = %q, %v; want %q, %v", f.Name, name, ok, w, in)
		}
	}
}
