package listener

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/testwait"
)

// frame builds a client-to-server WebSocket frame (masked, as clients must).
func frame(fin bool, opcode byte, payload []byte) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n < 1<<16:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	mask := []byte{0x11, 0x22, 0x33, 0x44}
	out = append(out, mask...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}

// FuzzWebSocketFrames writes arbitrary bytes after a valid upgrade: the
// listener must neither crash nor hang (the connection's handler returns
// once the client goes away) and keeps serving other connections.
func FuzzWebSocketFrames(f *testing.F) {
	connect := []byte{0x10, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 60, 0, 0, 3, 'a', 'b', 'c'}
	f.Add(frame(true, 2, []byte("hello")))
	f.Add(frame(true, 2, connect))
	f.Add(append(frame(false, 2, connect[:5]), frame(true, 0, connect[5:])...)) // fragmented
	f.Add([]byte{0x82, 0x05, 'h', 'e', 'l', 'l', 'o'})                          // unmasked
	f.Add(frame(true, 1, []byte("text")))
	f.Add(frame(true, 9, []byte("ping")))
	f.Add(frame(true, 10, nil)) // unsolicited pong
	f.Add(frame(true, 8, []byte{0x03, 0xe8}))
	f.Add(frame(true, 8, []byte{0x03})) // close with a one-byte code
	f.Add(frame(false, 9, nil))         // fragmented control frame
	f.Add(frame(true, 0, []byte("x")))  // continuation without a start
	f.Add([]byte{0xf2, 0x80, 0, 0, 0, 0})
	f.Add([]byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4})
	f.Add([]byte{0x82, 0xfe, 0x00})
	f.Add(frame(true, 2, make([]byte, 300)))
	f.Add([]byte{})

	l := startListener(f, Config{Protocol: ProtocolWebSocket}, echoHandler(),
		func(l *Listener) { l.closeGrace = 20 * time.Millisecond })
	f.Fuzz(func(t *testing.T, data []byte) {
		bad, _ := rawUpgrade(t, l.Addr().String())
		_ = bad.SetDeadline(time.Now().Add(testTimeout))
		_, _ = bad.Write(data)
		good := dialStream(t, l, nil)
		assertEcho(t, good, "still served")
		bad.Close()
		good.Close()
		testwait.For(t, "every handler to return", func() bool { return l.Stats().Open == 0 })
	})
}
