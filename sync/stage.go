package sync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/atomicfile"
	"github.com/ntc-project/ntc/internal/directio"
)

// staging writes the images that materialization would write whole (the
// first version of an image, or one whose file is gone) while their chunks
// arrive, so that the image bytes are written once, from memory, instead
// of read back from the store after the commit. A staged file is a
// temporary file beside the image; it replaces the image only after the
// version is committed. Losing it (a crash, a failed push) loses nothing:
// materialization can always be redone from the indexes and the store.
type staging struct {
	files []*stagedFile // by image; nil: updated in place after the commit
	at    map[chunk.ID][]stageTarget
}

type stageTarget struct{ file, entry int }

type stagedFile struct {
	f *os.File
	// direct is f opened again for direct I/O (stageWriter), nil where
	// the file system refuses it: the image's whole blocks go to the disk
	// without a second copy in the page cache, which costs the receiver
	// more CPU than any other step of a first push.
	direct  *os.File
	noDir   atomic.Bool // a direct write was refused: f for the rest
	path    string      // the image's path
	x       *chunk.Index
	written []atomic.Bool // by entry
	done    bool
}

// stage prepares staged files for the images of version idx (named names)
// of set that would otherwise be written whole; nil where images are
// materialised on demand.
func (r *Repo) stage(set string, names []string, idx []*chunk.Index) (*staging, error) {
	if r.onDemand {
		return nil, nil // images are written when asked for, not at commits
	}
	dir := filepath.Join(r.dir, "sets", set, "images")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("stage images: %w", err)
	}
	from := r.materializedVersion(set)
	s := &staging{files: make([]*stagedFile, len(idx)), at: map[chunk.ID][]stageTarget{}}
	for i, name := range names {
		path := filepath.Join(dir, name)
		removeStale(dir, name)
		if from != 0 && fileExists(path) {
			if _, err := r.Index(set, from, name); err == nil {
				continue // updated in place, in proportion to the change
			}
		}
		f, err := os.CreateTemp(dir, "."+name+".stage-*")
		if err != nil {
			s.discard()
			return nil, fmt.Errorf("stage image %s: %w", name, err)
		}
		s.files[i] = &stagedFile{f: f, path: path, x: idx[i], written: make([]atomic.Bool, len(idx[i].Entries))}
		s.files[i].direct = directio.Open(f.Name())
		if err := f.Truncate(idx[i].Size); err != nil {
			s.discard()
			return nil, fmt.Errorf("stage image %s: %w", name, err)
		}
		for j, e := range idx[i].Entries {
			if !e.Zero {
				s.at[e.ID] = append(s.at[e.ID], stageTarget{i, j})
			}
		}
	}
	return s, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// removeStale removes staged files of image name left by a push that died.
func removeStale(dir, name string) {
	old, _ := filepath.Glob(filepath.Join(dir, "."+name+".stage-*"))
	for _, p := range old {
		if strings.HasPrefix(filepath.Base(p), "."+name+".stage-") {
			os.Remove(p)
		}
	}
}

// discard removes the staged files that were not put in place.
func (s *staging) discard() {
	if s == nil {
		return
	}
	for _, sf := range s.files {
		if sf != nil && !sf.done {
			sf.closeDirect()
			sf.f.Close()
			os.Remove(sf.f.Name())
		}
	}
}

// sync makes what arrived in the staged files durable, so that finishing
// them at the commit has only the chunks filled in from the store to sync.
func (s *staging) sync() error {
	if s == nil {
		return nil
	}
	for _, sf := range s.files {
		if sf != nil {
			if err := sf.f.Sync(); err != nil {
				return fmt.Errorf("sync image %s: %w", filepath.Base(sf.path), err)
			}
		}
	}
	return nil
}

// staged returns image i's staged file, or nil.
func (s *staging) staged(i int) *stagedFile {
	if s == nil || i >= len(s.files) {
		return nil
	}
	return s.files[i]
}

