package chunk

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

func TestPageIndexMatchesBuild(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	data := testImage(r, 3<<20+1234)
	p := NewPageIndex(int64(len(data)))
	// Pages arrive out of order, some twice.
	for _, i := range append(r.Perm((len(data)+BlockSize-1)/BlockSize), 5, 7) {
		off := i * BlockSize
		if _, err := p.Set(int64(off), data[off:min(off+BlockSize, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	want, _, err := Build(t.Context(), Bytes(data), Pages(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	assertEntries(t, p.Index().Entries, want.Entries)
	if _, err := p.Set(3, data[:BlockSize]); err == nil {
		t.Error("unaligned page accepted")
	}
	if _, err := p.Set(0, data[:10]); err == nil {
		t.Error("short page accepted")
	}
}

func TestStoreImageReadsBack(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	data := testImage(r, 2<<20+77)
	st, err := OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	x, _, err := Build(ctx, Bytes(data), DefaultCDC(), Options{Chunk: func(e Entry, b []byte) error {
		return st.Put(ctx, e.ID, b)
	}})
	if err != nil {
		t.Fatal(err)
	}
	img := NewStoreImage(ctx, x, st)
	got, err := io.ReadAll(io.NewSectionReader(img, 0, img.Size()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("image read back from the store differs")
	}
	// Unaligned reads across entries.
	buf := make([]byte, 100000)
	for range 20 {
		off := r.IntN(len(data))
		n, err := img.ReadAt(buf, int64(off))
		if n != min(len(buf), len(data)-off) || !bytes.Equal(buf[:n], data[off:off+n]) {
			t.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
		}
	}
}
