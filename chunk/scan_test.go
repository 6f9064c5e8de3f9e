package chunk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/restic/chunker"

	"github.com/ntc-project/ntc/internal/zero"
)

// naiveIndex is the reference: the definition of an index written as
// plainly as possible. Blocks that are all zero form holes; each run of
// non-zero blocks is cut on its own by a fresh restic chunker (or into
// pages); all-zero chunks are zero entries.
func naiveIndex(tb testing.TB, data []byte, p Params) []Entry {
	tb.Helper()
	size := int64(len(data))
	var out []Entry
	blockZero := func(off int64) bool { return zero.Is(data[off:min(off+BlockSize, size)]) }
	pos := int64(0)
	for pos < size {
		if blockZero(pos) {
			end := pos
			for end < size && blockZero(end) {
				end = min(end+BlockSize, size)
			}
			out = append(out, Entry{Offset: pos, Length: end - pos, Zero: true})
			pos = end
			continue
		}
		end := pos
		for end < size && !blockZero(end) {
			end = min(end+BlockSize, size)
		}
		run := data[pos:end]
		if p.Kind == Fixed {
			for off := int64(0); off < int64(len(run)); off += BlockSize {
				b := run[off:min(off+BlockSize, int64(len(run)))]
				out = append(out, Entry{Offset: pos + off, Length: int64(len(b)), ID: Sum(b)})
			}
		} else {
			c := chunker.NewWithBoundaries(bytes.NewReader(run), p.Pol, uint(p.MinSize), uint(p.MaxSize))
			c.SetAverageBits(int(p.AvgBits))
			buf := make([]byte, p.MaxSize)
			for {
				ch, err := c.Next(buf)
				if err == io.EOF {
					break
				}
				if err != nil {
					tb.Fatal(err)
				}
				e := Entry{Offset: pos + int64(ch.Start), Length: int64(ch.Length)}
				if zero.Is(ch.Data) {
					e.Zero = true
				} else {
					e.ID = Sum(ch.Data)
				}
				out = append(out, e)
			}
		}
		pos = end
	}
	return out
}

// testImage makes an image with random data, zero blocks and runs, short
// zero stretches inside data, and repeated content.
func testImage(r *rand.Rand, size int) []byte {
	data := make([]byte, size)
	pos := 0
	for pos < size {
		n := min(size-pos, 1+r.IntN(256<<10))
		switch r.IntN(6) {
		case 0: // zero run, often block-aligned
			if r.IntN(2) == 0 {
				pos = (pos + BlockSize - 1) &^ (BlockSize - 1)
			}
		case 1: // repeat earlier content
			if pos > n {
				src := r.IntN(pos - n)
				copy(data[pos:pos+n], data[src:src+n])
			}
		case 2: // low-entropy text-like data
			for i := pos; i < pos+n && i < size; i++ {
				data[i] = "ab \n"[r.IntN(4)]
			}
		default:
			for i := pos; i < pos+n && i < size; i++ {
				data[i] = byte(r.Uint32())
			}
		}
		pos += n
	}
	return data
}

var testParams = []Params{
	{Kind: CDC, Pol: DefaultPolynomial, MinSize: 2 << 10, MaxSize: 16 << 10, AvgBits: 12},
	DefaultCDC(),
	Pages(),
}

func TestBuildMatchesDefinition(t *testing.T) {
	ctx := t.Context()
	for seed := range uint64(6) {
		r := rand.New(rand.NewPCG(seed, 1))
		size := 1 + r.IntN(6<<20)
		if seed == 0 {
			size = 0
		}
		data := testImage(r, size)
		for _, p := range testParams {
			want := naiveIndex(t, data, p)
			for _, tc := range []struct {
				workers int
				seg     int64
			}{{1, 32 << 20}, {1, BlockSize}, {2, 64 << 10}, {3, 1 << 20}, {8, 12 * BlockSize}} {
				t.Run(fmt.Sprintf("seed%d/%v/w%d/seg%d", seed, p.Kind, tc.workers, tc.seg), func(t *testing.T) {
					x, st, err := build(ctx, Bytes(data), p, Options{Workers: tc.workers}, tc.seg)
					if err != nil {
						t.Fatal(err)
					}
					if err := x.Check(); err != nil {
						t.Fatal(err)
					}
					assertEntries(t, x.Entries, want)
					if st.BytesRead < int64(len(data))-zeroBytes(want) {
						t.Errorf("read %d bytes, but the image has %d non-zero bytes", st.BytesRead, int64(len(data))-zeroBytes(want))
					}
				})
			}
		}
	}
}

