//go:build !unix

package broker

// fdLimit: handles are not a small fixed budget outside Unix.
func fdLimit() uint64 { return 1 << 20 }
