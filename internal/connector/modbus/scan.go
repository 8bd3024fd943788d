package modbus

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"time"

	"github.com/simonvetter/modbus"

	"github.com/edgeport/edgeport/internal/config"
)

// UnitAnswer is a unit id that answered a scan.
type UnitAnswer struct {
	Unit int
	// Value is holding register 0, or Exception names the device's
	// refusal (the unit exists but has no such register).
	Value     uint16
	Exception string
}

// ScanUnits asks each unit id behind hostport for holding register 0 and
// returns those that answer (a value, or an exception other than the
// gateway's "no such target"). A unit that stays silent for timeout is
// absent. Requests are sent one at a time, as loggers expect.
func ScanUnits(ctx context.Context, hostport string, units []int, timeout time.Duration) ([]UnitAnswer, error) {
	c, err := dial(hostport, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var out []UnitAnswer
	for _, u := range units {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if err := c.SetUnitId(uint8(u)); err != nil {
			return out, err
		}
		v, err := c.ReadRegister(0, modbus.HOLDING_REGISTER)
		st, isExc := exception(err)
		switch {
		case err == nil:
			out = append(out, UnitAnswer{Unit: u, Value: v})
		case isExc && st.Code&0xff != 10 && st.Code&0xff != 11:
			out = append(out, UnitAnswer{Unit: u, Exception: st.Symbol})
		case !isExc:
			// Silence or a broken connection: start the next unit on a
			// fresh connection, so a late answer cannot be taken for its.
			c.Close()
			if err := c.Open(); err != nil {
				return out, fmt.Errorf("reconnecting to %s: %w", hostport, err)
			}
		}
	}
	return out, nil
}

// ProbeResult is one address of a probed range.
type ProbeResult struct {
	Address   int
	Register  uint16 // holding and input registers
	Bit       bool   // coils and discrete inputs
	Exception string // set when the device refused the address
}

// Probe reads a range of a table of one unit, in reads as large as the
// protocol allows, falling back to single addresses where the device
// refuses a read, so a person sees which addresses exist.
func Probe(ctx context.Context, hostport string, unit int, table string, start, count int, timeout time.Duration) ([]ProbeResult, error) {
	c, err := dial(hostport, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.SetUnitId(uint8(unit)); err != nil {
		return nil, err
	}
	chunk := config.ModbusMaxRegistersPerRead
	if table == config.ModbusCoil || table == config.ModbusDiscreteInput {
		chunk = maxBitsPerRead
	}
	var out []ProbeResult
	read := func(addr, n int) ([]ProbeResult, error) {
		var regs []uint16
		var bits []bool
		var err error
		switch table {
		case config.ModbusCoil:
			bits, err = c.ReadCoils(uint16(addr), uint16(n))
		case config.ModbusDiscreteInput:
			bits, err = c.ReadDiscreteInputs(uint16(addr), uint16(n))
		case config.ModbusHolding:
			regs, err = c.ReadRegisters(uint16(addr), uint16(n), modbus.HOLDING_REGISTER)
		case config.ModbusInput:
			regs, err = c.ReadRegisters(uint16(addr), uint16(n), modbus.INPUT_REGISTER)
		default:
			return nil, fmt.Errorf("table must be coil, discreteInput, holding or input (got %q)", table)
		}
		if err != nil {
			return nil, err
		}
		res := make([]ProbeResult, n)
		for i := range res {
			res[i].Address = addr + i
			if bits != nil {
				res[i].Bit = bits[i]
			} else {
				res[i].Register = regs[i]
			}
		}
		return res, nil
	}
	for addr := start; addr < start+count; addr += chunk {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		n := min(chunk, start+count-addr)
		res, err := read(addr, n)
		if err == nil {
			out = append(out, res...)
			continue
		}
		if _, ok := exception(err); !ok {
			return out, fmt.Errorf("reading %s %d-%d: %w", table, addr, addr+n-1, err)
		}
		for a := addr; a < addr+n; a++ {
			res, err := read(a, 1)
			if st, ok := exception(err); ok {
				out = append(out, ProbeResult{Address: a, Exception: st.Symbol})
				continue
			}
			if err != nil {
				return out, fmt.Errorf("reading %s %d: %w", table, a, err)
			}
			out = append(out, res...)
		}
	}
	return out, nil
}

func dial(hostport string, timeout time.Duration) (*modbus.ModbusClient, error) {
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(hostport, strconv.Itoa(config.DefaultModbusPort))
	}
	c, err := modbus.NewClient(&modbus.ClientConfiguration{URL: "tcp://" + hostport, Timeout: timeout, Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		return nil, err
	}
	if err := c.Open(); err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", hostport, err)
	}
	return c, nil
}
