package sync

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/ntc-project/ntc/chunk"
)

func TestZstdSkipper(t *testing.T) {
	tests := []struct {
		name      string
		limit     int
		compress  func(i int) bool // whether chunk i compresses
		wantTries int              // of 100 chunks
	}{
		{"all compress", 0, func(int) bool { return true }, 100},
		{"none compress", 0, func(int) bool { return false }, 9}, // 1,2,4,8,16,16,16,16,16 skipped between tries
		{"compressible after 10", 0, func(i int) bool { return i >= 10 }, 100 - 10 + 3},
		{"none compress, LAN limit", skipLAN, func(int) bool { return false }, 7}, // 1,2,4,...,64 skipped
		{"all compress, LAN limit", skipLAN, func(int) bool { return true }, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := zstdSkipper{limit: tt.limit}
			tries := 0
			for i := range 100 {
				if !z.try() {
					continue
				}
				tries++
				comp := 1000
				if tt.compress(i) {
					comp = 500
				}
				if got := z.result(comp, 1000); got != tt.compress(i) {
					t.Fatalf("chunk %d: result %v", i, got)
				}
			}
			if tries != tt.wantTries {
				t.Errorf("compressed %d of 100 chunks, want %d", tries, tt.wantTries)
			}
		})
	}
}

// readBatch reads runs of consecutive chunks at once and returns the same
// bytes as reading them one by one.
func TestReadBatch(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	img := make([]byte, 1<<20)
	for i := range img {
		img[i] = byte(r.Uint32())
	}
	var es []chunk.Entry
	for off := int64(0); off < int64(len(img)); off += 4096 {
		es = append(es, chunk.Entry{Offset: off, Length: 4096})
	}
	v := &Version{Images: []Image{
		{Name: "a", Source: ReaderSource{R: bytes.NewReader(img)}},
		{Name: "b", Source: ReaderSource{R: bytes.NewReader(img[4096:])}},
	}}
	// Runs, gaps, a switch of image, a single chunk.
	batch := []newChunk{{0, es[0]}, {0, es[1]}, {0, es[2]}, {0, es[5]}, {1, es[5]}, {1, es[6]}, {0, es[7]}}
	var buf []byte
	got, err := readBatch(t.Context(), v, batch, &buf)
	if err != nil {
		t.Fatal(err)
	}
	for i, nc := range batch {
		base := int64(0)
		if nc.image == 1 {
			base = 4096
		}
		want := img[base+nc.entry.Offset : base+nc.entry.End()]
		if !bytes.Equal(got[i], want) {
			t.Fatalf("chunk %d of the batch differs", i)
		}
	}
}
