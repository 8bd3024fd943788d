package modbus

import (
	"context"
	"errors"
	"math"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector"
)

// valueSchema is the JSON Schema of a point's Value: its data type's
// range, or any number once scaled (scale and offset make a float, which
// may overflow to an infinity).
func valueSchema(p *config.ModbusPoint) map[string]any {
	if p.Scale != nil || p.Offset != nil {
		return connector.NumberValue()
	}
	switch p.DataType {
	case config.ModbusBool:
		return connector.BooleanValue()
	case config.ModbusInt16:
		return connector.IntegerValue(math.MinInt16, math.MaxInt16)
	case config.ModbusUint16:
		return connector.IntegerValue(0, math.MaxUint16)
	case config.ModbusInt32:
		return connector.IntegerValue(math.MinInt32, math.MaxInt32)
	case config.ModbusUint32:
		return connector.IntegerValue(0, math.MaxUint32)
	case config.ModbusInt64:
		return connector.IntegerValue[int64](math.MinInt64, math.MaxInt64)
	case config.ModbusUint64:
		return connector.IntegerValue[uint64](0, math.MaxUint64)
	case config.ModbusFloat32, config.ModbusFloat64:
		return connector.NumberValue()
	case config.ModbusString:
		return connector.StringValue()
	}
	return connector.AnyValue()
}

// datasetSchema is the JSON Schema of a dataset's messages, from its
// points' data types.
func datasetSchema(d *dataset) string {
	points := make([]connector.PointSchema, len(d.points))
	for i := range d.points {
		points[i] = connector.PointSchema{Name: d.ds.DataPoints[i].Name, Value: valueSchema(&d.points[i])}
	}
	return connector.DatasetSchema(points)
}

// registerSchema registers the dataset's message schema before its first
// poll, so that every message carries the reference. A registry that
// cannot be reached costs the reference, not the data.
func registerSchema(ctx context.Context, ep *connector.Endpoint, d *dataset) {
	ref, err := d.ds.RegisterSchema(ctx, datasetSchema(d))
	switch {
	case errors.Is(err, connector.ErrNoSchemaRegistry):
	case err == nil:
		ep.Log.Debug("message schema registered", "asset", d.ds.Asset.Name, "dataset", d.ds.Name, "schema", ref)
	case ctx.Err() == nil:
		ep.Log.Warn("message schema not registered; messages go without it", "asset", d.ds.Asset.Name, "dataset", d.ds.Name, "err", err)
	}
}
