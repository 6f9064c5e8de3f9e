package bench

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ntc-project/ntc/bench/link"
	"github.com/ntc-project/ntc/internal/s3test"
)

var s3Size = flag.Int64("push.s3size", 128<<20, "image size for BenchmarkPushS3Lan")

// BenchmarkPushS3Lan pushes an incompressible image (push.s3size, 128
// MiB), then the same image with 10% rewritten in scattered 64 KiB
// extents (--changed), across bench/link's lan (1 Gbit/s, 1 ms RTT) to
// two receivers in the same run: 'ntc serve --store s3://…' into a
// versitygw beside it, and 'ntc serve --store DIR'. The office is in
// namespace A; both receivers and versitygw are in B (the bucket is on
// the receiver's side of the link, as a store on its LAN would be).
// Metrics: each receiver's speed (MB/s of image, wall time of the push
// command) and the S3 receiver's as a fraction of the local one's.
func BenchmarkPushS3Lan(b *testing.B) {
	if err := link.Available(); err != nil {
		b.Skip(err)
	}
	vgw := s3test.Binary()
	if vgw == "" {
		b.Skip("versitygw not found: run scripts/deps.sh")
	}
	ctx := b.Context()
	bin := buildNTC(b)
	p, err := link.ProfileByName("lan")
	if err != nil {
		b.Fatal(err)
	}
	l, err := link.Up(ctx, p)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	B := l.B()

	// versitygw serves a directory; a bucket is a directory in it.
	data := b.TempDir()
	if err := os.Mkdir(filepath.Join(data, "ntc"), 0o700); err != nil {
		b.Fatal(err)
	}
	const access, secret = "ntc-bench-access", "ntc-bench-secret-0123456789"
	gw := B.Command(ctx, vgw, "--port", "127.0.0.1:7070", "--access", access, "--secret", secret,
		"--region", "us-east-1", "--quiet", "posix", data)
	gw.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + data}
	if err := gw.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { gw.Process.Kill(); gw.Wait() }()
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1",
		"AWS_ENDPOINT_URL": "http://127.0.0.1:7070", "AWS_EC2_METADATA_DISABLED": "true"} {
		b.Setenv(k, v)
	}

	office, err := NewNode(ctx, bin, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	homeS3, err := NewNode(ctx, bin, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	homeDir, err := NewNode(ctx, bin, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	url := "s3://ntc/repo"
	// versitygw answers once 'ntc ls' of the empty repository does.
	ready := time.Now().Add(30 * time.Second)
	for {
		c := B.Command(ctx, bin, "ls", "--store", url)
		c.Env = append(os.Environ(), "NTC_HOME="+homeS3.Home)
		if err := c.Run(); err == nil {
			break
		} else if time.Now().After(ready) {
			b.Fatalf("versitygw in %s did not answer: %v", B.Namespace, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	srvS3, err := homeS3.Serve(ctx, B.Addr.String()+":7400", url, office.ID, B.Wrap()...)
	if err != nil {
		b.Fatal(err)
	}
	defer srvS3.Stop()
	srvDir, err := homeDir.Serve(ctx, B.Addr.String()+":7401", b.TempDir(), office.ID, B.Wrap()...)
	if err != nil {
		b.Fatal(err)
	}
	defer srvDir.Stop()

	img := filepath.Join(b.TempDir(), "disk.img")
	size := *s3Size
	var s3Time, dirTime [2]time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
		// Fresh data each round: a repository stores a chunk once
		// across sets.
		if err := WriteRandom(img, size, uint64(100+n)); err != nil {
			b.Fatal(err)
		}
		set := fmt.Sprintf("vm%d", n)
		b.StartTimer()
		push := func(srv *Server, peer string, args ...string) time.Duration {
			r, err := office.PushVia(ctx, l.A().Wrap(), srv.Addr, peer, append([]string{img, "--name", set}, args...)...)
			if err != nil {
				b.Fatal(err)
			}
			return r.Wall
		}
		dirTime[0] += push(srvDir, homeDir.ID)
		s3Time[0] += push(srvS3, homeS3.ID)
		b.StopTimer()
		es, _, err := RewriteScattered(img, 0.1, 64<<10, uint64(200+n))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		dirTime[1] += push(srvDir, homeDir.ID, "--changed", Ranges(es))
		s3Time[1] += push(srvS3, homeS3.ID, "--changed", Ranges(es))
		n++
	}
	mbps := func(d time.Duration) float64 { return float64(size) * float64(n) / 1e6 / d.Seconds() }
	b.ReportMetric(mbps(dirTime[0]), "dir-full-MB/s")
	b.ReportMetric(mbps(s3Time[0]), "s3-full-MB/s")
	b.ReportMetric(mbps(dirTime[1]), "dir-delta-MB/s")
	b.ReportMetric(mbps(s3Time[1]), "s3-delta-MB/s")
	b.ReportMetric(dirTime[0].Seconds()/s3Time[0].Seconds(), "s3/dir-full")
	b.ReportMetric(dirTime[1].Seconds()/s3Time[1].Seconds(), "s3/dir-delta")
}
