// Package store is durable storage for broker state (sessions, queues, in-flight, retained, key-value)
// on an embedded Pebble database, with group commit.
package store

// Key namespaces and record tags; the on-disk format follows.
//
// # Keys
//
// Every key starts with a one-byte namespace and a NUL. NUL is a safe
// separator because MQTT UTF-8 strings (client identifiers, topic names and
// filters) must not contain U+0000 (MQTT 3.1.1 §1.5.3, MQTT 5 §1.5.4); the
// store refuses a client ID or KV bucket that contains one, so the end of
// such a component is always the first NUL after it.
//
//	c\x00{clientID}\x00e{seq: 8 bytes big-endian}   queued/in-flight Entry
//	c\x00{clientID}\x00i{packetID: 2 bytes BE}      inbound QoS 2 packet ID (empty value)
//	c\x00{clientID}\x00s                            Session
//	r\x00{topic}                                     retained Message (topic is the rest of the key)
//	k\x00{bucket}\x00{key}                           KV value (key is the rest of the key, any bytes);
//	                                                 buckets: the state store's, "resources" (API-created resources)
//	m\x00format                                      store format version (one byte)
//
// Everything a client owns shares the prefix c\x00{clientID}\x00, so one
// forward scan meets a client's entries (in Seq order), then its inbound IDs,
// then its session record, and DeleteSession is a single range deletion of
// [c\x00{clientID}\x00, c\x00{clientID}\x01). Big-endian integers keep numeric
// order equal to byte order.
//
// # Values
//
// Values are a compact binary encoding whose first byte is a record version
// (currently 1): unsigned varints for lengths and counts, zig-zag varints for
// signed durations and times, bit flags packed into one byte. Decoders check
// every length against the remaining bytes, reject unknown flag bits and
// trailing bytes, and report ErrCorrupt naming the key. An Entry's Seq lives
// only in its key.
//
// # Durability
//
// Writes are collected into Txns and handed to a single committer goroutine
// that merges all queued Txns into one Pebble batch and makes it durable
// with one WAL fsync before any of their callbacks run (SyncAlways and
// SyncBatch). SyncNone skips the fsync and may lose the most recent
// acknowledged writes on any crash.
const (
	nsClient   = 'c'
	nsRetained = 'r'
	nsKV       = 'k'
	nsMeta     = 'm'
	sep        = 0x00

	tagEntry   = 'e'
	tagInbound = 'i'
	tagSession = 's'
)
