package capture

import (
	"io"
	"math/rand/v2"
	"testing"

	"github.com/ntc-project/ntc/chunk"
)

// BenchmarkRAMSink feeds pages into a RAM sink, as the parser does: every
// page new (random) or every page already stored, into the repository's
// store (a PackStore) and, as the baseline, a DirStore (one file per page).
func BenchmarkRAMSink(b *testing.B) {
	const pages = 4096
	for _, tc := range []struct {
		name  string
		seen  bool
		store func(dir string) (chunk.Store, error)
	}{
		{"new", false, openPackStore},
		{"stored", true, openPackStore},
		{"dirstore/new", false, openDirStore},
		{"dirstore/stored", true, openDirStore},
	} {
		b.Run(tc.name, func(b *testing.B) {
			store, err := tc.store(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			if c, ok := store.(io.Closer); ok {
				b.Cleanup(func() { c.Close() })
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

func openPackStore(dir string) (chunk.Store, error) { return chunk.OpenPackStore(dir) }
func openDirStore(dir string) (chunk.Store, error)  { return chunk.OpenDirStore(dir) }
