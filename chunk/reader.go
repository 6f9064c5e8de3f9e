package chunk

import (
	"context"
	"fmt"
	"io"
)

// StoreImage reads the image an index describes from the chunks in a store,
// without assembling it anywhere: an Image for resuming, joining RAM pages
// back into a migration stream, or serving chunks. Each ReadAt fetches and
// verifies the chunks it touches.
type StoreImage struct {
	ctx   context.Context
	idx   *Index
	store Store
}

var _ Image = (*StoreImage)(nil)

// NewStoreImage returns a reader of idx's image from store. ctx bounds every
// read (io.ReaderAt takes no context).
func NewStoreImage(ctx context.Context, idx *Index, store Store) *StoreImage {
	return &StoreImage{ctx: ctx, idx: idx, store: store}
}

// Size returns the image size.
func (r *StoreImage) Size() int64 { return r.idx.Size }

// Holes returns the index's zero entries: they are never fetched.
func (r *StoreImage) Holes(ctx context.Context) ([]Range, error) {
	return zeroRanges(r.idx.Entries), nil
}

// ReadAt reads len(p) bytes at off.
func (r *StoreImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: negative offset", off)
	}
	n := 0
	for i := r.idx.Find(off); n < len(p) && i < len(r.idx.Entries); i++ {
		e := r.idx.Entries[i]
		lo := off + int64(n) - e.Offset
		want := min(int64(len(p)-n), e.Length-lo)
		if e.Zero {
			clear(p[n : n+int(want)])
		} else {
			data, err := r.store.Get(r.ctx, e.ID)
			if err != nil {
				return n, fmt.Errorf("read image at %d: %w", e.Offset, err)
			}
			if int64(len(data)) != e.Length {
				return n, fmt.Errorf("read image at %d: chunk %s has %d bytes, the index says %d", e.Offset, e.ID.Short(), len(data), e.Length)
			}
			copy(p[n:], data[lo:lo+want])
		}
		n += int(want)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
