package file

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/edgeport/edgeport/internal/config"
)

// Columns from a schema: each field of a Delta/1.0 or JSON Schema (see
// config.SchemaField) becomes a column of its type, optional when the
// field is nullable. A message is turned into a row before it is
// acknowledged (Send), so one that cannot be written is refused then —
// and dead-lettered — rather than found when the file is finished.

// parquetSchema builds the file schema of fields.
func parquetSchema(fields []config.SchemaField) *parquet.Schema {
	g := parquet.Group{}
	for _, f := range fields {
		g[f.Name] = parquetNode(f)
	}
	return parquet.NewSchema("message", g)
}

func parquetNode(f config.SchemaField) parquet.Node {
	var n parquet.Node
	switch f.Type {
	case config.FieldString, config.FieldJSON:
		n = parquet.String()
	case config.FieldLong:
		n = parquet.Int(64)
	case config.FieldInteger:
		n = parquet.Int(32)
	case config.FieldShort:
		n = parquet.Int(16)
	case config.FieldByte:
		n = parquet.Int(8)
	case config.FieldFloat:
		n = parquet.Leaf(parquet.FloatType)
	case config.FieldDouble:
		n = parquet.Leaf(parquet.DoubleType)
	case config.FieldBoolean:
		n = parquet.Leaf(parquet.BooleanType)
	case config.FieldBinary:
		n = parquet.Leaf(parquet.ByteArrayType)
	case config.FieldDate:
		n = parquet.Date()
	case config.FieldTimestamp:
		n = parquet.Timestamp(parquet.Microsecond)
	case config.FieldDecimal:
		n = parquet.Decimal(f.Scale, f.Precision, parquet.Int64Type)
	case config.FieldStruct:
		g := parquet.Group{}
		for _, sf := range f.Fields {
			g[sf.Name] = parquetNode(sf)
		}
		n = g
	case config.FieldArray:
		n = parquet.List(parquetNode(*f.Elem))
	case config.FieldMap:
		n = parquet.Map(parquet.String(), parquetNode(*f.Elem))
	default:
		n = parquet.String()
	}
	if f.Nullable {
		n = parquet.Optional(n)
	}
	return n
}

// rowOf turns a JSON payload into a row of the columns: fields absent or
// null are null when nullable, an error otherwise; fields the schema does
// not name are left out.
func rowOf(fields []config.SchemaField, payload []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("the payload is not JSON: %w", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("at /: the payload must be a JSON object to be a row")
	}
	return structOf(fields, obj, "")
}

func structOf(fields []config.SchemaField, obj map[string]any, at string) (map[string]any, error) {
	row := make(map[string]any, len(fields))
	for _, f := range fields {
		p := at + "/" + f.Name
		v, err := convert(f, obj[f.Name], p)
		if err != nil {
			return nil, err
		}
		if v != nil {
			row[f.Name] = v
		}
	}
	return row, nil
}