func zeroBytes(es []Entry) int64 {
	var n int64
	for _, e := range es {
		if e.Zero {
			n += e.Length
		}
	}
	return n
}

func assertEntries(tb testing.TB, got, want []Entry) {
	tb.Helper()
	if slices.Equal(got, want) {
		return
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			tb.Fatalf("entry %d of %d/%d: got %+v, want %+v", i, len(got), len(want), brief(got[i]), brief(want[i]))
		}
	}
	tb.Fatalf("got %d entries, want %d", len(got), len(want))
}

func brief(e Entry) string {
	return fmt.Sprintf("{off %d len %d zero %v id %s}", e.Offset, e.Length, e.Zero, e.ID.Short())
}

// mutate changes the image in a few places and returns the changed ranges.
func mutate(r *rand.Rand, data []byte) []Range {
	var rs []Range
	for range 1 + r.IntN(8) {
		n := 1 + r.IntN(96<<10)
		if r.IntN(3) == 0 {
			n = 1 + r.IntN(16)
		}
		off := r.IntN(max(len(data)-n, 1))
		n = min(n, len(data)-off)
		switch r.IntN(3) {
		case 0:
			clear(data[off : off+n])
		case 1:
			copy(data[off:off+n], data[r.IntN(len(data)-n+1):])
		default:
			for i := off; i < off+n; i++ {
				data[i] = byte(r.Uint32())
			}
		}
		rs = append(rs, Range{int64(off), int64(n)})
	}
	return rs
}

func TestReindexMatchesFullIndex(t *testing.T) {
	ctx := t.Context()
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 2))
		data := testImage(r, BlockSize+r.IntN(3<<20))
		p := testParams[int(seed)%len(testParams)]
		prev, _, err := Build(ctx, Bytes(data), p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		next := slices.Clone(data)
		changed := mutate(r, next)
		switch seed % 5 {
		case 3: // grow
			grow := make([]byte, r.IntN(300<<10))
			for i := range grow {
				grow[i] = byte(r.Uint32() * uint32(r.IntN(2)))
			}
			next = append(next, grow...)
		case 4: // shrink
			next = next[:r.IntN(len(next))]
		}
		t.Run(fmt.Sprintf("seed%d/%v", seed, p.Kind), func(t *testing.T) {
			got, st, err := Reindex(ctx, prev, Bytes(next), changed, Options{})
			if err != nil {
				t.Fatal(err)
			}
			assertEntries(t, got.Entries, naiveIndex(t, next, p))
			if err := got.Check(); err != nil {
				t.Fatal(err)
			}
			if st.BytesRead > 2*int64(len(next)) {
				t.Errorf("read %d bytes of a %d-byte image", st.BytesRead, len(next))
			}
		})
	}
}

// TestReindexReadsOnlyAroundChanges: with 1% changed in scattered 64 KiB
// extents, re-indexing reads a small fraction of the image.
func TestReindexReadsOnlyAroundChanges(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	data := make([]byte, 64<<20)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	prev, _, err := Build(t.Context(), Bytes(data), DefaultCDC(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	changed := scatter(r, data, 0.01, 64<<10)
	next, st, err := Reindex(t.Context(), prev, Bytes(data), changed, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := Build(t.Context(), Bytes(data), DefaultCDC(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	assertEntries(t, next.Entries, want.Entries)
	if frac := float64(st.BytesRead) / float64(len(data)); frac > 0.03 {
		t.Errorf("re-index read %.2f%% of the image, want <= 3%%", 100*frac)
	}
	if st.ReusedEntries < len(prev.Entries)*9/10 {
		t.Errorf("reused %d of %d entries", st.ReusedEntries, len(prev.Entries))
	}
}

// scatter rewrites frac of data in random extents of n bytes (aligned to n)
// and returns them.
func scatter(r *rand.Rand, data []byte, frac float64, n int) []Range {
	count := int(frac * float64(len(data)) / float64(n))
	slots := r.Perm(len(data) / n)[:count]
	rs := make([]Range, 0, count)
	for _, s := range slots {
		off := s * n
		for i := off; i < off+n; i++ {
			data[i] = byte(r.Uint32())
		}
		rs = append(rs, Range{int64(off), int64(n)})
	}
	return rs
}

func TestBuildCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, err := Build(ctx, Bytes(make([]byte, 8<<20)), DefaultCDC(), Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestBuildShortRead(t *testing.T) {
	img := shrinking{Bytes: Bytes(bytes.Repeat([]byte{1}, 1<<20)), claim: 2 << 20}
	_, _, err := Build(t.Context(), img, DefaultCDC(), Options{})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
}

type shrinking struct {
	Bytes
	claim int64
}

func (s shrinking) Size() int64 { return s.claim }
