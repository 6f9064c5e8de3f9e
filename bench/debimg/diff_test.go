package debimg

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// write describes data put into a synthetic image: n copies of b at off, or,
// with b == 0, n explicit zero bytes (allocated, not a hole).
type write struct {
	off int64
	n   int
	b   byte
}

// makeImage creates a sparse file of size bytes holding writes.
func makeImage(tb testing.TB, path string, size int64, writes []write) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		tb.Fatal(err)
	}
	for _, w := range writes {
		if _, err := f.WriteAt(bytes.Repeat([]byte{w.b}, w.n), w.off); err != nil {
			tb.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

func TestChangedBlocks(t *testing.T) {
	const B = BlockSize
	const mib = 1 << 20
	base := []write{{0, 3 * B, 'a'}, {10 * B, 2 * B, 'b'}, {20 * mib, B, 'c'}}
	tests := []struct {
		name     string
		size     int64
		old, new []write // new gets base too unless noBase
		noBase   bool
		want     []Range
	}{
		{name: "identical", size: 32 * mib},
		{name: "all holes", size: 32 * mib, noBase: true},
		{name: "one byte", size: 32 * mib, new: []write{{2*B + 100, 1, 'x'}},
			want: []Range{{2 * B, B}}},
		{name: "adjacent blocks merge", size: 32 * mib, new: []write{{3*B - 1, 2, 'x'}},
			want: []Range{{2 * B, 2 * B}}},
		{name: "separate blocks", size: 32 * mib, new: []write{{B, 1, 'x'}, {11 * B, 1, 'x'}},
			want: []Range{{B, B}, {11 * B, B}}},
		{name: "written into a hole", size: 32 * mib, new: []write{{30 * mib, 3 * B, 'n'}},
			want: []Range{{30 * mib, 3 * B}}},
		{name: "explicit zeros over a hole are no change", size: 32 * mib, new: []write{{5 * mib, 4 * B, 0}}},
		{name: "data gone to a hole", size: 32 * mib, noBase: true,
			old:  []write{{0, 3 * B, 'a'}, {10 * B, 2 * B, 'b'}, {20 * mib, B, 'c'}},
			new:  []write{{0, 3 * B, 'a'}, {20 * mib, B, 'c'}},
			want: []Range{{10 * B, 2 * B}}},
		{name: "across the read buffer", size: 32 * mib,
			new:  []write{{compareBuf - 10, 20, 'x'}},
			want: []Range{{compareBuf - B, 2 * B}}},
		{name: "short last block", size: 32*mib + 100, new: []write{{32*mib + 99, 1, 'x'}},
			want: []Range{{32 * mib, 100}}},
		{name: "last full block and short block merge", size: 32*mib + 100,
			new:  []write{{32*mib - 1, 2, 'x'}},
			want: []Range{{32*mib - B, B + 100}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			o, n := filepath.Join(dir, "old"), filepath.Join(dir, "new")
			ow, nw := tt.old, tt.new
			if !tt.noBase {
				ow = append(slices.Clone(base), ow...)
				nw = append(slices.Clone(base), nw...)
			}
			makeImage(t, o, tt.size, ow)
			makeImage(t, n, tt.size, nw)
			got, err := ChangedBlocks(t.Context(), o, n)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ChangedBlocks = %v, want %v", got, tt.want)
			}
			if ref := referenceChanged(t, o, n); !slices.Equal(got, ref) {
				t.Errorf("ChangedBlocks = %v, reference comparison says %v", got, ref)
			}
		})
	}
}

// TestChangedBlocksRandom compares ChangedBlocks with a plain block-by-block
// comparison on random sparse pairs.
func TestChangedBlocksRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		dir := t.TempDir()
		size := int64(rng.IntN(24<<20) + 1)
		var ow, nw []write
		for range rng.IntN(30) {
			w := write{off: rng.Int64N(size), n: rng.IntN(3 * BlockSize), b: byte(rng.IntN(3))}
			w.n = int(min(int64(w.n), size-w.off))
			ow = append(ow, w)
			nw = append(nw, w)
		}
		for range rng.IntN(10) {
			w := write{off: rng.Int64N(size), n: rng.IntN(2 * BlockSize), b: byte(rng.IntN(3))}
			w.n = int(min(int64(w.n), size-w.off))
			if rng.IntN(2) == 0 {
				nw = append(nw, w)
			} else {
				ow = append(ow, w)
			}
		}
		o, n := filepath.Join(dir, "old"), filepath.Join(dir, "new")
		makeImage(t, o, size, ow)
		makeImage(t, n, size, nw)
		got, err := ChangedBlocks(t.Context(), o, n)
		if err != nil {
			t.Fatal(err)
		}
		if ref := referenceChanged(t, o, n); !slices.Equal(got, ref) {
			t.Fatalf("pair %d (%d bytes): ChangedBlocks = %v, reference comparison says %v", i, size, got, ref)
		}
	}
}

func TestChangedBlocksSizeMismatch(t *testing.T) {
	dir := t.TempDir()
	o, n := filepath.Join(dir, "old"), filepath.Join(dir, "new")
	makeImage(t, o, 2*BlockSize, nil)
	makeImage(t, n, 3*BlockSize, nil)
	if _, err := ChangedBlocks(t.Context(), o, n); err == nil {
		t.Fatal("ChangedBlocks of files of different sizes: no error")
	}
}

