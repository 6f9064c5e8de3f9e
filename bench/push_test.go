package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ntc-project/ntc/transport"
	"github.com/ntc-project/ntc/transport/transporttest"
)

var (
	pushSize = flag.Int64("push.size", 1<<30, "image size for BenchmarkPushLoopback")
	bigSize  = flag.Int64("push.big", 16<<30, "sparse image size for BenchmarkPushMemory")
)

// buildNTC builds the ntc binary for the benchmark's processes.
func buildNTC(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "ntc")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/ntc").CombinedOutput(); err != nil {
		tb.Fatalf("build ntc: %v\n%s", err, out)
	}
	return bin
}

type pair struct {
	office, home *Node
	srv          *Server
	store        string
}

// newPair starts a serve (with flags) allowing a fresh office node.
func newPair(tb testing.TB, bin string, flags ...string) *pair {
	tb.Helper()
	ctx := context.Background()
	office, err := NewNode(ctx, bin, tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	home, err := NewNode(ctx, bin, tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	store := tb.TempDir()
	srv, err := home.ServeFlags(ctx, "127.0.0.1:0", store, office.ID, flags)
	if err != nil {
		tb.Fatal(err)
	}
	return &pair{office: office, home: home, srv: srv, store: store}
}

// BenchmarkPushLoopback: the first push of an incompressible image against
// one raw quic-go stream, then pushes after 1% of it was rewritten in
// scattered 64 KiB extents against the zstd size of those extents (the
// oracle) and against rsync -z --no-whole-file over TCP, all in one run.
func BenchmarkPushLoopback(b *testing.B) {
	if _, err := exec.LookPath("rsync"); err != nil {
		b.Skip("rsync is not installed (make deps installs it)")
	}
	ctx := b.Context()
	bin := buildNTC(b)
	size := *pushSize
	for b.Loop() {
		// Baseline: one quic-go stream moving the same number of bytes.
		c, s := transporttest.Pair(b, transport.Config{})
		t0 := time.Now()
		if err := transporttest.MoveBytes(ctx, c, s, size); err != nil {
			b.Fatal(err)
		}
		raw := float64(size) / time.Since(t0).Seconds()

		p := newPair(b, bin)
		dir := b.TempDir()
		img := filepath.Join(dir, "disk.img")
		if err := WriteRandom(img, size, 1); err != nil {
			b.Fatal(err)
		}
		first, err := p.office.Push(ctx, p.srv.Addr, p.home.ID, img)
		if err != nil {
			b.Fatal(err)
		}
		pushRate := float64(size) / time.Duration(first.DurationMS*int64(time.Millisecond)).Seconds()

		// rsync holds the same first version.
		rdir := b.TempDir()
		dest := filepath.Join(rdir, "dest")
		os.MkdirAll(dest, 0o755)
		rs, err := StartRsync(ctx, rdir, dest, "127.0.0.1", 28730)
		if err != nil {
			b.Fatal(err)
		}
		waitRsync(b, ctx, img, rs.Port)

		_, oracle, err := RewriteScattered(img, 0.01, 64<<10, 2)
		if err != nil {
			b.Fatal(err)
		}
		second, err := p.office.Push(ctx, p.srv.Addr, p.home.ID, img)
		if err != nil {
			b.Fatal(err)
		}
		rz, err := RunRsync(ctx, img, "127.0.0.1", rs.Port, []string{"-z", "--no-whole-file", "--ignore-times"})
		if err != nil {
			b.Fatal(err)
		}
		ext, oracle3, err := RewriteScattered(img, 0.01, 64<<10, 3)
		if err != nil {
			b.Fatal(err)
		}
		third, err := p.office.Push(ctx, p.srv.Addr, p.home.ID, img, "--changed", Ranges(ext))
		if err != nil {
			b.Fatal(err)
		}
		srvRSS, _ := p.srv.Stop()
		rs.Stop()

		b.ReportMetric(pushRate/1e6, "push-MB/s")
		b.ReportMetric(raw/1e6, "quic-stream-MB/s")
		b.ReportMetric(pushRate/raw, "push/stream")
		b.ReportMetric(float64(second.BytesSent)/float64(oracle+64<<10), "bytes/oracle")
		b.ReportMetric(float64(third.BytesSent)/float64(oracle3+64<<10), "changed-bytes/oracle")
		b.ReportMetric(float64(rz.BytesSent+rz.BytesReceived)/float64(oracle+64<<10), "rsync-z/oracle")
		b.ReportMetric(float64(first.MaxRSS)/(1<<20), "push-MiB")
		b.ReportMetric(float64(srvRSS)/(1<<20), "serve-MiB")
		b.Logf("with --changed: up %d down %d data %d lost %d packets %d, %d chunks (%d patched)", third.BytesUp, third.BytesDown, third.DataBytes, third.BytesLost, third.Packets, third.ChunksSent, third.Patched)
		b.Logf("without: up %d down %d data %d lost %d packets %d, %d chunks", second.BytesUp, second.BytesDown, second.DataBytes, second.BytesLost, second.Packets, second.ChunksSent)
		b.Logf("first push %d MB in %d ms; second sent %d (oracle %d); with --changed %d (oracle %d), read %d; rsync -z sent+received %d in %s",
			size/1e6, first.DurationMS, second.BytesSent, oracle+64<<10, third.BytesSent, oracle3+64<<10, third.BytesRead, rz.BytesSent+rz.BytesReceived, rz.Wall)
	}
}

// waitRsync makes the first copy with rsync, retrying while the daemon starts.
func waitRsync(tb testing.TB, ctx context.Context, img string, port int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := RunRsync(ctx, img, "127.0.0.1", port, []string{"--whole-file"})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkPushMemory pushes a 16 GiB sparse image holding 1 GiB of data
// and reports the peak memory of both processes.
func BenchmarkPushMemory(b *testing.B) {
	ctx := b.Context()
	bin := buildNTC(b)
	for b.Loop() {
		p := newPair(b, bin)
		img := filepath.Join(b.TempDir(), "big.img")
		f, err := os.Create(img)
		if err != nil {
			b.Fatal(err)
		}
		f.Truncate(*bigSize)
		f.Close()
		// 1 GiB of distinct data in 64 MiB pieces spread over the image.
		piece := filepath.Join(b.TempDir(), "piece")
		f, _ = os.OpenFile(img, os.O_RDWR, 0)
		for k := range int64(16) {
			if err := WriteRandom(piece, 64<<20, uint64(5+k)); err != nil {
				b.Fatal(err)
			}
			data, _ := os.ReadFile(piece)
			f.WriteAt(data, k*(*bigSize/16))
		}
		f.Close()
		res, err := p.office.Push(ctx, p.srv.Addr, p.home.ID, img)
		if err != nil {
			b.Fatal(err)
		}
		srvRSS, _ := p.srv.Stop()
		b.ReportMetric(float64(res.MaxRSS)/(1<<20), "push-MiB")
		b.ReportMetric(float64(srvRSS)/(1<<20), "serve-MiB")
		b.Logf("pushed %d GiB image (%d chunk bytes) in %d ms", *bigSize>>30, res.ChunkBytes, res.DurationMS)
	}
}

var _ = fmt.Sprint
