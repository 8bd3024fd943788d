package testserve

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// reserved holds, for the life of the process, a lock on every port
// FreePort gave: the same test binary never gets one twice, and no other
// test binary on the machine gets it, even while the program it was for
// is down (a cluster node between a kill and its restart).
var (
	reservedMu sync.Mutex           // guards reserved
	reserved   = map[int]*os.File{} // port -> its locked reservation file
)

// FreePort returns a TCP port on host (an IP address) that a program the
// test starts can be told to listen on, for programs that cannot bind
// port 0 and report what they got (mosquitto, Prometheus, a modbus server,
// a cluster node's route port that every node must know in advance).
//
// A port from "listen on :0, close, reuse" is in the kernel's ephemeral
// range, where any outgoing connection of a busy machine (the rest of the
// suite runs in parallel) may take it as its source port before the
// program binds it: a rare but real "address already in use" (CI lost a
// cluster test to it: a node's route port taken between the pick and
// nats-server's bind). FreePort picks below that range instead, where
// only listeners that chose the same number compete, reserves the number
// machine-wide with a lock file (test binaries of several packages run
// at once), and checks that the port is bindable now.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	lo, hi := 20000, ephemeralLow()-1
	if hi-lo < 1000 { // an unusual ephemeral range: fall back to the kernel's choice
		return kernelPort(t, host)
	}
	dir := filepath.Join(os.TempDir(), "edgeport-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatalf("port reservations: %v", err)
	}
	reservedMu.Lock()
	defer reservedMu.Unlock()
	for range 500 {
		p := lo + rand.IntN(hi-lo+1)
		if reserved[p] != nil {
			continue
		}
		f, err := reserve(dir, p)
		if err != nil {
			continue // another test binary has it
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			f.Close()
			continue // in use
		}
		ln.Close()
		reserved[p] = f
		return p
	}
	t.Fatalf("no free port on %s in %d-%d after 500 tries", host, lo, hi)
	return 0
}

// reserve takes an exclusive lock on dir/port, which the kernel drops
// when the process ends, however it ends.
func reserve(dir string, port int) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("port %d reserved elsewhere: %w", port, err)
	}
	return f, nil
}

// FreeAddr is FreePort on 127.0.0.1 as "127.0.0.1:port".
func FreeAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(FreePort(t, "127.0.0.1"))
}

// FreeAddrs is n FreeAddrs.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = FreeAddr(t)
	}
	return addrs
}

// kernelPort is a port the kernel picked, free a moment ago.
func kernelPort(t testing.TB, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}
