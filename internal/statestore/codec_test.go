package statestore

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload string
		want    []string
		ok      bool
	}{
		{"get", "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", []string{"GET", "k"}, true},
		{"binary", "*3\r\n$3\r\nSET\r\n$3\r\n\r\n\x00\r\n$2\r\n\xff$\r\n", []string{"SET", "\r\n\x00", "\xff$"}, true},
		{"empty arg", "*3\r\n$3\r\nSET\r\n$0\r\n\r\n$0\r\n\r\n", []string{"SET", "", ""}, true},
		{"lowercase doc example", "*2\r\n$3\r\nget\r\n$7\r\nSETKEY2\r\n", []string{"get", "SETKEY2"}, true},
		{"empty", "", nil, false},
		{"not an array", "$3\r\nGET\r\n", nil, false},
		{"zero args", "*0\r\n", nil, false},
		{"too many args", "*17\r\n", nil, false},
		{"count beyond data", "*3\r\n$3\r\nGET\r\n$1\r\nk\r\n", nil, false},
		{"trailing bytes", "*1\r\n$3\r\nGET\r\nxx", nil, false},
		{"short bulk", "*1\r\n$5\r\nGET\r\n", nil, false},
		{"missing CRLF after bulk", "*1\r\n$3\r\nGETxx", nil, false},
		{"null bulk argument", "*1\r\n$-1\r\n", nil, false},
		{"negative count", "*-2\r\n", nil, false},
		{"bad length", "*1\r\n$x\r\nGET\r\n", nil, false},
		{"LF only", "*1\n$3\nGET\n", nil, false},
		{"overflowing length", "*1\r\n$99999999999999999999\r\nGET\r\n", nil, false},
		{"simple string", "+OK\r\n", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, err := parseRequest([]byte(tc.payload), nil)
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if !tc.ok {
				if !errors.Is(err, errSyntax) {
					t.Fatalf("err = %v, want errSyntax", err)
				}
				return
			}
			if len(args) != len(tc.want) {
				t.Fatalf("args = %q, want %q", args, tc.want)
			}
			for i := range args {
				if string(args[i]) != tc.want[i] {
					t.Fatalf("arg %d = %q, want %q", i, args[i], tc.want[i])
				}
			}
		})
	}
}

