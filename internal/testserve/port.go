package testserve

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// handed is every port FreePort gave in this process: the same test binary
// never gets one twice, even once the program it was for has let it go.
var (
	handedMu sync.Mutex       // guards handed
	handed   = map[int]bool{} // ports returned by FreePort
)

// FreePort returns a TCP port on host (an IP address) that a program the
// test starts can be told to listen on, for programs that cannot bind
// port 0 and report what they got (mosquitto, Prometheus, a modbus server,
// a cluster node's route port that every node must know in advance).
//
// A port from "listen on :0, close, reuse" is in the kernel's ephemeral
// range, where any outgoing connection of a busy machine (the rest of the
// suite runs in parallel) may take it before the program binds it: a rare
// but real "address already in use". FreePort picks below that range
// instead, where only listeners that chose the same number compete, and
// checks that the port is bindable now.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	lo, hi := 20000, ephemeralLow()-1
	if hi-lo < 1000 { // an unusual ephemeral range: fall back to the kernel's choice
		return kernelPort(t, host)
	}
	handedMu.Lock()
	defer handedMu.Unlock()
	for range 200 {
		p := lo + rand.IntN(hi-lo+1)
		if handed[p] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			continue // in use
		}
		ln.Close()
		handed[p] = true
		return p
	}
	t.Fatalf("no free port on %s in %d-%d after 200 tries", host, lo, hi)
	return 0
}

// FreeAddr is FreePort on 127.0.0.1 as "127.0.0.1:port".
func FreeAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(FreePort(t, "127.0.0.1"))
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
