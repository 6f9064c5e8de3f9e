package sync

import (
	"context"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/ntc-project/ntc/chunk"
)

// A patch describes a chunk as runs copied from the receiver's base image
// at the same offsets, and literal runs: what the sender knows changed.
type segment struct {
	n       int64
	literal bool
}

// patchSegments splits e into literal runs (overlapping changed, which is
// normalized) and copied runs.
func patchSegments(e chunk.Entry, changed []chunk.Range) (segs []segment, literal int64) {
	pos := e.Offset
	add := func(end int64, lit bool) {
		if end <= pos {
			return
		}
		if k := len(segs); k > 0 && segs[k-1].literal == lit {
			segs[k-1].n += end - pos
		} else {
			segs = append(segs, segment{n: end - pos, literal: lit})
		}
		if lit {
			literal += end - pos
		}
		pos = end
	}
	for _, r := range changed {
		if r.End() <= pos {
			continue
		}
		if r.Off >= e.End() {
			break
		}
		add(min(r.Off, e.End()), false)
		add(min(r.End(), e.End()), true)
	}
	add(e.End(), false)
	return segs, literal
}

// encodePatch builds a patch payload for data (the chunk's content).
func encodePatch(dst []byte, segs []segment, data []byte, z *zstd.Encoder) []byte {
	e := enc{b: dst}
	e.uvarint(uint64(len(segs)))
	var lit []byte
	pos := int64(0)
	for _, s := range segs {
		v := uint64(s.n) << 1
		if s.literal {
			v |= 1
			lit = append(lit, data[pos:pos+s.n]...)
		}
		e.uvarint(v)
		pos += s.n
	}
	comp := z.EncodeAll(lit, nil)
	if len(comp) < len(lit) {
		e.b = append(e.b, codecZstd)
		e.b = append(e.b, comp...)
	} else {
		e.b = append(e.b, codecRaw)
		e.b = append(e.b, lit...)
	}
	return e.b
}

// maxSegments bounds a patch's segments: a sender's come from the
// changed ranges of one chunk, merged.
const maxSegments = 4096

// applyPatch rebuilds a chunk of length n at offset off from a patch and
// the base image, into dst when it has the room.
func applyPatch(p []byte, off, n int64, base io.ReaderAt, z *zstd.Decoder, dst []byte) ([]byte, error) {
	d := dec{b: p}
	count := d.count(1)
	if count > maxSegments {
		return nil, fmt.Errorf("%w: a patch of %d segments", ErrMalformed, count)
	}
	segs := make([]segment, 0, count)
	var total, litLen int64
	for range count {
		v := d.uvarint()
		s := segment{n: int64(v >> 1), literal: v&1 == 1}
		if s.n <= 0 || s.n > n-total {
			d.fail("bad patch segment")
			break
		}
		total += s.n
		if s.literal {
			litLen += s.n
		}
		segs = append(segs, s)
	}
	if d.err == nil && total != n {
		d.fail("patch does not cover the chunk")
	}
	if d.err == nil && len(d.b) < 1 {
		d.fail("patch without literal codec")
	}
	if d.err != nil {
		return nil, d.err
	}
	lit := d.b[1:]
	if d.b[0] == codecZstd {
		var err error
		if lit, err = z.DecodeAll(lit, make([]byte, 0, litLen)); err != nil {
			return nil, fmt.Errorf("%w: patch literals: %v", ErrMalformed, err)
		}
	}
	if int64(len(lit)) != litLen {
		return nil, fmt.Errorf("%w: patch literals are %d bytes, want %d", ErrMalformed, len(lit), litLen)
	}
	out := dst[:0]
	if int64(cap(out)) < n {
		out = make([]byte, n)
	}
	out = out[:n]
	pos := int64(0)
	for _, s := range segs {
		if s.literal {
			copy(out[pos:], lit[:s.n])
			lit = lit[s.n:]
		} else if _, err := base.ReadAt(out[pos:pos+s.n], off+pos); err != nil {
			return nil, fmt.Errorf("patch: read base at %d: %w", off+pos, err)
		}
		pos += s.n
	}
	return out, nil
}

// baseReader reads the receiver's base version of an image from its store.
func baseReader(ctx context.Context, x *chunk.Index, st chunk.Store) io.ReaderAt {
	return chunk.NewStoreImage(ctx, x, st)
}
