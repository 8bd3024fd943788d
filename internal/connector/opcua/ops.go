package opcua

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
)

// Node is one entry of a browse.
type Node struct {
	NodeID      string `json:"nodeId"`
	BrowseName  string `json:"browseName"`
	DisplayName string `json:"displayName"`
	NodeClass   string `json:"nodeClass"`
	// DataType is set for variables, e.g. "Double".
	DataType string `json:"dataType,omitempty"`
}

// ErrBadValue says a value cannot be converted to what the server expects.
var ErrBadValue = errors.New("bad value")

// Browse returns the nodes nodeID organises (hierarchical references,
// forward). An empty nodeID browses the Objects folder.
func (s *Session) Browse(ctx context.Context, nodeID string) ([]Node, error) {
	c, err := s.current()
	if err != nil {
		return nil, err
	}
	return BrowseClient(ctx, c, nodeID)
}

// BrowseClient is Browse on a connected client (used by one-off CLI
// sessions as well).
func BrowseClient(ctx context.Context, c *opcua.Client, nodeID string) ([]Node, error) {
	if nodeID == "" {
		nodeID = "i=85" // Objects
	}
	nid, err := parseNodeID(nodeID, c.Namespaces())
	if err != nil {
		return nil, fmt.Errorf("node id %q: %w", nodeID, err)
	}
	refs, err := c.Node(nid).References(ctx, id.HierarchicalReferences, ua.BrowseDirectionForward, ua.NodeClassAll, true)
	if err != nil {
		return nil, fmt.Errorf("browsing %s: %w", nodeID, err)
	}
	out := make([]Node, 0, len(refs))
	var vars []*ua.ReadValueID
	var varIdx []int
	for _, r := range refs {
		n := Node{NodeID: r.NodeID.NodeID.String(), NodeClass: strings.TrimPrefix(r.NodeClass.String(), "NodeClass")}
		if r.BrowseName != nil {
			n.BrowseName = r.BrowseName.Name
		}
		if r.DisplayName != nil {
			n.DisplayName = r.DisplayName.Text
		}
		if r.NodeClass == ua.NodeClassVariable {
			vars = append(vars, &ua.ReadValueID{NodeID: r.NodeID.NodeID, AttributeID: ua.AttributeIDDataType})
			varIdx = append(varIdx, len(out))
		}
		out = append(out, n)
	}
	if len(vars) > 0 {
		res, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: vars})
		if err == nil && len(res.Results) == len(vars) {
			for i, r := range res.Results {
				if r.Status == ua.StatusOK && r.Value != nil {
					if dt, ok := r.Value.Value().(*ua.NodeID); ok {
						out[varIdx[i]].DataType = dataTypeName(dt)
					}
				}
			}
		}
	}
	return out, nil
}

func dataTypeName(dt *ua.NodeID) string {
	if dt.Namespace() == 0 && dt.Type() != ua.NodeIDTypeString {
		if t := ua.TypeID(dt.IntID()); t > 0 && t <= ua.TypeIDDiagnosticInfo {
			return strings.TrimPrefix(t.String(), "TypeID")
		}
	}
	return dt.String()
}

// Write writes a JSON value to a variable, converted to the variable's
// current data type (JSON has only one number type; OPC UA servers refuse
// a Double written to an Int32).
func (s *Session) Write(ctx context.Context, nodeID string, value any) error {
	c, err := s.current()
	if err != nil {
		return err
	}
	nid, err := parseNodeID(nodeID, c.Namespaces())
	if err != nil {
		return fmt.Errorf("node id %q: %w", nodeID, err)
	}
	res, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: nid, AttributeID: ua.AttributeIDDataType}}})
	if err != nil {
		return fmt.Errorf("reading the data type of %s: %w", nodeID, err)
	}
	if st := res.Results[0].Status; st != ua.StatusOK {
		return fmt.Errorf("reading the data type of %s: %s", nodeID, StatusName(uint32(st)))
	}
	dt, _ := res.Results[0].Value.Value().(*ua.NodeID)
	v, err := toVariant(value, dt)
	if err != nil {
		return err
	}
	wr, err := c.Write(ctx, &ua.WriteRequest{NodesToWrite: []*ua.WriteValue{{
		NodeID: nid, AttributeID: ua.AttributeIDValue,
		Value: &ua.DataValue{EncodingMask: ua.DataValueValue, Value: v},
	}}})
	if err != nil {
		return fmt.Errorf("writing %s: %w", nodeID, err)
	}
	if st := wr.Results[0]; st != ua.StatusOK {
		return fmt.Errorf("writing %s: %s", nodeID, StatusName(uint32(st)))
	}
	return nil
}

