package modbus

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector"
)

func point(t *testing.T, src, cfg string) config.ModbusPoint {
	t.Helper()
	var j config.JSON
	if cfg != "" {
		if err := j.UnmarshalJSON([]byte(cfg)); err != nil {
			t.Fatal(err)
		}
	}
	var errs config.Errors
	p, ok := config.ParseModbusPoint(&config.DataPoint{Name: "p", DataSource: src, DataPointConfiguration: j}, "p", &errs)
	if !ok {
		t.Fatalf("%s %s: %v", src, cfg, errs)
	}
	return p
}

// TestDecode: every data type in every byte and word order, with scaling.
// The registers are as they travel (big-endian 16-bit words).
func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		cfg  string
		regs []uint16
		want any
	}{
		{`{"dataType":"bool"}`, []uint16{2}, true},
		{`{"dataType":"int16"}`, []uint16{0xfffe}, int16(-2)},
		{`{"dataType":"int16","byteOrder":"LittleEndian"}`, []uint16{0xfeff}, int16(-2)},
		{`{"dataType":"uint16"}`, []uint16{0xfffe}, uint16(65534)},
		{`{"dataType":"int32"}`, []uint16{0xffff, 0xfff0}, int32(-16)},
		{`{"dataType":"int32","wordOrder":"LittleEndian"}`, []uint16{0xfff0, 0xffff}, int32(-16)},
		{`{"dataType":"uint32"}`, []uint16{0x0001, 0x86a0}, uint32(100000)},
		{`{"dataType":"uint32","wordOrder":"LittleEndian"}`, []uint16{0x86a0, 0x0001}, uint32(100000)},
		{`{"dataType":"uint32","byteOrder":"LittleEndian","wordOrder":"LittleEndian"}`, []uint16{0xa086, 0x0100}, uint32(100000)},
		{`{"dataType":"uint32","byteOrder":"LittleEndian"}`, []uint16{0x0100, 0xa086}, uint32(100000)},
		{`{"dataType":"int64"}`, []uint16{0xffff, 0xffff, 0xffff, 0xfffd}, int64(-3)},
		{`{"dataType":"uint64","wordOrder":"LittleEndian"}`, []uint16{4, 3, 2, 1}, uint64(0x0001000200030004)},
		{`{"dataType":"float32"}`, []uint16{0x41c8, 0x0000}, float32(25)},
		{`{"dataType":"float32","wordOrder":"LittleEndian"}`, []uint16{0x0000, 0x41c8}, float32(25)},
		{`{"dataType":"float64"}`, []uint16{0x4039, 0, 0, 0}, float64(25)},
		{`{"dataType":"float64","byteOrder":"LittleEndian","wordOrder":"LittleEndian"}`, []uint16{0, 0, 0, 0x3940}, float64(25)},
		{`{"dataType":"string","count":3}`, []uint16{0x5347, 0x3130, 0x4b00}, "SG10K"},
		{`{"dataType":"string","count":2,"byteOrder":"LittleEndian"}`, []uint16{0x4753, 0x2020}, "SG"},
		{`{"dataType":"uint16","scale":0.1}`, []uint16{1234}, 123.4},
		{`{"dataType":"int16","scale":0.1,"offset":-40}`, []uint16{0xff9c}, -50.0},
		{`{"dataType":"uint32","scale":2,"offset":1}`, []uint16{0, 10}, 21.0},
	} {
		p := point(t, "holding:100", tc.cfg)
		got, err := decode(&p, tc.regs)
		if err != nil {
			t.Fatalf("%s: %v", tc.cfg, err)
		}
		if f, ok := got.(float64); ok && p.Scale != nil {
			got = math.Round(f*1e9) / 1e9
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s %04x: got %#v, want %#v", tc.cfg, tc.regs, got, tc.want)
		}
		// Writing the value back gives the same registers (strings are
		// padded with NULs, which read back the same).
		if p.DataType == config.ModbusString || p.DataType == config.ModbusBool {
			continue
		}
		f, _ := toFloat(got)
		regs, err := encode(&p, f)
		if err != nil {
			t.Fatalf("encode %s %v: %v", tc.cfg, got, err)
		}
		if !reflect.DeepEqual(regs, tc.regs) {
			t.Errorf("encode %s %v: got %04x, want %04x", tc.cfg, got, regs, tc.regs)
		}
	}
}

func TestEncodeRefuses(t *testing.T) {
	for _, tc := range []struct {
		cfg  string
		v    any
		want string
	}{
		{`{"dataType":"int16"}`, 40000.0, "40000 does not fit int16"},
		{`{"dataType":"uint16"}`, -1.0, "-1 does not fit uint16"},
		{`{"dataType":"uint16"}`, 1.5, "1.5 does not fit uint16"},
		{`{"dataType":"uint16"}`, "x", "uint16 takes a number"},
		{`{"dataType":"string","count":1}`, "abc", `"abc" is longer than 2 characters`},
	} {
		p := point(t, "holding:1", tc.cfg)
		if _, err := encode(&p, tc.v); err == nil || err.Error() != tc.want {
			t.Errorf("%s %v: %v, want %s", tc.cfg, tc.v, err, tc.want)
		}
	}
}

