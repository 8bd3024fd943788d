//go:build linux || darwin

package telemetry

import (
	"fmt"
	"syscall"
)

// diskSpace returns the size of the file system holding dir and the bytes
// available to unprivileged users on it.
func diskSpace(dir string) (total, free uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := uint64(st.Bsize)
	return st.Blocks * bs, st.Bavail * bs, nil
}

// canWrite asks the kernel whether this process may create files in dir;
// it fails with EROFS on a read-only mount.
func canWrite(dir string) error {
	const wOK = 2 // W_OK
	if err := syscall.Access(dir, wOK); err != nil {
		return fmt.Errorf("access %s: %w", dir, err)
	}
	return nil
}