// Call calls a method on an object with JSON arguments, each converted to
// the type the method's InputArguments property declares, and returns the
// output arguments as JSON-ready values.
func (s *Session) Call(ctx context.Context, objectID, methodID string, args []any) ([]any, error) {
	c, err := s.current()
	if err != nil {
		return nil, err
	}
	ns := c.Namespaces()
	obj, err := parseNodeID(objectID, ns)
	if err != nil {
		return nil, fmt.Errorf("object id %q: %w", objectID, err)
	}
	meth, err := parseNodeID(methodID, ns)
	if err != nil {
		return nil, fmt.Errorf("method id %q: %w", methodID, err)
	}
	decl, err := inputArguments(ctx, c, meth)
	if err != nil {
		return nil, err
	}
	if len(args) != len(decl) {
		return nil, fmt.Errorf("%w: method %s takes %d arguments, got %d", ErrBadValue, methodID, len(decl), len(args))
	}
	in := make([]*ua.Variant, len(args))
	for i, a := range args {
		v, err := toVariant(a, decl[i].DataType)
		if err != nil {
			return nil, fmt.Errorf("argument %d (%s): %w", i, decl[i].Name, err)
		}
		in[i] = v
	}
	res, err := c.Call(ctx, &ua.CallMethodRequest{ObjectID: obj, MethodID: meth, InputArguments: in})
	if err != nil {
		return nil, fmt.Errorf("calling %s: %w", methodID, err)
	}
	if res.StatusCode != ua.StatusOK {
		return nil, fmt.Errorf("calling %s: %s", methodID, StatusName(uint32(res.StatusCode)))
	}
	out := make([]any, len(res.OutputArguments))
	for i, v := range res.OutputArguments {
		out[i] = jsonValue(v)
	}
	return out, nil
}

func inputArguments(ctx context.Context, c *opcua.Client, meth *ua.NodeID) ([]*ua.Argument, error) {
	refs, err := c.Node(meth).References(ctx, id.HasProperty, ua.BrowseDirectionForward, ua.NodeClassVariable, false)
	if err != nil {
		return nil, fmt.Errorf("browsing method %s: %w", meth, err)
	}
	for _, r := range refs {
		if r.BrowseName == nil || r.BrowseName.Name != "InputArguments" {
			continue
		}
		v, err := c.Node(r.NodeID.NodeID).Value(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading InputArguments of %s: %w", meth, err)
		}
		eos, _ := v.Value().([]*ua.ExtensionObject)
		out := make([]*ua.Argument, 0, len(eos))
		for _, eo := range eos {
			a, ok := eo.Value.(*ua.Argument)
			if !ok {
				return nil, fmt.Errorf("InputArguments of %s: unexpected %T", meth, eo.Value)
			}
			out = append(out, a)
		}
		return out, nil
	}
	return nil, nil // no InputArguments property: no arguments
}

