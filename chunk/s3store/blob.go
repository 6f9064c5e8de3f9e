package s3store

import (
	"context"
	"fmt"
	"time"
)

// Blobs are named objects under PREFIX/blobs/ that are created once and
// never replaced (If-None-Match: *): what a repository keeps beside its
// chunks (version records, indexes) and names from a ref. Names follow the
// rules of ref names.
type Blobs struct {
	b *bucket
}

// Blob is what a listing says of a blob.
type Blob struct {
	Name     string
	Size     int64
	Modified time.Time // by the server's clock
}

// maxBlobLen bounds a blob (one PUT; an index of a 50 GiB image is about
// 90 MB).
const maxBlobLen = 1 << 30

// Blobs returns the blobs beside the store's packs.
func (s *Store) Blobs() *Blobs { return &Blobs{b: s.b} }

func blobKey(name string) string { return "blobs/" + name }

// Create writes a blob that does not exist yet; one that does is
// ErrConflict and keeps its content.
func (bl *Blobs) Create(ctx context.Context, name string, data []byte) error {
	if err := checkRefName(name); err != nil {
		return fmt.Errorf("create blob: %w", err)
	}
	if len(data) > maxBlobLen {
		return fmt.Errorf("create blob %s: %d bytes is over the %d limit", name, len(data), maxBlobLen)
	}
	if _, err := bl.b.create(ctx, blobKey(name), data); err != nil {
		return fmt.Errorf("create blob: %w", err)
	}
	return nil
}

// Get reads a blob of at most limit bytes; a blob that does not exist is
// ErrNotFound.
func (bl *Blobs) Get(ctx context.Context, name string, limit int64) ([]byte, error) {
	if err := checkRefName(name); err != nil {
		return nil, fmt.Errorf("get blob: %w", err)
	}
	data, _, err := bl.b.get(ctx, blobKey(name), min(limit, maxBlobLen))
	if err != nil {
		return nil, fmt.Errorf("get blob: %w", err)
	}
	return data, nil
}

// Remove deletes a blob; one already gone is not an error.
func (bl *Blobs) Remove(ctx context.Context, name string) error {
	if err := checkRefName(name); err != nil {
		return fmt.Errorf("remove blob: %w", err)
	}
	return bl.b.remove(ctx, blobKey(name))
}

// List calls fn with every blob whose name starts with dir.
func (bl *Blobs) List(ctx context.Context, dir string, fn func(Blob) error) error {
	return bl.b.list(ctx, blobKey(dir), func(o object) error {
		name := dir + o.name
		if checkRefName(name) != nil {
			return nil
		}
		return fn(Blob{Name: name, Size: o.size, Modified: o.modified})
	})
}
