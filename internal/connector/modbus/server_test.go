package modbus

import (
	"sync"
	"testing"

	"github.com/edgeport/edgeport/internal/testserve"
	"github.com/simonvetter/modbus"
)

// testServer is simonvetter/modbus' TCP server, in process, serving
// tables the test sets, with addresses that answer with an exception and
// a gate that holds every request (a device slower than the poll).
type testServer struct {
	srv  *modbus.ModbusServer
	addr string

	mu       sync.Mutex // guards the fields below
	holding  map[uint16]uint16
	input    map[uint16]uint16
	coils    map[uint16]bool
	discrete map[uint16]bool
	refuse   map[uint16]error // address → exception
	requests int
	gate     chan struct{}  // non-nil: each request waits for a value
	units    map[uint8]bool // non-nil: only these unit ids answer
}

// freePort finds a loopback port for the server (simonvetter's server does
// not report the port it bound, so port 0 cannot be used).
func freePort(t *testing.T) string { return testserve.FreeAddr(t) }

func startServer(t *testing.T, addr string) *testServer {
	t.Helper()
	if addr == "" {
		addr = freePort(t)
	}
	s := &testServer{addr: addr, holding: map[uint16]uint16{}, input: map[uint16]uint16{},
		coils: map[uint16]bool{}, discrete: map[uint16]bool{}, refuse: map[uint16]error{}}
	s.start(t)
	return s
}

func (s *testServer) start(t *testing.T) {
	t.Helper()
	srv, err := modbus.NewServer(&modbus.ServerConfiguration{URL: "tcp://" + s.addr, MaxClients: 10}, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	s.srv = srv
	t.Cleanup(func() { _ = srv.Stop() })
}

func (s *testServer) stop() { _ = s.srv.Stop() }

func (s *testServer) set(table map[uint16]uint16, addr int, regs ...uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range regs {
		table[uint16(addr+i)] = r
	}
}

func (s *testServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

func (s *testServer) enter(unit uint8, addr, n uint16) error {
	s.mu.Lock()
	s.requests++
	if s.units != nil && !s.units[unit] {
		s.mu.Unlock()
		return modbus.ErrGWTargetFailedToRespond
	}
	gate := s.gate
	var refused error
	for a := addr; a < addr+n; a++ {
		if err := s.refuse[a]; err != nil {
			refused = err
		}
	}
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return refused
}

func (s *testServer) HandleCoils(req *modbus.CoilsRequest) ([]bool, error) {
	return serveTable(s, s.coils, req.UnitId, req.Addr, req.Quantity, req.IsWrite, req.Args)
}

func (s *testServer) HandleDiscreteInputs(req *modbus.DiscreteInputsRequest) ([]bool, error) {
	return serveTable(s, s.discrete, req.UnitId, req.Addr, req.Quantity, false, nil)
}

func (s *testServer) HandleHoldingRegisters(req *modbus.HoldingRegistersRequest) ([]uint16, error) {
	return serveTable(s, s.holding, req.UnitId, req.Addr, req.Quantity, req.IsWrite, req.Args)
}

func (s *testServer) HandleInputRegisters(req *modbus.InputRegistersRequest) ([]uint16, error) {
	return serveTable(s, s.input, req.UnitId, req.Addr, req.Quantity, false, nil)
}

// serveTable answers a request for n values of table (guarded by s.mu)
// from addr on; a write first stores args there.
func serveTable[T any](s *testServer, table map[uint16]T, unit uint8, addr, n uint16, write bool, args []T) ([]T, error) {
	if err := s.enter(unit, addr, n); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]T, n)
	for i := range out {
		a := addr + uint16(i)
		if write {
			table[a] = args[i]
		}
		out[i] = table[a]
	}
	return out, nil
}

var modbusErrIllegalDataAddress = modbus.ErrIllegalDataAddress
