package opcua

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestDataPointsCSV(t *testing.T) {
	in := "name,dataSource,samplingInterval,queueSize,deadbandType,deadbandValue,heartbeatInterval\n" +
		"counter,ns=2;s=Counter,100,10,,,\n" +
		"# a comment\n" +
		"level,\"nsu=urn:edgeport:test;s=Level\",,,Percent,2.5,5000\n" +
		"temp,ns=2;i=17,-1,,absolute,0.5,\n"
	pts, err := ParseDataPointsCSV(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 3 || pts[0].Name != "counter" || string(pts[0].DataPointConfiguration) != `{"samplingInterval":100,"queueSize":10}` ||
		pts[1].DataSource != "nsu=urn:edgeport:test;s=Level" || string(pts[1].DataPointConfiguration) != `{"deadband":{"type":"Percent","value":2.5},"heartbeatInterval":5000}` ||
		string(pts[2].DataPointConfiguration) != `{"samplingInterval":-1,"deadband":{"type":"Absolute","value":0.5}}` {
		t.Fatalf("parsed %+v", pts)
	}
	var out bytes.Buffer
	if err := WriteDataPointsCSV(&out, pts); err != nil {
		t.Fatal(err)
	}
	back, err := ParseDataPointsCSV(&out)
	if err != nil || !reflect.DeepEqual(back, pts) {
		t.Fatalf("round trip: %v\n%+v\n%+v", err, back, pts)
	}

	for _, bad := range []struct{ in, want string }{
		{"", "line 1: empty file"},
		{"name,node\n", `line 1: unknown column "node"`},
		{"name\n", `line 1: column "dataSource" is required`},
		{"name,dataSource\n,ns=2;s=A\n", "line 2: name is empty"},
		{"name,dataSource\na,\n", `line 2: dataSource of "a" is empty`},
		{"name,dataSource\na,ns=x;s=A\n", `line 2: dataSource "ns=x;s=A"`},
		{"name,dataSource\na,ns=2;s=A\na,ns=2;s=B\n", `line 3: name "a" already used on line 2`},
		{"name,dataSource,queueSize\na,ns=2;s=A,many\n", `line 2: queueSize "many"`},
		{"name,dataSource,deadbandType,deadbandValue\na,ns=2;s=A,Relative,1\n", `line 2: deadbandType "Relative"`},
		{"name,dataSource,deadbandType,deadbandValue\na,ns=2;s=A,Percent,150\n", "more than 100 percent"},
		{"name,dataSource\n\"a,ns=2\n", "extraneous or missing"},
	} {
		if _, err := ParseDataPointsCSV(strings.NewReader(bad.in)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: %v, want %q", bad.in, err, bad.want)
		}
	}
}

func FuzzParseDataPointsCSV(f *testing.F) {
	f.Add("name,dataSource,samplingInterval,queueSize,deadbandType,deadbandValue,heartbeatInterval\ncounter,ns=2;s=Counter,100,10,Absolute,1,1000\n")
	f.Add("name,dataSource\na,i=85\n")
	f.Fuzz(func(t *testing.T, in string) {
		pts, err := ParseDataPointsCSV(strings.NewReader(in))
		if err != nil {
			return
		}
		// What parses writes back to the same points.
		var out bytes.Buffer
		if err := WriteDataPointsCSV(&out, pts); err != nil {
			t.Fatal(err)
		}
		back, err := ParseDataPointsCSV(&out)
		if err != nil || !reflect.DeepEqual(back, pts) {
			t.Fatalf("%q: round trip %v\n%+v\n%+v", in, err, back, pts)
		}
	})
}
