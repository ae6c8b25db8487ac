//go:build unix

package preprocess

import (
	"io/fs"
	"syscall"
)

// fileIDOf keeps what os.SameFile compares on Unix (device and inode), with the
// size and modification time.
func fileIDOf(fi fs.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano(), ok: true}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), uint64(st.Ino)
	}
	return id
}
