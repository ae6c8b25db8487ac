// Package atomicfile replaces a file so that a reader sees either its old content or
// the new, never a part, and a crash leaves no half-written file under its name.
//
// The new content goes to a uniquely named temporary file in the same directory
// (".<name>.tmp-<random>", so concurrent writers never share one and pollers that skip
// dot files ignore it), is fsynced when asked, and is renamed over the target; the
// directory is fsynced after the rename. On any failure the temporary file is removed.
//
// Concurrency: Write is safe for concurrent use; with concurrent writers of one path
// the last rename wins.
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data, created with perm. sync fsyncs the file before the
// rename and the directory after it.
func Write(path string, data []byte, perm fs.FileMode, sync bool) (err error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", tmp, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if sync {
		return SyncDir(dir)
	}
	return nil
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s for fsync: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
