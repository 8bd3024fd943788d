package modbus

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/edgeport/edgeport/internal/config"
)

// words returns a value's registers in the device's byte order undone:
// each register as the two bytes the data type expects, most significant
// word first.
func words(p *config.ModbusPoint, regs []uint16) []byte {
	b := make([]byte, 2*len(regs))
	for i, r := range regs {
		if p.ByteOrder == config.LittleEndian {
			r = r<<8 | r>>8
		}
		j := i
		if p.WordOrder == config.LittleEndian && p.DataType != config.ModbusString {
			j = len(regs) - 1 - i
		}
		binary.BigEndian.PutUint16(b[2*j:], r)
	}
	return b
}

// decode turns a point's raw registers (as the protocol carries them, big
// endian) into its value, scaled when the point has a scale or offset.
func decode(p *config.ModbusPoint, regs []uint16) (any, error) {
	if len(regs) != p.Count {
		return nil, fmt.Errorf("%d registers for a %d-register %s", len(regs), p.Count, p.DataType)
	}
	b := words(p, regs)
	var v any
	switch p.DataType {
	case config.ModbusBool:
		return regs[0] != 0, nil
	case config.ModbusInt16:
		v = int16(binary.BigEndian.Uint16(b))
	case config.ModbusUint16:
		v = binary.BigEndian.Uint16(b)
	case config.ModbusInt32:
		v = int32(binary.BigEndian.Uint32(b))
	case config.ModbusUint32:
		v = binary.BigEndian.Uint32(b)
	case config.ModbusInt64:
		v = int64(binary.BigEndian.Uint64(b))
	case config.ModbusUint64:
		v = binary.BigEndian.Uint64(b)
	case config.ModbusFloat32:
		v = math.Float32frombits(binary.BigEndian.Uint32(b))
	case config.ModbusFloat64:
		v = math.Float64frombits(binary.BigEndian.Uint64(b))
	case config.ModbusString:
		return strings.TrimRight(string(b), "\x00 "), nil
	default:
		return nil, fmt.Errorf("unknown data type %q", p.DataType)
	}
	if p.Scale == nil && p.Offset == nil {
		return v, nil
	}
	f, _ := toFloat(v)
	scale, offset := 1.0, 0.0
	if p.Scale != nil {
		scale = *p.Scale
	}
	if p.Offset != nil {
		offset = *p.Offset
	}
	return f*scale + offset, nil
}

// toFloat converts a numeric value, for deadbands and scaling.
func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case int16:
		return float64(x), true
	case uint16:
		return float64(x), true
	case int32:
		return float64(x), true
	case uint32:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float32:
		return float64(x), true
	case float64:
		return x, true
	case int:
		return float64(x), true
	}
	return 0, false
}

// encode turns a value to write (as decoded from JSON: float64, bool or
// string) into a point's registers, undoing scale and offset. It refuses
// values the data type cannot hold.
func encode(p *config.ModbusPoint, v any) ([]uint16, error) {
	var b []byte
	switch p.DataType {
	case config.ModbusBool:
		x, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("%s takes true or false", p.DataType)
		}
		if x {
			return []uint16{1}, nil
		}
		return []uint16{0}, nil
	case config.ModbusString:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("string takes a string")
		}
		if len(s) > 2*p.Count {
			return nil, fmt.Errorf("%q is longer than %d characters", s, 2*p.Count)
		}
		b = make([]byte, 2*p.Count)
		copy(b, s)
	default:
		f, ok := v.(float64)
		if !ok {
			return nil, fmt.Errorf("%s takes a number", p.DataType)
		}
		if p.Offset != nil {
			f -= *p.Offset
		}
		if p.Scale != nil {
			f /= *p.Scale
		}
		var err error
		if b, err = rawBytes(p.DataType, f); err != nil {
			return nil, err
		}
	}
	regs := make([]uint16, len(b)/2)
	for i := range regs {
		j := i
		if p.WordOrder == config.LittleEndian && p.DataType != config.ModbusString {
			j = len(regs) - 1 - i
		}
		r := binary.BigEndian.Uint16(b[2*i:])
		if p.ByteOrder == config.LittleEndian {
			r = r<<8 | r>>8
		}
		regs[j] = r
	}
	return regs, nil
}

func rawBytes(dataType string, f float64) ([]byte, error) {
	integer := func(min, max float64) error {
		if f != math.Trunc(f) || f < min || f > max {
			return fmt.Errorf("%v does not fit %s", f, dataType)
		}
		return nil
	}
	b := make([]byte, 8)
	switch dataType {
	case config.ModbusInt16:
		if err := integer(math.MinInt16, math.MaxInt16); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint16(b, uint16(int16(f)))
		return b[:2], nil
	case config.ModbusUint16:
		if err := integer(0, math.MaxUint16); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint16(b, uint16(f))
		return b[:2], nil
	case config.ModbusInt32:
		if err := integer(math.MinInt32, math.MaxInt32); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint32(b, uint32(int32(f)))
		return b[:4], nil
	case config.ModbusUint32:
		if err := integer(0, math.MaxUint32); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint32(b, uint32(f))
		return b[:4], nil
	case config.ModbusInt64:
		if err := integer(math.MinInt64, math.MaxInt64); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint64(b, uint64(int64(f)))
		return b, nil
	case config.ModbusUint64:
		if err := integer(0, math.MaxUint64); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint64(b, uint64(f))
		return b, nil
	case config.ModbusFloat32:
		if math.Abs(f) > math.MaxFloat32 {
			return nil, fmt.Errorf("%v does not fit float32", f)
		}
		binary.BigEndian.PutUint32(b, math.Float32bits(float32(f)))
		return b[:4], nil
	case config.ModbusFloat64:
		binary.BigEndian.PutUint64(b, math.Float64bits(f))
		return b, nil
	}
	return nil, fmt.Errorf("unknown data type %q", dataType)
}
