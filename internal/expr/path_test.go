package expr

import (
	"reflect"
	"testing"
)

// TestPathSegmentation follows the segmentation rules and examples of
// Azure IoT Operations' mapping documentation.
func TestPathSegmentation(t *testing.T) {
	tests := []struct {
		in   string
		src  source
		segs []string
		wild int
		last bool
		def  any
	}{
		{"Person.Address.Street.Number", srcPayload, []string{"Person", "Address", "Street", "Number"}, -1, false, nil},
		{"Person.Date of Birth", srcPayload, []string{"Person", "Date of Birth"}, -1, false, nil},
		{`Payload."Tag.10".Value`, srcPayload, []string{"Payload", "Tag.10", "Value"}, -1, false, nil},
		{`Payload."Tag.10".Measurements."Vibration.$12".Value`, srcPayload, []string{"Payload", "Tag.10", "Measurements", "Vibration.$12", "Value"}, -1, false, nil},
		{`Payload.He said: "Hello", and waved`, srcPayload, []string{"Payload", `He said: "Hello", and waved`}, -1, false, nil},
		{`Payload.He said: "No. It is done"`, srcPayload, []string{"Payload", `He said: "No`, ` It is done"`}, -1, false, nil},
		{`"nsu=http://opcfoundation.org/UA/Plc/Applications;s=RandomSignedInt32"`, srcPayload, []string{"nsu=http://opcfoundation.org/UA/Plc/Applications;s=RandomSignedInt32"}, -1, false, nil},
		{":Person:.:name:", srcPayload, []string{":Person:", ":name:"}, -1, false, nil},
		{"100 celsius.hot", srcPayload, []string{"100 celsius", "hot"}, -1, false, nil},
		{"*", srcPayload, []string{"*"}, 0, false, nil},
		{"*.path2.path3", srcPayload, []string{"*", "path2", "path3"}, 0, false, nil},
		{"path1.*.path3", srcPayload, []string{"path1", "*", "path3"}, 1, false, nil},
		{`"*".x`, srcPayload, []string{"*", "x"}, -1, false, nil},
		{"$source.temperature", srcPayload, []string{"temperature"}, -1, false, nil},
		{"Temperature ? $last", srcPayload, []string{"Temperature"}, -1, true, nil},
		{"Temperature?$LAST", srcPayload, []string{"Temperature"}, -1, true, nil},
		{"temperature ? $last ?? 0", srcPayload, []string{"temperature"}, -1, true, int64(0)},
		{`status ?? "unknown"`, srcPayload, []string{"status"}, -1, false, "unknown"},
		{"threshold ?? 98.6", srcPayload, []string{"threshold"}, -1, false, 98.6},
		{"$metadata.topic", srcTopic, nil, -1, false, nil},
		{"$metadata.user_property.priority", srcUserProp, []string{"priority"}, -1, false, nil},
		{`$metadata.user_property."weird key"`, srcUserProp, []string{"weird key"}, -1, false, nil},
		{"$metadata.user_properties.priority", srcUserProp, []string{"priority"}, -1, false, nil},
		{"$metadata.header.priority", srcUserProp, []string{"priority"}, -1, false, nil},
		{"$metadata.user_property.*", srcUserProp, []string{"*"}, 0, false, nil},
		{"$metadata.system_property.content_type", srcContentType, nil, -1, false, nil},
		{"$context(position).BaseSalary", srcContext, []string{"BaseSalary"}, -1, false, nil},
		{"$context(position).*", srcContext, []string{"*"}, 0, false, nil},
		{"$context.Position", srcContext, []string{"Position"}, -1, false, nil},
	}
	for _, tt := range tests {
		p, err := parsePath(tt.in)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if p.src != tt.src || !reflect.DeepEqual(p.segs, tt.segs) || p.wild != tt.wild || p.last != tt.last || !reflect.DeepEqual(p.def, tt.def) {
			t.Errorf("%q: got src %d segs %q wild %d last %v def %#v", tt.in, p.src, p.segs, p.wild, p.last, p.def)
		}
	}
}
