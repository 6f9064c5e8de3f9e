package sync

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ntc-project/ntc/transport"
	"github.com/ntc-project/ntc/transport/transporttest"
)

// BenchmarkPush pushes a 256 MiB incompressible image between two
// in-process peers over loopback QUIC, beside one raw quic-go stream
// moving the same bytes in the same run: wall time (x-raw-stream) and the
// CPU both ends used (cpu-ratio; the image is indexed before, so chunking
// is not in it).
func BenchmarkPush(b *testing.B) {
	const size = 256 << 20
	data := randomData(rand.New(rand.NewPCG(1, 1)), size)
	v := imageVersion(b, "vm", map[string][]byte{"disk": data})
	c, s := transporttest.Pair(b, transport.Config{})
	t0, cpu0 := time.Now(), transporttest.ProcessCPU(b)
	if err := transporttest.MoveBytes(b.Context(), c, s, size); err != nil {
		b.Fatal(err)
	}
	raw, rawCPU := time.Since(t0), transporttest.ProcessCPU(b)-cpu0
	b.SetBytes(size)
	var pushCPU time.Duration
	for b.Loop() {
		b.StopTimer()
		p := newPeers(b)
		b.StartTimer()
		cpu0 := transporttest.ProcessCPU(b)
		if _, err := p.push(b, b.Context(), &Sender{StateDir: b.TempDir()}, v); err != nil {
			b.Fatal(err)
		}
		pushCPU += transporttest.ProcessCPU(b) - cpu0
	}
	b.ReportMetric(float64(raw)/(float64(b.Elapsed())/float64(b.N)), "x-raw-stream")
	b.ReportMetric(float64(pushCPU)/float64(b.N)/float64(rawCPU), "cpu-ratio")
	b.ReportMetric(float64(pushCPU)/float64(b.N)/float64(time.Second)*float64(1<<30)/size, "push-cpu-s/GiB")
	b.ReportMetric(float64(rawCPU)/float64(time.Second)*float64(1<<30)/size, "stream-cpu-s/GiB")
}
