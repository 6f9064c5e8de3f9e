package sync

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ntc-project/ntc/transport"
)

func TestConnsFor(t *testing.T) {
	tests := []struct {
		rtt   time.Duration
		limit int
		want  int
	}{
		{300 * time.Microsecond, 8, 1}, // a LAN: the control connection alone
		{40 * time.Millisecond, 8, 4},  // bench's dsl
		{80 * time.Millisecond, 8, 8},  // bench's wan
		{80 * time.Millisecond, 4, 4},  // at most the limit
		{200 * time.Millisecond, 0, 1},
	}
	for _, tt := range tests {
		if got := connsFor(tt.rtt, tt.limit); got != tt.want {
			t.Errorf("connsFor(%v, %d) = %d, want %d", tt.rtt, tt.limit, got, tt.want)
		}
	}
}

func TestRandomLoss(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name  string
		st    quic.ConnectionStats
		lost0 uint64
		want  bool
	}{
		{"no loss", quic.ConnectionStats{MinRTT: 80 * ms, LatestRTT: 81 * ms, PacketsLost: 3}, 3, false},
		{"loss, short queue (bench's wan)", quic.ConnectionStats{MinRTT: 80 * ms, LatestRTT: 84 * ms, PacketsLost: 4}, 3, true},
		{"loss, queue of a quarter round trip", quic.ConnectionStats{MinRTT: 80 * ms, LatestRTT: 100 * ms, PacketsLost: 1}, 0, true},
		{"loss, full queue (bench's dsl in slow start)", quic.ConnectionStats{MinRTT: 40 * ms, LatestRTT: 78 * ms, PacketsLost: 5}, 0, false},
		{"no sample yet", quic.ConnectionStats{PacketsLost: 1}, 0, false},
		{"a burst, short queue (a queue that overflowed and drained)", quic.ConnectionStats{MinRTT: 40 * ms, LatestRTT: 41 * ms, PacketsLost: 30}, 4, false},
	}
	for _, tt := range tests {
		if got := randomLoss(tt.st, tt.lost0); got != tt.want {
			t.Errorf("%s: randomLoss = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestBatchLen(t *testing.T) {
	tests := []struct{ n, streams, want int }{
		{110, 11, minBatch},    // random-1pct: 1.8 MB in small batches, left for connections that join
		{1200, 11, 27},         // random-10pct
		{12000, 11, sendBatch}, // a large round
		{0, 0, minBatch},
	}
	for _, tt := range tests {
		if got := batchLen(tt.n, tt.streams); got != tt.want {
			t.Errorf("batchLen(%d, %d) = %d, want %d", tt.n, tt.streams, got, tt.want)
		}
	}
}

// TestDialingClaim: a round's reserved streams take each opened
// connection once; when the dials failed nothing is waited for.
func TestDialingClaim(t *testing.T) {
	fail := errors.New("refused")
	var logged atomic.Int64
	d := &dialing{changed: make(chan struct{}), log: func(error) { logged.Add(1) },
		dial: func(ctx context.Context) (*transport.Conn, error) { return nil, fail }}
	if c, _, waiting := d.claim(true); c != nil || !waiting {
		t.Fatalf("before any dial, with grow: claim = %v, waiting %v; want nil, waiting", c, waiting)
	}
	if c, _, waiting := d.claim(false); c != nil || waiting {
		t.Fatalf("before any dial, without grow: claim = %v, waiting %v; want nil, not waiting", c, waiting)
	}
	d.start(t.Context(), 2)
	for {
		c, changed, waiting := d.claim(true)
		if c != nil {
			t.Fatal("a failed dial gave a connection")
		}
		if !waiting {
			break
		}
		<-changed
	}
	d.start(t.Context(), 2) // once per push
	if n := d.newRound(); n != 0 {
		t.Fatalf("after two failed dials, %d connections for the next round", n)
	}
	d.close()
	if logged.Load() != 2 {
		t.Fatalf("%d failed dials logged, want 2", logged.Load())
	}
}

// TestPushWhenDataDialsFail: a push whose extra data connections cannot
// open goes over the control connection.
func TestPushWhenDataDialsFail(t *testing.T) {
	p := newPeers(t)
	r := rand.New(rand.NewPCG(9, 9))
	images := map[string][]byte{"disk": randomData(r, 3<<20)}
	s := &Sender{StateDir: t.TempDir(), Conns: 4, Dial: func(ctx context.Context) (*transport.Conn, error) {
		return nil, errors.New("refused")
	}, connsFrom: 1 << 20, connsAnyRTT: true}
	res, err := p.push(t, t.Context(), s, imageVersion(t, "vm", images))
	if err != nil {
		t.Fatal(err)
	}
	if res.Connections != 1 || res.ChunkBytes != 3<<20 {
		t.Fatalf("push with failing data dials: %+v", res)
	}
	assertMaterialized(t, p.repo, "vm", images)
}
