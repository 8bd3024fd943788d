//go:build !unix

package app

import (
	"errors"
	"os"
)

var errLocked = errors.New("locked")

// lockFile does nothing where flock is missing: the store's own lock still
// refuses a second instance, with a less helpful message.
func lockFile(*os.File) error { return nil }
