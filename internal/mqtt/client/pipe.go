package client

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// pipeBuffer bounds the bytes one direction of a Pipe holds unread; a
// writer beyond it waits for the reader, so a stalled peer costs bounded
// memory (as a socket's buffers do).
const pipeBuffer = 256 << 10

// Pipe returns the two ends of a buffered, in-memory, full-duplex
// connection. Unlike net.Pipe, a Write returns as soon as its bytes are
// buffered (up to 256 KiB unread per direction), so both ends can write at
// once without waiting for each other and a reader gets everything written
// since its last read in one call, which lets the broker's chunked reader
// and the client's coalescing writer work as they do on a socket. Deadlines
// behave as on a net.Conn; Close ends both directions (the peer reads what
// was written, then io.EOF); CloseWrite ends only the sending one.
func Pipe() (net.Conn, net.Conn) {
	a, b := newHalf(), newHalf()
	return &pipeConn{rd: a, wr: b, local: pipeAddr("client"), remote: pipeAddr("broker"), closed: make(chan struct{})},
		&pipeConn{rd: b, wr: a, local: pipeAddr("broker"), remote: pipeAddr("client"), closed: make(chan struct{})}
}

type pipeAddr string

func (pipeAddr) Network() string  { return "pipe" }
func (a pipeAddr) String() string { return "pipe:" + string(a) }

// half is one direction of a Pipe.
type half struct {
	mu       sync.Mutex // guards buf, off, wclosed and rclosed
	buf      []byte
	off      int  // bytes of buf already read
	wclosed  bool // the writer closed: reads return io.EOF once buf is drained
	rclosed  bool // the reader closed: writes fail
	readable chan struct{}
	writable chan struct{}
	rdl, wdl *deadline
}

func newHalf() *half {
	return &half{
		readable: make(chan struct{}, 1),
		writable: make(chan struct{}, 1),
		rdl:      newDeadline(),
		wdl:      newDeadline(),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (h *half) read(p []byte, closed <-chan struct{}) (int, error) {
	for {
		select {
		case <-closed:
			return 0, net.ErrClosed
		default:
		}
		if h.rdl.expired() {
			return 0, os.ErrDeadlineExceeded
		}
		h.mu.Lock()
		if n := len(h.buf) - h.off; n > 0 {
			n = copy(p, h.buf[h.off:])
			h.off += n
			if h.off == len(h.buf) {
				h.buf, h.off = h.buf[:0], 0
			}
			h.mu.Unlock()
			signal(h.writable)
			return n, nil
		}
		if h.wclosed {
			h.mu.Unlock()
			return 0, io.EOF
		}
		h.mu.Unlock()
		select {
		case <-h.readable:
		case <-h.rdl.wait():
		case <-closed:
		}
	}
}

func (h *half) write(p []byte, closed <-chan struct{}) (int, error) {
	for {
		select {
		case <-closed:
			return 0, net.ErrClosed
		default:
		}
		if h.wdl.expired() {
			return 0, os.ErrDeadlineExceeded
		}
		h.mu.Lock()
		if h.rclosed || h.wclosed {
			h.mu.Unlock()
			return 0, io.ErrClosedPipe
		}
		if len(h.buf)-h.off < pipeBuffer {
			// Compact before growing: a reader that keeps up leaves buf
			// empty, so this rarely copies.
			if h.off > 0 && len(h.buf)+len(p) > cap(h.buf) {
				n := copy(h.buf, h.buf[h.off:])
				h.buf, h.off = h.buf[:n], 0
			}
			h.buf = append(h.buf, p...)
			h.mu.Unlock()
			signal(h.readable)
			return len(p), nil
		}
		h.mu.Unlock()
		select {
		case <-h.writable:
		case <-h.wdl.wait():
		case <-closed:
		}
	}
}

// pipeConn is one end of a Pipe.
type pipeConn struct {
	rd, wr        *half // rd: what the peer wrote to us; wr: what we write to the peer
	local, remote net.Addr

	closeOnce sync.Once
	closed    chan struct{}
}

func (c *pipeConn) done() <-chan struct{} { return c.closed }

func (c *pipeConn) Read(p []byte) (int, error)  { return c.rd.read(p, c.done()) }
func (c *pipeConn) Write(p []byte) (int, error) { return c.wr.write(p, c.done()) }

// Close ends both directions: the peer reads what is buffered, then
// io.EOF, and its writes fail.
func (c *pipeConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.wr.mu.Lock()
		c.wr.wclosed = true
		c.wr.mu.Unlock()
		signal(c.wr.readable)
		c.rd.mu.Lock()
		c.rd.rclosed = true
		c.rd.buf, c.rd.off = nil, 0
		c.rd.mu.Unlock()
		signal(c.rd.writable)
	})
	return nil
}

// CloseWrite ends the sending direction only: the peer reads what is
// buffered, then io.EOF, while this end can still read.
func (c *pipeConn) CloseWrite() error {
	c.wr.mu.Lock()
	c.wr.wclosed = true
	c.wr.mu.Unlock()
	signal(c.wr.readable)
	return nil
}

func (c *pipeConn) LocalAddr() net.Addr  { return c.local }
func (c *pipeConn) RemoteAddr() net.Addr { return c.remote }

func (c *pipeConn) SetDeadline(t time.Time) error {
	c.rd.rdl.set(t)
	c.wr.wdl.set(t)
	return nil
}
func (c *pipeConn) SetReadDeadline(t time.Time) error  { c.rd.rdl.set(t); return nil }
func (c *pipeConn) SetWriteDeadline(t time.Time) error { c.wr.wdl.set(t); return nil }

// deadline is a settable point in time whose passing closes a channel.
type deadline struct {
	mu    sync.Mutex  // guards timer and fired
	timer *time.Timer // fires at the deadline; nil when none is set
	fired chan struct{}
}

func newDeadline() *deadline { return &deadline{fired: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		// The timer fired or is firing: whatever it closed is stale now.
		d.fired = make(chan struct{})
	}
	d.timer = nil
	select {
	case <-d.fired:
		d.fired = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(d.fired)
		return
	}
	ch := d.fired
	d.timer = time.AfterFunc(dur, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.fired == ch {
			select {
			case <-ch:
			default:
				close(ch)
			}
		}
	})
}

func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fired
}

func (d *deadline) expired() bool {
	select {
	case <-d.wait():
		return true
	default:
		return false
	}
}
