//go:build unix

package broker

import "syscall"

// fdLimit is the process's open file limit (Go raises the soft limit to
// the hard one at start).
func fdLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1 << 20
	}
	return rl.Cur
}
