// Package testserve puts a test's in-process server on a real loopback TCP
// socket (an accept loop whose goroutines the test owns and waits for), and
// finds ports for the programs a test starts. Imported by tests only.
package testserve

import (
	"errors"
	"net"
	"sync"
	"testing"
)

// Listener hands every accepted connection to a serve function on a
// goroutine of its own.
type Listener struct {
	ln     net.Listener
	loop   sync.WaitGroup // the accept loop
	serves sync.WaitGroup // the serve calls
}

// Loopback listens on 127.0.0.1:0 and serves every connection with serve.
// The caller stops it: Close, then whatever makes serve return (stopping
// the broker the connections belong to), then Wait.
func Loopback(t testing.TB, serve func(net.Conn)) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return Serve(ln, serve)
}

// Serve accepts on ln (a TLS listener, say) as Loopback does.
func Serve(ln net.Listener, serve func(net.Conn)) *Listener {
	l := &Listener{ln: ln}
	l.loop.Add(1)
	go func() {
		defer l.loop.Done()
		for {
			conn, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue // a connection that failed before it was accepted
			}
			l.serves.Add(1)
			go func() {
				defer l.serves.Done()
				serve(conn)
			}()
		}
	}()
	return l
}

// Addr is the address clients dial (host:port).
func (l *Listener) Addr() string { return l.ln.Addr().String() }

// Close stops accepting and waits for the accept loop; the connections
// already accepted stay open.
func (l *Listener) Close() {
	_ = l.ln.Close()
	l.loop.Wait()
}

// Wait waits for every serve call to return.
func (l *Listener) Wait() { l.serves.Wait() }
