package capture

import (
	"math/rand/v2"
	"testing"

	"github.com/ntc-project/ntc/chunk"
)

// BenchmarkRAMSink feeds pages into a RAM sink backed by a DirStore, as
// the parser does: every page new (random) or every page already stored.
func BenchmarkRAMSink(b *testing.B) {
	const pages = 4096
	for _, tc := range []struct {
		name string
		seen bool
	}{{"new", false}, {"stored", true}} {
		b.Run(tc.name, func(b *testing.B) {
			store, err := chunk.OpenDirStore(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			r := rand.New(rand.NewPCG(1, 2))
			data := make([]byte, pages*chunk.BlockSize)
			fill := func() {
				for i := range data {
					data[i] = byte(r.Uint32())
				}
			}
			fill()
			if tc.seen {
				s := newRAMSink(b.Context(), store, 0, 0)
				w, _ := s.Block("pc.ram", int64(len(data)))
				for off := 0; off < len(data); off += chunk.BlockSize {
					w.WriteAt(data[off:off+chunk.BlockSize], int64(off))
				}
				s.finish()
			}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if !tc.seen {
					b.StopTimer()
					fill()
					b.StartTimer()
				}
				s := newRAMSink(b.Context(), store, 0, 0)
				w, _ := s.Block("pc.ram", int64(len(data)))
				for off := 0; off < len(data); off += chunk.BlockSize {
					if _, err := w.WriteAt(data[off:off+chunk.BlockSize], int64(off)); err != nil {
						b.Fatal(err)
					}
				}
				if err := s.finish(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
