package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ntc-project/ntc/chunk"
)

func TestWriteRandomIsItsSeed(t *testing.T) {
	dir := t.TempDir()
	const size = 3<<20 + 5 // not a whole number of buffers
	read := func(name string, seed uint64) []byte {
		p := filepath.Join(dir, name)
		if err := WriteRandom(p, size, seed); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != size {
			t.Fatalf("%s: %d bytes, want %d", name, len(b), size)
		}
		return b
	}
	a, again, other := read("a", 1), read("again", 1), read("other", 2)
	if !bytes.Equal(a, again) {
		t.Error("the same seed wrote different bytes")
	}
	if bytes.Equal(a[:4096], other[:4096]) {
		t.Error("seeds 1 and 2 wrote the same bytes")
	}
	if zeros := bytes.Count(a, []byte{0}); zeros > size/128 {
		t.Errorf("%d zero bytes in %d random ones", zeros, size)
	}
}

// TestWriteMixed checks the demo image's regions: holes, text and random
// data, the last quarter empty, the same bytes for the same seed.
func TestWriteMixed(t *testing.T) {
	dir := t.TempDir()
	const size = 16 << 20
	p := filepath.Join(dir, "img")
	if err := WriteMixed(p, size, 7); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != size {
		t.Fatalf("%d bytes, want %d", len(b), size)
	}
	if n := len(bytes.TrimRight(b, "\x00")); n > size*3/4 {
		t.Errorf("data up to byte %d, want none in the last quarter (from %d)", n, size*3/4)
	}
	var holes, text, random int
	for off := 0; off < size*3/4; off += 1 << 20 {
		r := b[off : off+1<<20]
		switch {
		case !slices.ContainsFunc(r, func(c byte) bool { return c != 0 }):
			holes++
		case !slices.ContainsFunc(r, func(c byte) bool { return c != '\n' && (c < ' ' || c > '~') }):
			text++
		default:
			random++
		}
	}
	if holes == 0 || text == 0 || random == 0 {
		t.Errorf("1 MiB regions: %d holes, %d text, %d random: want some of each", holes, text, random)
	}
	q := filepath.Join(dir, "again")
	if err := WriteMixed(q, size, 7); err != nil {
		t.Fatal(err)
	}
	if again, err := os.ReadFile(q); err != nil || !bytes.Equal(b, again) {
		t.Errorf("the same seed wrote different bytes (%v)", err)
	}
}

// TestRewriteScattered checks that exactly the extents returned changed:
// the share asked for, aligned, each one new, every other byte as it was.
func TestRewriteScattered(t *testing.T) {
	dir := t.TempDir()
	const size, n = 16 << 20, 64 << 10
	p := filepath.Join(dir, "img")
	if err := WriteRandom(p, size, 1); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	frac := 0.05
	ext, oracle, err := RewriteScattered(p, frac, n, 2)
	if err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := int(frac * size / n); len(ext) != want {
		t.Fatalf("%d extents, want %d", len(ext), want)
	}
	inExtent := make([]bool, size/n)
	for _, e := range ext {
		if e.Off%n != 0 || e.Len != n || inExtent[e.Off/n] {
			t.Fatalf("extent %+v: not one new aligned slot of %d bytes", e, n)
		}
		inExtent[e.Off/n] = true
		if bytes.Equal(before[e.Off:e.End()], after[e.Off:e.End()]) {
			t.Errorf("extent %+v did not change", e)
		}
	}
	for slot, changed := range inExtent {
		if off := slot * n; !changed && !bytes.Equal(before[off:off+n], after[off:off+n]) {
			t.Errorf("bytes at %d changed outside the extents", off)
		}
	}
	// Random data does not compress: the oracle is about its size.
	if data := int64(len(ext)) * n; oracle < data*99/100 || oracle > data*101/100 {
		t.Errorf("oracle %d bytes for %d bytes of random data", oracle, data)
	}
	// What --changed reads back is what changed.
	if got, err := chunk.ParseRanges(Ranges(ext)); err != nil || !slices.Equal(got, ext) {
		t.Errorf("ParseRanges(Ranges(%v)) = %v, %v", ext, got, err)
	}
	if _, _, err := RewriteScattered(p, 0.01, 2*size, 3); err == nil {
		t.Error("an extent larger than the file: no error")
	}
}
