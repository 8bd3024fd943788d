//go:build !(linux || darwin)

package telemetry

import (
	"errors"
	"runtime"
)

// diskSpace is not implemented on this platform.
func diskSpace(string) (total, free uint64, err error) {
	return 0, 0, errors.New("free space is not available on " + runtime.GOOS)
}

// canWrite is not checked on this platform: the store reports failures.
func canWrite(string) error { return nil }
