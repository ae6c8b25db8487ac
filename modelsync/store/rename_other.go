//go:build !linux

package store

import (
	"errors"
	"os"
)

// errPlatform: this system lacks renameat2(RENAME_NOREPLACE), which publishing needs so
// that an existing version is never replaced. The rest of the module builds and its
// offline commands run; New fails at start.
var errPlatform = errors.New("modelsync publishes with renameat2(RENAME_NOREPLACE); run it on Linux")

func checkPlatform() error { return errPlatform }

func renameNoReplace(oldp, newp string) error {
	return &os.LinkError{Op: "rename", Old: oldp, New: newp, Err: errPlatform}
}
