package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/edgeport/edgeport/internal/lifecycle"
)

// DataDirInUseError reports that another process holds the data
// directory's lock; PID is 0 when the lock file does not say whose.
type DataDirInUseError struct {
	Dir string
	PID int
}

func (e *DataDirInUseError) Error() string {
	pid := "pid unknown"
	if e.PID > 0 {
		pid = "pid " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("data directory %s is in use by another edgeport (%s)", e.Dir, pid)
}

// lockFileName is the lock file in the data directory. It holds the pid of
// the edgeport that holds the lock, so that a second one can say who.
const lockFileName = "edgeport.lock"

// dirLock holds an exclusive advisory lock on <data-dir>/edgeport.lock
// while the app runs. Every part that keeps state in the data directory
// (the store, the API token, resources, secrets, PKI) is started after it,
// so a second instance fails first, and with the pid of the first.
type dirLock struct {
	dir string
	f   *os.File // set by Start, cleared by Stop
}

var _ lifecycle.Component = (*dirLock)(nil)

func (l *dirLock) Start(context.Context) error {
	path := filepath.Join(l.dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	if err := lockFile(f); err != nil {
		old, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, errLocked) {
			pid, _ := strconv.Atoi(string(bytes.TrimSpace(old)))
			return &DataDirInUseError{Dir: l.dir, PID: pid}
		}
		return fmt.Errorf("locking %s: %w", path, err)
	}
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("writing the pid to %s: %w", path, err)
	}
	l.f = f
	return nil
}

// Stop empties the file (no pid: nobody holds it) and releases the lock
// by closing it. The file stays: removing it could race a second
// instance that already opened it and waits for the lock.
func (l *dirLock) Stop(context.Context) error {
	if l.f == nil {
		return nil
	}
	_ = l.f.Truncate(0)
	err := l.f.Close()
	l.f = nil
	return err
}
