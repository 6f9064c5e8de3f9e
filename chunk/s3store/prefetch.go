package s3store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/ntc-project/ntc/chunk"
)

// Reading chunks one ranged GET each costs a request per chunk (16,384 a
// GiB of 64 KiB chunks): a reader that knows what it will need (a resume,
// a pull) prefetches it instead, in a few large GETs.
const (
	// spanGap is the most bytes not asked for that a span reads to join
	// two records of one pack into one GET.
	spanGap = 1 << 20
	// spanMax bounds one GET.
	spanMax = 64 << 20
	// prefetchGETs is how many GETs a Prefetch has under way.
	prefetchGETs = 4
)

// span is a run of one pack read with one ranged GET.
type span struct {
	pack     packName
	off, end int64
	locs     []prefetchLoc
}

type prefetchLoc struct {
	id chunk.ID
	l  loc
}

// Prefetch puts the chunks of ids that the cache lacks into it, reading
// records that lie close together in a pack with one GET, so that Gets of
// them after make no request. It needs a cache. Chunks not stored are
// skipped, and so are damaged ones: Get reports those.
func (s *Store) Prefetch(ctx context.Context, ids []chunk.ID) error {
	if s.cache == nil {
		return fmt.Errorf("prefetch from %s: no cache to keep chunks in", s.URL())
	}
	byPack := map[packName][]prefetchLoc{}
	for _, id := range ids {
		if ok, err := s.cache.Has(ctx, id); err != nil {
			return err
		} else if ok {
			continue
		}
		s.mu.Lock()
		l, ok := s.lookupLocked(id)
		if ok {
			byPack[s.names[l.pack]] = append(byPack[s.names[l.pack]], prefetchLoc{id, l})
		}
		s.mu.Unlock()
	}
	return s.fetchSpans(ctx, byPack, func(pl prefetchLoc, data, body []byte, err error) error {
		if err == nil { // a damaged record is skipped: Get says so
			s.keep(ctx, pl.id, data, pl.l.codec, body)
		}
		return nil
	})
}

// Fetch reads the chunks of ids, records that lie close together in a
// pack with one GET (a few GETs at once), verifies each against its ID and
// calls fn with it: one call at a time, in no set order, the slices valid
// only during the call. It neither reads nor fills the cache: it is for a
// reader that keeps the chunks itself (a pull into a node's repository).
// fn gets what chunk.PackStore.PutVerified takes: zstd is the chunk
// compressed when it is stored so, and raw says it is stored uncompressed
// because it did not compress; so the chunk is not compressed again.
// A chunk the store does not hold makes a *MissingError before anything
// is read; a damaged one is an *chunk.InvalidChunkError. An error from fn
// ends it.
func (s *Store) Fetch(ctx context.Context, ids []chunk.ID, fn func(id chunk.ID, data, zstd []byte, raw bool) error) error {
	byPack := map[packName][]prefetchLoc{}
	var missing, pending []chunk.ID
	seen := make(map[chunk.ID]struct{}, len(ids))
	s.mu.Lock()
	for _, id := range ids {
		if _, ok := seen[id]; ok {
			continue
		}
		seen[id] = struct{}{}
		if l, ok := s.lookupLocked(id); ok {
			byPack[s.names[l.pack]] = append(byPack[s.names[l.pack]], prefetchLoc{id, l})
		} else if s.pendingLocked(id) != nil {
			pending = append(pending, id)
		} else {
			missing = append(missing, id)
		}
	}
	s.mu.Unlock()
	if len(missing) > 0 {
		return &MissingError{IDs: missing}
	}
	for _, id := range pending { // being uploaded by this writer: in memory
		data, err := s.Get(ctx, id)
		if err != nil {
			return err
		}
		if err := fn(id, data, nil, false); err != nil {
			return err
		}
	}
	var mu sync.Mutex
	return s.fetchSpans(ctx, byPack, func(pl prefetchLoc, data, body []byte, err error) error {
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if pl.l.codec == chunk.CodecZstd {
			return fn(pl.id, data, body, false)
		}
		return fn(pl.id, data, nil, true)
	})
}

// fetchSpans reads the records of byPack, a few spans at once, and calls
// use with each record decoded and verified (or the error doing so).
func (s *Store) fetchSpans(ctx context.Context, byPack map[packName][]prefetchLoc, use func(pl prefetchLoc, data, body []byte, err error) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(prefetchGETs)
	for name, locs := range byPack {
		for _, sp := range spans(name, locs) {
			g.Go(func() error { return s.fetchSpan(gctx, sp, use) })
		}
	}
	return g.Wait()
}

// spans groups a pack's records, in the order they lie, into runs to read
// with one GET each.
func spans(name packName, locs []prefetchLoc) []span {
	slices.SortFunc(locs, func(a, b prefetchLoc) int { return cmp.Compare(a.l.off, b.l.off) })
	var out []span
	for _, pl := range locs {
		end := pl.l.off + int64(pl.l.length)
		if n := len(out); n > 0 && pl.l.off-out[n-1].end <= spanGap && end-out[n-1].off <= spanMax {
			out[n-1].end = max(out[n-1].end, end)
			out[n-1].locs = append(out[n-1].locs, pl)
			continue
		}
		out = append(out, span{pack: name, off: pl.l.off, end: end, locs: []prefetchLoc{pl}})
	}
	return out
}

// fetchSpan reads a span and hands each record of it to use.
func (s *Store) fetchSpan(ctx context.Context, sp span, use func(pl prefetchLoc, data, body []byte, err error) error) error {
	buf, err := s.b.getRange(ctx, packKey(sp.pack), sp.off, sp.end-sp.off)
	if err != nil {
		return fmt.Errorf("fetch chunks: %w", err)
	}
	where := s.b.url(packKey(sp.pack))
	for _, pl := range sp.locs {
		body := buf[pl.l.off-sp.off : pl.l.off-sp.off+int64(pl.l.length)]
		data, err := s.decode(pl.id, pl.l.codec, body, fmt.Sprintf("%s at %d", where, pl.l.off))
		if err := use(pl, data, body, err); err != nil {
			return err
		}
	}
	return ctx.Err()
}
