package testserve

import (
	"io"
	"net"
	"testing"
)

// Every connection is served, and Wait returns once each serve call has.
func TestLoopback(t *testing.T) {
	done := make(chan struct{})
	l := Loopback(t, func(c net.Conn) {
		defer c.Close()
		_, _ = io.Copy(c, c)
		<-done
	})
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q, %v", buf, err)
	}
	l.Close()
	if _, err := net.Dial("tcp", l.Addr()); err == nil {
		t.Fatal("dialed a closed listener")
	}
	c.Close()
	close(done)
	l.Wait()
}
