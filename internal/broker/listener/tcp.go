package listener

import (
	"errors"
	"net"
	"time"
)

// acceptLoop owns ln's accept side until Stop closes ln. Go enables
// TCP_NODELAY on every TCP connection by default, which is what MQTT wants:
// the broker already coalesces its writes.
func (l *Listener) acceptLoop(ln net.Listener) {
	defer close(l.done)
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			l.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-l.quit:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0

		if !l.reserve() {
			l.log.Debug("connection limit reached; closing", "remote", conn.RemoteAddr().String())
			_ = conn.Close()
			continue
		}
		go l.handOff(conn)
	}
}
