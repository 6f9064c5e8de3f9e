package sync

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ntc-project/ntc/chunk"
)

// Sizes over which a repository's files are refused before they are read:
// whatever wrote them, reading them costs no more than this.
const (
	maxCurrentFile  = 64
	maxStateFile    = 4 << 10
	maxManifestFile = 4 << 20
	// maxIndexFile is an index of 1<<24 entries (the receiver's default
	// bound), each at most a 10-byte length and an ID.
	maxIndexFile = 64 + (1<<24)*42 + 32
)

// openFile opens the repository's file at rel (slash-separated) for
// reading: never outside the repository (os.Root), never through a
// symbolic link, a regular file of at most limit bytes.
func (r *Repo) openFile(rel string, flag int, limit int64) (*os.File, error) {
	root, err := os.OpenRoot(r.dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	name := filepath.FromSlash(rel)
	lfi, err := root.Lstat(name)
	if err != nil {
		return nil, err
	}
	if !lfi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "open", Path: filepath.Join(r.dir, name), Err: fmt.Errorf("not a regular file (%s)", lfi.Mode().Type())}
	}
	f, err := root.OpenFile(name, flag, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !os.SameFile(fi, lfi) {
		err = &fs.PathError{Op: "open", Path: f.Name(), Err: fmt.Errorf("replaced while being opened")}
	}
	if err == nil && limit > 0 && fi.Size() > limit {
		err = &fs.PathError{Op: "open", Path: f.Name(), Err: fmt.Errorf("%d bytes, over the %d this file may hold", fi.Size(), limit)}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// readFile reads a file of the repository that openFile accepts.
func (r *Repo) readFile(rel string, limit int64) ([]byte, error) {
	f, err := r.openFile(rel, os.O_RDONLY, limit)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// readIndex reads the index file at rel.
func (r *Repo) readIndex(rel string) (*chunk.Index, error) {
	f, err := r.openFile(rel, os.O_RDONLY, maxIndexFile)
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	defer f.Close()
	x, err := chunk.DecodeIndex(f)
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", f.Name(), err)
	}
	return x, nil
}
