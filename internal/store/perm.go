package store

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The store holds retained payloads, queued messages and state store
// values: nobody but the broker's user may read them.
const (
	dirPerm  fs.FileMode = 0o700
	filePerm fs.FileMode = 0o600
)

// privateFS is Pebble's file system with every file it creates made
// readable by its owner only. Pebble creates files 0666 less the umask,
// which is 0644 under the usual umask.
type privateFS struct{ vfs.FS }

func (p privateFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return private(p.FS.Create(name, category))(name)
}

func (p privateFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return private(p.FS.OpenReadWrite(name, category, opts...))(name)
}

func (p privateFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return private(p.FS.ReuseForWrite(oldname, newname, category))(newname)
}

func (p privateFS) Lock(name string) (io.Closer, error) {
	c, err := p.FS.Lock(name)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(name, filePerm); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

func (p privateFS) MkdirAll(dir string, _ os.FileMode) error { return p.FS.MkdirAll(dir, dirPerm) }

func (p privateFS) Unwrap() vfs.FS { return p.FS }

// private restricts a file just opened for writing to its owner.
func private(f vfs.File, err error) func(name string) (vfs.File, error) {
	return func(name string) (vfs.File, error) {
		if err != nil {
			return f, err
		}
		if cerr := os.Chmod(name, filePerm); cerr != nil {
			_ = f.Close()
			return nil, cerr
		}
		return f, nil
	}
}

// restrict makes dir and the files in it private: a store written by an
// earlier version (0755 and 0644) is tightened when it is opened.
func restrict(dir string) error {
	if err := os.Chmod(dir, dirPerm); err != nil {
		return fmt.Errorf("store: restricting %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("store: listing %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := os.Chmod(filepath.Join(dir, e.Name()), filePerm); err != nil {
			return fmt.Errorf("store: restricting %s: %w", e.Name(), err)
		}
	}
	return nil
}
