package chunk

import (
	"context"
	"fmt"
	"runtime"
	"slices"

	"golang.org/x/sync/errgroup"
)

// segmentSize is the unit of work of a parallel full index (a multiple of
// BlockSize). The result does not depend on it: the pieces are stitched
// together exactly.
const segmentSize = 32 << 20

// Options tune indexing. The zero value uses every core and reports nothing.
type Options struct {
	// Workers is the number of goroutines cutting and hashing; 0 means
	// GOMAXPROCS. The index is the same whatever the number.
	Workers int
	// Progress, if set, is called from several goroutines with the number
	// of image bytes just covered.
	Progress func(n int64)
	// Chunk, if set, is called with the content of every data chunk as it
	// is cut, from several goroutines at once; data is only valid during
	// the call. Every chunk of the resulting index is seen at least once;
	// a few chunks cut provisionally where pieces of a parallel index meet
	// may be seen that the index does not keep. An error stops indexing.
	Chunk func(e Entry, data []byte) error
}

// ScanStats says what indexing cost.
type ScanStats struct {
	// BytesRead counts the image bytes read; holes and reused ranges are
	// not read.
	BytesRead int64 `json:"bytes_read"`
	// ReusedEntries counts the entries taken from the previous index
	// without reading them.
	ReusedEntries int `json:"reused_entries"`
}

// Build indexes the whole image with parameters p.
func Build(ctx context.Context, img Image, p Params, opt Options) (*Index, ScanStats, error) {
	return build(ctx, img, p, opt, segmentSize)
}

