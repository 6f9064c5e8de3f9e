package chunk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/restic/chunker"
	"github.com/zeebo/blake3"

	"github.com/ntc-project/ntc/internal/zero"
)

// viewSize is how much of the image a scanner reads at once.
const viewSize = 1 << 20

// scanner cuts an image into entries, one goroutine at a time. Each worker
// of a parallel index has its own.
type scanner struct {
	img  io.ReaderAt
	size int64
	p    Params
	// known lists block-aligned ranges known to read as zeros; they are
	// never read.
	known []Range

	// The view holds image bytes [vOff, vOff+len(vBuf)); vZero[i] says
	// whether its i-th block is all zero.
	vBuf  []byte
	vOff  int64
	vZero []bool
	mem   []byte

	ch       *chunker.Chunker
	chunkBuf []byte
	run      runReader

	read int64 // bytes read from img

	// onChunk, if set, sees the content of every data chunk cut.
	onChunk func(Entry, []byte) error
}

func newScanner(img io.ReaderAt, size int64, p Params, known []Range) *scanner {
	s := &scanner{img: img, size: size, p: p, known: known, mem: make([]byte, viewSize), vOff: -1}
	if p.Kind == CDC {
		s.ch = chunker.NewWithBoundaries(nil, p.Pol, uint(p.MinSize), uint(p.MaxSize))
		s.chunkBuf = make([]byte, 0, p.MaxSize)
		s.run.s = s
	}
	return s
}

// alignKnown turns zero ranges into block-aligned ones (shrinking them
// inwards; the image end counts as aligned), dropping what becomes empty.
func alignKnown(rs []Range, size int64) []Range {
	out := make([]Range, 0, len(rs))
	for _, r := range NormalizeRanges(rs, size) {
		a, b := alignUp(r.Off), r.End()
		if b != size {
			b = alignDown(b)
		}
		if b > a {
			out = append(out, Range{a, b - a})
		}
	}
	return out
}

// knownZero returns the end of the known-zero range containing pos.
func (s *scanner) knownZero(pos int64) (int64, bool) {
	i := sort.Search(len(s.known), func(i int) bool { return s.known[i].End() > pos })
	if i < len(s.known) && s.known[i].Off <= pos {
		return s.known[i].End(), true
	}
	return 0, false
}

// nextKnown returns the start of the first known-zero range at or after pos.
func (s *scanner) nextKnown(pos int64) int64 {
	i := sort.Search(len(s.known), func(i int) bool { return s.known[i].End() > pos })
	if i < len(s.known) {
		return max(s.known[i].Off, pos)
	}
	return s.size
}

// fill makes the block containing pos readable in the view, reading up to
// want bytes but no further than limit and no known-zero range.
func (s *scanner) fill(pos, limit, want int64) error {
	if pos >= s.vOff && pos < s.vOff+int64(len(s.vBuf)) {
		return nil
	}
	start := alignDown(pos)
	end := min(start+max(want, BlockSize), alignUp(limit), s.size, s.nextKnown(start))
	if end <= start {
		return fmt.Errorf("internal error: empty read at %d (limit %d)", pos, limit)
	}
	buf := s.mem[:end-start]
	n, err := s.img.ReadAt(buf, start)
	s.read += int64(n)
	if n < len(buf) {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		s.vOff = -1
		return fmt.Errorf("read image at %d: %w (did the image shrink while being indexed?)", start, err)
	}
	s.vBuf, s.vOff = buf, start
	nb := (len(buf) + BlockSize - 1) / BlockSize
	s.vZero = s.vZero[:0]
	for i := range nb {
		s.vZero = append(s.vZero, zero.Is(buf[i*BlockSize:min((i+1)*BlockSize, len(buf))]))
	}
	return nil
}

// zeroBlock reports whether the block starting at the aligned offset pos is
// all zero, and where the zero range it belongs to is known to end. If it
// must read, it reads up to want bytes.
func (s *scanner) zeroBlock(pos, limit, want int64) (bool, int64, error) {
	if end, ok := s.knownZero(pos); ok {
		return true, end, nil
	}
	if err := s.fill(pos, limit, want); err != nil {
		return false, 0, err
	}
	if s.vZero[(pos-s.vOff)/BlockSize] {
		return true, min(pos+BlockSize, s.size), nil
	}
	return false, 0, nil
}

