package packet

import (
	"errors"
	"fmt"
	"io"
)

// DefaultReaderSize is the buffer size NewReader uses when given size <= 0.
const DefaultReaderSize = 32 << 10

// maxRetainedLarge bounds the oversize buffer a Reader keeps between calls,
// so one big packet does not pin its memory for the life of a connection.
const maxRetainedLarge = 1 << 20

// Reader splits a byte stream into packets. It reads in chunks of its buffer
// size, so a burst of small packets costs one read call, and it hands out
// bodies that point into its buffer instead of copying them.
type Reader struct {
	r     io.Reader
	buf   []byte // buf[start:end] is read but not yet returned
	start int
	end   int
	large []byte // holds a packet bigger than buf
	err   error  // read error held back until buffered data is used up
}

// NewReader returns a Reader over r with a buffer of size bytes
// (DefaultReaderSize if size <= 0).
func NewReader(r io.Reader, size int) *Reader {
	if size <= 0 {
		size = DefaultReaderSize
	}
	// The buffer must at least hold a complete fixed header.
	size = max(size, 1+maxVarintLen)
	return &Reader{r: r, buf: make([]byte, size)}
}

// Buffered is the number of bytes read from the stream but not yet returned.
func (r *Reader) Buffered() int { return r.end - r.start }

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
		return h, nil, fmt.Errorf("%s of %d bytes exceeds maximum packet size %d: %w",
			h.Type, total, maxPacketSize, PacketTooLarge)
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
	// Too big for the buffer: assemble it in the separate large buffer,
	// reading the rest straight into place.
	if cap(r.large) < h.Remaining {
		r.large = make([]byte, h.Remaining)
	}
	body := r.large[:h.Remaining]
	have := copy(body, r.buf[r.start+n:r.end])
	r.start, r.end = 0, 0
	if have < len(body) {
		if r.err != nil {
			return h, nil, noEOF(r.err)
		}
		if _, err := io.ReadFull(r.r, body[have:]); err != nil {
			return h, nil, noEOF(err)
		}
	}
	return h, body, nil
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
	for range 100 {
		n, err := r.r.Read(r.buf[r.end:])
		r.end += n
		if err != nil {
			if n > 0 {
				r.err = err
				return nil
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
