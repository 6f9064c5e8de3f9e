package bench

import (
	"flag"
	"path/filepath"
	"testing"
	"time"

	"github.com/ntc-project/ntc/transport"
	"github.com/ntc-project/ntc/transport/transporttest"
)

var cpuSize = flag.Int64("cpu.size", 1<<30, "image size for BenchmarkPushCPU")

// BenchmarkPushCPU: the CPU a first push of an incompressible image costs
// both processes ('ntc push' and 'ntc serve' on loopback: indexing,
// compression attempts, QUIC, verification, storing, commit and the image
// file written) against one raw quic-go stream moving the same bytes
// between two ends in this process, in the same run. The bar:
// cpu-ratio ≤ 2.
//
//	go test -run '^$' -bench PushCPU -benchtime 1x ./bench/ [-cpu.size 268435456]
func BenchmarkPushCPU(b *testing.B) {
	ctx := b.Context()
	bin := buildNTC(b)
	size := *cpuSize
	gib := float64(size) / (1 << 30)
	img := filepath.Join(b.TempDir(), "disk.img")
	if err := WriteRandom(img, size, 1); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	for b.Loop() {
		// Baseline: both ends of one stream, in this process.
		c, s := transporttest.Pair(b, transport.Config{})
		cpu0, t0 := transporttest.ProcessCPU(b), time.Now()
		if err := transporttest.MoveBytes(ctx, c, s, size); err != nil {
			b.Fatal(err)
		}
		rawCPU, rawWall := transporttest.ProcessCPU(b)-cpu0, time.Since(t0)

		// Server start-up and its idle CPU are outside the push: measure
		// them on a server that receives nothing.
		idle := newPair(b, bin)
		_, idleCPU := idle.srv.StopUsage()

		p := newPair(b, bin)
		res, err := p.office.Push(ctx, p.srv.Addr, p.home.ID, img)
		if err != nil {
			b.Fatal(err)
		}
		_, srvCPU := p.srv.StopUsage()
		srvCPU -= idleCPU

		push := (res.CPU + srvCPU).Seconds() / gib
		raw := rawCPU.Seconds() / gib
		b.ReportMetric(push, "push-cpu-s/GiB")
		b.ReportMetric(res.CPU.Seconds()/gib, "sender-cpu-s/GiB")
		b.ReportMetric(srvCPU.Seconds()/gib, "receiver-cpu-s/GiB")
		b.ReportMetric(raw, "stream-cpu-s/GiB")
		b.ReportMetric(push/raw, "cpu-ratio")
		b.ReportMetric(float64(size)/res.Wall.Seconds()/1e6, "push-MB/s")
		b.ReportMetric(float64(size)/rawWall.Seconds()/1e6, "stream-MB/s")
		b.Logf("push %d MiB: wall %s (index %d ms), sender CPU %s, receiver CPU %s (idle server %s taken off); stream: wall %s, CPU %s",
			size>>20, res.Wall.Round(time.Millisecond), res.IndexMS, res.CPU.Round(time.Millisecond), srvCPU.Round(time.Millisecond),
			idleCPU.Round(time.Millisecond), rawWall.Round(time.Millisecond), rawCPU.Round(time.Millisecond))
	}
}
