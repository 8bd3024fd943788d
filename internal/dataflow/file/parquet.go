package file

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"

	"github.com/parquet-go/parquet-go"
)

// Parquet columns besides the payload's fields.
const (
	ColTopic    = "_topic"    // the source topic
	ColReceived = "_received" // when the flow received the message (timestamp, ms)
	ColPayload  = "_payload"  // a payload that is not a JSON object, as JSON text
)

// column kinds inferred from the staged payloads.
const (
	kindNone = iota
	kindBool
	kindNumber
	kindString
	kindJSON // objects, arrays and mixed types: the value's JSON text
)

// writeParquet converts a staging file of envelopes into a Parquet file at
// dst, fsynced. Columns are the union of the payloads' top-level fields,
// typed from their values (boolean, double, string; nested or mixed values
// as JSON text), all optional, plus _topic and _received.
func writeParquet(src, dst string) error {
	envs, err := readEnvelopes(src)
	if err != nil {
		return fmt.Errorf("reading %s: %w", src, err)
	}
	rows := make([]map[string]json.RawMessage, len(envs))
	kinds := map[string]int{}
	for i, e := range envs {
		var obj map[string]json.RawMessage
		if json.Unmarshal(e.Payload, &obj) != nil || obj == nil {
			obj = map[string]json.RawMessage{ColPayload: e.Payload}
			kinds[ColPayload] = kindJSON
		}
		rows[i] = obj
		for k, v := range obj {
			if k == ColPayload && kinds[k] == kindJSON {
				continue
			}
			kinds[k] = merge(kinds[k], kindOf(v))
		}
	}
	group := parquet.Group{
		ColTopic:    parquet.Optional(parquet.String()),
		ColReceived: parquet.Optional(parquet.Timestamp(parquet.Millisecond)),
	}
	for k, kind := range kinds {
		if k == ColTopic || k == ColReceived {
			continue
		}
		switch kind {
		case kindBool:
			group[k] = parquet.Optional(parquet.Leaf(parquet.BooleanType))
		case kindNumber:
			group[k] = parquet.Optional(parquet.Leaf(parquet.DoubleType))
		default:
			group[k] = parquet.Optional(parquet.String())
		}
	}
	schema := parquet.NewSchema("message", group)
	cols := schema.Columns()
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c[0]
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("creating %s: %w", dst, err)
	}
	w := parquet.NewWriter(f, schema)
	batch := make([]parquet.Row, 0, 256)
	flush := func() error {
		if _, err := w.WriteRows(batch); err != nil {
			return err
		}
		batch = batch[:0]
		return nil
	}
	for i, e := range envs {
		row := make(parquet.Row, len(names))
		for ci, name := range names {
			var v parquet.Value
			switch name {
			case ColTopic:
				v = parquet.ValueOf(e.Topic)
			case ColReceived:
				v = parquet.Int64Value(e.Received)
			default:
				v = value(rows[i][name], kinds[name])
			}
			if v.IsNull() {
				row[ci] = v.Level(0, 0, ci)
			} else {
				row[ci] = v.Level(0, 1, ci)
			}
		}
		batch = append(batch, row)
		if len(batch) == cap(batch) {
			if err := flush(); err != nil {
				f.Close()
				return fmt.Errorf("writing %s: %w", dst, err)
			}
		}
	}
	err = flush()
	if err == nil {
		err = w.Close()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	return nil
}

func kindOf(v json.RawMessage) int {
	if len(v) == 0 {
		return kindNone
	}
	switch v[0] {
	case 'n':
		return kindNone
	case 't', 'f':
		return kindBool
	case '"':
		return kindString
	case '{', '[':
		return kindJSON
	}
	return kindNumber
}

func merge(a, b int) int {
	switch {
	case a == kindNone:
		return b
	case b == kindNone || a == b:
		return a
	}
	return kindJSON
}

// value converts one JSON value to the column's kind; null for absent.
func value(v json.RawMessage, kind int) parquet.Value {
	if kindOf(v) == kindNone {
		return parquet.NullValue()
	}
	switch kind {
	case kindBool:
		return parquet.BooleanValue(v[0] == 't')
	case kindNumber:
		var f float64
		if json.Unmarshal(v, &f) == nil {
			return parquet.DoubleValue(f)
		}
	case kindString:
		var s string
		if json.Unmarshal(v, &s) == nil {
			return parquet.ByteArrayValue([]byte(s))
		}
	}
	return parquet.ByteArrayValue(slices.Clone(v))
}
