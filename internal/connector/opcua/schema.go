package opcua

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/edgeport/edgeport/internal/connector"
)

// schemaPoint is a data point whose type goes into its dataset's schema.
type schemaPoint struct{ name, nodeID string }

// schemaDataset is a dataset whose message schema is registered at each
// connection: its points in order.
type schemaDataset struct {
	ds     *connector.Dataset
	points []schemaPoint
}

// registerSchemas reads the DataType and ValueRank attributes of every
// dataset's points on the new session, one Read for all, and registers
// each dataset's message schema, before the subscriptions deliver
// anything. A point whose attributes cannot be read is described as any
// value; a Read that fails as a whole registers nothing (the messages go
// without a reference).
func registerSchemas(ctx context.Context, c *opcua.Client, ep *connector.Endpoint, sets []schemaDataset) {
	if len(sets) == 0 {
		return
	}
	ns := c.Namespaces()
	var nodes []*ua.ReadValueID
	for _, s := range sets {
		for _, p := range s.points {
			nid, err := parseNodeID(p.nodeID, ns)
			if err != nil {
				nid = ua.NewNumericNodeID(0, 0) // answered BadNodeIdUnknown: any value
			}
			nodes = append(nodes,
				&ua.ReadValueID{NodeID: nid, AttributeID: ua.AttributeIDDataType},
				&ua.ReadValueID{NodeID: nid, AttributeID: ua.AttributeIDValueRank})
		}
	}
	res, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: nodes, TimestampsToReturn: ua.TimestampsToReturnNeither})
	if err == nil && len(res.Results) != len(nodes) {
		err = fmt.Errorf("%d results for %d attributes", len(res.Results), len(nodes))
	}
	if err != nil {
		ep.Log.Warn("reading the data points' types failed; their schemas are not registered", "err", err)
		return
	}
	i := 0
	for _, s := range sets {
		points := make([]connector.PointSchema, len(s.points))
		for j, p := range s.points {
			dt, rank := res.Results[i], res.Results[i+1]
			i += 2
			points[j] = connector.PointSchema{Name: p.name, Value: valueSchemaOf(dt, rank)}
		}
		ref, err := s.ds.RegisterSchema(ctx, connector.DatasetSchema(points))
		switch {
		case errors.Is(err, connector.ErrNoSchemaRegistry):
		case err == nil:
			ep.Log.Debug("message schema registered", "asset", s.ds.Asset.Name, "dataset", s.ds.Name, "schema", ref)
		case ctx.Err() == nil:
			ep.Log.Warn("message schema not registered; messages go without it", "asset", s.ds.Asset.Name, "dataset", s.ds.Name, "err", err)
		}
	}
}

// valueSchemaOf describes a variable's Value as the connector encodes it
// (jsonValue), from its DataType and ValueRank attributes as read.
func valueSchemaOf(dt, rank *ua.DataValue) map[string]any {
	if dt == nil || dt.Status != ua.StatusOK || dt.Value == nil {
		return connector.AnyValue()
	}
	nid, ok := dt.Value.Value().(*ua.NodeID)
	if !ok || nid == nil {
		return connector.AnyValue()
	}
	r := int32(-2) // Any: unknown
	if rank != nil && rank.Status == ua.StatusOK && rank.Value != nil {
		if v, ok := rank.Value.Value().(int32); ok {
			r = v
		}
	}
	return withRank(scalarSchema(nid), nid, r)
}

// scalarSchema describes one value of an OPC UA data type. Types outside
// namespace 0 (a server's structures and enumerations) are any value.
func scalarSchema(dt *ua.NodeID) map[string]any {
	if dt.Namespace() != 0 || dt.Type() == ua.NodeIDTypeString || dt.Type() == ua.NodeIDTypeGUID || dt.Type() == ua.NodeIDTypeByteString {
		return connector.AnyValue()
	}
	switch v := dt.IntID(); ua.TypeID(v) {
	case ua.TypeIDBoolean:
		return connector.BooleanValue()
	case ua.TypeIDSByte:
		return connector.IntegerValue(math.MinInt8, math.MaxInt8)
	case ua.TypeIDByte:
		return connector.IntegerValue(0, math.MaxUint8)
	case ua.TypeIDInt16:
		return connector.IntegerValue(math.MinInt16, math.MaxInt16)
	case ua.TypeIDUint16:
		return connector.IntegerValue(0, math.MaxUint16)
	case ua.TypeIDInt32:
		return connector.IntegerValue(math.MinInt32, math.MaxInt32)
	case ua.TypeIDUint32, ua.TypeIDStatusCode:
		return connector.IntegerValue(0, math.MaxUint32)
	case ua.TypeIDInt64:
		return connector.IntegerValue[int64](math.MinInt64, math.MaxInt64)
	case ua.TypeIDUint64:
		return connector.IntegerValue[uint64](0, math.MaxUint64)
	case ua.TypeIDFloat, ua.TypeIDDouble:
		return connector.NumberValue()
	case ua.TypeIDString, ua.TypeIDXMLElement, ua.TypeIDGUID, ua.TypeIDNodeID, ua.TypeIDExpandedNodeID,
		ua.TypeIDQualifiedName, ua.TypeIDLocalizedText:
		return connector.StringValue()
	case ua.TypeIDDateTime:
		return connector.DateTimeValue()
	case ua.TypeIDByteString:
		return connector.BytesValue()
	default:
		switch v {
		case id.Duration: // a Double
			return connector.NumberValue()
		case id.UtcTime: // a DateTime
			return connector.DateTimeValue()
		case id.LocaleID: // a String
			return connector.StringValue()
		case id.Enumeration: // an Int32
			return connector.IntegerValue(math.MinInt32, math.MaxInt32)
		case id.Number: // any numeric type
			return connector.NumberValue()
		case id.Integer:
			return map[string]any{"type": "integer"}
		case id.UInteger:
			return map[string]any{"type": "integer", "minimum": 0}
		}
	}
	return connector.AnyValue()
}

// withRank applies a ValueRank: -1 scalar, 1 a one-dimensional array, -3
// either, others (-2 any, 0 one or more dimensions, n>1 dimensions) an
// array or any value. An array of Byte arrives as one byte string.
func withRank(scalar map[string]any, dt *ua.NodeID, rank int32) map[string]any {
	array := connector.ArrayValue(scalar)
	if dt.Namespace() == 0 && ua.TypeID(dt.IntID()) == ua.TypeIDByte {
		array = map[string]any{"anyOf": []any{connector.BytesValue(), array}}
	}
	switch {
	case rank == -1:
		return scalar
	case rank == 1:
		return array
	case rank == -3:
		return map[string]any{"anyOf": []any{scalar, array}}
	case rank == 0 || rank > 1:
		return connector.ArrayValue(nil)
	}
	return connector.AnyValue()
}