// convert turns one JSON value into the Go value parquet-go writes for
// the field's column; nil is null.
func convert(f config.SchemaField, v any, at string) (any, error) {
	if v == nil {
		if f.Nullable {
			return nil, nil
		}
		return nil, fmt.Errorf("at %s: column %q is required (not nullable) and the value is missing or null", at, f.Name)
	}
	bad := func(want string) error {
		return fmt.Errorf("at %s: column %q is %s; got %s", at, f.Name, want, jsonText(v))
	}
	switch f.Type {
	case config.FieldString:
		s, ok := v.(string)
		if !ok {
			return nil, bad("a string")
		}
		return s, nil
	case config.FieldJSON:
		return jsonText(v), nil
	case config.FieldLong, config.FieldInteger, config.FieldShort, config.FieldByte:
		n, ok := v.(json.Number)
		if !ok {
			return nil, bad("an integer")
		}
		i, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil {
			// 1.0 is an integer in JSON Schema.
			fl, ferr := n.Float64()
			if ferr != nil || fl != math.Trunc(fl) || math.Abs(fl) > 1<<53 {
				return nil, bad("an integer")
			}
			i = int64(fl)
		}
		switch f.Type {
		case config.FieldInteger:
			if i < math.MinInt32 || i > math.MaxInt32 {
				return nil, bad("a 32-bit integer")
			}
			return int32(i), nil
		case config.FieldShort:
			if i < math.MinInt16 || i > math.MaxInt16 {
				return nil, bad("a 16-bit integer")
			}
			return int16(i), nil
		case config.FieldByte:
			if i < math.MinInt8 || i > math.MaxInt8 {
				return nil, bad("an 8-bit integer")
			}
			return int8(i), nil
		}
		return i, nil
	case config.FieldFloat, config.FieldDouble:
		n, ok := v.(json.Number)
		if !ok {
			return nil, bad("a number")
		}
		fl, err := n.Float64()
		if err != nil {
			return nil, bad("a number")
		}
		if f.Type == config.FieldFloat {
			return float32(fl), nil
		}
		return fl, nil
	case config.FieldDecimal:
		n, ok := v.(json.Number)
		if !ok {
			return nil, bad("a number")
		}
		r, ok := new(big.Rat).SetString(n.String())
		if !ok {
			return nil, bad("a number")
		}
		scaled := r.Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(f.Scale)), nil)))
		if !scaled.IsInt() {
			return nil, bad(fmt.Sprintf("a decimal with at most %d digits after the point", f.Scale))
		}
		u := scaled.Num()
		limit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(f.Precision)), nil)
		if new(big.Int).Abs(u).Cmp(limit) >= 0 {
			return nil, bad(fmt.Sprintf("a decimal of at most %d digits", f.Precision))
		}
		return u.Int64(), nil
	case config.FieldBoolean:
		b, ok := v.(bool)
		if !ok {
			return nil, bad("a boolean")
		}
		return b, nil
	case config.FieldBinary:
		s, ok := v.(string)
		if !ok {
			return nil, bad("base64 text")
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, bad("base64 text")
		}
		return b, nil
	case config.FieldDate:
		s, ok := v.(string)
		if !ok {
			return nil, bad("a date (YYYY-MM-DD)")
		}
		t, err := time.Parse(time.DateOnly, s)
		if err != nil {
			return nil, bad("a date (YYYY-MM-DD)")
		}
		return int32(t.Unix() / 86400), nil
	case config.FieldTimestamp:
		s, ok := v.(string)
		if !ok {
			return nil, bad("an RFC 3339 timestamp")
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, bad("an RFC 3339 timestamp")
		}
		return t.UnixMicro(), nil
	case config.FieldStruct:
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, bad("an object")
		}
		return structOf(f.Fields, obj, at)
	case config.FieldArray:
		arr, ok := v.([]any)
		if !ok {
			return nil, bad("an array")
		}
		out := make([]any, len(arr))
		for i, e := range arr {
			c, err := convert(*f.Elem, e, at+"/"+strconv.Itoa(i))
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case config.FieldMap:
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, bad("an object")
		}
		out := make(map[string]any, len(obj))
		for k, e := range obj {
			c, err := convert(*f.Elem, e, at+"/"+strings.ReplaceAll(k, "/", "~1"))
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	}
	return jsonText(v), nil
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// writeSchemaParquet converts a staging file into a Parquet file with the
// schema's columns.
func (d *Destination) writeSchemaParquet(src, dst string) error {
	rows, err := d.schemaRows(src, filepath.Join(d.o.Dir, strings.TrimSuffix(filepath.Base(dst), ".parquet.tmp")+".rejected.jsonl"))
	if err != nil {
		return err
	}
	return writeRows(dst, d.o.Fields, rows)
}

// schemaRows reads a staging file's rows. Every staged message was
// converted once already (Send); one that no longer converts (a file
// staged under another schema before a crash) is kept in the rejected
// file, so nothing acknowledged is lost.
func (d *Destination) schemaRows(src, rejectedPath string) ([]map[string]any, error) {
	envs, err := readEnvelopes(src)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", src, err)
	}
	rows := make([]map[string]any, 0, len(envs))
	var rejected bytes.Buffer
	for _, e := range envs {
		row, err := rowOf(d.o.Fields, e.Payload)
		if err != nil {
			rejected.Write(e.Payload)
			rejected.WriteByte('\n')
			continue
		}
		rows = append(rows, row)
	}
	if rejected.Len() > 0 {
		if err := os.WriteFile(rejectedPath, rejected.Bytes(), 0o640); err != nil {
			return nil, fmt.Errorf("writing %s: %w", rejectedPath, err)
		}
	}
	return rows, nil
}

// writeRows writes a Parquet file of rows with the fields' columns,
// fsynced.
func writeRows(dst string, fields []config.SchemaField, rows []map[string]any) error {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("creating %s: %w", dst, err)
	}
	w := parquet.NewGenericWriter[map[string]any](f, parquetSchema(fields))
	_, err = w.Write(rows)
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
