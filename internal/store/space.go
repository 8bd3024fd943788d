package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A full disk must not take the broker down. Two things protect the store
// before the file system fills:
//
//   - headroom: Txns that add data are refused (ErrDiskFull, a kind of
//     ErrQuotaExceeded) while the file system's free space is below
//     Options.ReserveBytes, whoever filled it;
//   - a reserve file (ballastName, half the headroom) that holds real disk
//     blocks. When a write fails with ENOSPC anyway (another program
//     filled the disk between two measurements), Pebble's disk-full hook
//     deletes it, so the write that failed is retried once with room, and
//     Pebble's own work (deletions, memtable flushes) goes on.
//
// The store stays full until there is room for the headroom and the
// reserve file again; then it recreates the file and takes data again.
// Opening a store on a full disk releases the reserve file so that Pebble
// can replay its log; if that is not enough, Open fails at once with
// ErrNoSpace rather than letting Pebble retry a failing flush for ever.

// ballastName is the reserve file in the store directory. Pebble ignores
// files whose names it does not know.
const ballastName = "EDGEPORT-RESERVE"

// DefaultReserveBytes is the free space kept on the store's file system
// unless Options.ReserveBytes says otherwise; on a file system smaller than
// twenty times that, a twentieth of it.
const DefaultReserveBytes = 32 << 20

var (
	// ErrDiskFull is passed to a Commit callback when the Txn adds data
	// and the file system's free space is below the reserve. It wraps
	// ErrQuotaExceeded: to a client both are "quota exceeded".
	ErrDiskFull = fmt.Errorf("%w: the file system is (nearly) full", ErrQuotaExceeded)
	// ErrNoSpace is returned by Open when the file system lacks the space
	// to open the store.
	ErrNoSpace = errors.New("store: no space left on the file system")
)

// freeBytes returns the bytes available to this process on dir's file
// system, or -1 when it cannot be measured.
func freeBytes(dir string) int64 {
	u, err := vfs.Default.GetDiskUsage(dir)
	if err != nil {
		return -1
	}
	return int64(u.AvailBytes)
}

// reserveFor resolves Options.ReserveBytes for dir: 0 picks the default
// (scaled down on small file systems), negative disables the protection.
func reserveFor(dir string, want int64) int64 {
	if want < 0 {
		return 0
	}
	if want > 0 {
		return want
	}
	u, err := vfs.Default.GetDiskUsage(dir)
	if err != nil {
		return DefaultReserveBytes
	}
	return min(DefaultReserveBytes, int64(u.TotalBytes/20))
}

// openNeed estimates the space Pebble needs to open dir: its write-ahead
// logs are replayed and flushed into tables of about their size, and a new
// log and manifest are started.
func openNeed(dir string, memTable int64) int64 {
	need := 2*memTable + 1<<20
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".log") {
			if fi, err := e.Info(); err == nil {
				need += fi.Size()
			}
		}
	}
	return need
}

// prepareSpace runs before Pebble opens dir: on a disk too full to open
// the store it releases the reserve file, and when even that is not
// enough it fails with ErrNoSpace.
func (s *Store) prepareSpace() error {
	if s.reserve == 0 {
		return nil
	}
	need := openNeed(s.dir, s.opts.MemTableBytes)
	free := freeBytes(s.dir)
	if free < 0 || free >= need {
		return nil
	}
	fi, err := os.Stat(s.ballastPath())
	if err == nil && free+fi.Size() >= need && os.Remove(s.ballastPath()) == nil {
		// Only when that makes enough room: otherwise the reserve is kept
		// for the start after the operator freed some space.
		s.log.Warn("store: the disk is full: released the reserve file to open the store; new data is refused until space is freed",
			"dir", s.dir, "free_bytes", free)
		free = freeBytes(s.dir)
	}
	if free >= need {
		return nil
	}
	return fmt.Errorf("%w: %s has %d bytes free, opening the store needs about %d: free some space and start again", ErrNoSpace, s.dir, free, need)
}

func (s *Store) ballastPath() string { return filepath.Join(s.dir, ballastName) }

// ballastSize is the reserve file's size: half the headroom.
func (s *Store) ballastSize() int64 { return s.reserve / 2 }

// missingBallast is what the reserve file lacks: the free space it must
// find before the store takes data again.
func (s *Store) missingBallast() int64 {
	if s.reserve == 0 || s.ballast.Load() {
		return 0
	}
	return s.ballastSize()
}

// makeBallast creates the reserve file when there is room for it and the
// headroom; it reports whether the file is in place.
func (s *Store) makeBallast() bool {
	if s.reserve == 0 || s.ballast.Load() {
		return true
	}
	size := s.ballastSize()
	if fi, err := os.Stat(s.ballastPath()); err == nil && fi.Size() >= size {
		s.ballast.Store(true)
		return true
	}
	if free := freeBytes(s.dir); free >= 0 && free < s.reserve+size {
		return false
	}
	if err := writeBallast(s.ballastPath(), size); err != nil {
		_ = os.Remove(s.ballastPath())
		s.errs.Log(slog.LevelWarn, "ballast", "store: creating the reserve file", "dir", s.dir, "err", err)
		return false
	}
	s.ballast.Store(true)
	return true
}

// writeBallast allocates size bytes of real disk blocks in path: with
// fallocate where the file system has it (zeros written by a program could
// be stored sparse or compressed), by writing zeros otherwise.
func writeBallast(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, filePerm)
	if err != nil {
		return err
	}
	if err := allocate(f, size); err != nil {
		zeros := make([]byte, 1<<20)
		for n := int64(0); n < size && err == nil; n += int64(len(zeros)) {
			_, err = f.Write(zeros[:min(int64(len(zeros)), size-n)])
		}
		if err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// diskFull is Pebble's disk-full hook: a write failed with ENOSPC. The
// reserve file goes, so that the write, retried once, finds room; the
// store refuses new data from now on. Writes wait while it runs, so it
// only deletes a file.
func (s *Store) diskFull() {
	s.full.Store(true)
	if s.ballast.CompareAndSwap(true, false) {
		_ = os.Remove(s.ballastPath())
		s.errs.Log(slog.LevelError, "enospc", "store: the disk is full: released the reserve file; new data is refused until space is freed", "dir", s.dir)
		return
	}
	s.errs.Log(slog.LevelError, "enospc", "store: the disk is full and the reserve file is gone: free some space", "dir", s.dir)
}

// isNoSpace reports whether err is the file system's "no space left".
func isNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }

// errInterval paces the store's repeated error lines.
const errInterval = time.Minute
