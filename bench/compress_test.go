package bench

import (
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/ntc-project/ntc/bench/debimg"
	"github.com/ntc-project/ntc/chunk"
)

// BenchmarkCompressDebian compresses the chunks a push of bench's Debian
// update sends (the new image's chunks the old one lacks, in offset order)
// as sync's data streams can: each chunk alone at each zstd level ntc
// chooses from, and in groups of 32 consecutive chunks (msgChunks). It
// reports each way's bytes as a ratio of the fastest level's chunks alone
// (what every push sent before the levels followed the link), measured in
// the same run, and the raw bytes compressed per second. The pair comes
// from debimg's cache (built on first use: root and a Debian mirror).
//
//	go test -run '^$' -bench CompressDebian -benchtime 1x ./bench/
func BenchmarkCompressDebian(b *testing.B) {
	p, err := debimg.Build(b.Context(), debimg.Options{})
	if err != nil {
		b.Skipf("no Debian image pair: %v", err)
	}
	datas := newChunksOf(b, p)
	var raw int64
	for _, d := range datas {
		raw += int64(len(d))
	}
	compress := func(lv zstd.EncoderLevel, group int) int64 {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(lv), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(1<<20))
		if err != nil {
			b.Fatal(err)
		}
		defer enc.Close()
		var n int64
		var buf, out []byte
		for k := 0; k < len(datas); k += group {
			buf = buf[:0]
			for _, d := range datas[k:min(k+group, len(datas))] {
				buf = append(buf, d...)
			}
			out = enc.EncodeAll(buf, out[:0])
			n += int64(min(len(out), len(buf)))
		}
		return n
	}
	baseline := compress(zstd.SpeedFastest, 1)
	for _, lv := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedBestCompression} {
		for _, group := range []int{1, 32} {
			name := lv.String() + "/alone"
			if group > 1 {
				name = lv.String() + "/groups"
			}
			b.Run(name, func(b *testing.B) {
				b.SetBytes(raw)
				var n int64
				for b.Loop() {
					n = compress(lv, group)
				}
				b.ReportMetric(float64(n)/float64(baseline), "bytes/fastest-alone")
				b.ReportMetric(float64(n)/float64(p.Oracle), "bytes/oracle")
			})
		}
	}
}

// newChunksOf returns the content of the new image's distinct data chunks
// that the old image lacks, in offset order.
func newChunksOf(tb testing.TB, p *debimg.Pair) [][]byte {
	tb.Helper()
	ctx := tb.Context()
	index := func(path string) (*chunk.File, *chunk.Index) {
		f, err := chunk.OpenFile(path)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { f.Close() })
		x, _, err := chunk.Build(ctx, f, chunk.DefaultCDC(), chunk.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		return f, x
	}
	_, ox := index(p.Old)
	nf, nx := index(p.New)
	have := map[chunk.ID]bool{}
	for _, e := range ox.Entries {
		have[e.ID] = true
	}
	var out [][]byte
	for _, e := range nx.Entries {
		if e.Zero || have[e.ID] {
			continue
		}
		have[e.ID] = true
		d := make([]byte, e.Length)
		if _, err := nf.ReadAt(d, e.Offset); err != nil {
			tb.Fatal(err)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		tb.Fatal("the pair's images share every chunk")
	}
	return out
}
