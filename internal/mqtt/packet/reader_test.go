package packet

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"testing/iotest"
	"time"
)

// stream concatenates every fixture.
func stream() (data []byte, packets [][]byte) {
	for _, f := range fixtures {
		p := hx(f.wire)
		packets = append(packets, p)
		data = append(data, p...)
	}
	return data, packets
}

// readAll reads packets until an error and returns them re-assembled.
func readAll(r *Reader, maxSize int) ([][]byte, error) {
	var out [][]byte
	for {
		h, body, err := r.Next(maxSize)
		if err != nil {
			return out, err
		}
		out = append(out, append(appendHeader(nil, h.Type, h.Flags, h.Remaining), body...))
	}
}

func TestReaderSequence(t *testing.T) {
	data, want := stream()
	wrappers := map[string]func(io.Reader) io.Reader{
		"plain":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data+EOF": iotest.DataErrReader,
	}
	for name, wrap := range wrappers {
		for _, size := range []int{1, 8, 16, 64, 0} {
			got, err := readAll(NewReader(wrap(bytes.NewReader(data)), size), 0)
			if err != io.EOF {
				t.Errorf("%s/%d: ended with %v, want io.EOF", name, size, err)
			}
			if len(got) != len(want) {
				t.Fatalf("%s/%d: %d packets, want %d", name, size, len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Errorf("%s/%d: packet %d = % x, want % x", name, size, i, got[i], want[i])
				}
			}
		}
	}
}

// countingReader counts Read calls and bytes handed out.
type countingReader struct {
	r     io.Reader
	calls int
	bytes int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.calls++
	n, err := c.r.Read(p)
	c.bytes += n
	return n, err
}

func TestReaderReadsInChunks(t *testing.T) {
	pkt := (&Publish{Topic: "a/b", Payload: []byte("0123456789")}).Append(nil, V311)
	data := bytes.Repeat(pkt, 1000) // 17 KB
	cr := &countingReader{r: bytes.NewReader(data)}
	got, err := readAll(NewReader(cr, 0), 0)
	if err != io.EOF || len(got) != 1000 {
		t.Fatalf("%d packets, %v", len(got), err)
	}
	if cr.calls > 3 {
		t.Errorf("%d read calls for 1000 packets", cr.calls)
	}
}

func TestReaderLargePacket(t *testing.T) {
	big := &Publish{Topic: "big", Payload: bytes.Repeat([]byte("xyz"), 40000)}
	small := &Publish{Topic: "s", Payload: []byte("1")}
	var data []byte
	data = big.Append(data, V311)
	data = small.Append(data, V311)
	data = big.Append(data, V311)
	r := NewReader(iotest.HalfReader(bytes.NewReader(data)), 1024)
	for i, want := range []*Publish{big, small, big} {
		h, body, err := r.Next(200000)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		var p Publish
		if err := p.Decode(h.Flags, body, V311); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if p.Topic != want.Topic || !bytes.Equal(p.Payload, want.Payload) {
			t.Errorf("packet %d: topic %q, %d payload bytes", i, p.Topic, len(p.Payload))
		}
	}
	if _, _, err := r.Next(0); err != io.EOF {
		t.Errorf("end: %v", err)
	}
}

// endless serves a header announcing a huge packet, then zeros forever.
type endless struct{ header []byte }

func (e *endless) Read(p []byte) (int, error) {
	n := copy(p, e.header)
	e.header = e.header[n:]
	clear(p[n:])
	return len(p), nil
}

func TestReaderTooLarge(t *testing.T) {
	cr := &countingReader{r: &endless{header: hx(`30 ff ff ff 7f`)}}
	r := NewReader(cr, 4096)
	h, body, err := r.Next(1 << 20)
	if !errors.Is(err, PacketTooLarge) {
		t.Fatalf("err %v, want PacketTooLarge", err)
	}
	if h.Type != PUBLISH || h.Remaining != MaxRemainingLength || body != nil {
		t.Errorf("header %+v, body %d bytes", h, len(body))
	}
	if cr.bytes > 4096 {
		t.Errorf("read %d bytes of an oversized packet", cr.bytes)
	}

	// Exactly at the limit is fine: total size counts the fixed header.
	pkt := hx(`30 05 0001 74 78 79`)
	if _, _, err := NewReader(bytes.NewReader(pkt), 0).Next(len(pkt)); err != nil {
		t.Errorf("packet of exactly the limit: %v", err)
	}
	if _, _, err := NewReader(bytes.NewReader(pkt), 0).Next(len(pkt) - 1); !errors.Is(err, PacketTooLarge) {
		t.Errorf("one byte over the limit: %v", err)
	}
}

func TestReaderErrors(t *testing.T) {
	tests := []struct {
		name string
		data string
		want error
	}{
		{"empty stream", ``, io.EOF},
		{"cut in header", `30`, io.ErrUnexpectedEOF},
		{"cut in length", `30 80`, io.ErrUnexpectedEOF},
		{"cut in body", `30 05 0001`, io.ErrUnexpectedEOF},
		{"malformed length", `30 ff ff ff ff 7f`, MalformedPacket},
		{"type 0", `00 00`, MalformedPacket},
	}
	for _, tt := range tests {
		for _, size := range []int{2, 0} {
			_, _, err := NewReader(bytes.NewReader(hx(tt.data)), size).Next(0)
			if !errors.Is(err, tt.want) {
				t.Errorf("%s (buffer %d): %v, want %v", tt.name, size, err, tt.want)
			}
		}
	}
	// A large packet cut short is reported the same way.
	data := hx(`30 ff 01 0001 74`)
	if _, _, err := NewReader(bytes.NewReader(data), 16).Next(0); err != io.ErrUnexpectedEOF {
		t.Errorf("large packet cut short: %v", err)
	}
}

func TestReaderTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	data, want := stream()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		// Uneven writes so packets straddle segment boundaries.
		for len(data) > 0 {
			n := min(len(data), 7)
			if _, err := c.Write(data[:n]); err != nil {
				done <- err
				return
			}
			data = data[n:]
		}
		done <- nil
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got, err := readAll(NewReader(conn, 32), 0)
	if err != io.EOF {
		t.Errorf("ended with %v", err)
	}
	if werr := <-done; werr != nil {
		t.Fatal(werr)
	}
	if len(got) != len(want) {
		t.Fatalf("%d packets, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("packet %d differs", i)
		}
	}
}

// TestReaderHugeAnnounced checks that memory follows the bytes received, not
// the length a peer announces.
func TestReaderHugeAnnounced(t *testing.T) {
	data := append(hx(`30 ff ff ff 7f`), make([]byte, 100)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := NewReader(bytes.NewReader(data), 0).Next(0)
	runtime.ReadMemStats(&after)
	if err != io.ErrUnexpectedEOF {
		t.Errorf("err %v, want io.ErrUnexpectedEOF", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("allocated %d bytes for a 105-byte stream", n)
	}
}
