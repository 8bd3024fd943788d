package modbus

import (
	"slices"

	"github.com/edgeport/edgeport/internal/config"
)

// maxBitsPerRead is the protocol's limit for one read of coils or discrete
// inputs.
const maxBitsPerRead = 2000

// block is one read request: a run of addresses of one table and unit
// covering one or more points.
type block struct {
	unit   uint8
	table  string
	start  int
	count  int
	points []int // indexes into the dataset's points, by address
	// split: the merged read failed with an exception, so its points are
	// read one by one from now on (a gap held an address the device
	// refuses).
	split bool
}

// plan merges a dataset's points into reads: points of one table are
// sorted by address, and a point joins the current read when the gap
// before it is at most maxGap and the read stays within maxRegs
// registers (2000 bits for coils and discrete inputs).
func plan(points []config.ModbusPoint, unit uint8, maxRegs, maxGap int) []*block {
	order := make([]int, len(points))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		pa, pb := &points[a], &points[b]
		if pa.Table != pb.Table {
			return tableRank(pa.Table) - tableRank(pb.Table)
		}
		return pa.Address - pb.Address
	})
	var out []*block
	var cur *block
	for _, i := range order {
		p := &points[i]
		limit := maxRegs
		if p.Table == config.ModbusCoil || p.Table == config.ModbusDiscreteInput {
			limit = maxBitsPerRead
		}
		end := p.Address + p.Count
		if cur != nil && cur.table == p.Table && p.Address <= cur.start+cur.count+maxGap && max(end, cur.start+cur.count)-cur.start <= limit {
			cur.count = max(end, cur.start+cur.count) - cur.start
			cur.points = append(cur.points, i)
			continue
		}
		cur = &block{unit: unit, table: p.Table, start: p.Address, count: p.Count, points: []int{i}}
		out = append(out, cur)
	}
	return out
}

func tableRank(t string) int {
	switch t {
	case config.ModbusCoil:
		return 0
	case config.ModbusDiscreteInput:
		return 1
	case config.ModbusHolding:
		return 2
	}
	return 3
}