// stageWriter writes received chunks into the staged files, gathering
// chunks that follow each other into large writes. One per data stream.
type stageWriter struct {
	s    *staging
	file int
	off  int64
	// buf holds the run of chunks to write at off; its first byte sits at
	// off's position within a block of memory (directio.Align), so that
	// the run's whole blocks can be written with direct I/O as they are.
	buf []byte
	mem []byte // aligned memory buf is cut from
}

const stageFlushSize = 1 << 20

// put writes a verified chunk wherever the staged images hold it.
func (w *stageWriter) put(id chunk.ID, data []byte) error {
	if w.s == nil {
		return nil
	}
	for _, t := range w.s.at[id] {
		sf := w.s.files[t.file]
		e := sf.x.Entries[t.entry]
		if len(w.buf) > 0 && (t.file != w.file || e.Offset != w.off+int64(len(w.buf)) || len(w.buf)+len(data) > cap(w.buf)) {
			if err := w.flush(); err != nil {
				return err
			}
		}
		if len(w.buf) == 0 {
			w.start(t.file, e.Offset, len(data))
		}
		w.buf = append(w.buf, data...)
		sf.written[t.entry].Store(true)
		if len(w.buf) >= stageFlushSize {
			if err := w.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// start begins a run at off of the staged file, with room for at least n
// bytes past stageFlushSize.
func (w *stageWriter) start(file int, off int64, n int) {
	w.file, w.off = file, off
	skip := int(off % directio.Align)
	if need := skip + stageFlushSize + n; len(w.mem) < need {
		w.mem = directio.Bytes(max(need, 2*stageFlushSize))
	}
	w.buf = w.mem[skip:skip:len(w.mem)]
}

func (w *stageWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	sf := w.s.files[w.file]
	if err := sf.writeAt(w.buf, w.off); err != nil {
		return fmt.Errorf("write image %s: %w", filepath.Base(sf.path), err)
	}
	w.buf = w.buf[:0]
	return nil
}

// writeAt writes p at off: the whole blocks it covers with direct I/O
// where the file allows it, its ends through the page cache. p's first
// byte must sit at off's position within an aligned block of memory
// (stageWriter's buffers do). The blocks written directly hold only p's
// bytes, so no other write, direct or cached, shares them.
func (sf *stagedFile) writeAt(p []byte, off int64) error {
	lo, hi := directio.Blocks(off, len(p))
	if sf.direct != nil && !sf.noDir.Load() && lo < hi && directio.Aligned(p[lo:]) {
		_, err := sf.direct.WriteAt(p[lo:hi], off+lo)
		switch {
		case err == nil:
			if _, err := sf.f.WriteAt(p[:lo], off); err != nil {
				return err
			}
			_, err := sf.f.WriteAt(p[hi:], off+hi)
			return err
		case errors.Is(err, unix.EINVAL):
			// The file system took O_DIRECT but not these writes: a
			// refused direct write wrote nothing.
			sf.noDir.Store(true)
		default:
			return err
		}
	}
	_, err := sf.f.WriteAt(p, off)
	return err
}

func (sf *stagedFile) closeDirect() error {
	if sf.direct == nil {
		return nil
	}
	err := sf.direct.Close()
	sf.direct = nil
	return err
}

// finish completes staged file sf with the chunks that did not arrive in
// this push (the store already held them), syncs it and puts it in place.
func (sf *stagedFile) finish(ctx context.Context, store chunk.Store) error {
	w := &spanWriter{f: sf.f}
	for j, e := range sf.x.Entries {
		if e.Zero || sf.written[j].Load() {
			continue
		}
		data, err := store.Get(ctx, e.ID)
		if err != nil {
			return err
		}
		if _, err := w.WriteAt(data, e.Offset); err != nil {
			return err
		}
	}
	if err := w.flush(); err != nil {
		return err
	}
	if err := sf.closeDirect(); err != nil {
		return err
	}
	if err := sf.f.Chmod(0o600); err != nil {
		return err
	}
	if err := sf.f.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if err := sf.f.Close(); err != nil {
		return err
	}
	if err := os.Rename(sf.f.Name(), sf.path); err != nil {
		return err
	}
	sf.done = true
	return atomicfile.SyncDir(filepath.Dir(sf.path))
}
