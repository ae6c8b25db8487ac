//go:build linux

package store

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// checkPlatform reports whether this system can publish atomically: Linux can.
func checkPlatform() error { return nil }

// renameNoReplace renames old to new, failing with an error matching os.ErrExist if new
// exists, even as an empty directory (which plain rename(2) would replace).
func renameNoReplace(oldp, newp string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldp, unix.AT_FDCWD, newp, unix.RENAME_NOREPLACE)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
		return os.ErrExist
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// Filesystem without RENAME_NOREPLACE: check, then rename (callers serialise
		// work per model, so nothing else in this process races the check).
		if _, err := os.Lstat(newp); err == nil {
			return os.ErrExist
		}
		return os.Rename(oldp, newp)
	}
	return &os.LinkError{Op: "rename", Old: oldp, New: newp, Err: err}
}