func TestParseRequestReusesArgs(t *testing.T) {
	payload := []byte("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
	args := make([][]byte, 0, 4)
	if n := testing.AllocsPerRun(100, func() { args, _ = parseRequest(payload, args) }); n != 0 {
		t.Fatalf("parseRequest allocates %v times with a reused slice", n)
	}
}

func TestResponseEncoders(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{string(appendOK(nil)), "+OK\r\n"},
		{string(appendInt(nil, -1)), ":-1\r\n"},
		{string(appendInt(nil, 1)), ":1\r\n"},
		{string(appendNull(nil)), "$-1\r\n"},
		{string(appendBulk(nil, []byte("1234"))), "$4\r\n1234\r\n"},
		{string(appendBulk(nil, []byte{})), "$0\r\n\r\n"},
		{string(appendError(nil, errSyntaxError)), "-ERR syntax error\r\n"},
		{string(appendNotifySet(nil, []byte("abc"))), "*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$3\r\nabc\r\n"},
		{notifyDelete, "*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n"},
		{string(appendUpperHex(nil, []byte("client-id1"))), "636C69656E742D696431"},
		{string(appendUpperHex(nil, []byte("SOMEKEY"))), "534F4D454B4559"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestHLC(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want HLC
		ok   bool
	}{
		{"1696374425000:0:Client1", HLC{1696374425000, 0, "Client1"}, true},
		{"001696374425000:00001:0190b9f4-8a6e-7c3e-9c6f-6f8d6b0e5a1b", HLC{1696374425000, 1, "0190b9f4-8a6e-7c3e-9c6f-6f8d6b0e5a1b"}, true},
		{"5:7:", HLC{5, 7, ""}, true},
		{"", HLC{}, false},
		{"1:2", HLC{}, false},
		{"1:2:a:b", HLC{}, false},
		{"x:2:a", HLC{}, false},
		{"1:y:a", HLC{}, false},
		{"-1:2:a", HLC{}, false},
		{"+1:2:a", HLC{}, false},
		{":2:a", HLC{}, false},
		{"1::a", HLC{}, false},
	} {
		got, ok := ParseHLC(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseHLC(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	if s := (HLC{1696374425000, 1, "edgeport"}).String(); s != "001696374425000:00001:edgeport" {
		t.Errorf("String = %q", s)
	}
	a, b := HLC{10, 1, "a"}, HLC{10, 1, "b"}
	if a.Compare(b) >= 0 || b.Compare(a) <= 0 || a.Compare(a) != 0 || (HLC{9, 5, "z"}).Compare(a) >= 0 || (HLC{10, 2, ""}).Compare(b) <= 0 {
		t.Error("Compare does not order by wall, counter, node")
	}
}

func TestClockTick(t *testing.T) {
	now := time.UnixMilli(1696374425000)
	for _, tc := range []struct {
		name   string
		last   HLC
		remote *HLC
		want   HLC
	}{
		// The protocol reference's example: same wall clock on both sides.
		{"doc example", HLC{Node: "ss"}, &HLC{1696374425000, 0, "Client1"}, HLC{1696374425000, 1, "ss"}},
		{"wall clock ahead", HLC{1696374424000, 9, "ss"}, &HLC{1696374424500, 3, "c"}, HLC{1696374425000, 0, "ss"}},
		{"remote ahead", HLC{1696374425000, 2, "ss"}, &HLC{1696374425030, 4, "c"}, HLC{1696374425030, 5, "ss"}},
		{"own history ahead", HLC{1696374425040, 2, "ss"}, &HLC{1696374425030, 4, "c"}, HLC{1696374425040, 3, "ss"}},
		{"same wall, remote counter higher", HLC{1696374425000, 2, "ss"}, &HLC{1696374425000, 7, "c"}, HLC{1696374425000, 8, "ss"}},
		{"no remote, clock ahead", HLC{1696374425000, 2, "ss"}, nil, HLC{1696374425000, 3, "ss"}},
		{"no remote", HLC{1, 2, "ss"}, nil, HLC{1696374425000, 0, "ss"}},
	} {
		c := clock{last: tc.last}
		got := c.tick(now, tc.remote)
		if got != tc.want {
			t.Errorf("%s: tick = %+v, want %+v", tc.name, got, tc.want)
		}
		if tc.remote != nil && got.Compare(*tc.remote) <= 0 || got.Compare(tc.last) <= 0 {
			t.Errorf("%s: %+v is not after both inputs", tc.name, got)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	intern := func(b []byte) string { return string(b) }
	for _, e := range []*entry{
		{value: []byte{}, version: HLC{1, 0, "edgeport"}},
		{value: []byte("v\x00\r\n\xff"), version: HLC{1696374425000, 3, "edgeport"}, expiry: 1696374435000},
		{value: bytes.Repeat([]byte("x"), 1000), version: HLC{7, 1, ""}, fence: HLC{6, 0, "lock"}},
		{value: []byte("all"), version: HLC{8, 2, "n"}, fence: HLC{6, 9, "lock"}, expiry: 99},
	} {
		rec := appendRecord(nil, e)
		got, err := decodeRecord(rec, intern)
		if err != nil {
			t.Fatalf("decode %+v: %v", e, err)
		}
		if !bytes.Equal(got.value, e.value) || got.version != e.version || got.fence != e.fence || got.expiry != e.expiry {
			t.Fatalf("round trip: got %+v, want %+v", got, e)
		}
		// Every truncation of the metadata must be caught (the value is
		// the tail, so only cuts into the header can be detected).
		head := len(rec) - len(e.value)
		for cut := 0; cut < head; cut++ {
			if _, err := decodeRecord(rec[:cut], intern); err == nil {
				t.Fatalf("truncated to %d of %d header bytes: no error", cut, head)
			}
		}
	}
	if _, err := decodeRecord([]byte{2, 0, 0, 0, 0}, intern); err == nil {
		t.Error("unknown record version accepted")
	}
	if _, err := decodeRecord([]byte{1, 4, 0, 0, 0}, intern); err == nil {
		t.Error("unknown flag accepted")
	}
}

func TestSupportedVersion(t *testing.T) {
	for v, want := range map[string]bool{"1.0": true, "1.1": true, "1.25": true, "2.0": false, "0.1": false, "1": false, "x.0": false, "1.x": false, "": true, "+1.0": false} {
		if got := supportedVersion(v); got != want {
			t.Errorf("supportedVersion(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestValidResponseTopic(t *testing.T) {
	for topic, want := range map[string]bool{
		"clients/c1/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response": true,
		"clients/c1/services/statestore/_any_/command/invoke/response":                          true,
		InvokeTopic: false,
		"clients/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/636C69656E74/command/notify/6B": false,
		"$SYS/broker/uptime":   false,
		"$edgeport/selftest/x": false,
		"a/+/b":                false,
		"a/#":                  false,
		"":                     false,
		"bad\xff":              false,
	} {
		if got := validResponseTopic(topic); got != want {
			t.Errorf("validResponseTopic(%q) = %v, want %v", topic, got, want)
		}
	}
}

// What a shared backend delivers comes from outside the node (another
// node, or another program writing the bucket): any bytes decode to an
// error or to an entry (or a deletion's version) that survives being
// encoded and decoded again.
func FuzzDecodeChange(f *testing.F) {
	f.Add([]byte(nil), false)
	f.Add(appendRecord(nil, &entry{value: []byte("v"), version: HLC{Wall: 5, Counter: 1, Node: "n1"}, expiry: 9}), false)
	f.Add(appendHLC(nil, HLC{Wall: 7, Node: "node2"}), true)
	f.Add([]byte{1, 3, 2, 0, 0}, false)
	intern := func(b []byte) string { return string(b) }
	f.Fuzz(func(t *testing.T, data []byte, del bool) {
		ch := Change{Key: "k", Delete: del, Data: data, Rev: 3}
		en, deleted, err := decodeChange(&ch, intern)
		switch {
		case err != nil:
			if en != nil || !deleted.IsZero() {
				t.Fatalf("an error with a result: %v %v", en, deleted)
			}
		case del:
			if en != nil {
				t.Fatal("a deletion decoded to an entry")
			}
			if len(data) > 0 {
				back, rest, ok := decodeHLC(appendHLC(nil, deleted), intern)
				if !ok || len(rest) != 0 || back != deleted {
					t.Fatalf("deletion version %v of %x does not survive a round trip", deleted, data)
				}
			}
		default:
			if en.rev != 3 {
				t.Fatalf("revision %d, want the change's", en.rev)
			}
			// Varints have more than one encoding: the entry, not the
			// bytes, must survive a round trip.
			again, err := decodeRecord(appendRecord(nil, en), intern)
			if err != nil || !bytes.Equal(again.value, en.value) || again.version != en.version ||
				again.fence != en.fence || again.expiry != en.expiry {
				t.Fatalf("record %x: entry %+v encodes to one that decodes to %+v, %v", data, en, again, err)
			}
		}
	})
}
