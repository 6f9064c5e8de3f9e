// Package safefile reads a directory's own files as a repository must:
// never outside the directory (os.Root), never through a symbolic link
// (not even one that stays inside), only regular files (a device or FIFO
// is refused, and opening one never waits), and never more than a bound,
// checked before anything is allocated. repo, sync and capture read the
// files a repository's versions are made of through it (version records,
// indexes, metadata, HEAD, runner, acknowledgements); writing is
// internal/atomicfile's. (A few bookkeeping files a node writes for itself
// are still read with os.ReadFile: repo's lineage, capture's state.json,
// images.json and hand-off record, resume's image state in cmd.)
package safefile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// NoLimit is a limit that bounds nothing: for files that are streamed, not
// read into memory (images).
const NoLimit = -1

// Open opens the file called name (slash-separated, relative) in root for
// reading. It must be a regular file, reached without a symbolic link as
// its last element, of at most limit bytes (any size with NoLimit).
// Errors are *fs.PathError; a missing file is fs.ErrNotExist.
func Open(root *os.Root, name string, limit int64) (*os.File, error) {
	name = filepath.FromSlash(name)
	path := filepath.Join(root.Name(), name)
	// os.Root refuses a path, or a link, that leads out of root.
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	// What was opened must be the file itself: a link inside root (which
	// os.Root follows) is refused too, and so is a FIFO, device or
	// directory.
	lfi, err := root.Lstat(name)
	if err == nil && !lfi.Mode().IsRegular() {
		err = &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("not a regular file (%s): refused", lfi.Mode().Type())}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case !os.SameFile(fi, lfi):
		// Replaced (by a link, say) between the open and the Lstat.
		err = &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("replaced while being opened: refused")}
	case limit >= 0 && fi.Size() > limit:
		err = &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("holds %d bytes, more than the %d allowed: refused", fi.Size(), limit)}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Read reads the whole file that Open(root, name, limit) opens.
func Read(root *os.Root, name string, limit int64) ([]byte, error) {
	return read(root, name, limit, -1)
}

// ReadSize reads the file called name in root, which must hold exactly
// size bytes (checked before anything is read).
func ReadSize(root *os.Root, name string, size int64) ([]byte, error) {
	return read(root, name, size, size)
}

// read reads a file Open accepts; with size >= 0 it must hold that many
// bytes.
func read(root *os.Root, name string, limit, size int64) ([]byte, error) {
	f, err := Open(root, name, limit)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if size >= 0 && fi.Size() != size {
		return nil, &fs.PathError{Op: "read", Path: f.Name(), Err: fmt.Errorf("holds %d bytes, %d were declared", fi.Size(), size)}
	}
	return readN(f, fi.Size())
}

// OpenIn is Open in the directory dir.
func OpenIn(dir, name string, limit int64) (*os.File, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return Open(root, name, limit)
}

// ReadIn is Read in the directory dir.
func ReadIn(dir, name string, limit int64) ([]byte, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return Read(root, name, limit)
}

// readN reads the n bytes f held when it was opened: a file that grew
// meanwhile gives no more, one that shrank is an error.
func readN(f *os.File, n int64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, &fs.PathError{Op: "read", Path: f.Name(), Err: fmt.Errorf("%d bytes expected: %w", n, err)}
	}
	return b, nil
}
