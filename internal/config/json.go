package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// JSON is a protocol-specific configuration object such as a device
// endpoint's additionalConfiguration or a data point's
// dataPointConfiguration. Azure Device Registry carries these as
// stringified JSON; a resource may give one either that way or as a plain
// mapping, and it is stored and shown as the JSON object.
type JSON []byte

var jsonType = reflect.TypeFor[JSON]()

// MarshalJSON writes the object (null when unset).
func (j JSON) MarshalJSON() ([]byte, error) {
	if len(j) == 0 {
		return []byte("null"), nil
	}
	return j, nil
}

// UnmarshalJSON accepts an object or a string holding one.
func (j *JSON) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if bytes.Equal(data, []byte("null")) {
		*j = nil
		return nil
	}
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		data = []byte(s)
	}
	obj, err := compactObject(data)
	if err != nil {
		return err
	}
	*j = obj
	return nil
}

var errNotObject = errors.New("must be a JSON object")

// compactObject checks that data is one JSON object and compacts it.
func compactObject(data []byte) (JSON, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return nil, errNotObject
	}
	var out bytes.Buffer
	if err := json.Compact(&out, data); err != nil {
		return nil, fmt.Errorf("%w: %v", errNotObject, err)
	}
	return JSON(out.Bytes()), nil
}

// decodeJSON reads a JSON field from YAML: a mapping, or a string holding a
// JSON object.
func (d *decoder) decodeJSON(n *yaml.Node, v reflect.Value, path string) {
	var data []byte
	switch {
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str":
		data = []byte(n.Value)
	case n.Kind == yaml.MappingNode:
		var m map[string]any
		if err := n.Decode(&m); err != nil {
			d.errs.addAt(path, n.Line, "must be a mapping with string keys (%v)", strings.TrimPrefix(err.Error(), "yaml: "))
			return
		}
		b, err := json.Marshal(m)
		if err != nil {
			d.errs.addAt(path, n.Line, "must be a mapping of JSON values (%v)", err)
			return
		}
		data = b
	default:
		d.errs.addAt(path, n.Line, "must be a mapping or a string holding a JSON object")
		return
	}
	obj, err := compactObject(data)
	if err != nil {
		d.errs.addAt(path, n.Line, "%v", err)
		return
	}
	v.Set(reflect.ValueOf(obj))
}

// checkConfig decodes j into v with DecodeConfig, then runs check, whose
// findings on fields that already failed to decode are dropped (a value
// that is not a number is not also "out of range").
func checkConfig(j JSON, v any, path string, errs *Errors, check func(errs *Errors)) {
	var de Errors
	DecodeConfig(j, v, path, &de)
	var ce Errors
	check(&ce)
	decoded := de.paths()
	*errs = append(*errs, de...)
	for _, fe := range ce {
		if !decoded.covers(fe.Path) {
			*errs = append(*errs, fe)
		}
	}
}

// DecodeConfig strictly decodes a JSON configuration object into v (a
// pointer to a struct with json tags), recording every problem with its
// field path below path: unknown keys (with a suggestion), wrong types.
// Connectors and validation use it alike, so a configuration that passed
// validation decodes the same way at run time. An empty j leaves v as is.
func DecodeConfig(j JSON, v any, path string, errs *Errors) {
	if len(j) == 0 {
		return
	}
	var n yaml.Node
	if err := yaml.Unmarshal(j, &n); err != nil {
		errs.Add(path, "must be a JSON object: %v", err)
		return
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = *n.Content[0]
	}
	d := &decoder{budget: maxNodes, lines: map[string]int{}}
	d.decode(&n, reflect.ValueOf(v).Elem(), path)
	for _, fe := range d.errs {
		fe.Line = 0 // lines of the JSON text, not of the resource
		*errs = append(*errs, fe)
	}
}
