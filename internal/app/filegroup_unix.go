//go:build unix

package app

import (
	"os"
	"syscall"
)

// fileGroup is the group owning a file.
func fileGroup(fi os.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Gid), true
}
