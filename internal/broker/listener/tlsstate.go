package listener

import (
	"crypto/tls"
	"net"
)

// TLSStater is implemented by connections that carry TLS underneath
// another layer, such as MQTT over WSS, where the Handler does not get the
// *tls.Conn itself.
type TLSStater interface {
	// TLSConnectionState returns the state of the completed handshake,
	// or false when the connection is not over TLS.
	TLSConnectionState() (tls.ConnectionState, bool)
}

// TLSState returns the TLS state of a connection a Listener handed over:
// the peer's certificates (verified chains when the port verifies client
// certificates), version and cipher suite. The handshake is complete
// before the Handler gets the connection. ok is false for plain TCP and
// WebSocket connections.
func TLSState(conn net.Conn) (st tls.ConnectionState, ok bool) {
	switch c := conn.(type) {
	case *tls.Conn:
		return c.ConnectionState(), true
	case TLSStater:
		return c.TLSConnectionState()
	}
	return tls.ConnectionState{}, false
}
