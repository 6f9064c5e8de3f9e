package chunk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// DirStore keeps chunks as files in a directory, one per chunk, named by ID
// under a two-hex-digit fan-out directory (chunks/ab/abcd…). A chunk file
// is one codec byte (0 raw, 1 zstd) followed by the content. Files are
// written to a temporary name and renamed, so a chunk file is complete or
// absent; Sync makes all written chunks durable at once (one syncfs, not
// one fsync per chunk), and every Get verifies the content against its ID,
// so a chunk damaged on disk is reported, never returned.
type DirStore struct {
	dir string
	enc *zstd.Encoder
	dec *zstd.Decoder
}

var _ Store = (*DirStore)(nil)

const (
	codecRaw  = 0
	codecZstd = 1
)

// OpenDirStore opens, creating if needed, the store in dir.
func OpenDirStore(dir string) (*DirStore, error) {
	if err := os.MkdirAll(filepath.Join(dir, "chunks"), 0o700); err != nil {
		return nil, fmt.Errorf("open chunk store: %w", err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("open chunk store: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(64<<20))
	if err != nil {
		return nil, fmt.Errorf("open chunk store: %w", err)
	}
	return &DirStore{dir: dir, enc: enc, dec: dec}, nil
}

// Dir returns the store's directory.
func (s *DirStore) Dir() string { return s.dir }

func (s *DirStore) path(id ID) string {
	h := id.String()
	return filepath.Join(s.dir, "chunks", h[:2], h)
}

// Has reports whether the chunk file exists.
func (s *DirStore) Has(ctx context.Context, id ID) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	_, err := os.Stat(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("chunk store: %w", err)
	}
	return true, nil
}

// Get reads, decompresses and verifies a chunk.
func (s *DirStore) Get(ctx context.Context, id ID) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := s.path(id)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get chunk %s: %w", id.Short(), ErrChunkMissing)
	}
	if err != nil {
		return nil, fmt.Errorf("get chunk %s: %w", id.Short(), err)
	}
	data, err := s.decode(b)
	if err != nil {
		return nil, &InvalidChunkError{ID: id, Where: p + ": " + err.Error()}
	}
	if err := Verify(id, data, p); err != nil {
		return nil, err
	}
	return data, nil
}

func (s *DirStore) decode(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, errors.New("empty chunk file")
	}
	switch b[0] {
	case codecRaw:
		return b[1:], nil
	case codecZstd:
		return s.dec.DecodeAll(b[1:], nil)
	}
	return nil, fmt.Errorf("unknown codec %d", b[0])
}

// Put verifies and stores a chunk, compressed when that saves space.
func (s *DirStore) Put(ctx context.Context, id ID, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := Verify(id, data, "offered to the store"); err != nil {
		return err
	}
	p := s.path(id)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	buf := make([]byte, 1, 1+len(data)/2)
	buf[0] = codecZstd
	buf = s.enc.EncodeAll(data, buf)
	if len(buf) >= 1+len(data) {
		buf = append(buf[:0], codecRaw)
		buf = append(buf, data...)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("put chunk %s: %w", id.Short(), err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return fmt.Errorf("put chunk %s: %w", id.Short(), err)
	}
	_, err = f.Write(buf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("put chunk %s: %w", id.Short(), err)
	}
	return nil
}

// Sync makes every chunk written so far durable (syncfs of the store's
// file system). Call it before recording anything that refers to them.
func (s *DirStore) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("sync chunk store: %w", err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("sync chunk store: %w", err)
	}
	return nil
}

// Remove deletes a chunk, for repairing a damaged one.
func (s *DirStore) Remove(ctx context.Context, id ID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove chunk %s: %w", id.Short(), err)
	}
	return nil
}
