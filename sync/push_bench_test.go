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
// moving the same bytes in the same run.
func BenchmarkPush(b *testing.B) {
	const size = 256 << 20
	data := randomData(rand.New(rand.NewPCG(1, 1)), size)
	v := imageVersion(b, "vm", map[string][]byte{"disk": data})
	c, s := transporttest.Pair(b, transport.Config{})
	t0 := time.Now()
	if err := transporttest.MoveBytes(b.Context(), c, s, size); err != nil {
		b.Fatal(err)
	}
	raw := time.Since(t0)
	b.SetBytes(size)
	for b.Loop() {
		b.StopTimer()
		p := newPeers(b)
		b.StartTimer()
		if _, err := p.push(b, b.Context(), &Sender{StateDir: b.TempDir()}, v); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(raw)/(float64(b.Elapsed())/float64(b.N)), "x-raw-stream")
}