// scan cuts the image from the true boundary from up to limit, calling emit
// for each entry; it stops early when emit returns true. It returns the
// offset where it stopped and whether it stopped because it reached limit
// before a boundary. At limit the entry in progress is emitted (cut
// artificially) only if final is set; otherwise the returned offset is the
// start of that unfinished entry, the last true boundary.
func (s *scanner) scan(ctx context.Context, from, limit int64, final bool, emit func(Entry) bool) (int64, bool, error) {
	pos := from
	for pos < limit {
		if err := ctx.Err(); err != nil {
			return pos, false, err
		}
		if pos%BlockSize == 0 {
			zero, end, err := s.zeroBlock(pos, limit, viewSize)
			if err != nil {
				return pos, false, err
			}
			if zero {
				// Probe past the hole with small reads that grow while
				// the blocks stay zero, so that finding where a hole
				// ends does not read far into the data after it.
				probe := int64(BlockSize)
				for end < limit {
					more, next, err := s.zeroBlock(end, limit, probe)
					if err != nil {
						return pos, false, err
					}
					if !more {
						break
					}
					end, probe = next, min(2*probe, viewSize)
				}
				if end >= limit && limit < s.size {
					if !final {
						return pos, true, nil
					}
					end = limit
				}
				if emit(Entry{Offset: pos, Length: end - pos, Zero: true}) {
					return end, false, nil
				}
				pos = end
				continue
			}
		}
		var (
			next int64
			st   status
			err  error
		)
		if s.p.Kind == Fixed {
			next, st, err = s.page(pos, limit, final, emit)
		} else {
			next, st, err = s.cdc(ctx, pos, limit, final, emit)
		}
		if err != nil || st != more {
			return next, st == atLimit, err
		}
		pos = next
	}
	return pos, false, nil
}

// status says why a data cutter returned.
type status int

const (
	more    status = iota // the data run ended: go on
	stopped               // emit asked to stop
	atLimit               // the limit came before the run ended
)

// page emits the data page at pos.
func (s *scanner) page(pos, limit int64, final bool, emit func(Entry) bool) (int64, status, error) {
	end := min(pos+BlockSize, s.size)
	if end > limit {
		if !final {
			return pos, atLimit, nil
		}
		end = limit
	}
	if err := s.fill(pos, limit, viewSize); err != nil {
		return pos, more, err
	}
	b := s.vBuf[pos-s.vOff : end-s.vOff]
	e := Entry{Offset: pos, Length: end - pos, ID: ID(blake3.Sum256(b))}
	if s.onChunk != nil {
		if err := s.onChunk(e, b); err != nil {
			return pos, more, err
		}
	}
	if emit(e) {
		return end, stopped, nil
	}
	return end, more, nil
}

// cdc cuts the data run starting at pos with the content-defined chunker,
// until the run ends at a zero block or the image end.
func (s *scanner) cdc(ctx context.Context, pos, limit int64, final bool, emit func(Entry) bool) (int64, status, error) {
	s.run.reset(pos, limit)
	s.ch.ResetWithBoundaries(&s.run, s.p.Pol, uint(s.p.MinSize), uint(s.p.MaxSize))
	s.ch.SetAverageBits(int(s.p.AvgBits))
	for {
		c, err := s.ch.Next(s.chunkBuf)
		if errors.Is(err, io.EOF) {
			return pos, more, nil
		}
		if err != nil {
			return pos, more, err
		}
		end := pos + int64(c.Length)
		if end == limit && s.run.atLimit && limit < s.size && !final {
			return pos, atLimit, nil
		}
		e := Entry{Offset: pos, Length: int64(c.Length)}
		if zero.Is(c.Data) {
			e.Zero = true
		} else {
			e.ID = ID(blake3.Sum256(c.Data))
			if s.onChunk != nil {
				if err := s.onChunk(e, c.Data); err != nil {
					return pos, more, err
				}
			}
		}
		if emit(e) {
			return end, stopped, nil
		}
		pos = end
		if err := ctx.Err(); err != nil {
			return pos, more, err
		}
	}
}

// runReader feeds the chunker one data run: it ends at the first zero block,
// the image end or the scan limit.
type runReader struct {
	s          *scanner
	pos, limit int64
	atLimit    bool
	done       bool
}

func (r *runReader) reset(pos, limit int64) {
	r.pos, r.limit, r.atLimit, r.done = pos, limit, false, false
}

func (r *runReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && !r.done {
		if r.pos >= r.limit {
			r.done, r.atLimit = true, true
			break
		}
		if r.pos%BlockSize == 0 {
			zero, _, err := r.s.zeroBlock(r.pos, r.limit, viewSize)
			if err != nil {
				return n, err
			}
			if zero {
				r.done = true
				break
			}
		} else if err := r.s.fill(r.pos, r.limit, viewSize); err != nil {
			return n, err
		}
		// Copy the run of non-zero blocks the view holds from r.pos.
		s := r.s
		i := int((r.pos - s.vOff) / BlockSize)
		j := i + 1
		for j < len(s.vZero) && !s.vZero[j] {
			j++
		}
		end := min(s.vOff+int64(j)*BlockSize, s.vOff+int64(len(s.vBuf)), r.limit)
		c := copy(p[n:], s.vBuf[r.pos-s.vOff:end-s.vOff])
		n += c
		r.pos += int64(c)
	}
	if n == 0 && r.done {
		return 0, io.EOF
	}
	return n, nil
}
