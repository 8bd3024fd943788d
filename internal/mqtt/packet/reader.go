package packet

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// DefaultReaderSize is the buffer size NewReader uses when given size <= 0.
const DefaultReaderSize = 32 << 10

// maxRetainedLarge bounds the oversize buffer a Reader keeps between calls,
// so one big packet does not pin its memory for the life of a connection.
const maxRetainedLarge = 1 << 20

// idleSize is the inline buffer a quiet Reader reads into.
const idleSize = 128

// bigBuffers lends full-size read buffers to busy Readers, so that memory
// follows traffic rather than the number of connections.
var bigBuffers sync.Pool

// Reader splits a byte stream into packets. It reads in chunks of its buffer
// size, so a burst of small packets costs one read call, and it hands out
// bodies that point into its buffer instead of copying them.
//
// A quiet Reader reads into a small inline buffer; once a read fills it, the
// Reader borrows a buffer of the full size and gives it back when the stream
// goes quiet again (everything consumed after a short read). An idle MQTT
// connection blocked in Read therefore holds a few hundred bytes, not 32 KiB.
type Reader struct {
	r        io.Reader
	buf      []byte // buf[start:end] is read but not yet returned
	start    int
	end      int
	large    []byte // holds a packet bigger than buf
	err      error  // read error held back until buffered data is used up
	size     int    // full buffer size
	lastRead int    // bytes returned by the latest read
	inLarge  bool   // readLarge is assembling a packet (buf is empty meanwhile)
	idle     [idleSize]byte
}

// ErrIdle may be returned, with no data, by the io.Reader under a Reader
// that is AtBoundary: Next then returns it and the stream stays usable, so
// the caller can stop reading an idle connection and call Next again
// later. Any other error ends the stream.
var ErrIdle = errors.New("packet: idle")

// NewReader returns a Reader over r with a buffer of size bytes
// (DefaultReaderSize if size <= 0).
func NewReader(r io.Reader, size int) *Reader {
	if size <= 0 {
		size = DefaultReaderSize
	}
	// The buffer must at least hold a complete fixed header.
	size = max(size, 1+maxVarintLen)
	rd := &Reader{r: r, size: size}
	rd.buf = rd.idle[:]
	if size <= idleSize {
		rd.buf = rd.idle[:size]
	}
	return rd
}

func (r *Reader) borrowed() bool { return len(r.buf) > idleSize }

// grow moves the unread bytes into a full-size buffer.
func (r *Reader) grow() {
	var nb []byte
	if r.size == DefaultReaderSize {
		if p, ok := bigBuffers.Get().(*[]byte); ok {
			nb = *p
		}
	}
	if nb == nil {
		nb = make([]byte, r.size)
	}
	r.end = copy(nb, r.buf[r.start:r.end])
	r.start = 0
	r.buf = nb
}

// shrink returns a borrowed buffer once everything in it is consumed and
// the stream has slowed down.
func (r *Reader) shrink() {
	if !r.borrowed() || r.start != r.end || r.lastRead >= idleSize {
		return
	}
	if r.size == DefaultReaderSize {
		b := r.buf
		bigBuffers.Put(&b)
	}
	r.buf, r.start, r.end = r.idle[:], 0, 0
}

// Buffered is the number of bytes read from the stream but not yet returned.
func (r *Reader) Buffered() int { return r.end - r.start }

// AtBoundary reports whether the Reader holds no part of a packet: the
// next byte of the stream starts a new one.
func (r *Reader) AtBoundary() bool { return r.start == r.end && !r.inLarge }

// Next reads one packet and returns its fixed header and body. The body is
// valid only until the next call to Next. A packet whose total size exceeds
// maxPacketSize (0: no limit beyond MaxRemainingLength) yields an error
// wrapping PacketTooLarge, together with its header, before any of its body
// is read. A clean end of stream between packets returns io.EOF; an end
// inside a packet returns io.ErrUnexpectedEOF. After any error the stream
// position is undefined and the connection should be closed.
func (r *Reader) Next(maxPacketSize int) (FixedHeader, []byte, error) {
	if cap(r.large) > maxRetainedLarge {
		r.large = nil
	}
	r.shrink()
	var h FixedHeader
	var n int
	for {
		var err error
		h, n, err = DecodeFixedHeader(r.buf[r.start:r.end])
		if err != nil {
			return h, nil, err
		}
		if n > 0 {
			break
		}
		if err := r.fill(); err != nil {
			if err == io.EOF && r.end > r.start {
				err = io.ErrUnexpectedEOF
			}
			return h, nil, err
		}
	}
	total := n + h.Remaining
	if maxPacketSize > 0 && total > maxPacketSize {
		return h, nil, tooLarge(h, total, maxPacketSize)
	}
	if total > len(r.buf) && !r.borrowed() && total <= r.size {
		r.grow()
	}
	if total <= len(r.buf) {
		if r.start+total > len(r.buf) {
			r.compact()
		}
		for r.end-r.start < total {
			if err := r.fill(); err != nil {
				return h, nil, noEOF(err)
			}
		}
		body := r.buf[r.start+n : r.start+total : r.start+total]
		r.start += total
		return h, body, nil
	}
	body, err := r.readLarge(n, h.Remaining)
	return h, body, err
}

// readLarge assembles a packet too big for the buffer in the separate large
// buffer. It is out of line so that Next's frame, on the stack of every idle
// connection, stays small.
//
//go:noinline
func (r *Reader) readLarge(n, remaining int) ([]byte, error) {
	// Too big for the buffer: assemble it in the separate large buffer. It
	// grows with the data that actually arrives, so a peer announcing a huge
	// packet and sending nothing costs no memory.
	body := append(r.large[:0], r.buf[r.start+n:r.end]...)
	r.start, r.end = 0, 0
	r.inLarge = true
	defer func() { r.inLarge = false }()
	for len(body) < remaining {
		if r.err != nil {
			return nil, noEOF(r.err)
		}
		if len(body) == cap(body) {
			grown := make([]byte, len(body), min(remaining, max(2*cap(body), 2*len(r.buf))))
			copy(grown, body)
			body = grown
		}
		m, err := io.ReadFull(r.r, body[len(body):min(cap(body), remaining)])
		body = body[:len(body)+m]
		if err != nil {
			r.err = err
		}
	}
	r.large = body
	return body, nil
}

//go:noinline
func tooLarge(h FixedHeader, total, limit int) error {
	return fmt.Errorf("%s of %d bytes exceeds maximum packet size %d: %w", h.Type, total, limit, PacketTooLarge)
}

// fill reads once more into the buffer, moving unread data to the front
// first when the free space at the end is short.
func (r *Reader) fill() error {
	if r.err != nil {
		return r.err
	}
	if r.start > 0 && (r.start == r.end || len(r.buf)-r.end < len(r.buf)/2) {
		r.compact()
	}
	if !r.borrowed() && r.size > idleSize && (r.end == len(r.buf) || r.lastRead == len(r.buf)) {
		// The last read filled the small buffer: more is coming.
		r.grow()
	}
	for range 100 {
		n, err := r.r.Read(r.buf[r.end:])
		r.end += n
		r.lastRead = n
		if err != nil {
			if n > 0 {
				r.err = err
				return nil
			}
			if err == ErrIdle {
				return err // not sticky: the stream goes on
			}
			r.err = err
			return err
		}
		if n > 0 {
			return nil
		}
	}
	r.err = io.ErrNoProgress
	return r.err
}

func (r *Reader) compact() {
	copy(r.buf, r.buf[r.start:r.end])
	r.end -= r.start
	r.start = 0
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
