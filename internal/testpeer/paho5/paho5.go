// Package paho5 connects Eclipse Paho's MQTT 5 client (paho.golang) to a
// broker under test and records what it receives. Imported by tests only.
package paho5

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/testwait"
)

// Wait bounds the connect and each packet exchange (Paho's PacketTimeout).
const Wait = 5 * time.Second

// Inbox collects what a client receives. Paho calls handlers from a single
// goroutine that also drives acknowledgements, so adding never blocks.
type Inbox[T any] struct {
	mu   sync.Mutex // guards msgs
	msgs []T
}

// Add records m.
func (in *Inbox[T]) Add(m T) {
	in.mu.Lock()
	in.msgs = append(in.msgs, m)
	in.mu.Unlock()
}

// All returns what arrived so far, in order.
func (in *Inbox[T]) All() []T {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.msgs)
}

// WaitFor polls until match has accepted n messages and returns those.
func (in *Inbox[T]) WaitFor(t testing.TB, what string, n int, match func(T) bool) []T {
	t.Helper()
	var got []T
	if !testwait.Within(testwait.Timeout, func() bool {
		got = got[:0]
		for _, m := range in.All() {
			if match(m) {
				got = append(got, m)
			}
		}
		return len(got) >= n
	}) {
		t.Fatalf("timed out waiting for %d× %s, have %d", n, what, len(got))
	}
	return got
}

// Client is a connected paho.golang client with what a test observes of it.
type Client struct {
	*paho.Client
	Conn    net.Conn // the socket: closing it ends the connection as a crash would
	Connack *paho.Connack
	In      Inbox[*paho.Publish]
	Discs   Inbox[*paho.Disconnect] // DISCONNECTs from the server
	Closed  chan struct{}           // closed when the connection ends, whoever ended it
}

// Dial connects to addr over TCP with cp; each of adjust may change the
// client's configuration first. The CONNACK (Connack, nil if none came) or the
// error says how it went; an accepted client is disconnected when the test
// ends.
func Dial(t testing.TB, addr string, cp *paho.Connect, adjust ...func(*paho.ClientConfig)) (*Client, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c := &Client{Conn: conn, Closed: make(chan struct{})}
	var once sync.Once
	end := func() { once.Do(func() { close(c.Closed) }) }
	cc := paho.ClientConfig{
		Conn: &lockedConn{Conn: conn, end: end},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { c.In.Add(pr.Packet); return true, nil },
		},
		OnServerDisconnect: func(d *paho.Disconnect) { c.Discs.Add(d); end() },
		OnClientError:      func(error) { end() },
		PacketTimeout:      Wait,
	}
	for _, f := range adjust {
		f(&cc)
	}
	c.Client = paho.NewClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	c.Connack, err = c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		return c, err
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, nil
}

// lockedConn reports when reading from the connection fails: the broker
// closed it (with or without DISCONNECT).
//
// It is a sync.Locker, and must be: Paho writes packets from several
// goroutines at once with nothing of its own between them (its pinger's
// first PINGREQ right after CONNACK, the PUBACKs of the session's reader,
// the caller's SUBSCRIBE), each packet as net.Buffers (fixed header,
// identifier, property length, properties, payload). On a bare
// *net.TCPConn that is one writev under the socket's write lock; on a
// wrapper like this one net.Buffers falls back to one Write per buffer, and
// two packets interleave on the wire: a SUBSCRIBE with a PINGREQ or three
// PUBACKs between its header and its body, which the broker rightly closes
// as malformed ("truncated topic filter"). ControlPacket.WriteTo holds a
// Conn that is a sync.Locker across the whole packet (see paho's
// ClientConfig.Conn), which keeps every packet whole.
type lockedConn struct {
	net.Conn
	sync.Mutex // held by Paho across each packet it writes
	end        func()
}

func (w *lockedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err != nil {
		w.end()
	}
	return n, err
}