func build(ctx context.Context, img Image, p Params, opt Options, segmentSize int64) (*Index, ScanStats, error) {
	var st ScanStats
	if err := p.Validate(); err != nil {
		return nil, st, err
	}
	size := img.Size()
	holes, err := listHoles(ctx, img)
	if err != nil {
		return nil, st, err
	}
	known := alignKnown(holes, size)

	nseg := int((size + segmentSize - 1) / segmentSize)
	parts := make([][]Entry, nseg)
	read := make([]int64, nseg)
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan int)
	g.Go(func() error {
		defer close(jobs)
		for k := range nseg {
			select {
			case jobs <- k:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range min(workers, max(nseg, 1)) {
		g.Go(func() error {
			s := newScanner(img, size, p, known)
			s.onChunk = opt.Chunk
			for k := range jobs {
				a := int64(k) * segmentSize
				b := min(a+segmentSize, size)
				before := s.read
				_, _, err := s.scan(gctx, a, b, true, func(e Entry) bool {
					parts[k] = append(parts[k], e)
					return false
				})
				if err != nil {
					return fmt.Errorf("index segment at %d: %w", a, err)
				}
				read[k] = s.read - before
				if opt.Progress != nil {
					opt.Progress(b - a)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, st, err
	}
	var entries []Entry
	joins := make([]Range, 0, nseg)
	for k, part := range parts {
		if k > 0 {
			joins = append(joins, Range{Off: int64(k) * segmentSize})
		}
		entries = append(entries, part...)
		st.BytesRead += read[k]
	}
	if len(joins) > 0 {
		// Every provisional zero entry is truly zero: stitching need not
		// read it again.
		s := newScanner(img, size, p, alignKnown(append(zeroRanges(entries), holes...), size))
		s.onChunk = opt.Chunk
		entries, _, err = s.splice(ctx, entries, joins)
		if err != nil {
			return nil, st, err
		}
		st.BytesRead += s.read
	}
	return &Index{Params: p, Size: size, Entries: entries}, st, nil
}

// Reindex indexes img, whose previous version prev described, reading only
// around the changed ranges: every entry of prev outside them is reused
// without reading. Ranges not listed as changed must hold the same bytes as
// when prev was made; the result is then identical to Build of img. A
// change of size counts as a change at the end.
func Reindex(ctx context.Context, prev *Index, img Image, changed []Range, opt Options) (*Index, ScanStats, error) {
	var st ScanStats
	if err := prev.Check(); err != nil {
		return nil, st, fmt.Errorf("previous index: %w", err)
	}
	size := img.Size()
	old := prev.Entries
	suspects := NormalizeRanges(changed, size)
	if size != prev.Size {
		old = resize(old, size)
		m := min(size, prev.Size)
		suspects = append(suspects, Range{m, size - m})
	}
	holes, err := listHoles(ctx, img)
	if err != nil {
		return nil, st, err
	}
	known := subtractRanges(alignKnown(zeroRanges(old), size), outward(suspects, size))
	s := newScanner(img, size, prev.Params, alignKnown(append(known, holes...), size))
	s.onChunk = opt.Chunk
	entries, reused, err := s.splice(ctx, old, suspects)
	if err != nil {
		return nil, st, err
	}
	st.BytesRead, st.ReusedEntries = s.read, reused
	if opt.Progress != nil {
		opt.Progress(size)
	}
	return &Index{Params: prev.Params, Size: size, Entries: entries}, st, nil
}

// splice re-cuts the image around each suspect range, starting at the old
// boundary before it and going on until a new boundary at or past its
// (block-aligned) end coincides with an old one; from there on the old
// entries are right again. old must cover [0, size) and be right outside the
// suspects; suspects may be empty ranges (a point: a segment join).
func (s *scanner) splice(ctx context.Context, old []Entry, suspects []Range) ([]Entry, int, error) {
	suspects = slices.Clone(suspects)
	slices.SortFunc(suspects, func(a, b Range) int { return cmpInt64(a.Off, b.Off) })
	out := make([]Entry, 0, len(old)+len(suspects))
	reused := 0
	done := int64(0) // out covers [0, done), a boundary of both
	oi := 0          // first old entry at or after done
	window := s.p.avgSize()
	for _, r := range suspects {
		b := min(alignUp(r.End()), s.size)
		if b <= done {
			continue
		}
		from := int64(0)
		if r.Off > 0 {
			from = old[sortSearchEntries(old, r.Off-1)].Offset
		}
		from = max(from, done)
		for oi < len(old) && old[oi].Offset < from {
			out = append(out, old[oi])
			oi++
			reused++
		}
		oj := oi
		pos, w := from, (b-from)+window
		for {
			limit := min(alignUp(pos+w), s.size)
			end, hit, err := s.scan(ctx, pos, limit, false, func(e Entry) bool {
				out = append(out, e)
				q := e.End()
				if q < b {
					return false
				}
				for oj < len(old) && old[oj].Offset < q {
					oj++
				}
				return q == s.size || (oj < len(old) && old[oj].Offset == q)
			})
			if err != nil {
				return nil, 0, err
			}
			if hit {
				pos, w = end, 2*w
				continue
			}
			done = end
			break
		}
		for oi < len(old) && old[oi].Offset < done {
			oi++
		}
	}
	reused += len(old) - oi
	return append(out, old[oi:]...), reused, nil
}

func sortSearchEntries(es []Entry, off int64) int {
	i, _ := slices.BinarySearchFunc(es, off, func(e Entry, off int64) int {
		switch {
		case e.End() <= off:
			return -1
		case e.Offset > off:
			return 1
		}
		return 0
	})
	return i
}

// resize cuts or extends old to cover [0, size); what it makes up is
// provisional and must be re-cut.
func resize(old []Entry, size int64) []Entry {
	out := make([]Entry, 0, len(old)+1)
	pos := int64(0)
	for _, e := range old {
		if e.Offset >= size {
			break
		}
		if e.End() > size {
			e.Length = size - e.Offset
		}
		out = append(out, e)
		pos = e.End()
	}
	if pos < size {
		out = append(out, Entry{Offset: pos, Length: size - pos, Zero: true})
	}
	return out
}

func zeroRanges(es []Entry) []Range {
	var out []Range
	for _, e := range es {
		if e.Zero {
			out = append(out, Range{e.Offset, e.Length})
		}
	}
	return out
}

// outward widens ranges to whole blocks.
func outward(rs []Range, size int64) []Range {
	out := make([]Range, 0, len(rs))
	for _, r := range rs {
		a, b := alignDown(r.Off), min(alignUp(r.End()), size)
		out = append(out, Range{a, b - a})
	}
	return NormalizeRanges(out, size)
}

// subtractRanges returns the parts of rs (normalized) not in cut (normalized).
func subtractRanges(rs, cut []Range) []Range {
	var out []Range
	j := 0
	for _, r := range rs {
		a, b := r.Off, r.End()
		for j < len(cut) && cut[j].End() <= a {
			j++
		}
		for k := j; k < len(cut) && cut[k].Off < b; k++ {
			if cut[k].Off > a {
				out = append(out, Range{a, cut[k].Off - a})
			}
			a = max(a, cut[k].End())
		}
		if b > a {
			out = append(out, Range{a, b - a})
		}
	}
	return out
}

func listHoles(ctx context.Context, img Image) ([]Range, error) {
	hl, ok := img.(HoleLister)
	if !ok {
		return nil, nil
	}
	return hl.Holes(ctx)
}

// Update indexes img anew: without prev, in full with parameters p
// (Build); with prev, the index of img's previous version, only around the
// ranges changed since (Reindex: the result has prev's parameters, and an
// empty changed means nothing changed). Capture, push and 'ntc index' all
// index this way.
func Update(ctx context.Context, img Image, p Params, prev *Index, changed []Range, opt Options) (*Index, ScanStats, error) {
	if prev != nil {
		return Reindex(ctx, prev, img, changed, opt)
	}
	return Build(ctx, img, p, opt)
}
