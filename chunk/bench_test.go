package chunk

import (
	"bytes"
	"flag"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/restic/chunker"
	"github.com/zeebo/blake3"
)

var benchSize = flag.Int64("chunk.benchsize", 256<<20, "image size for the indexing benchmarks")

func randomImage(n int64) Bytes {
	r := rand.New(rand.NewPCG(uint64(n), 9))
	b := make([]byte, n)
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// BenchmarkBaseline measures the building blocks alone on one core: the
// ceiling for indexing is set by them.
func BenchmarkBaseline(b *testing.B) {
	img := randomImage(*benchSize)
	p := DefaultCDC()
	b.Run("chunker", func(b *testing.B) {
		b.SetBytes(int64(len(img)))
		buf := make([]byte, p.MaxSize)
		for b.Loop() {
			c := chunker.NewWithBoundaries(bytes.NewReader(img), p.Pol, uint(p.MinSize), uint(p.MaxSize))
			c.SetAverageBits(int(p.AvgBits))
			for {
				if _, err := c.Next(buf); err == io.EOF {
					break
				}
			}
		}
	})
	b.Run("blake3", func(b *testing.B) {
		b.SetBytes(int64(len(img)))
		for b.Loop() {
			for off := 0; off < len(img); off += 16 << 10 {
				blake3.Sum256(img[off:min(off+16<<10, len(img))])
			}
		}
	})
}

// BenchmarkBuild is a full index of random data; workers-N uses N cores.
func BenchmarkBuild(b *testing.B) {
	img := randomImage(*benchSize)
	for _, p := range []struct {
		name string
		p    Params
	}{{"cdc", DefaultCDC()}, {"pages", Pages()}} {
		for _, w := range []int{1, runtime.GOMAXPROCS(0)} {
			b.Run(p.name+"/workers-"+itoa(w), func(b *testing.B) {
				b.SetBytes(int64(len(img)))
				b.ReportAllocs()
				for b.Loop() {
					if _, _, err := Build(b.Context(), img, p.p, Options{Workers: w}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkReindex1Percent re-indexes after 1% of the image was rewritten
// in scattered 64 KiB extents, and reports the share of the image read and
// the time against a full index measured in the same run.
func BenchmarkReindex1Percent(b *testing.B) {
	img := randomImage(*benchSize)
	ctx := b.Context()
	t0 := time.Now()
	prev, _, err := Build(ctx, img, DefaultCDC(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	full := time.Since(t0)
	changed := scatter(rand.New(rand.NewPCG(1, 1)), img, 0.01, 64<<10)
	b.SetBytes(int64(len(img)))
	var read int64
	for b.Loop() {
		_, st, err := Reindex(ctx, prev, img, changed, Options{})
		if err != nil {
			b.Fatal(err)
		}
		read = st.BytesRead
	}
	b.ReportMetric(100*float64(read)/float64(len(img)), "%read")
	b.ReportMetric(100*float64(b.Elapsed())/float64(b.N)/float64(full), "%full-time")
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + itoa(n%10)
}
