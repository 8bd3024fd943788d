//go:build !unix

package app

import "os"

// fileGroup is the group owning a file: unknown here.
func fileGroup(os.FileInfo) (int, bool) { return 0, false }
