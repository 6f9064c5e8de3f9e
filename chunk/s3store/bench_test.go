package s3store

import (
	"context"
	"flag"
	"net/http"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/s3test"
)

var benchSize = flag.Int64("s3store.benchsize", 64<<20, "bytes of chunks stored and read per benchmark round")

const benchChunk = 64 << 10

// BenchmarkStore writes and reads the same chunks (64 KiB, half random,
// so they compress about 2:1) through a local chunk.PackStore and through
// the S3 store on a versitygw on loopback, in the same run: the S3
// sub-benchmarks report their time as a multiple of the local one
// (x-local) and the requests they made per GiB of chunks.
func BenchmarkStore(b *testing.B) {
	tb := newTestBed(b)
	chunks := randomChunks(30, int(*benchSize/benchChunk), benchChunk)
	size := int64(len(chunks)) * benchChunk
	gib := float64(size) / (1 << 30)
	var localWrite, localRead time.Duration

	b.Run("write/local", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			benchWrite(b, chunks, func() (syncStore, error) { return chunk.OpenPackStore(b.TempDir()) })
		}
		localWrite = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("write/s3", func(b *testing.B) {
		b.SetBytes(size)
		var cnt s3test.Counter
		for b.Loop() {
			cfg := tb.config()
			cfg.Transport = &cnt
			benchWrite(b, chunks, func() (syncStore, error) { return Open(b.Context(), cfg) })
		}
		b.ReportMetric(float64(cnt.Count(http.MethodPut))/gib/float64(b.N), "PUT/GiB")
		reportRatio(b, localWrite)
	})

	local, err := chunk.OpenPackStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer local.Close()
	benchPut(b, local, chunks)
	if err := local.Sync(b.Context()); err != nil {
		b.Fatal(err)
	}
	cfg := tb.config()
	w := tb.open(b, cfg)
	benchPut(b, w, chunks)
	if err := w.Sync(b.Context()); err != nil {
		b.Fatal(err)
	}

	b.Run("read/local", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			benchGet(b, local, chunks, 1)
		}
		localRead = b.Elapsed() / time.Duration(b.N)
	})
	for _, workers := range []int{1, 8} {
		b.Run("read/s3/workers-"+itoa(workers), func(b *testing.B) {
			b.SetBytes(size)
			var cnt s3test.Counter
			cfg := cfg
			cfg.Transport = &cnt
			r := tb.open(b, cfg)
			base := cnt.Count(http.MethodGet) // opening: the LIST and the listings
			for b.Loop() {
				benchGet(b, r, chunks, workers)
			}
			b.ReportMetric(float64(cnt.Count(http.MethodGet)-base)/gib/float64(b.N), "GET/GiB")
			reportRatio(b, localRead)
		})
	}
	b.Run("read/s3-prefetch", func(b *testing.B) {
		b.SetBytes(size)
		ids := make([]chunk.ID, len(chunks))
		for i, c := range chunks {
			ids[i] = chunk.Sum(c)
		}
		var cnt s3test.Counter
		gets := 0
		for b.Loop() {
			cfg := cfg
			cfg.Transport = &cnt
			cfg.CacheDir = filepath.Join(b.TempDir(), "cache")
			r := tb.open(b, cfg)
			base := cnt.Count(http.MethodGet)
			if err := r.Prefetch(b.Context(), ids); err != nil {
				b.Fatal(err)
			}
			benchGet(b, r, chunks, 1)
			gets += cnt.Count(http.MethodGet) - base
			if err := r.Close(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(gets)/gib/float64(b.N), "GET/GiB")
		reportRatio(b, localRead)
	})
	b.Run("read/s3-cached", func(b *testing.B) {
		b.SetBytes(size)
		var cnt s3test.Counter
		cfg := cfg
		cfg.Transport = &cnt
		cfg.CacheDir = filepath.Join(b.TempDir(), "cache")
		r := tb.open(b, cfg)
		benchGet(b, r, chunks, 1) // fills the cache
		base := cnt.Total()
		b.ResetTimer()
		for b.Loop() {
			benchGet(b, r, chunks, 1)
		}
		b.ReportMetric(float64(cnt.Total()-base)/gib/float64(b.N), "requests/GiB")
		reportRatio(b, localRead)
	})
}

// reportRatio reports the time of a round as a multiple of base's.
func reportRatio(b *testing.B, base time.Duration) {
	if base > 0 {
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(base), "x-local")
	}
}

// syncStore is a store that makes what was put durable on Sync.
type syncStore interface {
	chunk.Store
	Sync(ctx context.Context) error
	Close() error
}

// benchWrite opens a new store, puts chunks and syncs it.
func benchWrite(b *testing.B, chunks [][]byte, open func() (syncStore, error)) {
	s, err := open()
	if err != nil {
		b.Fatal(err)
	}
	benchPut(b, s, chunks)
	if err := s.Sync(b.Context()); err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}

func benchPut(b *testing.B, s chunk.Store, chunks [][]byte) {
	for _, c := range chunks {
		if err := s.Put(b.Context(), chunk.Sum(c), c); err != nil {
			b.Fatal(err)
		}
	}
}

func benchGet(b *testing.B, s chunk.Store, chunks [][]byte, workers int) {
	g, ctx := errgroup.WithContext(b.Context())
	g.SetLimit(workers)
	for _, c := range chunks {
		g.Go(func() error {
			_, err := s.Get(ctx, chunk.Sum(c))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkIndexMemory measures what the store's map of chunks costs in
// memory per chunk, for sizing (README.md).
func BenchmarkIndexMemory(b *testing.B) {
	const perPack, packs = 4096, 256 // a million chunks
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := &Store{packMap: newPackMap()}
		recs := make([]record, perPack)
		for p := range packs {
			for i := range recs {
				recs[i].id[0], recs[i].id[1], recs[i].id[2] = byte(p), byte(i), byte(i>>8)
				recs[i].id[31] = byte(p >> 8)
			}
			s.addPackLocked(packName{byte(p), byte(p >> 8)}, recs)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(s.Len()), "B/chunk")
		runtime.KeepAlive(s)
	}
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + itoa(n%10)
}
