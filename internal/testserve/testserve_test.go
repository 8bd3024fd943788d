package testserve

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
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

// FreePort hands distinct ports below the ephemeral range that can be bound.
func TestFreePort(t *testing.T) {
	low := ephemeralLow()
	seen := map[int]bool{}
	for range 20 {
		p := FreePort(t, "127.0.0.1")
		if seen[p] {
			t.Fatalf("port %d handed twice", p)
		}
		seen[p] = true
		if p < 20000 || p >= low {
			t.Fatalf("port %d outside 20000-%d", p, low-1)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		ln.Close()
	}
}

// A port FreePort handed stays reserved against every other open of its
// lock file, which is what another test binary would do.
func TestFreePortReserved(t *testing.T) {
	p := FreePort(t, "127.0.0.1")
	f, err := reserve(filepath.Join(os.TempDir(), "edgeport-test-ports"), p)
	if err == nil {
		f.Close()
		t.Fatalf("port %d reserved twice", p)
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("second reservation of %d: %v, want EWOULDBLOCK", p, err)
	}
}
