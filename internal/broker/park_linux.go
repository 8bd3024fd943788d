package broker

import (
	"errors"
	"net"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// parker holds idle connections without a goroutine each. A plain TCP
// connection that has been quiet for parkAfter, between packets, hands its
// socket to the parker and its reader goroutine returns; the parker watches
// every parked socket with one epoll instance (level-triggered, one-shot,
// beside the Go runtime's own registration) and starts a fresh reader
// goroutine when data or the peer's close arrives, when the keep-alive
// deadline passes, or when the server ends the connection (unpark). An
// idle connection then costs its heap objects only, not a goroutine stack
// (4 KiB once a reader has run the read path).
//
// Invariant: a parked socket is never closed. Everything that closes a
// connection's socket from outside its reader unparks it first (see
// client.closeAfterFlush and client.closeNow), so the parker never touches
// a descriptor that was closed and maybe reused.
type parker struct {
	mu      sync.Mutex        // guards the fields below
	epfd    int               // -1 until started
	wakeR   int               // read end of the pipe that interrupts EpollWait
	wakeW   int               // write end
	parked  map[int32]*client // by socket descriptor
	stopped bool              // no more parking
	done    chan struct{}     // closed when the run goroutine has exited; nil until started
	// sinceRelease counts connections parked since memory was last given
	// back to the operating system (see releaseMemory).
	sinceRelease int
}

// parkSweep is how often parked connections' keep-alive deadlines are checked.
const parkSweep = 500 * time.Millisecond

// When releaseAfter connections have parked since the last release, and
// releaseEvery has passed, the parker gives the memory their reader
// goroutines held back to the operating system (debug.FreeOSMemory: a
// collection, which frees the dead goroutines' stacks, then a scavenge).
// Without it the process keeps the peak of the connections' set-up: the
// runtime frees dead goroutines' stacks only at its next collection, which
// an idle broker may not need for minutes, and keeps freed pages below its
// heap goal for reuse. Rate limited, it costs one collection a few times a
// minute at most, and only after waves of connections going quiet.
const (
	releaseAfter = 1000
	releaseEvery = 10 * time.Second
)

func (p *parker) init() { p.epfd, p.wakeR, p.wakeW = -1, -1, -1 }

// startLocked creates the epoll instance and its goroutine on first use.
func (p *parker) startLocked() bool {
	if p.epfd >= 0 {
		return true
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return false
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		unix.Close(epfd)
		return false
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fds[0])}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fds[0], &ev); err != nil {
		unix.Close(epfd)
		unix.Close(fds[0])
		unix.Close(fds[1])
		return false
	}
	p.epfd, p.wakeR, p.wakeW = epfd, fds[0], fds[1]
	p.parked = make(map[int32]*client)
	p.done = make(chan struct{})
	go p.run(epfd, fds[0])
	return true
}

// park registers c's socket and reports whether c is parked; when it is,
// the caller's goroutine must return without touching c's reader again.
func (p *parker) park(c *client) bool {
	tc, ok := c.conn.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Checked under p.mu, which unpark takes too: either unpark finds c
	// parked, or park sees that the connection is ending and keeps reading.
	if p.stopped || c.ending.Load() || c.dead.Load() || !p.startLocked() {
		return false
	}
	var added bool
	cerr := rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd)}
		if unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev) == nil {
			c.parkedFD = int32(fd)
			p.parked[int32(fd)] = c
			p.sinceRelease++
			added = true
		}
	})
	return cerr == nil && added
}

// unpark starts a reader for c if it is parked.
func (p *parker) unpark(c *client) {
	p.mu.Lock()
	woke := p.removeLocked(c)
	p.mu.Unlock()
	if woke {
		go c.resume()
	}
}

// removeLocked takes c out of the epoll set, reporting whether it was parked.
func (p *parker) removeLocked(c *client) bool {
	fd := c.parkedFD
	if fd < 0 || p.parked[fd] != c {
		return false
	}
	delete(p.parked, fd)
	c.parkedFD = -1
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	return true
}

// stop ends parking; the broker calls it once every connection has ended,
// so nothing is parked. It waits for the goroutine.
func (p *parker) stop() {
	p.mu.Lock()
	p.stopped = true
	done := p.done
	if p.wakeW >= 0 {
		_, _ = unix.Write(p.wakeW, []byte{0})
	}
	p.mu.Unlock()
	if done != nil {
		<-done
	}
}

func (p *parker) run(epfd, wakeR int) {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	var wake []*client
	nextSweep := time.Now().Add(parkSweep)
	var lastRelease time.Time
	for {
		n, err := unix.EpollWait(epfd, events, int(parkSweep/time.Millisecond))
		if err != nil && !errors.Is(err, syscall.EINTR) {
			n = 0
		}
		p.mu.Lock()
		if p.stopped {
			for _, c := range p.parked {
				p.removeLocked(c)
				wake = append(wake, c)
			}
			unix.Close(p.epfd)
			unix.Close(p.wakeR)
			unix.Close(p.wakeW)
			p.epfd, p.wakeR, p.wakeW = -1, -1, -1
			p.mu.Unlock()
			for _, c := range wake {
				go c.resume()
			}
			return
		}
		for i := range n {
			fd := events[i].Fd
			if int(fd) == wakeR {
				continue
			}
			if c := p.parked[fd]; c != nil && p.removeLocked(c) {
				wake = append(wake, c)
			}
		}
		release := false
		if now := time.Now(); !now.Before(nextSweep) {
			nextSweep = now.Add(parkSweep)
			t := now.UnixNano()
			for _, c := range p.parked {
				if c.kaDeadline != 0 && t >= c.kaDeadline && p.removeLocked(c) {
					wake = append(wake, c)
				}
			}
			if p.sinceRelease >= releaseAfter && now.Sub(lastRelease) >= releaseEvery {
				release, lastRelease, p.sinceRelease = true, now, 0
			}
		}
		p.mu.Unlock()
		for i, c := range wake {
			go c.resume()
			wake[i] = nil
		}
		wake = wake[:0]
		if release {
			debug.FreeOSMemory()
		}
	}
}

// count is the number of parked connections.
func (p *parker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}