// referenceChanged compares two files block by block, reading every byte:
// no hole skipping, no large buffers.
func referenceChanged(tb testing.TB, oldPath, newPath string) []Range {
	tb.Helper()
	of, err := os.Open(oldPath)
	if err != nil {
		tb.Fatal(err)
	}
	defer of.Close()
	nf, err := os.Open(newPath)
	if err != nil {
		tb.Fatal(err)
	}
	defer nf.Close()
	or, nr := bufio.NewReader(of), bufio.NewReader(nf)
	ob, nb := make([]byte, BlockSize), make([]byte, BlockSize)
	var out []Range
	for off := int64(0); ; {
		n, err := io.ReadFull(or, ob)
		if err == io.EOF {
			return out
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			tb.Fatal(err)
		}
		if _, err := io.ReadFull(nr, nb[:n]); err != nil {
			tb.Fatal(err)
		}
		if !bytes.Equal(ob[:n], nb[:n]) {
			if k := len(out) - 1; k >= 0 && out[k].End() == off {
				out[k].Len += int64(n)
			} else {
				out = append(out, Range{off, int64(n)})
			}
		}
		off += int64(n)
	}
}

func TestWriteBlocks(t *testing.T) {
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = byte(i / BlockSize)
	}
	ranges := []Range{{0, BlockSize}, {3 * BlockSize, 2 * BlockSize}, {15 * BlockSize, BlockSize}}
	var got bytes.Buffer
	if err := WriteBlocks(&got, bytes.NewReader(data), ranges); err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, r := range ranges {
		want = append(want, data[r.Off:r.End()]...)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("WriteBlocks wrote %d bytes, not the %d of the ranges in order", got.Len(), len(want))
	}
	if err := WriteBlocks(&got, bytes.NewReader(data), []Range{{60 << 10, 8 << 10}}); err == nil {
		t.Error("WriteBlocks past the end: no error")
	}
}

func TestCompressedSize(t *testing.T) {
	if _, err := exec.LookPath(OracleCommand[0]); err != nil {
		t.Skipf("%s not found (%v): install Debian's zstd package", OracleCommand[0], err)
	}
	const n = 1 << 20
	random := make([]byte, n)
	chacha := rand.NewChaCha8([32]byte{3, 4})
	chacha.Read(random)
	zeros := make([]byte, n)
	whole := []Range{{0, n}}
	rs, err := CompressedSize(t.Context(), bytes.NewReader(random), whole)
	if err != nil {
		t.Fatal(err)
	}
	zs, err := CompressedSize(t.Context(), bytes.NewReader(zeros), whole)
	if err != nil {
		t.Fatal(err)
	}
	if rs < n || rs > n+n/100 {
		t.Errorf("random MiB compressed to %d bytes, want just over %d", rs, n)
	}
	if zs > 1024 {
		t.Errorf("MiB of zeros compressed to %d bytes, want under 1 KiB", zs)
	}
	half, err := CompressedSize(t.Context(), bytes.NewReader(random), []Range{{0, n / 2}})
	if err != nil {
		t.Fatal(err)
	}
	if half >= rs*3/5 {
		t.Errorf("half of the random MiB compressed to %d bytes, the whole to %d: ranges not honoured", half, rs)
	}
}

func TestDataExtents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	makeImage(t, path, 64<<20, []write{{100, 10, 'a'}, {20 << 20, 2 * BlockSize, 'b'}, {64<<20 - 1, 1, 'c'}})
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := dataExtents(f, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	// The file system allocates in blocks of its own size, at least ours.
	for _, want := range []int64{100, 20 << 20, 64<<20 - 1} {
		if !slices.ContainsFunc(got, func(r Range) bool { return r.Off <= want && want < r.End() }) {
			t.Errorf("data extents %v miss offset %d", got, want)
		}
	}
	if n := sumLen(got); n > 8<<20 {
		t.Errorf("data extents %v cover %d bytes of 3 small writes: holes not found", got, n)
	}
	for _, r := range got {
		if r.Off%BlockSize != 0 || (r.End()%BlockSize != 0 && r.End() != 64<<20) {
			t.Errorf("extent %v not block-aligned", r)
		}
	}
}

func TestUnion(t *testing.T) {
	a := []Range{{0, 10}, {20, 10}, {100, 5}}
	b := []Range{{5, 10}, {30, 5}, {50, 1}}
	want := []Range{{0, 15}, {20, 15}, {50, 1}, {100, 5}}
	if got := union(a, b); !slices.Equal(got, want) {
		t.Errorf("union = %v, want %v", got, want)
	}
	if got := union(nil, b); !slices.Equal(got, b) {
		t.Errorf("union(nil, b) = %v, want %v", got, b)
	}
}

// BenchmarkChangedBlocks compares the test's cached pair of Debian images
// (built on first use, which takes a minute or two).
func BenchmarkChangedBlocks(b *testing.B) {
	p := buildTB(b)
	b.SetBytes(2 * p.Size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ChangedBlocks(b.Context(), p.Old, p.New); err != nil {
			b.Fatal(err)
		}
	}
}
