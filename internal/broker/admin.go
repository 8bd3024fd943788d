package broker

import "github.com/edgeport/edgeport/internal/mqtt/packet"

// DisconnectListener ends every connection that came through the named
// listener (MQTT 5 clients are told 0x8B, server shutting down, with
// reason), after flushing what is queued for them, and returns how many it
// ended. Sessions are kept or ended as on any disconnect. It does not wait
// for the connections to close.
func (b *Broker) DisconnectListener(name, reason string) int {
	b.connMu.Lock()
	defer b.connMu.Unlock()
	n := 0
	for c := range b.conns {
		if c.ls.name == name {
			c.disconnect(packet.ServerShuttingDown, reason)
			n++
		}
	}
	return n
}