// toVariant converts a JSON value (from encoding/json: float64, string,
// bool, nil, []any, map) to a variant of the built-in data type dt. Values
// that do not fit (out of range, fractional for an integer) are refused.
func toVariant(v any, dt *ua.NodeID) (*ua.Variant, error) {
	if n, ok := v.(json.Number); ok {
		f, err := n.Float64()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadValue, err)
		}
		v = f
	}
	t := ua.TypeIDNull
	if dt != nil && dt.Namespace() == 0 && dt.Type() != ua.NodeIDTypeString {
		t = ua.TypeID(dt.IntID())
	}
	num := func(min, max float64, integer bool) (float64, error) {
		f, ok := v.(float64)
		if !ok {
			return 0, fmt.Errorf("%w: want a number for %s, got %T", ErrBadValue, typeName(t), v)
		}
		if f < min || f > max || (integer && f != math.Trunc(f)) {
			return 0, fmt.Errorf("%w: %v does not fit %s", ErrBadValue, f, typeName(t))
		}
		return f, nil
	}
	var out any
	switch t {
	case ua.TypeIDBoolean:
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("%w: want true or false for Boolean, got %T", ErrBadValue, v)
		}
		out = b
	case ua.TypeIDSByte:
		f, err := num(math.MinInt8, math.MaxInt8, true)
		if err != nil {
			return nil, err
		}
		out = int8(f)
	case ua.TypeIDByte:
		f, err := num(0, math.MaxUint8, true)
		if err != nil {
			return nil, err
		}
		out = uint8(f)
	case ua.TypeIDInt16:
		f, err := num(math.MinInt16, math.MaxInt16, true)
		if err != nil {
			return nil, err
		}
		out = int16(f)
	case ua.TypeIDUint16:
		f, err := num(0, math.MaxUint16, true)
		if err != nil {
			return nil, err
		}
		out = uint16(f)
	case ua.TypeIDInt32:
		f, err := num(math.MinInt32, math.MaxInt32, true)
		if err != nil {
			return nil, err
		}
		out = int32(f)
	case ua.TypeIDUint32:
		f, err := num(0, math.MaxUint32, true)
		if err != nil {
			return nil, err
		}
		out = uint32(f)
	case ua.TypeIDInt64:
		f, err := num(-(1 << 53), 1<<53, true)
		if err != nil {
			return nil, err
		}
		out = int64(f)
	case ua.TypeIDUint64:
		f, err := num(0, 1<<53, true)
		if err != nil {
			return nil, err
		}
		out = uint64(f)
	case ua.TypeIDFloat:
		f, err := num(-math.MaxFloat32, math.MaxFloat32, false)
		if err != nil {
			return nil, err
		}
		out = float32(f)
	case ua.TypeIDDouble:
		f, err := num(-math.MaxFloat64, math.MaxFloat64, false)
		if err != nil {
			return nil, err
		}
		out = f
	case ua.TypeIDString:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%w: want a string, got %T", ErrBadValue, v)
		}
		out = s
	case ua.TypeIDDateTime:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%w: want an RFC 3339 time, got %T", ErrBadValue, v)
		}
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadValue, err)
		}
		out = tm
	case ua.TypeIDNull:
		// Unknown or structured type: pass the plain JSON kinds through.
		switch x := v.(type) {
		case float64, string, bool:
			out = x
		default:
			return nil, fmt.Errorf("%w: cannot write %T to a node of data type %v", ErrBadValue, v, dt)
		}
	default:
		return nil, fmt.Errorf("%w: writing %s values is not supported", ErrBadValue, typeName(t))
	}
	variant, err := ua.NewVariant(out)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadValue, err)
	}
	return variant, nil
}

func typeName(t ua.TypeID) string { return strings.TrimPrefix(t.String(), "TypeID") }

// Server is one server a discovery endpoint knows.
type Server struct {
	ApplicationURI  string   `json:"applicationUri"`
	ProductURI      string   `json:"productUri,omitempty"`
	Name            string   `json:"name"`
	ApplicationType string   `json:"applicationType"`
	DiscoveryURLs   []string `json:"discoveryUrls"`
}

// FindServers asks a server or discovery server (FindServers service, over
// an unsecured channel as the service allows) which servers it knows.
func FindServers(ctx context.Context, url string, timeout time.Duration) ([]Server, error) {
	timeout = durOr(timeout, 5*time.Second)
	ctx, cancel := context.WithTimeout(ctx, 2*timeout)
	defer cancel()
	apps, err := opcua.FindServers(ctx, url, opcua.DialTimeout(timeout), opcua.RequestTimeout(timeout))
	if err != nil {
		return nil, fmt.Errorf("finding servers at %s: %w", url, err)
	}
	out := make([]Server, 0, len(apps))
	for _, a := range apps {
		if a.ApplicationType == ua.ApplicationTypeClient {
			continue
		}
		s := Server{
			ApplicationURI:  a.ApplicationURI,
			ProductURI:      a.ProductURI,
			ApplicationType: strings.TrimPrefix(a.ApplicationType.String(), "ApplicationType"),
			DiscoveryURLs:   a.DiscoveryURLs,
		}
		if a.ApplicationName != nil {
			s.Name = a.ApplicationName.Text
		}
		out = append(out, s)
	}
	return out, nil
}
