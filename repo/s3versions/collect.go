package s3versions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
)

// CollectOptions tune a collection.
type CollectOptions struct {
	// MinAge spares packs younger than it even when no version uses their
	// chunks: a push under way has stored chunks it has not committed yet.
	// Make it longer than the longest push; such a push that outlives it
	// is not lost, its commit fails with an s3store.MissingError. Zero is
	// for tests and repositories nobody writes to.
	MinAge time.Duration
	// Rewrite, above 0, also rewrites the packs of which at least this
	// fraction of the bytes is waste (chunks no kept version uses, or
	// copies of chunks another pack holds, as two receivers storing the
	// same new chunks at once make): s3store.CondemnOptions.
	Rewrite float64
}

// CollectStats say what a collection did.
type CollectStats struct {
	s3store.CollectStats
	Sets, Versions int // listed by the heads after the barrier
	BlobsDeleted   int // objects of versions no head lists
}

// Collect removes the packs whose chunks no version listed by a head uses,
// and the objects of versions no head lists, while receivers go on
// committing: it follows the rule in chunk/s3store/gc.go, the heads' swap
// being the barrier. One collection runs at a time on a bucket: another
// one is refused with s3store.ErrCollecting.
func (s *Sets) Collect(ctx context.Context, opt CollectOptions) (CollectStats, error) {
	var st CollectStats
	m := marker{s: s, ids: map[string][]chunk.ID{}}
	heads, err := s.heads(ctx)
	if err != nil {
		return st, err
	}
	live, err := m.mark(ctx, heads)
	if err != nil {
		return st, err
	}
	c, cst, err := s.store.Condemn(ctx, func(id chunk.ID) bool { return live[id] }, s3store.CondemnOptions{MinAge: opt.MinAge, Rewrite: opt.Rewrite})
	if err != nil {
		return st, err
	}
	s.at("condemned")
	heads, err = s.barrier(ctx)
	if err == nil {
		s.at("barrier")
		live, err = m.mark(ctx, heads)
	}
	if err != nil {
		return st, errors.Join(err, s.store.Abandon(context.WithoutCancel(ctx), c))
	}
	st.CollectStats, err = s.store.Sweep(ctx, c, func(id chunk.ID) bool { return live[id] }, cst)
	if err != nil {
		return st, err
	}
	st.Sets = len(heads)
	listed := map[string]bool{}
	for _, h := range heads {
		st.Versions += len(h.Versions)
		for _, e := range h.Versions {
			listed[blobDir(h.Set, e.key)] = true
		}
	}
	// Objects of versions no head lists after the barrier, written before
	// the collection began: a commit that wrote them read its head before
	// the barrier, so its swap fails (or it was listed).
	var doomed []string
	err = s.blobs.List(ctx, "sets/", func(b s3store.Blob) error {
		set, rest, ok := strings.Cut(strings.TrimPrefix(b.Name, "sets/"), "/v/")
		key, _, ok2 := strings.Cut(rest, "/")
		if ok && ok2 && !listed[blobDir(set, key)] && b.Modified.Before(c.Clock.Add(-opt.MinAge)) {
			doomed = append(doomed, b.Name)
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("collect: %w", err)
	}
	for _, name := range doomed {
		if err := s.blobs.Remove(ctx, name); err != nil {
			return st, fmt.Errorf("collect: %w", err)
		}
		st.BlobsDeleted++
	}
	return st, nil
}

// heads reads every set's head.
func (s *Sets) heads(ctx context.Context) ([]*Head, error) {
	names, err := s.Names(ctx)
	if err != nil {
		return nil, err
	}
	var out []*Head
	for _, n := range names {
		h, err := s.Head(ctx, n)
		if err != nil {
			return nil, err
		}
		if h.Exists() {
			out = append(out, h)
		}
	}
	return out, nil
}

// barrier swaps every set's head for itself with a new barrier mark, so
// that every commit from a head read before fails its swap, and returns
// the heads as swapped. A set whose head appears after it listed the sets
// read the collection state after the collection condemned packs.
func (s *Sets) barrier(ctx context.Context) ([]*Head, error) {
	names, err := s.Names(ctx)
	if err != nil {
		return nil, err
	}
	var nonce [8]byte
	rand.Read(nonce[:])
	mark := hex.EncodeToString(nonce[:])
	var out []*Head
	for _, n := range names {
		var last *Head
		_, err := s.refs.Update(ctx, headName(n), func(cur []byte, exists bool) ([]byte, error) {
			if !exists {
				last = nil
				return nil, errGone
			}
			h, err := decodeHead(n, cur)
			if err != nil {
				return nil, err
			}
			h.barrier = mark
			last = h
			data, _ := h.encode()
			return data, nil
		})
		if err != nil && !errors.Is(err, errGone) {
			return nil, fmt.Errorf("collect: barrier: %w", err)
		}
		if last != nil && err == nil {
			out = append(out, last)
		}
	}
	return out, nil
}

var errGone = errors.New("head removed")

// marker reads the chunks the versions of heads use; a version's indexes
// never change, so each is read once per collection.
type marker struct {
	s   *Sets
	ids map[string][]chunk.ID // by the version's object directory
}

func (m *marker) mark(ctx context.Context, heads []*Head) (map[chunk.ID]bool, error) {
	live := map[chunk.ID]bool{}
	for _, h := range heads {
		for _, e := range h.Versions {
			dir := blobDir(h.Set, e.key)
			ids, ok := m.ids[dir]
			if !ok {
				for _, im := range e.Images {
					x, err := m.s.Index(ctx, h.Set, e, im)
					if err != nil {
						return nil, fmt.Errorf("collect: mark: %w", err)
					}
					for _, en := range x.Entries {
						if !en.Zero {
							ids = append(ids, en.ID)
						}
					}
				}
				m.ids[dir] = ids
			}
			for _, id := range ids {
				live[id] = true
			}
		}
	}
	return live, nil
}
