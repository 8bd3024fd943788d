package packet

import (
	"errors"
	"io"
	"testing"
)

// idleOnce answers ErrIdle whenever asked to, else reads from the data.
type idleOnce struct {
	data  []byte
	idle  func() bool
	calls int
}

func (r *idleOnce) Read(p []byte) (int, error) {
	r.calls++
	if r.idle() {
		return 0, ErrIdle
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data[:min(len(r.data), 3)]) // a few bytes at a time
	r.data = r.data[n:]
	return n, nil
}

// TestReaderIdle: ErrIdle at a packet boundary is returned by Next without
// ending the stream, and AtBoundary is false inside a packet, small or
// assembled in the large buffer.
func TestReaderIdle(t *testing.T) {
	small := AppendPingReq(nil)
	big := (&Publish{Topic: "t", Payload: make([]byte, 300)}).Append(nil, V5)
	src := &idleOnce{data: append(append([]byte{}, small...), big...)}
	var rd *Reader
	idleNext := true
	src.idle = func() bool {
		if !rd.AtBoundary() {
			return false
		}
		i := idleNext
		idleNext = false
		return i
	}
	rd = NewReader(src, 256)
	if !rd.AtBoundary() {
		t.Fatal("a new Reader is not at a boundary")
	}
	if _, _, err := rd.Next(0); !errors.Is(err, ErrIdle) {
		t.Fatalf("Next = %v, want ErrIdle", err)
	}
	h, _, err := rd.Next(0)
	if err != nil || h.Type != PINGREQ {
		t.Fatalf("after ErrIdle: %v %v, want PINGREQ", h.Type, err)
	}
	idleNext = true // refused inside the large packet, taken at its end
	h, body, err := rd.Next(0)
	if err != nil || h.Type != PUBLISH || len(body) != len(big)-3 {
		t.Fatalf("large packet: %v %d bytes %v", h.Type, len(body), err)
	}
	if _, _, err := rd.Next(0); !errors.Is(err, ErrIdle) {
		t.Fatalf("Next at the end = %v, want ErrIdle", err)
	}
	if _, _, err := rd.Next(0); err != io.EOF {
		t.Fatalf("Next = %v, want io.EOF", err)
	}
}

// patternReader reads data in chunks whose sizes follow pattern; a 0 in the
// pattern answers ErrIdle when the Reader is at a packet boundary (as the
// broker's deadlineReader does when a connection goes quiet and parks),
// never twice in a row, and reads one byte elsewhere.
type patternReader struct {
	data       []byte
	pattern    []byte
	i          int
	wasIdle    bool
	atBoundary func() bool
}

func (r *patternReader) Read(p []byte) (int, error) {
	step := byte(1)
	if len(r.pattern) > 0 {
		step = r.pattern[r.i%len(r.pattern)]
		r.i++
	}
	if step == 0 {
		if !r.wasIdle && r.atBoundary() {
			r.wasIdle = true
			return 0, ErrIdle
		}
		step = 1
	}
	r.wasIdle = false
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data[:min(len(r.data), int(step))])
	r.data = r.data[n:]
	return n, nil
}

// FuzzReaderIdle: whatever the read sizes, and wherever the source says
// ErrIdle between packets, the Reader returns exactly the stream's packets
// in order, with the broker's buffer size and with the default one (whose
// full-size buffer is borrowed from a pool and given back when the stream
// goes quiet). No byte is lost or read twice across an idle return.
func FuzzReaderIdle(f *testing.F) {
	data, _ := stream()
	f.Add(data, []byte{0, 1, 200, 3}, false)
	f.Add(data, []byte{0, 255}, true)
	big := (&Publish{Topic: "t", Payload: make([]byte, 40<<10)}).Append(nil, V5)
	f.Add(append(append(AppendPingReq(nil), big...), AppendPingReq(nil)...), []byte{0, 127, 0, 255}, true)
	f.Fuzz(func(t *testing.T, data, pattern []byte, defaultSize bool) {
		size := 4096 // the broker's connections
		if defaultSize {
			size = 0
		}
		src := &patternReader{data: data, pattern: pattern}
		rd := NewReader(src, size)
		src.atBoundary = rd.AtBoundary
		rest, more := data, true
		for more {
			h, body, err := rd.Next(0)
			if errors.Is(err, ErrIdle) {
				continue
			}
			rest, more = checkNext(t, rest, 0, h, body, err)
		}
	})
}
