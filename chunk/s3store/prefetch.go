package s3store

import (
	"cmp"
	"context"
	"fmt"
	"slices"

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
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(prefetchGETs)
	for name, locs := range byPack {
		for _, sp := range spans(name, locs) {
			g.Go(func() error { return s.fetchSpan(gctx, sp) })
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

// fetchSpan reads a span and keeps each record of it that verifies.
func (s *Store) fetchSpan(ctx context.Context, sp span) error {
	buf, err := s.b.getRange(ctx, packKey(sp.pack), sp.off, sp.end-sp.off)
	if err != nil {
		return fmt.Errorf("prefetch: %w", err)
	}
	where := s.b.url(packKey(sp.pack))
	for _, pl := range sp.locs {
		body := buf[pl.l.off-sp.off : pl.l.off-sp.off+int64(pl.l.length)]
		data, err := s.decode(pl.id, pl.l.codec, body, fmt.Sprintf("%s at %d", where, pl.l.off))
		if err != nil {
			continue // damaged: Get says so
		}
		s.keep(ctx, pl.id, data, pl.l.codec, body)
	}
	return ctx.Err()
}
