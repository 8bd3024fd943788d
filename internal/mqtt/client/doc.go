// Package client is Edgeport's MQTT client: MQTT 5 (and 3.1.1), in-process
// to the broker without a socket or over TCP, TLS and WebSocket.
//
// Every Edgeport component that talks MQTT uses it: the self-test probe,
// the state store and the CLI today, connectors and dataflows next. It is
// built on internal/mqtt/packet.
//
// # Lifecycle
//
// New checks Options and returns an idle Client. Connect makes the first
// connection and fails if it cannot (the CLI's way); Start returns at once
// and connects in the background (a component's way: a broker that is not
// ready yet does not fail the component). Either way the client then
// reconnects whenever the connection is lost, with exponential backoff and
// jitter, resuming the session: reconnections send Clean Start 0 and the
// Session Expiry of Options; when the server still has the session,
// unacknowledged QoS 1/2 publishes are resent with DUP and PUBRELs resent;
// when it does not, subscriptions are made again and unacknowledged
// publishes are sent again as new messages. Stop disconnects and waits for
// every goroutine the client started, the running handler included;
// nothing outlives it. A Client is used once: it cannot be started again
// after Stop.
//
// # Who blocks
//
// Publish (QoS 1/2), Subscribe, Unsubscribe and Request block until the
// server answered or ctx ends, and fail at once when the client stops.
// A call whose ctx ends returns ctx's error; what it started may still
// complete on the server (a sent PUBLISH stays in the session). QoS 0
// Publish blocks only while more than 4 MiB wait to be written.
// PublishAsync never blocks; its callback runs on a client goroutine and
// must not block either. Internally, the connection has one reader and one
// writer goroutine; packets are encoded into one buffer that the writer
// sends in a single write, so concurrent publishers share system calls.
// Every wait has a deadline: ConnectTimeout for the handshake,
// WriteTimeout for each write, 1.5 × keep-alive for the server's silence
// (the writer pings after half a keep-alive of its own silence).
//
// # Receiving and acknowledging
//
// Handlers run one at a time, in order of receipt, on one dispatch
// goroutine, separate from the reader, so a handler may publish and wait
// for the acknowledgement. A QoS 1/2 message is acknowledged when its
// handler returns, or, with Subscription.ManualAck, when the handler (or
// any goroutine it hands the message to) calls Message.Ack: a dataflow
// acknowledges only once its destination has the message, so the broker's
// session is the buffer that survives a crash. Acknowledgements leave in
// order of receipt, as MQTT requires: an early Ack waits for the messages
// received before it. The server's in-flight window is Options.
// ReceiveMaximum, which bounds the messages a slow handler holds; QoS 0
// messages beyond MaxQueuedQoS0 are dropped and counted. A QoS 2 message is
// delivered once per connection; one redelivered on a new connection
// before its PUBREC left is delivered again (at least once).
//
// # Buffers
//
// A received Message owns its topic, payload and properties (one copy of
// the packet), and the handler may keep them. Publish, PublishAsync and
// Request encode the message before they return or block, so the caller
// may reuse its buffers as soon as the call returns.
//
// # Errors
//
// A refusal by the server is a *ReasonError carrying the packet type, the
// reason code (errors.Is(err, packet.NotAuthorized) works) and the reason
// string. ErrClosed, ErrNotConnected, ErrConnectionLost, ErrNoResponder and
// ErrPacketTooLarge are the client's own.
//
// # In-process transport
//
// NewInProcess(serve) dials by handing one end of a Pipe to serve, which is
// the broker's ServeConn with its internal listener: the broker treats the
// connection as trusted (see broker.InternalListener). Pipe is buffered,
// unlike net.Pipe, so writer and reader do not wait for each other byte by
// byte (see BENCHMARKS.md for the difference it makes). Internal clients'
// identifiers begin with "$edgeport/".
package client
