package chunk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
)

// ReadOnlyPackStore reads the chunks of a PackStore that another process
// may hold open for writing. It takes no lock: packs are only appended to,
// and a writer makes a chunk durable (Sync) before anything that refers to
// it is published, so every chunk a published index names is a whole record
// by the time a reader opens the store. A record being appended while the
// packs are scanned is torn to the reader and ignored, and Get verifies
// every chunk against its ID, so a reader is never handed wrong content.
// The reader sees the chunks the packs held when it was opened; open it
// again to see later ones.
type ReadOnlyPackStore struct {
	s *PackStore
}

var _ Store = (*ReadOnlyPackStore)(nil)

// ErrReadOnly reports a write to a store opened for reading.
var ErrReadOnly = errors.New("chunk store opened read-only")

// OpenPackStoreReadOnly opens the pack store in dir for reading.
func OpenPackStoreReadOnly(dir string) (*ReadOnlyPackStore, error) {
	return openPackStoreReadOnly(dir, os.Open)
}

// packVanishTries bounds how often a reader lists the packs again because
// one it listed was removed before it could open it.
const packVanishTries = 5

// openPackStoreReadOnly opens the store with open, which tests replace to
// remove a pack at the worst moment. A pack that vanishes between the
// listing and its opening was removed by the writer's Compact, which made
// the copies of its live records durable in a later pack first: the reader
// lists the packs again and goes on with those after the vanished one.
func openPackStoreReadOnly(dir string, open func(string) (*os.File, error)) (*ReadOnlyPackStore, error) {
	pdir := filepath.Join(dir, "packs")
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxRecordLen))
	if err != nil {
		return nil, err
	}
	s := newPackStore(dir, dec)
	fail := func(err error) (*ReadOnlyPackStore, error) {
		s.closeReadOnly()
		return nil, fmt.Errorf("open chunk store %s for reading: %w", dir, err)
	}
	for vanished := 0; ; {
		nums, err := listPacks(pdir)
		if err != nil {
			return fail(err)
		}
		again := false
		for _, n := range nums {
			if n <= s.last {
				continue
			}
			f, err := open(filepath.Join(pdir, packName(n)))
			if errors.Is(err, fs.ErrNotExist) && vanished < packVanishTries {
				vanished++
				s.last = n
				again = true
				break
			}
			if err != nil {
				return fail(err)
			}
			s.packs[n], s.last = f, n
			if _, err := s.load(n, f); err != nil {
				return fail(fmt.Errorf("%s: %w", packName(n), err))
			}
		}
		if !again {
			break
		}
	}
	s.cur = -1 // nothing is appended: Get never looks at the buffer
	return &ReadOnlyPackStore{s: s}, nil
}

// Dir returns the store's directory.
func (r *ReadOnlyPackStore) Dir() string { return r.s.dir }

// Has reports whether the store held the chunk when it was opened.
func (r *ReadOnlyPackStore) Has(ctx context.Context, id ID) (bool, error) { return r.s.Has(ctx, id) }

// Get reads, decompresses and verifies a chunk.
func (r *ReadOnlyPackStore) Get(ctx context.Context, id ID) ([]byte, error) { return r.s.Get(ctx, id) }

// Put refuses: the store is open for reading.
func (r *ReadOnlyPackStore) Put(ctx context.Context, id ID, data []byte) error {
	return fmt.Errorf("put chunk %s into %s: %w", id.Short(), r.s.dir, ErrReadOnly)
}

// Len returns the number of chunks held.
func (r *ReadOnlyPackStore) Len() int { return r.s.Len() }

// Close closes the pack files.
func (r *ReadOnlyPackStore) Close() error { return r.s.closeReadOnly() }

// closeReadOnly closes the pack files of a store that never wrote them.
func (s *PackStore) closeReadOnly() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for _, f := range s.packs {
		errs = append(errs, f.Close())
	}
	s.dec.Close()
	return errors.Join(errs...)
}
