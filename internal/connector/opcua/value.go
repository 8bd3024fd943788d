package opcua

import (
	"encoding/base64"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"
)

// StatusName returns a status code's symbolic name ("BadNodeIdUnknown"), or
// its hex form when gopcua does not know it.
func StatusName(code uint32) string {
	if d, ok := ua.StatusCodes[ua.StatusCode(code)]; ok {
		// gopcua spells "StatusBadNodeIDUnknown"; the specification's
		// symbol, which operators search for, is "BadNodeIdUnknown".
		return strings.ReplaceAll(strings.TrimPrefix(d.Name, "Status"), "ID", "Id")
	}
	return fmt.Sprintf("0x%08X", code)
}

// IsGood reports whether a status code's severity is Good (top two bits 00).
func IsGood(code uint32) bool { return code&0xC0000000 == 0 }

// jsonValue turns an OPC UA variant into a value encoding/json writes the way
// Azure IoT Operations' connector does: numbers, booleans and strings as
// such, times as RFC 3339, byte strings as base64, localized text as its
// text, node ids and GUIDs as strings, arrays as arrays. NaN and infinities,
// which JSON cannot carry, become the strings "NaN", "Infinity", "-Infinity".
func jsonValue(v *ua.Variant) any {
	if v == nil {
		return nil
	}
	return jsonAny(v.Value())
}

func jsonAny(x any) any {
	switch t := x.(type) {
	case nil:
		return nil
	case float32:
		return jsonFloat(float64(t))
	case float64:
		if !math.IsNaN(t) && !math.IsInf(t, 0) {
			return x // the variant's own interface: no new allocation per sample
		}
		return jsonFloat(t)
	case bool, string, int8, uint8, int16, uint16, int32, uint32, int64, uint64:
		return t
	case time.Time:
		return t.UTC().Format(time.RFC3339Nano)
	case []byte:
		return base64.StdEncoding.EncodeToString(t)
	case *ua.LocalizedText:
		if t == nil {
			return nil
		}
		return t.Text
	case *ua.QualifiedName:
		if t == nil {
			return nil
		}
		return t.Name
	case *ua.NodeID:
		if t == nil {
			return nil
		}
		return t.String()
	case *ua.ExpandedNodeID:
		if t == nil {
			return nil
		}
		return t.String()
	case *ua.GUID:
		if t == nil {
			return nil
		}
		return t.String()
	case ua.StatusCode:
		return uint32(t)
	case *ua.DataValue:
		if t == nil {
			return nil
		}
		return jsonValue(t.Value)
	case *ua.Variant:
		return jsonValue(t)
	case *ua.ExtensionObject:
		if t == nil {
			return nil
		}
		// Decoded structures are plain Go structs that encoding/json can
		// write; undecodable ones arrive as nil.
		return t.Value
	case []float32:
		return mapSlice(t, func(f float32) any { return jsonFloat(float64(f)) })
	case []float64:
		return mapSlice(t, jsonFloat)
	case []time.Time:
		return mapSlice(t, func(tt time.Time) any { return jsonAny(tt) })
	case []*ua.LocalizedText:
		return mapSlice(t, func(l *ua.LocalizedText) any { return jsonAny(l) })
	case []*ua.Variant:
		return mapSlice(t, func(v *ua.Variant) any { return jsonValue(v) })
	case []*ua.NodeID:
		return mapSlice(t, func(n *ua.NodeID) any { return jsonAny(n) })
	case []*ua.ExtensionObject:
		return mapSlice(t, func(e *ua.ExtensionObject) any { return jsonAny(e) })
	default:
		// Arrays of the simple types above marshal as they are.
		return t
	}
}

func jsonFloat(f float64) any {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return f
}

func mapSlice[T any](in []T, f func(T) any) []any {
	out := make([]any, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}
