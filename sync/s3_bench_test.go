package sync

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ntc-project/ntc/chunk/s3store"
	"github.com/ntc-project/ntc/internal/s3test"
	"github.com/ntc-project/ntc/repo/s3repo"
	"github.com/ntc-project/ntc/repo/s3versions"
)

// BenchmarkPushS3 pushes a 128 MiB incompressible image, then the same
// image with 10% of it rewritten in scattered 64 KiB extents, to a
// receiver whose repository is in a bucket (versitygw on loopback,
// started by the benchmark; set up as 'ntc serve --store s3://…' does,
// with its cache) and, in the same run, to one whose repository is a
// local directory. Both over loopback QUIC between in-process peers: as
// fast as they go, and with the sender capped at 1 Gbit/s (the rate of
// bench/link's lan, not its 1 ms RTT). Metrics: each receiver's speed
// (MB/s of image) per push, and the S3 receiver's speed as a fraction of
// the local one's.
func BenchmarkPushS3(b *testing.B) {
	for _, c := range []struct {
		name string
		rate int64
	}{{"loopback", 0}, {"1Gbit", 125_000_000}} {
		b.Run(c.name, func(b *testing.B) { benchPushS3(b, c.rate) })
	}
}

func benchPushS3(b *testing.B, rate int64) {
	const size = 128 << 20
	srv := s3test.Start(b)
	bucket := srv.NewBucket(b)
	rng := rand.New(rand.NewPCG(1, 1))
	data := randomData(rng, size)
	v1 := imageVersion(b, "vm", map[string][]byte{"disk": data})
	next := slices.Clone(data)
	for _, slot := range rng.Perm(size / (64 << 10))[:size/(64<<10)/10] {
		copy(next[slot<<16:(slot+1)<<16], randomData(rng, 64<<10))
	}
	v2 := imageVersion(b, "vm", map[string][]byte{"disk": next})

	// pushBoth pushes v1 then v2 to a receiver on repo and returns how
	// long each took.
	pushBoth := func(repo *Repo) (full, delta time.Duration) {
		p := newPeersOn(b, repo, nil)
		s := &Sender{StateDir: b.TempDir(), BytesPerSec: rate}
		t0 := time.Now()
		if _, err := p.push(b, b.Context(), s, v1); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		res, err := p.push(b, b.Context(), s, v2)
		if err != nil {
			b.Fatal(err)
		}
		if res.ChunkBytes > size/5 {
			b.Fatalf("the second push sent %d chunk bytes for 10%% of %d changed", res.ChunkBytes, size)
		}
		return t1.Sub(t0), time.Since(t1)
	}
	var local, s3 [2]time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
		lr, err := OpenRepo(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		cache := b.TempDir()
		st, err := s3store.Open(b.Context(), s3store.Config{URL: fmt.Sprintf("s3://%s/run%d", bucket, n), Endpoint: srv.Endpoint,
			PathStyle: true, Region: srv.Region, Credentials: srv.Credentials(),
			CacheDir: filepath.Join(cache, "store"), CacheWrites: true})
		if err != nil {
			b.Fatal(err)
		}
		sr, err := OpenRepoOn(filepath.Join(cache, "repo"), s3repo.New(s3versions.New(st)))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		f, d := pushBoth(lr)
		local[0], local[1] = local[0]+f, local[1]+d
		f, d = pushBoth(sr)
		s3[0], s3[1] = s3[0]+f, s3[1]+d
		b.StopTimer()
		lr.Close()
		sr.Close()
		st.Close()
		n++
		b.StartTimer()
	}
	mbps := func(d time.Duration) float64 { return float64(size) * float64(n) / 1e6 / d.Seconds() }
	b.ReportMetric(mbps(local[0]), "local-full-MB/s")
	b.ReportMetric(mbps(s3[0]), "s3-full-MB/s")
	b.ReportMetric(mbps(local[1]), "local-delta-MB/s")
	b.ReportMetric(mbps(s3[1]), "s3-delta-MB/s")
	b.ReportMetric(local[0].Seconds()/s3[0].Seconds(), "s3/local-full")
	b.ReportMetric(local[1].Seconds()/s3[1].Seconds(), "s3/local-delta")
}
