// Package jsstate keeps the broker's cluster-wide state in NATS JetStream:
// which node owns each client's session, taken over by compare-and-set.
//
// Every node connects to the same JetStream (embedded in each node or
// external) and shares one key-value bucket per kind of state; the
// buckets are replicated streams, so JetStream's Raft groups, not this
// package, decide what is durable. What is replicated and how is in
// docs/cluster.md, "What is replicated and how".
package jsstate
