package modbus

import (
	"fmt"
	"testing"
	"time"
)

// TestScan: the units that answer are listed (with an exception when they
// have no holding register 0), silent ones are not; a probe shows values
// and the addresses the device refuses.
func TestScan(t *testing.T) {
	srv := startServer(t, "")
	srv.set(srv.holding, 0, 42, 7, 8, 9)
	srv.mu.Lock()
	srv.units = map[uint8]bool{1: true, 3: true}
	srv.refuse[2] = modbusErrIllegalDataAddress
	srv.mu.Unlock()
	got, err := ScanUnits(t.Context(), srv.addr, []int{1, 2, 3, 4}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[{1 42 } {3 42 }]" {
		t.Fatalf("units %v", got)
	}
	res, err := Probe(t.Context(), srv.addr, 1, "holding", 0, 4, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res) != "[{0 42 false } {1 7 false } {2 0 false IllegalDataAddress} {3 9 false }]" {
		t.Fatalf("probe %v", res)
	}
}
