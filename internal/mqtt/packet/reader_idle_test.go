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
