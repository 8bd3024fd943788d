package connector

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// ContentTypeJSON is the content type of every dataset and event message.
const ContentTypeJSON = "application/json"

// EncodePayload appends the message payload of samples to buf in Azure IoT
// Operations' connector shape:
//
//	{"<point>":{"SourceTimestamp":"2024-07-29T15:02:17.1858435Z","Value":4558}, ...}
//
// with "StatusCode":{"Code":…,"Symbol":…} added to a sample that is not
// good. Points appear in the order given. Non-finite floats are written as
// the strings "NaN", "Infinity" and "-Infinity", as OPC UA's JSON encoding
// does, since JSON has no such numbers. It is the one encoder of every
// connector.
func EncodePayload(buf []byte, samples []Sample) ([]byte, error) {
	buf = append(buf, '{')
	for i, s := range samples {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendQuote(buf, s.Name)
		buf = append(buf, `:{"SourceTimestamp":"`...)
		buf = s.SourceTimestamp.UTC().AppendFormat(buf, time.RFC3339Nano)
		buf = append(buf, `","Value":`...)
		var err error
		if buf, err = appendValue(buf, s.Value); err != nil {
			return nil, fmt.Errorf("encoding data point %q: %w", s.Name, err)
		}
		if s.Status != nil {
			buf = append(buf, `,"StatusCode":{"Code":`...)
			buf = strconv.AppendUint(buf, uint64(s.Status.Code), 10)
			buf = append(buf, `,"Symbol":`...)
			buf = strconv.AppendQuote(buf, s.Status.Symbol)
			buf = append(buf, '}')
		}
		buf = append(buf, '}')
	}
	return append(buf, '}'), nil
}

func appendValue(buf []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(buf, "null"...), nil
	case bool:
		return strconv.AppendBool(buf, x), nil
	case int:
		return strconv.AppendInt(buf, int64(x), 10), nil
	case int16:
		return strconv.AppendInt(buf, int64(x), 10), nil
	case int32:
		return strconv.AppendInt(buf, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(buf, x, 10), nil
	case uint16:
		return strconv.AppendUint(buf, uint64(x), 10), nil
	case uint32:
		return strconv.AppendUint(buf, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(buf, x, 10), nil
	case float32:
		return appendFloat(buf, float64(x), 32), nil
	case float64:
		return appendFloat(buf, x, 64), nil
	case string:
		return appendJSONString(buf, x)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(buf, b...), nil
}

func appendFloat(buf []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(buf, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(buf, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(buf, `"-Infinity"`...)
	}
	return strconv.AppendFloat(buf, f, 'g', -1, bits)
}

// appendJSONString uses encoding/json so that invalid UTF-8 and control
// characters from a device are escaped the standard way.
func appendJSONString(buf []byte, s string) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return append(buf, b...), nil
}

// CloudEvent holds the CloudEvents 1.0 attributes a message carries as MQTT
// user properties, as Azure IoT Operations' connectors send them.
type CloudEvent struct {
	ID      string
	Source  string // the device endpoint, e.g. modbus-tcp://10.0.0.5:502
	Type    string // e.g. ua-deltaframe, modbus-keyframe
	Subject string // asset/dataset
	Time    time.Time
	// DataSchema is the registered schema's reference (or the typeRef).
	DataSchema string
}

// UserProperties returns the attributes as MQTT user properties, in the
// order of the CloudEvents specification.
func (c *CloudEvent) UserProperties() []packet.UserProperty {
	props := []packet.UserProperty{
		{Key: "specversion", Value: "1.0"},
		{Key: "type", Value: c.Type},
		{Key: "source", Value: c.Source},
		{Key: "id", Value: c.ID},
		{Key: "time", Value: c.Time.UTC().Format(time.RFC3339Nano)},
		{Key: "subject", Value: c.Subject},
		{Key: "datacontenttype", Value: ContentTypeJSON},
	}
	if c.DataSchema != "" {
		props = append(props, packet.UserProperty{Key: "dataschema", Value: c.DataSchema})
	}
	return props
}

// EventType returns the CloudEvents type for a connector's frames:
// ua-keyframe and ua-deltaframe for OPC UA (as Azure IoT Operations), and
// <protocol>-keyframe / -deltaframe for the others.
func EventType(endpointType string, keyframe bool) string {
	p := strings.ToLower(strings.TrimPrefix(endpointType, "Microsoft."))
	if p == "opcua" {
		p = "ua"
	}
	if keyframe {
		return p + "-keyframe"
	}
	return p + "-deltaframe"
}

// newID returns a random UUID (version 4) for a message's id.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}