// TestPlan: adjacent registers merge into one read up to 125 registers;
// gaps merge only up to maxGap; tables never mix.
func TestPlan(t *testing.T) {
	describe := func(bs []*block) string {
		var out []string
		for _, b := range bs {
			out = append(out, fmt.Sprintf("%s:%d+%d%v", b.table, b.start, b.count, b.points))
		}
		return strings.Join(out, " ")
	}
	pts := []config.ModbusPoint{
		point(t, "holding:10", `{"dataType":"uint32"}`),
		point(t, "holding:12", ``),
		point(t, "holding:15", ``),
		point(t, "input:0", ``),
		point(t, "coil:3", ``),
		point(t, "coil:4", ``),
		point(t, "holding:8", ``),
	}
	if got, want := describe(plan(pts, 1, 125, 0)), "coil:3+2[4 5] holding:8+1[6] holding:10+3[0 1] holding:15+1[2] input:0+1[3]"; got != want {
		t.Errorf("maxGap 0:\n got  %s\n want %s", got, want)
	}
	if got, want := describe(plan(pts, 1, 125, 2)), "coil:3+2[4 5] holding:8+8[6 0 1 2] input:0+1[3]"; got != want {
		t.Errorf("maxGap 2:\n got  %s\n want %s", got, want)
	}
	// A 1,000-register dataset: eight reads of at most 125.
	var big []config.ModbusPoint
	for a := range 1000 {
		big = append(big, point(t, fmt.Sprintf("input:%d", a), ``))
	}
	bs := plan(big, 1, 125, 0)
	if len(bs) != 8 || bs[7].start != 875 || bs[7].count != 125 {
		t.Errorf("1000 registers: %d reads, last %+v", len(bs), bs[len(bs)-1])
	}
	// A float32 never straddles two reads.
	var edge []config.ModbusPoint
	for a := 0; a < 130; a += 2 {
		edge = append(edge, point(t, fmt.Sprintf("holding:%d", a), `{"dataType":"float32"}`))
	}
	for _, b := range plan(edge, 1, 125, 0) {
		if b.count > 125 || b.count%2 != 0 {
			t.Errorf("read %+v", b)
		}
	}
}

// TestChanges drives change detection with a synthetic clock: deltas
// only, deadband, heartbeat every N polls, throttle.
func TestChanges(t *testing.T) {
	pts := []config.ModbusPoint{
		point(t, "holding:1", `{"deadband":{"type":"Absolute","value":5}}`),
		point(t, "holding:2", `{"deadband":{"type":"Percent","value":10}}`),
		point(t, "holding:3", ``),
	}
	t0 := time.Unix(1000, 0)
	poll := func(c *changes, sec int, v ...any) string {
		var ss []*connector.Sample
		for i, x := range v {
			if x == nil {
				ss = append(ss, nil)
				continue
			}
			if st, ok := x.(connector.StatusCode); ok {
				ss = append(ss, &connector.Sample{Name: fmt.Sprint(i), Status: &st})
				continue
			}
			ss = append(ss, &connector.Sample{Name: fmt.Sprint(i), Value: x})
		}
		f := c.observe(t0.Add(time.Duration(sec)*time.Second), ss)
		if f == nil {
			return "-"
		}
		var out []string
		for _, s := range f.Samples {
			if s.Status != nil {
				out = append(out, s.Name+"="+s.Status.Symbol)
			} else {
				out = append(out, fmt.Sprintf("%s=%v", s.Name, s.Value))
			}
		}
		kind := "delta"
		if f.Keyframe {
			kind = "key"
		}
		return kind + " " + strings.Join(out, ",")
	}
	c := newChanges(pts, 4, 0)
	busy := connector.StatusCode{Code: 0x80000006, Symbol: "ServerDeviceBusy"}
	for i, step := range []struct {
		v    []any
		want string
	}{
		{[]any{100.0, 100.0, uint16(1)}, "key 0=100,1=100,2=1"},
		{[]any{104.0, 109.0, uint16(1)}, "-"},                     // within both deadbands
		{[]any{106.0, 111.0, uint16(2)}, "delta 0=106,1=111,2=2"}, // beyond: 6 > 5, 11 > 10%
		{[]any{106.0, 111.0, busy}, "delta 2=ServerDeviceBusy"},
		{[]any{106.0, 111.0, busy}, "key 0=106,1=111,2=ServerDeviceBusy"}, // poll 5: heartbeat
		{[]any{106.0, nil, uint16(2)}, "delta 2=2"},                       // recovered; point 1 not read
	} {
		if got := poll(c, i, step.v...); got != step.want {
			t.Errorf("poll %d: got %q, want %q", i+1, got, step.want)
		}
	}

	// Throttle 10 s with a poll a second: the first change goes out, the
	// next ones wait for the window and leave together with their latest
	// values.
	c = newChanges(pts, 0, 10*time.Second)
	for _, step := range []struct {
		sec  int
		v    []any
		want string
	}{
		{0, []any{1.0, 1.0, uint16(1)}, "key 0=1,1=1,2=1"},
		{1, []any{10.0, 1.0, uint16(1)}, "-"},
		{2, []any{20.0, 1.0, uint16(2)}, "-"},
		{9, []any{20.0, 1.0, uint16(3)}, "-"},
		{10, []any{20.0, 1.0, uint16(3)}, "delta 0=20,2=3"},
		{11, []any{30.0, 1.0, uint16(3)}, "-"},
		{25, []any{30.0, 1.0, uint16(3)}, "delta 0=30"},
	} {
		if got := poll(c, step.sec, step.v...); got != step.want {
			t.Errorf("throttled poll at %ds: got %q, want %q", step.sec, got, step.want)
		}
	}
}
